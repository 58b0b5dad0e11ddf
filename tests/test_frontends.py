"""embedzoo.frontends against the references: Kaldi mel banks (torchaudio.compliance.kaldi) and
PaSST's AugmentMelSTFT in eval mode (hear21passt), in float32, for every STFT hop PaSST ships."""

from __future__ import annotations

import pytest
import torch

from embedzoo.frontends import MelSTFT, kaldi_mel_banks

torchaudio = pytest.importorskip("torchaudio")
preprocess = pytest.importorskip("hear21passt.models.preprocess")


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
