"""HEAR 2021 API conformance of `vggish` with converted random weights (what hear-validator checks,
in process; the full `python -m hearvalidator.validate embedzoo.hear -m "vggish?weights=..."` run
takes ~20 s and is documented in docs/models/vggish.md), and window/frame mode agreement."""

from __future__ import annotations

import torch
from safetensors.torch import save_file
from torchvggish import torchvggish as tv

import embedzoo
import embedzoo.hear as hear
from embedzoo.hub import convert_checkpoint
from embedzoo.registry import get_registry


def test_hear_api_on_converted_random_weights(tmp_path):
    torch.manual_seed(0)
    original = tmp_path / "vggish-random.pth"
    torch.save(tv._vgg(postprocess=False).state_dict(), original)
    converted = tmp_path / "vggish-random.safetensors"
    save_file(convert_checkpoint(get_registry().get("vggish"), original), str(converted))

    model = hear.load_model(f"vggish?weights={converted}", device="cpu")
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == model.timestamp_embedding_size == 128
    audio = torch.rand(3, 16000 * 2 + 123) * 2 - 1
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert embeddings.shape == (3, 3, 128) and timestamps.shape == (3, 3)
    assert torch.allclose(timestamps[0], torch.tensor([0.0, 960.0, 1920.0]))
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, 128) and torch.isfinite(scene).all()
    # identical rows give identical embeddings; different rows differ
    twins = hear.get_scene_embeddings(torch.stack([audio[0], audio[0], audio[1]]), model)
    assert torch.allclose(twins[0], twins[1]) and not torch.allclose(twins[0], twins[2])

    # frame mode (one forward per example, read at the 960 ms hop) equals window mode
    loaded = embedzoo.load("vggish", weights=converted, device="cpu")
    window, window_ts = loaded.timestamp_embeddings(audio, 16000)
    loaded.configure(mode="frame")
    frame, frame_ts = loaded.timestamp_embeddings(audio, 16000)
    assert torch.equal(window_ts, frame_ts)
    assert float((frame - window).abs().max()) <= 1e-5 * float(window.abs().max())
