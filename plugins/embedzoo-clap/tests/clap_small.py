"""Shared pieces of the CLAP tests: the reference (transformers' ClapFeatureExtractor + ClapModel)
with random weights, saved as the hub repos are (save_pretrained of the whole ClapModel, with a
tiny text tower the conversion must drop), and the cards' small twins.

The small twins keep what defines the geometry -- the 10-s window, spec_size 256, 4 stages, window 8,
patch 4 -- and shrink the widths (8 -> 64) and depths (1 per stage): an entry of a few lines in an
extra catalog file, as any new checkpoint of the family is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

from embedzoo.testing import extra_catalog
from embedzoo.registry import get_registry
from embedzoo.testing import randomise_batchnorm

SR = 48000
TOLERANCE = 1e-5
TINY_TEXT = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32, "max_position_embeddings": 40}  # fmt: skip
SMALL_AUDIO = {"patch_embeds_hidden_size": 8, "hidden_size": 64, "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 2, 2]}
SMALL_PROJECTION = 16
FUSED = {"enable_fusion": True, "truncation": "fusion"}  # fusion_type unset, as in the fused repo (aff_2d acts alike)
SMALL_CARDS = {
    "clap-htsat-unfused-small": {**SMALL_AUDIO, "projection_dim": SMALL_PROJECTION},
    "clap-htsat-fused-small": {**SMALL_AUDIO, **FUSED, "projection_dim": SMALL_PROJECTION},
}
AUDIO_KEYS = ("enable_fusion", "fusion_type", "patch_embeds_hidden_size", "hidden_size", "depths", "num_attention_heads")


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The `-small` cards in an extra catalog file (EMBEDZOO_REGISTRY) for this module; the real
    cards are registry.yaml's."""

    def entries() -> list[dict[str, Any]]:
        registry = get_registry()
        listed = []
        for ident, config in SMALL_CARDS.items():
            real = registry.get(ident.removesuffix("-small"))  # its hub sources, so weights=<save_pretrained folder> works
            sources = [{k: v for k, v in dataclasses.asdict(s).items() if v not in ("", None, (), [])} for s in real.sources]
            listed.append({"id": ident, "family": "clap", "config": config, "sources": [{**s, "files": list(s.get("files", ()))} for s in sources]})
        return listed

    with extra_catalog(entries, tmp_path_factory.mktemp("catalog"), "clap-small"):
        yield


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random and O(1)-scaled (transformers zero-inits biases and the relative
    position tables), BatchNorm statistics too; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim == 1 and ("norm" in name.lower() or "batch_norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim <= 1 or "relative_position_bias_table" in name:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / max(1.0, p[0].numel()) ** 0.5)
    return randomise_batchnorm(model, seed)


def reference_model(card_config: dict[str, Any], seed: int = 0) -> ClapModel:
    """A random ClapModel whose audio tower is the card's (projection_dim: the card's)."""
    audio = {key: card_config[key] for key in AUDIO_KEYS if key in card_config}
    config = ClapConfig(text_config=TINY_TEXT, audio_config=audio, projection_dim=card_config.get("projection_dim", 512))
    return randomise(ClapModel(config), seed)


def save_hub_layout(model: torch.nn.Module, folder: Path, card_config: dict[str, Any] | None = None) -> Path:
    """save_pretrained, as the hub repo holds it (with the feature extractor's
    preprocessor_config.json when `card_config` is given); returns the folder."""
    model.save_pretrained(folder)
    if card_config is not None:
        feature_extractor(card_config).save_pretrained(folder)
    return folder


def feature_extractor(card_config: dict[str, Any]) -> ClapFeatureExtractor:
    """ClapFeatureExtractor as the LAION repos' preprocessor_config.json sets it up."""
    fused = card_config.get("truncation") == "fusion"
    return ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="fusion" if fused else "rand_trunc", padding="repeatpad")


def reference_features(fe: ClapFeatureExtractor, clips: list[np.ndarray], padding: str, longer: bool | None) -> tuple[torch.Tensor, torch.Tensor]:
    """input_features and is_longer of clips <= 10 s, the truncation and padding set explicitly;
    `longer` overrides the feature extractor's random pick of one clip per batch (None: keep it)."""
    inputs = fe([np.asarray(c, dtype=np.float64) for c in clips], sampling_rate=SR, truncation=fe.truncation, padding=padding, return_tensors="pt")
    is_longer = inputs["is_longer"] if longer is None else torch.full((len(clips), 1), longer)
    return inputs["input_features"].float(), is_longer


def time_ordered(stage_map: torch.Tensor, ratio: int = 4) -> torch.Tensor:
    """transformers' (batch, C, H, W) hidden-state image -> (batch, C, H // ratio, ratio * W): frame
    t = chunk * W + w is column w of the chunk-th band of H // ratio rows (written column by column,
    independently of model.time_map)."""
    batch, channels, height, width = stage_map.shape
    rows = height // ratio
    frames = [stage_map[:, :, chunk * rows : (chunk + 1) * rows, w] for chunk in range(ratio) for w in range(width)]
    return torch.stack(frames, dim=-1)


def make_audio(batch: int, samples: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, samples, generator=generator)
