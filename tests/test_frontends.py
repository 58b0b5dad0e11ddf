"""embedzoo.frontends against the references: Kaldi mel banks (torchaudio.compliance.kaldi) and
PaSST's AugmentMelSTFT in eval mode (hear21passt), in float32, for every STFT hop PaSST ships; the
generic mel filter banks against librosa and torchaudio (independent oracles, both triangle kinds),
the STFT power against a float64 numpy DFT and torchlibrosa, torchlibrosa's conv kernels, PANNs'
log-mel against torchlibrosa's, power_to_db against librosa, VGGish's example framing against
torchvggish, and the float32 guarantee under autocast. (The PANNs and VGGish plugins' tests check
DBMelSpectrogram and VGGishLogMel end to end against panns_hear and torchvggish.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedzoo.frontends import (
    DBMelSpectrogram,
    MelSTFT,
    STFTPower,
    VGGishLogMel,
    dft_kernels,
    hz_to_mel,
    kaldi_mel_banks,
    mel_filterbank,
    mel_to_hz,
    power_to_db,
)

torchaudio = pytest.importorskip("torchaudio")


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert tuple(ours.shape) == tuple(ref.shape), (tuple(ours.shape), tuple(ref.shape))
    return float((ours.double() - ref.double()).abs().max() / ref.double().abs().max())


@pytest.mark.parametrize("n_mels,fmin,fmax", [(128, 0.0, 15000.0), (64, 50.0, 14000.0)])
def test_kaldi_mel_banks_match_torchaudio(n_mels: int, fmin: float, fmax: float) -> None:
    ref, _ = torchaudio.compliance.kaldi.get_mel_banks(n_mels, 1024, 32000, fmin, fmax, 100.0, -500.0, 1.0)
    ours = kaldi_mel_banks(n_mels, 1024, 32000, fmin, fmax)
    assert ours.shape == (n_mels, 513)
    assert torch.equal(ours[:, :512], ref.float()) and not ours[:, 512].any()


@pytest.mark.parametrize("hop", [320, 160, 100])
def test_melstft_matches_hear21passt(hop: int) -> None:
    preprocess = pytest.importorskip("hear21passt.models.preprocess")
    ref = preprocess.AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=hop, n_fft=1024, freqm=48,
                                    timem=192, htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10,
                                    fmax_aug_range=2000).eval()
    ours = MelSTFT(hop=hop)
    assert ours.fmax == ref.fmax == 15000
    audio = 0.3 * torch.randn(3, 34241, generator=torch.Generator().manual_seed(hop))
    with torch.no_grad():
        expected = ref(audio)
        got = ours(audio)
    assert got.shape == (3, 128, ours.frames(34241))
    assert rel_err(got, expected) < 1e-5
    # batched: each row alone gives the same
    assert rel_err(ours(audio[1:2]), expected[1:2]) < 1e-5


def test_melstft_rejects_bad_band() -> None:
    with pytest.raises(ValueError, match="fmin"):
        kaldi_mel_banks(128, 1024, 32000, 16000.0, 15000.0)


# ---- generic mel filter banks, STFT power, dB (PANNs' and VGGish's building blocks) ----------------

BANKS = [(32000, 1024, 64, 50.0, 14000.0), (16000, 512, 64, 50.0, 8000.0), (48000, 2048, 128, 0.0, None), (22050, 2048, 40, 300.0, 9000.0)]


@pytest.mark.parametrize("scale", ["slaney", "htk"])
@pytest.mark.parametrize("norm", ["slaney", None])
@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", BANKS)
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax, scale, norm) -> None:
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=scale == "htk", norm=norm, dtype=np.float64)
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, scale=scale, norm=norm)
    assert ours.dtype == torch.float64 and ours.shape == (n_fft // 2 + 1, n_mels)
    assert rel_err(ours, torch.from_numpy(ref).T) < 1e-10
    assert not ours[0].any() and (ours.sum(dim=0) > 0).all()  # DC bin unused; no empty band


@pytest.mark.parametrize("scale", ["slaney", "htk"])
@pytest.mark.parametrize("norm", ["slaney", None])
def test_mel_filterbank_matches_torchaudio(scale, norm) -> None:
    ref = torchaudio.functional.melscale_fbanks(513, 50.0, 14000.0, 64, 32000, norm=norm, mel_scale=scale)  # float32
    ours = mel_filterbank(32000, 1024, 64, 50.0, 14000.0, scale=scale, norm=norm)
    assert rel_err(ours, ref) < 1e-5


@pytest.mark.parametrize("n_mels,fmin,fmax", [(64, 125.0, 7500.0), (128, 20.0, 8000.0)])
def test_mel_triangles_match_kaldi(n_mels, fmin, fmax) -> None:
    """`triangles="mel"` (HTK / VGGish) is Kaldi's construction: triangles linear in 1127 ln(1 + f/700)."""
    ref, _ = torchaudio.compliance.kaldi.get_mel_banks(n_mels, 512, 16000, fmin, fmax, 100.0, -500.0, 1.0)  # (n_mels, 256) float32
    ours = mel_filterbank(16000, 512, n_mels, fmin, fmax, scale="htk", norm=None, triangles="mel")
    # Kaldi works in float32 on mel values of ~3000: its weights carry ~1e-5 of rounding (eps(3000) / band width)
    assert rel_err(ours[:256], ref.T) < 3e-5
    assert not ours[256].any()  # Nyquist: Kaldi's column is zero; here fmax <= Nyquist puts no weight there
    assert rel_err(ours.float(), kaldi_mel_banks(n_mels, 512, 16000, fmin, fmax).T) < 3e-5


def test_mel_triangles_match_vggish_mel_matrix() -> None:
    mel_features = pytest.importorskip("torchvggish.mel_features")
    ref = mel_features.spectrogram_to_mel_matrix(64, 257, 16000, 125.0, 7500.0)
    ours = mel_filterbank(16000, 512, 64, 125.0, 7500.0, scale="htk", norm=None, triangles="mel")
    assert rel_err(ours, torch.from_numpy(ref)) < 1e-12


@pytest.mark.parametrize("scale", ["slaney", "htk"])
def test_mel_scales_match_librosa_and_invert(scale) -> None:
    librosa = pytest.importorskip("librosa")
    freqs = torch.tensor([0.0, 20.0, 440.0, 999.0, 1000.0, 1001.0, 4000.0, 16000.0, 24000.0], dtype=torch.float64)
    mels = hz_to_mel(freqs, scale)
    assert rel_err(mels, torch.from_numpy(np.asarray(librosa.hz_to_mel(freqs.numpy(), htk=scale == "htk")))) < 1e-12
    assert torch.allclose(mel_to_hz(mels, scale), freqs, rtol=1e-12, atol=1e-9)


def test_mel_filterbank_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="fmin"):
        mel_filterbank(16000, 512, 64, 125.0, 9000.0)
    with pytest.raises(ValueError, match="mel scale"):
        mel_filterbank(16000, 512, 64, scale="kaldi")
    with pytest.raises(ValueError, match="triangles"):
        mel_filterbank(16000, 512, 64, triangles="bark")


def numpy_stft_power(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """The centred (reflect) STFT power with a periodic Hann window, in float64 numpy: (batch, frames, bins)."""
    padded = np.pad(audio, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2


def tone_and_noise(rows: int, samples: int, seed: int) -> torch.Tensor:
    """A different tone per row in a little noise, plus a quiet row."""
    t = torch.arange(samples) / 16000
    audio = 0.05 * torch.randn(rows, samples, generator=torch.Generator().manual_seed(seed))
    audio += 0.3 * torch.sin(2 * torch.pi * (200 + 300 * torch.arange(rows)[:, None]) * t)
    audio[-1] *= 1e-3
    return audio


@pytest.mark.parametrize("n_fft,hop", [(1024, 320), (512, 160), (400, 100)])
@pytest.mark.parametrize("samples", [12345, 160000])
def test_stft_power_matches_float64_dft(n_fft, hop, samples) -> None:
    """torchlibrosa's Conv1d STFT is the centred (reflect) STFT with a periodic Hann window: here by
    torch.stft, within 1e-6 of float64 (the Conv1d's own error grows to 4e-6 on long inputs)."""
    audio = tone_and_noise(3, samples, n_fft)
    stft = STFTPower(n_fft, hop)
    ours = stft(audio)
    assert ours.dtype == torch.float32 and ours.shape == (3, stft.frames(samples), n_fft // 2 + 1)
    expected = torch.from_numpy(numpy_stft_power(audio.double().numpy(), n_fft, hop))
    assert rel_err(ours, expected) < 1e-6
    assert rel_err(ours[-1], expected[-1]) < 1e-6  # the quiet row on its own scale
    assert rel_err(stft(audio[1:2]), expected[1:2]) < 1e-6  # each row alone gives the same


def test_stft_power_matches_torchlibrosa() -> None:
    stft = pytest.importorskip("torchlibrosa.stft")
    ref = stft.Spectrogram(n_fft=1024, hop_length=320, win_length=1024, window="hann", center=True, pad_mode="reflect", freeze_parameters=True)
    audio = 0.3 * torch.randn(2, 32000, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = ref(audio)[:, 0]  # (batch, 1, frames, bins)
    assert rel_err(STFTPower(1024, 320)(audio), expected) < 1e-5


@pytest.mark.parametrize("n_fft", [1024, 512])
def test_dft_kernels_match_torchlibrosa(n_fft) -> None:
    """What the PANNs converter checks a checkpoint's frozen STFT weights against (atol 1e-6)."""
    stft = pytest.importorskip("torchlibrosa.stft")
    ref = stft.STFT(n_fft=n_fft, hop_length=n_fft // 4, window="hann", center=True, pad_mode="reflect", freeze_parameters=True)
    real, imag = dft_kernels(n_fft)
    assert real.shape == imag.shape == ref.conv_real.weight.shape == (n_fft // 2 + 1, 1, n_fft)
    assert (real.float() - ref.conv_real.weight).abs().max() < 1e-6
    assert (imag.float() - ref.conv_imag.weight).abs().max() < 1e-6


@pytest.mark.parametrize("sr,n_fft,hop,fmax", [(32000, 1024, 320, 14000.0), (16000, 512, 160, 8000.0)])
def test_db_mel_spectrogram_matches_torchlibrosa(sr, n_fft, hop, fmax) -> None:
    """PANNs' log-mel: torchlibrosa's Spectrogram + LogmelFilterBank(top_db=None), as panns_hear builds it."""
    stft = pytest.importorskip("torchlibrosa.stft")
    spectrogram = stft.Spectrogram(n_fft=n_fft, hop_length=hop, win_length=n_fft, window="hann", center=True, pad_mode="reflect", freeze_parameters=True)
    logmel = stft.LogmelFilterBank(sr=sr, n_fft=n_fft, n_mels=64, fmin=50, fmax=fmax, ref=1.0, amin=1e-10, top_db=None, freeze_parameters=True)
    audio = tone_and_noise(3, 3 * sr, sr)
    audio[0, sr : sr + sr // 5] = 0.0  # exact silence: the -100 dB floor
    with torch.no_grad():
        expected = logmel(spectrogram(audio))[:, 0]
    ours = DBMelSpectrogram(sr, n_fft, hop, 64, 50.0, fmax)(audio)
    assert ours.shape == expected.shape == (3, 1 + 3 * sr // hop, 64)
    assert rel_err(ours, expected) < 1e-5


@pytest.mark.parametrize("top_db", [None, 80.0])
@pytest.mark.parametrize("ref_power", [1.0, 0.5])
def test_power_to_db_matches_librosa(top_db, ref_power) -> None:
    librosa = pytest.importorskip("librosa")
    g = torch.Generator().manual_seed(1)
    power = torch.rand(3, 50, 64, generator=g, dtype=torch.float64) ** 12  # spans ~15 decades
    power[0, :5] = 0.0  # silence: the amin floor
    ours = power_to_db(power, amin=1e-10, ref=ref_power, top_db=top_db)
    for row in range(3):  # librosa floors at the array's maximum: one clip at a time
        expected = librosa.power_to_db(power[row].numpy(), ref=ref_power, amin=1e-10, top_db=top_db)
        assert rel_err(ours[row], torch.from_numpy(expected)) < 1e-12
    with pytest.raises(ValueError, match="top_db"):
        power_to_db(power, top_db=-1.0)


def test_vggish_examples_match_waveform_to_examples() -> None:
    """Framing into 0.96 s examples: one clip of 3.5 s gives torchvggish's three examples."""
    vggish_input = pytest.importorskip("torchvggish.vggish_input")
    audio = 0.3 * torch.randn(56000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = vggish_input.waveform_to_examples(audio.numpy(), 16000).detach()[:, 0]  # (3, 96, 64)
    frontend = VGGishLogMel()
    ours = frontend.examples(audio[None])
    assert frontend.frames(56000) == 348 and ours.shape == (1, 3, 96, 64)
    assert rel_err(ours[0], expected) < 1e-5


@pytest.mark.parametrize("name", ["stft", "db_mel", "vggish"])
def test_frontends_stay_float32_under_autocast(name) -> None:
    frontend = {"stft": lambda: STFTPower(512, 160), "db_mel": lambda: DBMelSpectrogram(16000, 512, 160, 64, 50.0, 8000.0),
                "vggish": VGGishLogMel}[name]()  # fmt: skip
    audio = 0.3 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(3))
    exact = frontend(audio)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        cast = frontend(audio.bfloat16())
    assert cast.dtype == torch.float32
    assert rel_err(cast, frontend(audio.bfloat16().float())) < 1e-6 and exact.shape == cast.shape


# ---- Kaldi fbank (AST, BEATs) against torchaudio.compliance.kaldi.fbank, clip by clip ----------------

from embedzoo.frontends import KaldiFbank, WhisperLogMel  # noqa: E402

# (name, torchaudio.compliance.kaldi.fbank keywords, the same for KaldiFbank, input gain)
KALDI_SETTINGS = [
    # ASTFeatureExtractor (and the original AST code's extra keywords, no-ops here)
    ("ast", dict(sample_frequency=16000, window_type="hanning", num_mel_bins=128, htk_compat=True, use_energy=False,
                 dither=0.0, frame_shift=10), dict(n_mels=128, window="hanning"), 1.0),
    # BEATs: int16-scaled input, Kaldi's defaults otherwise
    ("beats", dict(num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10), dict(n_mels=128), 2.0**15),
    ("kaldi_defaults", dict(num_mel_bins=23), dict(n_mels=23), 1.0),
    ("centred_frames", dict(num_mel_bins=40, snip_edges=False), dict(n_mels=40, snip_edges=False), 1.0),
    # a shift longer than half the frame (Kaldi's negative-padding branch), magnitude, Blackman
    ("long_shift", dict(num_mel_bins=40, window_type="blackman", frame_length=20, frame_shift=30, snip_edges=False, use_power=False),
     dict(n_mels=40, window="blackman", frame_length=20, frame_shift=30, snip_edges=False, use_power=False), 1.0),
    # windows not zero at the frame's first sample: pre-emphasis of that sample (against itself) shows
    ("hamming", dict(num_mel_bins=40, window_type="hamming"), dict(n_mels=40, window="hamming"), 1.0),
    ("rectangular", dict(num_mel_bins=40, window_type="rectangular", preemphasis_coefficient=0.5),
     dict(n_mels=40, window="rectangular", preemphasis=0.5), 1.0),
    ("plain", dict(num_mel_bins=64, window_type="hamming", preemphasis_coefficient=0.0, remove_dc_offset=False,
                   round_to_power_of_two=False, low_freq=100.0, high_freq=-400.0, sample_frequency=8000),
     dict(n_mels=64, sample_rate=8000, window="hamming", preemphasis=0.0, remove_dc_offset=False, round_to_power_of_two=False,
          low_freq=100.0, high_freq=-400.0), 1.0),
]  # fmt: skip


@pytest.mark.parametrize("name,reference,ours,gain", KALDI_SETTINGS, ids=[s[0] for s in KALDI_SETTINGS])
@pytest.mark.parametrize("samples", [400, 401, 559, 560, 16000, 24321])
def test_kaldi_fbank_matches_torchaudio(name, reference, ours, gain, samples) -> None:
    """Tones in noise, a quiet row and a silent one (the log(eps) floor), each row against torchaudio's
    fbank of that clip alone; 400 samples is the shortest input at 16 kHz (one 25 ms frame)."""
    frontend = KaldiFbank(**ours)
    audio = gain * tone_and_noise(4, samples, samples)
    audio[0, : samples // 2] += 0.2  # a DC step: remove_dc_offset has something to remove
    audio[-2] = 0.0
    got = frontend(audio)
    assert got.dtype == torch.float32 and got.shape == (4, frontend.frames(samples), ours["n_mels"])
    for row in range(4):
        expected = torchaudio.compliance.kaldi.fbank(audio[row : row + 1], **reference)
        assert rel_err(got[row], expected) < 1e-5, row
    assert torch.equal(got[-2], torch.full_like(got[-2], np.log(np.finfo(np.float32).eps)))


def test_kaldi_fbank_frame_counts() -> None:
    ast = KaldiFbank(128, window="hanning")
    assert (ast.win_length, ast.hop, ast.n_fft) == (400, 160, 512)
    assert [ast.frames(n) for n in (399, 400, 559, 560, 16000, 160000)] == [0, 1, 1, 2, 98, 998]
    assert ast.frames(163840 + 240) == 1024  # AST's 10.24 s: 1024 frames
    centred = KaldiFbank(23, snip_edges=False)
    assert [centred.frames(n) for n in (400, 16000, 16079, 16080)] == [3, 100, 100, 101]
    with pytest.raises(ValueError, match="at least one frame"):
        ast(torch.zeros(2, 399))
    with pytest.raises(ValueError, match="window"):
        KaldiFbank(23, window="hann")


def test_kaldi_fbank_matches_ast_feature_extractor() -> None:
    """transformers' ASTFeatureExtractor (torchaudio path) before its padding and normalisation."""
    transformers = pytest.importorskip("transformers")
    extractor = transformers.ASTFeatureExtractor(do_normalize=False, max_length=100)
    audio = tone_and_noise(2, 16000, 7)
    expected = extractor(list(audio.numpy()), sampling_rate=16000, return_tensors="pt").input_values  # (2, 100, 128)
    got = KaldiFbank(128, window="hanning")(audio)  # 98 frames; the extractor pads 2 rows of zeros
    assert rel_err(got, expected[:, :98]) < 1e-5 and not expected[:, 98:].any()


# ---- Whisper's log-mel against transformers' WhisperFeatureExtractor --------------------------------


def whisper_audio(samples: int, seed: int) -> torch.Tensor:
    """A loud tone in noise, a quiet noise row (-60 dB) and silence."""
    audio = 0.1 * torch.randn(3, samples, generator=torch.Generator().manual_seed(seed))
    audio[0] += 0.5 * torch.sin(2 * torch.pi * 440 * torch.arange(samples) / 16000)
    audio[1] *= 1e-3
    audio[2] = 0.0
    return audio


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("samples", [201, 202, 1000, 12345, 16000])
def test_whisper_log_mel_matches_transformers(n_mels, samples) -> None:
    """Unpadded (pad_to=None) against the extractor's torch and numpy paths on each clip alone, and
    padded (pad_to=480000) against the extractor's own call, which pads to 30 s. 201 samples is the
    shortest input (the centred STFT reflects 200 samples)."""
    transformers = pytest.importorskip("transformers")
    extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    audio = whisper_audio(samples, samples + n_mels)
    unpadded, padded = WhisperLogMel(n_mels), WhisperLogMel(n_mels, pad_to=480000)
    got, got_padded = unpadded(audio), padded(audio)
    assert got.shape == (3, n_mels, unpadded.frames(samples)) == (3, n_mels, samples // 160)
    assert got_padded.shape == (3, n_mels, padded.frames(samples)) == (3, n_mels, 3000)
    for row in range(3):
        clip = audio[row].numpy()
        torch_path = torch.from_numpy(extractor._torch_extract_fbank_features(clip[None]))[0]
        # the numpy path computes in float64 and rounds at the end: a float32 STFT (ours, and the
        # torch path's, the same floats) is up to 2e-5 off it in a loud tone's bands 80 dB down
        numpy_path = torch.from_numpy(extractor._np_extract_fbank_features(clip[None], "cpu"))[0]
        assert rel_err(got[row], torch_path) < 1e-6, row
        assert rel_err(got[row], numpy_path) < 5e-5, row  # float32 against the numpy path's float64
    expected = extractor(list(audio.numpy()), sampling_rate=16000, return_tensors="pt").input_features  # batch, padded to 30 s
    assert rel_err(got_padded, expected) < 1e-6
    for row in range(3):  # the floor is each clip's own: padded rows equal the clip alone
        assert rel_err(padded(audio[row : row + 1])[0], expected[row]) < 1e-6
    # silence: log10(1e-10) everywhere, both floors at -10 -> (-10 + 4) / 4
    assert torch.equal(got[2], torch.full_like(got[2], -1.5)) and torch.equal(got_padded[2], torch.full_like(got_padded[2], -1.5))
    # the floor is per clip (8 below its maximum, 2 after the scaling): the quiet clip goes below the
    # loud clip's floor, as it would not with one floor for the batch
    for row in range(2):
        assert got[row].min() >= got[row].max() - 2.0
    assert got[1].min() < got[0].max() - 2.5


@pytest.mark.parametrize("n_mels", [80, 128])
def test_whisper_log_mel_30s_matches_numpy_path(n_mels) -> None:
    """A full 30 s clip: no padding either way; the extractor's numpy path (float64 inside)."""
    transformers = pytest.importorskip("transformers")
    extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    audio = whisper_audio(480000, n_mels)[:2]
    expected = torch.from_numpy(extractor._np_extract_fbank_features(audio.numpy(), "cpu"))
    got = WhisperLogMel(n_mels)(audio)
    assert torch.equal(got, WhisperLogMel(n_mels, pad_to=480000)(audio)) and got.shape == (2, n_mels, 3000)
    for row in range(2):  # float32 against float64: 3.1e-5 seen with one thread per worker (the float32 torch path agrees within 1e-6, above)
        assert rel_err(got[row], expected[row]) < 5e-5


def test_whisper_log_mel_filters_and_bad_input() -> None:
    transformers = pytest.importorskip("transformers")
    for n_mels in (80, 128):
        reference = transformers.WhisperFeatureExtractor(feature_size=n_mels).mel_filters  # (bins, n_mels), float64
        assert rel_err(WhisperLogMel(n_mels).mel.T, torch.from_numpy(reference)) < 1e-6
    with pytest.raises(ValueError, match="pad_to"):
        WhisperLogMel(pad_to=16000)(torch.zeros(1, 16001))
    with pytest.raises(ValueError, match="more than 200"):
        WhisperLogMel()(torch.zeros(1, 200))
    assert WhisperLogMel(pad_to=16000)(torch.zeros(1, 200)).shape == (1, 80, 100)  # padding makes it long enough


@pytest.mark.parametrize("name", ["kaldi", "whisper"])
def test_new_frontends_stay_float32_under_autocast(name) -> None:
    frontend = {"kaldi": lambda: KaldiFbank(128), "whisper": WhisperLogMel}[name]()
    audio = 0.3 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(4))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        cast = frontend(audio.bfloat16())
    assert cast.dtype == torch.float32
    assert rel_err(cast, frontend(audio.bfloat16().float())) < 1e-6
