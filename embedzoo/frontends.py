"""Spectrogram front ends in plain torch: batched, on any device, no torchaudio or librosa needed.
torch does the transforms (torch.stft, torch.fft); the filter banks are built here, each to match
its reference (librosa, Kaldi, VGGish) to float32 precision (see the `# hand-written:` notes).

Building blocks:
- `hz_to_mel` / `mel_to_hz` (slaney or HTK scale) and `mel_filterbank`: the triangular mel filter
  banks of librosa / torchaudio (triangles linear in Hz, optional slaney area norm) and of HTK /
  VGGish / TensorFlow (triangles linear in mel), in float64;
- `kaldi_mel_banks`: Kaldi's triangular mel filter bank (as `torchaudio.compliance.kaldi.get_mel_banks`
  builds it, without VTLN warping), reproduced op for op so it matches in float32;
- `STFTPower`: torchlibrosa's `Spectrogram` (power), computed with torch.stft; `dft_kernels`:
  torchlibrosa's Conv1d kernels (DFT x periodic Hann), to check a checkpoint's frozen copy against;
  `power_to_db`: librosa's `power_to_db`;
- `DBMelSpectrogram`: STFT power -> slaney mel -> dB, PANNs' frontend (torchlibrosa's `Spectrogram`
  + `LogmelFilterBank`);
- `VGGishLogMel`: |STFT| of unpadded frames -> HTK mel -> log(x + offset), VGGish's frontend
  (`vggish_input.waveform_to_examples`), with its 0.96 s example framing;
- `MelSTFT`: pre-emphasis -> STFT power -> mel -> log -> affine normalisation, the eval-mode
  `AugmentMelSTFT` of PaSST (hear21passt) and EfficientAT, parameterised for their variants;
- `KaldiFbank`: Kaldi's log mel filter bank (`torchaudio.compliance.kaldi.fbank`), AST's and
  BEATs' frontend, batched;
- `WhisperLogMel`: Whisper's log-mel (openai-whisper / `WhisperFeatureExtractor`), floored per clip.

`STFTPower`, `DBMelSpectrogram`, `VGGishLogMel`, `KaldiFbank` and `WhisperLogMel` run in float32
also under autocast (a log of a bfloat16 power spectrum loses the quiet bands); `MelSTFT` keeps its
mel product in float32. Output layout: (batch, frames, bins) for `STFTPower`, `DBMelSpectrogram`,
`VGGishLogMel` and `KaldiFbank`, as their references return it; (batch, n_mels, frames) for
`MelSTFT` (frame k centred on sample k*hop of the pre-emphasised signal, STFT `center=True`) and
`WhisperLogMel`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def kaldi_mel_scale(freq: Tensor | float) -> Tensor | float:
    """Kaldi's mel scale: 1127 ln(1 + f/700)."""
    if isinstance(freq, Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: float, fmin: float, fmax: float) -> Tensor:
    """Triangular mel filters (n_mels, n_fft // 2 + 1) in float32; the Nyquist column is zero, as in
    Kaldi (torchaudio returns n_fft // 2 columns, and PaSST pads the last one with zeros).

    fmax <= 0 counts down from the Nyquist frequency, as in Kaldi.
    """
    # hand-written: torchaudio.compliance.kaldi.get_mel_banks gives the same floats (tested), but
    # torchaudio is no dependency of the core (its wheels pin one exact torch version)
    num_fft_bins = n_fft // 2
    nyquist = 0.5 * sample_rate
    if fmax <= 0.0:
        fmax += nyquist
    if not (0.0 <= fmin < nyquist and 0.0 < fmax <= nyquist and fmin < fmax):
        raise ValueError(f"mel band edges must satisfy 0 <= fmin < fmax <= {nyquist}, got {fmin}, {fmax}")
    fft_bin_width = sample_rate / n_fft
    mel_low = kaldi_mel_scale(float(fmin))
    mel_high = kaldi_mel_scale(float(fmax))
    mel_delta = (mel_high - mel_low) / (n_mels + 1)
    index = torch.arange(n_mels).unsqueeze(1)
    left = mel_low + index * mel_delta
    center = mel_low + (index + 1.0) * mel_delta
    right = mel_low + (index + 2.0) * mel_delta
    mel = kaldi_mel_scale(fft_bin_width * torch.arange(num_fft_bins)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))
    return F.pad(banks, (0, 1), value=0.0)


# ---- mel scales and filter banks ------------------------------------------------------------------

MEL_SCALES = ("slaney", "htk")


def hz_to_mel(freq: Tensor, scale: str = "slaney") -> Tensor:
    """Hz -> mel. "slaney" (librosa's default, Slaney's Auditory Toolbox): linear below 1 kHz
    (f / (200/3)), logarithmic above; "htk": 2595 log10(1 + f/700) (= 1127 ln(1 + f/700), Kaldi's
    and VGGish's form, up to rounding)."""
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    if scale != "slaney":
        raise ValueError(f"mel scale must be one of {MEL_SCALES}, not {scale!r}")
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    log_part = min_log_hz / f_sp + torch.log(torch.clamp(freq, min=1e-10) / min_log_hz) / logstep
    return torch.where(freq >= min_log_hz, log_part, freq / f_sp)


def mel_to_hz(mel: Tensor, scale: str = "slaney") -> Tensor:
    """The inverse of `hz_to_mel`."""
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    if scale != "slaney":
        raise ValueError(f"mel scale must be one of {MEL_SCALES}, not {scale!r}")
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return torch.where(mel >= min_log_mel, min_log_hz * torch.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(
    sample_rate: float,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    *,
    scale: str = "slaney",
    norm: str | None = "slaney",
    triangles: str = "hz",
) -> Tensor:
    """Triangular mel filters as a (n_fft // 2 + 1, n_mels) float64 matrix: `spectrum @ bank` is
    the mel spectrum. Band edges are n_mels + 2 points equally spaced in mel from fmin to fmax
    (default: Nyquist); FFT bin k sits at k * sample_rate / n_fft.

    - `triangles="hz"`: each filter is linear in Hz between its edges -- librosa.filters.mel and
      torchaudio.functional.melscale_fbanks (PANNs: scale "slaney", norm "slaney");
    - `triangles="mel"`: linear in mel -- HTK, TensorFlow's linear_to_mel_weight_matrix and
      VGGish's mel_features (scale "htk", norm None);
    - `norm="slaney"` divides each filter by half its width in Hz (constant energy per band);
      None leaves peaks at 1.

    The DC bin gets weight 0 (fmin >= 0), as HTK requires.
    """
    # hand-written: torchaudio's melscale_fbanks works in float32 and differs from librosa's banks by
    # up to 9e-6 (this matches librosa to 1e-10), and has no linear-in-mel triangles (VGGish's)
    nyquist = sample_rate / 2
    fmax = nyquist if fmax is None else fmax
    if not 0.0 <= fmin < fmax <= nyquist:
        raise ValueError(f"mel band edges must satisfy 0 <= fmin < fmax <= {nyquist}, got {fmin}, {fmax}")
    if norm not in ("slaney", None) or triangles not in ("hz", "mel"):
        raise ValueError(f"norm must be 'slaney' or None and triangles 'hz' or 'mel', not {norm!r}, {triangles!r}")
    f64 = torch.float64
    fft_freqs = torch.linspace(0.0, nyquist, n_fft // 2 + 1, dtype=f64)
    edges_mel = torch.linspace(float(hz_to_mel(torch.tensor(float(fmin), dtype=f64), scale)),
                               float(hz_to_mel(torch.tensor(float(fmax), dtype=f64), scale)), n_mels + 2, dtype=f64)  # fmt: skip
    edges_hz = mel_to_hz(edges_mel, scale)
    edges, points = (edges_hz, fft_freqs) if triangles == "hz" else (edges_mel, hz_to_mel(fft_freqs, scale))
    width = edges[1:] - edges[:-1]
    ramps = edges[:, None] - points[None, :]
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (n_mels, bins)
    if norm == "slaney":
        weights = weights * (2.0 / (edges_hz[2 : n_mels + 2] - edges_hz[:n_mels]))[:, None]
    return weights.T.contiguous()


class MelSTFT(nn.Module):
    """PaSST's / EfficientAT's log-mel front end (AugmentMelSTFT in eval mode, no augmentation).

    x (batch, samples) -> (batch, n_mels, 1 + (samples - 1) // hop): pre-emphasis y[i] = x[i+1] -
    0.97 x[i] (one sample shorter), |STFT|^2 with a symmetric Hann window of `win_length` zero-padded
    to `n_fft` and centred frames (reflect padding), Kaldi mel banks, log(m + 1e-5), (. + 4.5) / 5.
    """

    def __init__(
        self,
        n_mels: int = 128,
        sample_rate: int = 32000,
        win_length: int = 800,
        hop: int = 320,
        n_fft: int = 1024,
        fmin: float = 0.0,
        fmax: float | None = None,
        preemphasis: float = 0.97,
        log_offset: float = 1e-5,
        shift: float = 4.5,
        scale: float = 5.0,
        fmax_aug_range: int = 2000,
    ):
        super().__init__()
        if fmax is None:  # the reference's default: Nyquist minus half the (training) augmentation range
            fmax = sample_rate // 2 - fmax_aug_range // 2
        self.n_mels, self.sample_rate, self.win_length, self.hop, self.n_fft = n_mels, sample_rate, win_length, hop, n_fft
        self.fmin, self.fmax = float(fmin), float(fmax)
        self.preemphasis, self.log_offset, self.shift, self.scale = preemphasis, log_offset, shift, scale
        self.register_buffer("window", torch.hann_window(win_length, periodic=False), persistent=False)
        self.register_buffer("mel_banks", kaldi_mel_banks(n_mels, n_fft, sample_rate, self.fmin, self.fmax), persistent=False)
        self.register_buffer("emphasis", torch.tensor([[[-preemphasis, 1.0]]]), persistent=False)

    def frames(self, samples: int) -> int:
        """Frames produced for an input of `samples` samples."""
        return 1 + (samples - 1) // self.hop

    def forward(self, x: Tensor) -> Tensor:
        # the reference's own ops: a 2-tap conv1d (torchaudio's preemphasis is the same floats, shifted
        # by one sample, but no core dependency) and re^2 + im^2 of the complex STFT
        x = F.conv1d(x.unsqueeze(1), self.emphasis.to(x.dtype)).squeeze(1)
        spec = torch.stft(
            x, self.n_fft, hop_length=self.hop, win_length=self.win_length, window=self.window.to(x.dtype),
            center=True, normalized=False, return_complex=True,
        )
        power = torch.view_as_real(spec).pow(2).sum(dim=-1)
        with torch.autocast(device_type=x.device.type, enabled=False):
            mel = torch.matmul(self.mel_banks.float(), power.float())
        mel = (mel + self.log_offset).log()
        return (mel + self.shift) / self.scale

    def extra_repr(self) -> str:
        return f"n_mels={self.n_mels}, sr={self.sample_rate}, win={self.win_length}, hop={self.hop}, n_fft={self.n_fft}, fmax={self.fmax}"


# ---- torchlibrosa's STFT, dB (PANNs) ----------------------------------------------------------------


def dft_kernels(n_fft: int) -> tuple[Tensor, Tensor]:
    """torchlibrosa's STFT conv kernels, (n_fft // 2 + 1, 1, n_fft) each, in float64: real and
    imaginary parts of exp(-2 pi i k n / N) times a periodic Hann window. `STFTPower` does not use
    them; a converter compares a checkpoint's frozen copy (PANNs' `spectrogram_extractor.stft.*`)
    with them. The phase k n is reduced mod N before scaling, so high bins keep full precision."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    angle = 2 * math.pi * torch.remainder(k[:, None] * n[None, :], n_fft) / n_fft
    return (torch.cos(angle) * window)[:, None, :], (-torch.sin(angle) * window)[:, None, :]


class STFTPower(nn.Module):
    """torchlibrosa's `Spectrogram` (power 2): (batch, samples) -> (batch, 1 + samples // hop, n_fft // 2 + 1).

    Frames of n_fft samples every `hop`, centred (reflect padding of n_fft // 2 on both sides, so
    frame j is centred on sample j*hop; needs samples > n_fft // 2), periodic Hann window, re^2 +
    im^2. torchlibrosa computes it as a strided Conv1d with the `dft_kernels`; torch.stft gives the
    same spectrum 1.3-3.5x faster on one CPU thread and closer to a float64 STFT (max. relative
    error 4e-7, the Conv1d's 4e-6). The window is a non-persistent buffer, never stored with weights.
    """

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True, dtype=torch.float64).float(), persistent=False)

    def frames(self, samples: int) -> int:
        """Frames produced for an input of `samples` samples."""
        return 1 + samples // self.hop

    def forward(self, audio: Tensor) -> Tensor:
        with torch.autocast(device_type=audio.device.type, enabled=False):
            spec = torch.stft(audio.float(), self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect", return_complex=True)
            return torch.view_as_real(spec).pow(2).sum(dim=-1).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, hop={self.hop}"


def power_to_db(power: Tensor, amin: float = 1e-10, ref: float = 1.0, top_db: float | None = None) -> Tensor:
    """librosa's power_to_db for a batch: 10 log10(max(x, amin)) - 10 log10(max(ref, amin)); with
    `top_db`, floored at each row's (first axis) maximum minus top_db."""
    # hand-written: torchaudio's amplitude_to_DB is the same floats without top_db, but floors a
    # (batch, frames, bins) input at the whole batch's maximum; and torchaudio is no core dependency
    db = 10.0 * torch.log10(torch.clamp(power, min=amin)) - 10.0 * math.log10(max(ref, amin))
    if top_db is not None:
        if top_db < 0:
            raise ValueError(f"top_db must be non-negative, got {top_db}")
        peak = db.amax(dim=tuple(range(1, db.ndim)), keepdim=True) if db.ndim > 1 else db.amax()
        db = torch.maximum(db, peak - top_db)
    return db


class DBMelSpectrogram(nn.Module):
    """PANNs' frontend (torchlibrosa's `Spectrogram` + `LogmelFilterBank`), batched:
    (batch, samples) -> (batch, 1 + samples // hop, n_mels) in dB.

    `STFTPower` (n_fft, hop, centred), a mel filter bank (`mel_filterbank`; librosa's slaney
    scale and norm by default), `power_to_db` (ref 1, amin 1e-10, no top_db by default). The
    filter bank is a non-persistent float32 buffer `mel` (bins, n_mels), like the STFT window.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop: int,
        n_mels: int,
        fmin: float = 0.0,
        fmax: float | None = None,
        *,
        scale: str = "slaney",
        norm: str | None = "slaney",
        amin: float = 1e-10,
        top_db: float | None = None,
    ):
        super().__init__()
        self.stft = STFTPower(n_fft, hop)
        self.amin, self.top_db = amin, top_db
        self.register_buffer("mel", mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, scale=scale, norm=norm).float(), persistent=False)

    def frames(self, samples: int) -> int:
        """Frames produced for an input of `samples` samples."""
        return self.stft.frames(samples)

    def forward(self, audio: Tensor) -> Tensor:
        power = self.stft(audio)
        with torch.autocast(device_type=audio.device.type, enabled=False):
            return power_to_db(torch.matmul(power, self.mel), amin=self.amin, top_db=self.top_db)


# ---- VGGish ---------------------------------------------------------------------------------------


class VGGishLogMel(nn.Module):
    """VGGish's log-mel (`vggish_input.waveform_to_examples` before framing), batched:
    (batch, samples >= win_length) -> (batch, 1 + (samples - win_length) // hop, n_mels).

    Frames of `win_length` samples every `hop`, no padding; periodic Hann window; |rfft| zero-padded
    to n_fft (magnitude, not power); HTK mel filters (`mel_filterbank(scale="htk", norm=None,
    triangles=triangles)`: linear in mel is VGGish's mel_features matrix, "hz" torchaudio's, as
    torch-vggish-yamnet uses); log(mel + log_offset). The defaults are VGGish's (16 kHz,
    25 ms / 10 ms, 512, 64 bands 125-7500 Hz, offset 0.01); YAMNet's log offset is 0.001.
    `examples` frames the result into VGGish's 0.96 s examples.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        win_length: int = 400,
        hop: int = 160,
        n_fft: int = 512,
        n_mels: int = 64,
        fmin: float = 125.0,
        fmax: float = 7500.0,
        log_offset: float = 0.01,
        triangles: str = "mel",
    ):
        super().__init__()
        self.win_length, self.hop, self.n_fft, self.log_offset = win_length, hop, n_fft, log_offset
        window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)  # = mel_features.periodic_hann
        self.register_buffer("window", window.float(), persistent=False)
        bank = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, scale="htk", norm=None, triangles=triangles)
        self.register_buffer("mel", bank.float(), persistent=False)

    def frames(self, samples: int) -> int:
        """Frames produced for an input of `samples` samples (0 when shorter than one window)."""
        return max(0, 1 + (samples - self.win_length) // self.hop)

    def forward(self, audio: Tensor) -> Tensor:
        # hand-written: torch.stft would centre the short window in n_fft (a shift to undo by padding)
        # and is not faster here (1.05x on 1 s and 10 s batches)
        with torch.autocast(device_type=audio.device.type, enabled=False):
            frames = audio.float().unfold(-1, self.win_length, self.hop) * self.window
            magnitude = torch.fft.rfft(frames, n=self.n_fft).abs()
            return torch.log(magnitude @ self.mel + self.log_offset)

    def examples(self, audio: Tensor, frames: int = 96, hop: int = 96) -> Tensor:
        """(batch, samples) -> (batch, examples, frames, n_mels): the log-mel cut into examples of
        `frames` frames every `hop` frames, a trailing partial example dropped -- VGGish's 0.96 s
        non-overlapping examples by default, as waveform_to_examples returns them for one clip."""
        return self(audio).unfold(1, frames, hop).transpose(2, 3)

    def extra_repr(self) -> str:
        return f"win={self.win_length}, hop={self.hop}, n_fft={self.n_fft}, n_mels={self.mel.shape[1]}, log_offset={self.log_offset}"


# ---- Kaldi fbank (AST, BEATs) ------------------------------------------------------------------------

KALDI_WINDOWS = ("povey", "hanning", "hamming", "rectangular", "blackman")


def kaldi_window(kind: str, size: int, blackman_coeff: float = 0.42) -> Tensor:
    """Kaldi's analysis windows in float32, built with the same torch ops as torchaudio's so the
    floats agree: symmetric Hann ("hanning"), its 0.85th power ("povey"), symmetric Hamming,
    rectangular, and Kaldi's generalised Blackman."""
    if kind == "hanning":
        return torch.hann_window(size, periodic=False)
    if kind == "povey":
        return torch.hann_window(size, periodic=False).pow(0.85)
    if kind == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46)
    if kind == "rectangular":
        return torch.ones(size)
    if kind == "blackman":
        phase = 2 * math.pi / (size - 1) * torch.arange(size, dtype=torch.float32)
        return blackman_coeff - 0.5 * torch.cos(phase) + (0.5 - blackman_coeff) * torch.cos(2 * phase)
    raise ValueError(f"window must be one of {KALDI_WINDOWS}, not {kind!r}")


class KaldiFbank(nn.Module):
    """Kaldi's log mel filter bank (`compute-fbank-feats`, as `torchaudio.compliance.kaldi.fbank`
    computes it for one clip), batched: (batch, samples) -> (batch, frames, n_mels), float32.

    Per frame of `frame_length` ms every `frame_shift` ms: remove the frame's mean (remove_dc_offset),
    pre-emphasis x[j] - p x[j-1] inside the frame (its first sample against itself), the window,
    zero-padding to the next power of two, |rfft|^2 (|rfft| with use_power=False), Kaldi mel banks
    (`kaldi_mel_banks`, low_freq..high_freq, high_freq <= 0 counting down from Nyquist), and
    log(max(x, float32 eps)). The defaults are torchaudio's (povey window, 20 Hz to Nyquist, 0.97,
    snip_edges); AST uses window="hanning", BEATs the defaults on waveform * 2**15, both 128 bins at
    16 kHz. Not supported (none of the zoo's models use them): dither, the energy column
    (use_energy), VTLN warping, subtract_mean.
    """

    # hand-written: torch.stft has no per-frame DC removal or in-frame pre-emphasis, and torchaudio
    # is no core dependency and goes one clip at a time (its fbank takes a single waveform)

    def __init__(
        self,
        n_mels: int,
        sample_rate: float = 16000.0,
        frame_length: float = 25.0,
        frame_shift: float = 10.0,
        window: str = "povey",
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        preemphasis: float = 0.97,
        remove_dc_offset: bool = True,
        round_to_power_of_two: bool = True,
        snip_edges: bool = True,
        use_power: bool = True,
        blackman_coeff: float = 0.42,
    ):
        super().__init__()
        # Kaldi truncates the millisecond products to whole samples
        self.win_length = int(sample_rate * frame_length * 0.001)
        self.hop = int(sample_rate * frame_shift * 0.001)
        self.n_fft = 1 << (self.win_length - 1).bit_length() if round_to_power_of_two else self.win_length
        if self.win_length < 2 or self.hop < 1 or self.n_fft % 2:
            raise ValueError(f"frames of {self.win_length} samples every {self.hop} with an FFT of {self.n_fft}: "
                             "need >= 2 samples, a positive shift and an even FFT size")  # fmt: skip
        if not 0.0 <= preemphasis <= 1.0:
            raise ValueError(f"preemphasis must lie in [0, 1], got {preemphasis}")
        self.n_mels, self.sample_rate, self.window_kind = n_mels, float(sample_rate), window
        self.low_freq, self.high_freq, self.preemphasis = float(low_freq), float(high_freq), float(preemphasis)
        self.remove_dc_offset, self.snip_edges, self.use_power = remove_dc_offset, snip_edges, use_power
        self.register_buffer("window", kaldi_window(window, self.win_length, blackman_coeff), persistent=False)
        # (bins, n_mels): the Nyquist row is zero, as Kaldi's
        banks = kaldi_mel_banks(n_mels, self.n_fft, self.sample_rate, self.low_freq, self.high_freq)
        self.register_buffer("mel", banks.T.contiguous(), persistent=False)

    def frames(self, samples: int) -> int:
        """Frames produced for an input of `samples` samples: with snip_edges only whole frames,
        1 + (samples - win_length) // hop (1 + (samples - 400) // 160 at 16 kHz, 25 / 10 ms; 0 when
        shorter than a frame, which `forward` refuses); otherwise (samples + hop // 2) // hop."""
        if self.snip_edges:
            return max(0, 1 + (samples - self.win_length) // self.hop)
        return (samples + self.hop // 2) // self.hop

    def _framed(self, audio: Tensor) -> Tensor:
        """(batch, samples) -> (batch, frames, win_length), Kaldi's framing."""
        if self.snip_edges:
            return audio.unfold(-1, self.win_length, self.hop)
        # Kaldi mirrors the ends including the edge sample ([2, 1, 0 | 0, 1, 2 ...]), unlike F.pad's
        # "reflect"; frame j is centred on sample j * hop + hop // 2
        samples, pad = audio.shape[-1], self.win_length // 2 - self.hop // 2
        flipped = audio.flip(-1)
        if pad > 0:
            audio = torch.cat((flipped[:, samples - pad :], audio, flipped), dim=-1)
        else:  # a shift longer than the frame: skip the first -pad samples
            audio = torch.cat((audio[:, -pad:], flipped), dim=-1)
        return audio.unfold(-1, self.win_length, self.hop)[:, : self.frames(samples)]

    def forward(self, audio: Tensor) -> Tensor:
        if audio.ndim != 2:
            raise ValueError(f"expected (batch, samples), got shape {tuple(audio.shape)}")
        if audio.shape[-1] < self.win_length:
            raise ValueError(f"Kaldi's fbank needs at least one frame of {self.win_length} samples, got {audio.shape[-1]}")
        with torch.autocast(device_type=audio.device.type, enabled=False):
            frames = self._framed(audio.float())
            if self.remove_dc_offset:
                frames = frames - frames.mean(dim=-1, keepdim=True)
            if self.preemphasis != 0.0:
                previous = torch.cat((frames[..., :1], frames[..., :-1]), dim=-1)
                frames = frames - self.preemphasis * previous
            spectrum = torch.fft.rfft(frames * self.window, n=self.n_fft)
            # re^2 + im^2 is 3x faster than torchaudio's |X|.pow(2) (a hypot, then a square) and a few ulps off it
            spectrum = spectrum.real.square() + spectrum.imag.square() if self.use_power else spectrum.abs()
            mel = torch.matmul(spectrum, self.mel)
            return torch.clamp(mel, min=torch.finfo(torch.float32).eps).log()

    def extra_repr(self) -> str:
        return (f"n_mels={self.n_mels}, sr={self.sample_rate:g}, win={self.win_length}, hop={self.hop}, n_fft={self.n_fft}, "
                f"window={self.window_kind}, freqs=({self.low_freq:g}, {self.high_freq:g}), snip_edges={self.snip_edges}")  # fmt: skip


# ---- Whisper ------------------------------------------------------------------------------------------


class WhisperLogMel(nn.Module):
    """Whisper's log-mel (openai-whisper's `log_mel_spectrogram`, transformers'
    `WhisperFeatureExtractor`), batched: (batch, samples) -> (batch, n_mels, samples // hop), float32.

    Centred STFT (reflect padding; needs samples > n_fft // 2) with a periodic Hann window, the last
    frame dropped, |X|^2, slaney mel filters up to 8 kHz (`mel_filterbank`, librosa's = Whisper's),
    log10(max(x, 1e-10)), then floored at 8 below its maximum -- the maximum of each clip (row) --
    and (x + 4) / 4. The reference pads every clip with zeros to 30 s before all this, so its floor
    is the maximum over the padded clip and its output has 3000 frames: `pad_to=480000` reproduces
    it (clips longer than `pad_to` are refused, not cut); the default `pad_to=None` pads nothing, so
    a short clip's frames and floor are its own (they differ from the reference's first frames in
    the last frame, whose reflect padding differs, and wherever the floor bites).
    """

    def __init__(
        self,
        n_mels: int = 80,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop: int = 160,
        fmax: float = 8000.0,
        pad_to: int | None = None,
        floor_db: float = 8.0,
    ):
        super().__init__()
        self.n_mels, self.n_fft, self.hop, self.pad_to, self.floor_db = n_mels, n_fft, hop, pad_to, floor_db
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        bank = mel_filterbank(sample_rate, n_fft, n_mels, 0.0, fmax, scale="slaney", norm="slaney")
        self.register_buffer("mel", bank.T.float().contiguous(), persistent=False)  # (n_mels, bins)

    def frames(self, samples: int) -> int:
        """Frames produced for an input of `samples` samples: samples // hop (3000 with pad_to=480000)."""
        return (self.pad_to if self.pad_to is not None else samples) // self.hop

    def forward(self, audio: Tensor) -> Tensor:
        if audio.ndim != 2:
            raise ValueError(f"expected (batch, samples), got shape {tuple(audio.shape)}")
        samples = audio.shape[-1]
        if self.pad_to is not None:
            if samples > self.pad_to:
                raise ValueError(f"got {samples} samples, more than pad_to={self.pad_to}: window long audio first")
            audio = F.pad(audio, (0, self.pad_to - samples))
        if audio.shape[-1] <= self.n_fft // 2:
            raise ValueError(f"Whisper's centred STFT needs more than {self.n_fft // 2} samples, got {audio.shape[-1]}")
        with torch.autocast(device_type=audio.device.type, enabled=False):
            spec = torch.stft(audio.float(), self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect", return_complex=True)
            power = spec[..., :-1].abs().pow(2)
            log_mel = torch.clamp(torch.matmul(self.mel, power), min=1e-10).log10()
            peak = log_mel.amax(dim=(1, 2), keepdim=True)
            return (torch.maximum(log_mel, peak - self.floor_db) + 4.0) / 4.0

    def extra_repr(self) -> str:
        return f"n_mels={self.n_mels}, n_fft={self.n_fft}, hop={self.hop}, pad_to={self.pad_to}"
