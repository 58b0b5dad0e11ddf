"""Conformance: hear-validator passes on an OpenL3 model (random weights in torchopenl3's layout,
converted to safetensors and fed offline with `?weights=`), and the HEAR API gives the default
embedding in HEAR's shapes.

One OpenL3 window costs ~20 GFLOP, and the validator embeds 16 x 2 s and 8 x 3.74 s clips: with
the pooled embedding that is minutes on a small CPU. The validator therefore runs on the
`spectrogram` layer (the same HEAR code path -- windows, batching, timestamps, scene pooling --
with the network stopped after the frontend); the embedding itself goes through `embedzoo.hear`
in process on a short clip.
"""

from __future__ import annotations

import pytest
import torch
from openl3_testutil import SR, get_card, make_audio, randomised_reference, save_original
from safetensors.torch import save_file

import embedzoo.hear as hear
from embedzoo import hub
from embedzoo.testing import run_hear_validator

pytest.importorskip("hearvalidator")

ID = "openl3-mel128-env-512"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("openl3_hear")
    original = save_original(randomised_reference("mel128", "env", 512, seed=21), folder / "torchopenl3_mel128_env_512.pth.tar")
    converted = folder / f"{ID}.safetensors"
    save_file(hub.convert_checkpoint(get_card(ID), original), str(converted))
    return converted


def test_hear_validator_passes(weights, tmp_path):
    stdout = run_hear_validator(f"{ID}?weights={weights}&layers=spectrogram&hop_ms=250", cwd=tmp_path, timeout=600)
    assert "Received embedding of shape: torch.Size([8, 128])" in stdout


def test_hear_api_gives_the_embedding(weights):
    model = hear.load_model(f"{ID}?weights={weights}&hop_ms=250", device="cpu")
    assert model.sample_rate == SR and model.scene_embedding_size == model.timestamp_embedding_size == 512
    audio = make_audio(2, SR // 4 + 123, seed=8)  # shorter than a window: zero-padded around each centre
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert embeddings.shape == (2, 2, 512) and embeddings.dtype == torch.float32
    assert torch.equal(timestamps, torch.tensor([[0.0, 250.0], [0.0, 250.0]]))
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (2, 512) and torch.isfinite(scene).all()
    assert not torch.allclose(scene[0], scene[1])
