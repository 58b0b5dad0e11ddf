"""Conformance: hear-validator passes on a small CLAP twin (random weights, `?weights=random`), and
the HEAR API gives its embeddings in HEAR's shapes. A timestamp window costs one 10-s forward, so
the validator runs at a 500 ms hop (its 16 x 2 s and 8 x 3.74 s clips: ~200 small forwards; the subprocess start, TensorFlow included, is most of its time)."""

from __future__ import annotations

import os

import pytest
import torch

import embedzoo.hear as hear
from embedzoo.testing import run_hear_validator
from clap_small import SMALL_CARDS, SR, make_audio, small_catalog  # noqa: F401  (fixture)

pytest.importorskip("hearvalidator")
pytestmark = pytest.mark.usefixtures("small_catalog")
ID = "clap-htsat-fused-small"


def test_hear_validator_passes(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    stdout = run_hear_validator(f"{ID}?weights=random&hop_ms=500", env=env, cwd=tmp_path, timeout=600)
    assert f"Received embedding of shape: torch.Size([8, {SMALL_CARDS[ID]['projection_dim']}])" in stdout


def test_hear_api_gives_the_embedding() -> None:
    model = hear.load_model(f"{ID}?weights=random&hop_ms=250", device="cpu")
    width = SMALL_CARDS[ID]["projection_dim"]
    assert model.sample_rate == SR and model.scene_embedding_size == model.timestamp_embedding_size == width
    audio = make_audio(2, SR // 2 + 123, seed=8)
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert embeddings.shape == (2, 3, width) and torch.equal(timestamps, torch.tensor([[0.0, 250.0, 500.0]] * 2))
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (2, width) and torch.isfinite(scene).all() and not torch.allclose(scene[0], scene[1])
