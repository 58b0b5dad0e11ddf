"""Spectrogram front ends in plain torch: batched, on any device, no torchaudio needed.

- `kaldi_mel_banks`: Kaldi's triangular mel filter bank (as `torchaudio.compliance.kaldi.get_mel_banks`
  builds it, without VTLN warping), reproduced op for op so it matches in float32;
- `MelSTFT`: pre-emphasis -> STFT power -> mel -> log -> affine normalisation, the eval-mode
  `AugmentMelSTFT` of PaSST (hear21passt) and EfficientAT, parameterised for their variants.

Output layout of `MelSTFT`: (batch, n_mels, frames), frame k centred on sample k*hop of the
pre-emphasised signal (STFT `center=True`).
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
