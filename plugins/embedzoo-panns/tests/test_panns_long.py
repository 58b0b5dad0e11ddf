"""An hour of audio through the core with CNN14: `embed_files` on a 1-hour file, decoded in blocks
and windowed as it streams, stays far below one decoded copy of the hour in traced memory, and the
timestamp embeddings it writes are CNN14's embeddings of the right stretches of the file.

Cheap knobs keep it fast (random weights): the 16 kHz model, layer `block1` (frontend, bn0 and the
first conv block: the whole extraction path at a fraction of the cost), one 1 s window every two
minutes for timestamps and for the scene.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import soundfile as sf
import torch
from panns_testutil import get_card

from embedzoo.audio import collect_inputs
from embedzoo.pipeline import embed_files
from embedzoo_panns.model import create_model

RATE = 16000
MINUTES = 60


def write_hour(path) -> None:
    """One hour at 16 kHz, PCM 16, a minute at a time: each minute a different tone plus noise."""
    t = np.arange(60 * RATE, dtype=np.float32) / RATE
    noise = 0.02 * np.random.default_rng(0).standard_normal(len(t)).astype(np.float32)
    with sf.SoundFile(path, "w", samplerate=RATE, channels=1, subtype="PCM_16") as handle:
        for minute in range(MINUTES):
            handle.write(0.3 * np.sin(2 * np.pi * (150 + 40 * minute) * t) + noise)


def test_an_hour_streams_through_cnn14_in_bounded_memory(tmp_path):
    path = tmp_path / "hour.wav"
    write_hour(path)
    torch.manual_seed(0)
    model = create_model(get_card("panns-cnn14-16k"))
    model.configure(layers="block1", readout="mean", hop_ms=120000, window_ms=1000, scene_window_ms=1000, scene_hop_ms=120000)
    decoded_bytes = RATE * 3600 * 4  # one float32 copy of the hour at the model's rate
    tracemalloc.start()
    try:
        summary = embed_files(model, collect_inputs([path]), tmp_path / "out", workers=0, block_seconds=30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.ok and summary.done == 1 and abs(summary.audio_seconds - 3600) < 1
    assert peak < decoded_bytes / 8, f"peak {peak / 1e6:.0f} MB traced for {decoded_bytes / 1e6:.0f} MB of decoded audio"

    timestamps = np.load(tmp_path / "out" / "timestamp" / "hour.wav.timestamps.npy")
    embeddings = np.load(tmp_path / "out" / "timestamp" / "hour.wav.embedding.npy")
    scene = np.load(tmp_path / "out" / "scene" / "hour.wav.embedding.npy")
    assert np.array_equal(timestamps, 120000.0 * np.arange(MINUTES // 2 + 1))
    assert embeddings.shape == (MINUTES // 2 + 1, 2048) and scene.shape == (2048,) and np.isfinite(scene).all()
    # the k-th timestamp embedding is the model's output on the second of the file centred at 2k minutes
    for k in (1, 17, 29):
        centre = k * 120 * RATE
        window, _ = sf.read(path, start=centre - RATE // 2, stop=centre + RATE // 2, dtype="float32")
        expected = model.embed_segments(window[None]).numpy()[0]
        assert np.abs(embeddings[k] - expected).max() <= 1e-5 * np.abs(expected).max(), k
    steps = np.abs(np.diff(embeddings[1:-1], axis=0)).max(axis=1)
    assert (steps > 1e-3 * np.abs(embeddings).max()).all()  # each minute's tone gives its own embedding
