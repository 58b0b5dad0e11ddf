"""X-ARES: the small twin of dasheng-base as an X-ARES encoder (embedzoo.xares), checked by
X-ARES's own `check_audio_encoder` (xares 0.1.3): frames every 40 ms, the final norm's tokens."""

from __future__ import annotations

import pytest
import torch
from dasheng_small import TWIN, dasheng_catalog  # noqa: F401  (a fixture; one_thread is conftest.py's)

pytest.importorskip("xares.audio_encoder_checker", reason="xares is installed by scripts/test.sh (pip install --no-deps xares==0.1.3)")

from xares.audio_encoder_checker import check_audio_encoder  # noqa: E402

from embedzoo.xares import EmbedzooEncoder  # noqa: E402


def test_the_xares_checker_passes(dasheng_catalog, one_thread) -> None:  # noqa: F811
    encoder = EmbedzooEncoder(TWIN, weights="random")
    assert check_audio_encoder(encoder) is True
    assert encoder.sampling_rate == 16000 and encoder.output_dim == 32 and encoder.hop_size_in_ms == 40
    audio = torch.randn(1, 24000, generator=torch.Generator().manual_seed(0))
    frames = encoder(audio)
    expected, _ = encoder.extractor.timestamp_embeddings(audio, 16000)
    torch.testing.assert_close(frames, expected)
