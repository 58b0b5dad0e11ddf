"""An hour of audio through the core with VGGish: a `Session` fed the hour in 10 s chunks (as a
decoder or a live stream would) keeps far less than one decoded copy of the hour in traced memory,
and its timestamp embeddings are VGGish's embeddings of the right stretches of the stream.

Cheap knobs keep it fast (random weights): layer `block1` (frontend and the first VGG stage: the
whole extraction path at a fraction of the cost), one 0.975 s example every two minutes for
timestamps and for the scene.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import torch

from embedzoo.extractor import Session
from embedzoo.registry import get_card
from embedzoo_vggish.model import EXAMPLE_SAMPLES, create_model

RATE = 16000
HOUR = 3600 * RATE
CHUNK = 10 * RATE
HOP_S = 120


def tone_table() -> np.ndarray:
    """(60, RATE): one second of each minute's signal, a pair of tones at whole-Hz frequencies (so
    each second repeats; the hour never has to be computed, let alone held)."""
    n = np.arange(RATE) / RATE
    f0 = 150.0 + 40.0 * np.arange(60)[:, None]
    return (0.3 * np.sin(2 * np.pi * f0 * n) + 0.1 * np.sin(2 * np.pi * (3 * f0 + 7) * n)).astype(np.float32)


def stream(table: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) of the hour: minute m plays table[m] over and over."""
    n = np.arange(start, stop)
    return table[n // (60 * RATE), n % RATE]


def test_an_hour_streams_through_vggish_in_bounded_memory():
    torch.manual_seed(0)
    model = create_model(get_card("vggish"))
    model.configure(layers="block1", readout="mean", hop_ms=HOP_S * 1000, scene_hop_ms=HOP_S * 1000)
    table = tone_table()
    decoded_bytes = HOUR * 4  # one float32 copy of the hour
    tracemalloc.start()
    try:
        session = Session(model)
        session.open("hour")
        for start in range(0, HOUR, CHUNK):
            session.push("hour", stream(table, start, min(start + CHUNK, HOUR)))
        session.close("hour")
        session.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < decoded_bytes / 8, f"peak {peak / 1e6:.0f} MB traced for {decoded_bytes / 1e6:.0f} MB of audio"
    [(key, result)] = session.take()
    assert key == "hour" and session.pending == 0
    count = 3600 // HOP_S + 1
    assert torch.equal(result.timestamps, torch.arange(count) * HOP_S * 1000.0)
    assert result.timestamp.shape == (count, 2048) and result.scene.shape == (2048,) and torch.isfinite(result.scene).all()
    # the k-th timestamp embedding is VGGish's output on the example centred at k * 2 minutes
    for k in (1, 17, 29):
        centre = k * HOP_S * RATE
        window = stream(table, centre - EXAMPLE_SAMPLES // 2, centre + EXAMPLE_SAMPLES - EXAMPLE_SAMPLES // 2)
        expected = model.embed_segments(window[None])[0]
        assert (result.timestamp[k] - expected).abs().max() <= 1e-5 * expected.abs().max(), k
    steps = result.timestamp[1:-1].diff(dim=0).abs().amax(dim=1)
    assert (steps > 1e-3 * result.timestamp.abs().max()).all()  # each minute's tones give their own embedding
