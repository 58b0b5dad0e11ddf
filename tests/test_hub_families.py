"""Bad input for the Hub transformer families, through the core as users call it: a clip of one
sample (shorter than any conv encoder or fbank frame), silence, and an hour of audio streamed in
bounded memory -- on test-width twins of real cards (the same code, layers and frame grids)."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest
import torch

import embedzoo
from embedzoo.registry import get_registry
from embedzoo.testing import extra_catalog, stream_one_clip

pytest.importorskip("transformers")

# card -> the widths of its twin (the conformance suite's test widths: tests/test_models.py)
from test_models import TEST_WIDTH  # noqa: E402

CARDS = ("ast-audioset-10-10-0.4593", "ast-speech-commands-v2", "wavlm-base-plus", "wav2vec2-large-lv60", "whisper-tiny", "clap-htsat-fused")


@pytest.fixture(scope="module", autouse=True)
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    registry = get_registry()
    missing = [card for card in CARDS if card not in {c.id for c in registry}]
    if missing:
        pytest.skip(f"plugins of {missing} not installed")
    entries = []
    for card_id in CARDS:
        card = registry.get(card_id)
        defaults = {k: v for k, v in card.defaults.items() if k != "layers"}  # its default block may be deeper than the twin's
        presets = {name: {"layers": ["all"]} for name, preset in card.presets.items() if "layers" in preset}
        entries.append({"id": f"{card_id}-twin", "family": card.family, "config": {**card.config, **TEST_WIDTH[card.family]},
                        "defaults": defaults, "presets": presets})
    with extra_catalog(entries, tmp_path_factory.mktemp("twins"), "twins"):
        yield


def load(card_id: str, **knobs):
    torch.manual_seed(0)
    return embedzoo.load(f"{card_id}-twin?weights=random", device="cpu", **knobs)


@pytest.mark.parametrize("card_id", CARDS)
@pytest.mark.parametrize("clip", ["one sample", "silence"])
def test_one_sample_and_silence_give_finite_embeddings(one_thread, card_id: str, clip: str) -> None:
    model = load(card_id)
    rate = model.card.sample_rate
    audio = np.full(1, 0.3, np.float32) if clip == "one sample" else np.zeros(rate // 2, np.float32)
    (result,) = model.embed([audio], rate)
    assert result.scene.shape == (model.scene_embedding_size,) and torch.isfinite(result.scene).all()
    assert result.timestamp.shape[-1] == model.timestamp_embedding_size and torch.isfinite(result.timestamp).all()
    assert len(result.timestamps) == result.timestamp.shape[0] >= 1


@pytest.mark.parametrize("card_id", ["wavlm-base-plus", "whisper-tiny"])
def test_an_hour_streams_in_bounded_memory(one_thread, card_id: str) -> None:
    """An hour at 16 kHz pushed a minute at a time in frame mode (the families' default): the peak
    of traced memory stays far below the hour's own 230 MB, beyond the embeddings it returns, and
    the first frames equal the first minute's alone (a chunk is computed once, whatever follows)."""
    model = load(card_id)
    rate = model.card.sample_rate
    minute = (0.1 * np.random.default_rng(0).standard_normal(60 * rate)).astype(np.float32)
    result, peak = stream_one_clip(model, (minute for _ in range(60)))
    hour_bytes, returned = 60 * minute.nbytes, result.timestamp.nbytes
    assert peak < hour_bytes / 8 + 3 * returned, f"peak {peak / 1e6:.0f} MB for an hour of {hour_bytes / 1e6:.0f} MB ({returned / 1e6:.0f} MB returned)"
    assert result.timestamp.shape[0] == len(result.timestamps) and result.timestamps[-1] >= 3599_000 - 50
    (first,) = model.embed([np.concatenate([minute, minute])], rate)
    count = 30 * 1000 // int(model.knobs.hop_ms)  # the first 30 s: one chunk, whole in both
    torch.testing.assert_close(result.timestamp[:count], first.timestamp[:count], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("card_id", CARDS)
def test_clips_of_mixed_lengths_together_equal_each_alone(one_thread, card_id: str) -> None:
    """Windows are batched only with windows of their own length: no clip is padded into another
    one's attention, so a call with clips of three lengths equals three calls of one clip."""
    model = load(card_id, batch_size=4)
    rate = model.card.sample_rate
    generator = np.random.default_rng(4)
    clips = [(0.1 * generator.standard_normal(int(seconds * rate))).astype(np.float32) for seconds in (0.7, 1.3, 2.1)]
    together = model.embed(clips, rate)
    for clip, result in zip(clips, together):
        (alone,) = model.embed([clip], rate)
        torch.testing.assert_close(result.scene, alone.scene, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(result.timestamp, alone.timestamp, rtol=1e-4, atol=1e-5)
