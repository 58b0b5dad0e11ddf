"""What the Whisper tests share: small twins added to the catalog (registry.yaml has the real cards)
through EMBEDZOO_REGISTRY, transformers' reference pipeline with random weights saved as a Hub
repo, and the reference's recipes (per 30 s input) the tests compare against.

Small twins (`whisper-test-80`, `whisper-test-128`: d_model 64, 2 layers, 2 heads) are catalog
entries of a few lines, as a new checkpoint of the family would be; every forward is a 30 s input
whatever the clip, so the width is what keeps the tests fast.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
import yaml
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from embedzoo.registry import get_registry

SR = 16000
HOP = 320
TOLERANCE = 1e-5
SMALL = {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 128}
TWINS = {"whisper-test-80": {**SMALL, "num_mel_bins": 80}, "whisper-test-128": {**SMALL, "num_mel_bins": 128}}
TINY = {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536, "num_mel_bins": 80}


def _twin_sources(card_id: str) -> list[dict]:
    repo = f"embedzoo-tests/{card_id}"
    files = ["config.json", "preprocessor_config.json"]
    return [
        {"kind": "hf", "repo": repo, "revision": "main", "filename": "model.safetensors", "format": "safetensors", "files": files},
        {"kind": "hf", "repo": repo, "revision": "main", "filename": "pytorch_model.bin", "format": "torch", "files": files},
    ]


def write_twins(folder: Path) -> Path:
    """The twins' catalog file (the real whisper cards are registry.yaml's)."""
    twins = folder / "whisper-twins.yaml"
    entries = [{"id": card_id, "family": "whisper", "config": config, "sources": _twin_sources(card_id)} for card_id, config in TWINS.items()]
    twins.write_text(yaml.safe_dump({"models": entries}))
    return twins


@pytest.fixture(scope="module")
def whisper_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """EMBEDZOO_REGISTRY with the twins' catalog file added for this module; yields its value (for
    subprocesses)."""
    before = os.environ.get("EMBEDZOO_REGISTRY")
    twins = write_twins(tmp_path_factory.mktemp("catalog"))
    value = os.pathsep.join(filter(None, [before, str(twins)]))
    os.environ["EMBEDZOO_REGISTRY"] = value
    get_registry.cache_clear()
    registry = get_registry()
    assert not [card_id for card_id in registry.problems if card_id.startswith("whisper")], registry.problems
    yield value
    if before is None:
        del os.environ["EMBEDZOO_REGISTRY"]
    else:
        os.environ["EMBEDZOO_REGISTRY"] = before
    get_registry.cache_clear()


# ---- the reference: transformers' feature extractor + WhisperForConditionalGeneration ----------


def reference_model(encoder: dict, seed: int = 0) -> WhisperForConditionalGeneration:
    """A whole WhisperForConditionalGeneration (a 1-layer decoder, 64-token vocabulary: only the
    encoder is compared) with every parameter random: LayerNorms and biases too, so nothing is
    trivially one or zero; the positional table stays sinusoidal up to noise."""
    config = WhisperConfig(
        **encoder, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=64,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("embed_positions.weight"):
                p.add_(0.1 * noise)
            elif p.ndim == 1 and "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))  # unit gain: activations stay O(1) through the blocks
    return model.eval()


def feature_extractor(n_mels: int) -> WhisperFeatureExtractor:
    return WhisperFeatureExtractor(feature_size=n_mels)


def save_repo(model: WhisperForConditionalGeneration, folder: Path, safe: bool = True) -> Path:
    """The model as its Hub repo: save_pretrained's model.safetensors (or pytorch_model.bin) and
    config.json, and the feature extractor's preprocessor_config.json."""
    model.save_pretrained(folder)
    if not safe:  # the older repos' pickle (transformers 5 writes safetensors): by hand, proj_out included
        (folder / "model.safetensors").unlink(missing_ok=True)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    feature_extractor(model.config.num_mel_bins).save_pretrained(folder)
    return folder


@torch.no_grad()
def reference_hidden(model: WhisperForConditionalGeneration, clips: list[np.ndarray] | np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(hidden_states, last_hidden_state) of transformers' pipeline: WhisperFeatureExtractor (every
    clip padded to 30 s) + the encoder with output_hidden_states=True; 1500 frames each."""
    clips = [np.asarray(c, dtype=np.float32) for c in clips]
    features = feature_extractor(model.config.num_mel_bins)(clips, sampling_rate=SR, return_tensors="pt").input_features
    out = model.get_encoder()(features, output_hidden_states=True)
    return list(out.hidden_states), out.last_hidden_state


def reference_embedding(model: WhisperForConditionalGeneration, window: np.ndarray, padding: str = "trim") -> torch.Tensor:
    """The user's recipe for one input of at most 30 s: the last hidden state's mean over the
    frames centred in the input (trim: ceil(samples / 320)), or over all 1500 (reference)."""
    _, last = reference_hidden(model, [window])
    keep = 1500 if padding == "reference" else math.ceil(len(window) / HOP)
    return last[0, :keep].mean(dim=0)


def reference_windows(model: WhisperForConditionalGeneration, clip: np.ndarray, window: int, hop: int) -> torch.Tensor:
    """HEAR window-mode timestamps: windows of `window` samples centred on k * hop of the clip
    zero-padded by window // 2 each side, each one reference forward (trim)."""
    padded = np.pad(clip, (window // 2, window // 2))
    count = (len(padded) - window) // hop + 1
    return torch.stack([reference_embedding(model, padded[k * hop : k * hop + window]) for k in range(count)])


def reference_frames(model: WhisperForConditionalGeneration, clip: np.ndarray, chunk_frames: int) -> list[torch.Tensor]:
    """Frame mode by hand, every layer (hidden_states..., last_hidden_state): the clip zero-padded
    by 640 samples in front (half the 1280-sample frame field), cut into chunks of `chunk_frames`
    tokens ((n - 1) * 320 + 1280 samples every n * 320), each one reference forward (30 s), tokens
    2 .. 2 + n of each: 1 + len // 320 frames in all."""
    count = 1 + len(clip) // HOP
    padded = np.pad(clip, (640, 1280))
    parts = []
    for start in range(0, count, chunk_frames):
        n = min(chunk_frames, count - start)
        chunk = padded[start * HOP : start * HOP + (n - 1) * HOP + 1280]
        hidden, last = reference_hidden(model, [chunk])
        parts.append([h[0, 2 : 2 + n] for h in [*hidden, last]])
    return [torch.cat(layer) for layer in zip(*parts)]
