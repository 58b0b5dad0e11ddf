"""What the AST tests share: the cards' small twins, the reference (transformers' ASTFeatureExtractor
+ ASTForAudioClassification with random weights, saved as a Hub repo folder), and the reference's
layers read the way embedzoo reads them.

The real cards are registry.yaml's; their `-small` twins are added through EMBEDZOO_REGISTRY (a
temporary catalog file). Each twin is what a new checkpoint of the family is: a catalog entry of a
few lines (id, family, config, the presets it sets beyond the family's), here 64 wide with 2 blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from embedzoo.testing import extra_catalog
from embedzoo.registry import get_registry

SR = 16000
TOLERANCE = 1e-5
TOKENS = 2
CARDS = (
    "ast-audioset-10-10-0.4593",
    "ast-audioset-10-10-0.450",
    "ast-audioset-12-12-0.447",
    "ast-audioset-14-14-0.443",
    "ast-audioset-16-16-0.442",
    "ast-speech-commands-v2",
)
# 2 blocks of 64, and 128 fbank frames (1.295 s) so a forward is cheap whatever the strides
SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 96, "max_length": 128}
# the family's `frames` preset reads block12, which a 2-block twin lacks: its last block instead
SMALL_PRESETS = {"frames": {"layers": [f"block{SMALL['num_hidden_layers']}"], "mode": "frame", "readout": "mean"}}


def small_id(card_id: str) -> str:
    return f"{card_id}-small"


def _source(source: Any) -> dict[str, Any]:
    return {"kind": source.kind, "repo": source.repo, "revision": source.revision, "filename": source.filename,
            "format": source.format, "files": list(source.files)}  # fmt: skip


def small_entry(card_id: str) -> dict[str, Any]:
    """The card's catalog entry, renamed, with the small network in its config (and its sources, so
    `weights=FOLDER` finds a save_pretrained folder by the card's file names)."""
    card = get_registry().get(card_id)
    return {
        "id": small_id(card_id),
        "family": "ast",
        "config": {**dict(card.config), **SMALL},
        "sources": [_source(source) for source in card.sources],
        "presets": SMALL_PRESETS,
    }


@pytest.fixture(scope="module")
def ast_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The `-small` twins of the AST cards in an extra catalog file (EMBEDZOO_REGISTRY) for the
    duration of a module."""
    with extra_catalog(lambda: [small_entry(card_id) for card_id in CARDS], tmp_path_factory.mktemp("catalog"), "ast-small"):
        yield


# ---- the reference ------------------------------------------------------------------------------


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random and O(1)-scaled: transformers zero-initialises the tokens and the
    positional table and sets LayerNorms to the identity, which would hide a misplaced one."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "layernorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            elif name.endswith(("cls_token", "distillation_token", "position_embeddings")):
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)  # fan-in scaled: activations stay O(1) through the blocks
    return module.eval()


def reference(card_id: str, seed: int = 0) -> tuple[Any, Any]:
    """(ASTFeatureExtractor, ASTForAudioClassification) for the card's config, random weights."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    from embedzoo_ast.geometry import settings
    from embedzoo_ast.model import _MODEL_KEYS

    cfg = settings(get_registry().get(card_id).config)
    config = ASTConfig(**{key: cfg[key] for key in _MODEL_KEYS}, num_labels=cfg["num_labels"])
    extractor = ASTFeatureExtractor(num_mel_bins=cfg["num_mel_bins"], max_length=cfg["max_length"], mean=cfg["mean"], std=cfg["std"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ASTForAudioClassification(config)
    return extractor, randomise(model, seed)


def save_repo(extractor: Any, model: Any, folder: Path) -> Path:
    """The reference as a Hub repo folder: model.safetensors + config.json (save_pretrained) and
    preprocessor_config.json (the feature extractor's save_pretrained)."""
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    return folder


def columns_of(sequence: torch.Tensor, bands: int, cols: int) -> torch.Tensor:
    """A reference hidden state read as embedzoo reads it: the two tokens, then for each of the
    input's first `cols` patch columns the mean over its frequency patches (written out here, not
    with embedzoo.layers, so the test does not use the code it checks)."""
    batch, rows, dim = sequence.shape
    grid_t = (rows - TOKENS) // bands
    patches = sequence[:, TOKENS:].reshape(batch, bands, grid_t, dim)  # frequency-major, as conv(...).flatten(2)
    return torch.cat((sequence[:, :TOKENS], patches.mean(dim=1)[:, :cols]), dim=1)


def reference_layers(extractor: Any, model: Any, clips: np.ndarray) -> dict[str, torch.Tensor]:
    """Every embedzoo layer of `clips` (batch, samples) as transformers computes it: the feature
    extractor's input_values (cut to the clip's own frames for `fbank`), hidden_states[0..N],
    last_hidden_state, pooler_output and logits, the sequences read per patch column."""
    config = model.config
    inputs = extractor(list(clips), sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        base = model.audio_spectrogram_transformer(inputs["input_values"], output_hidden_states=True)
        logits = model(inputs["input_values"]).logits
    frames = 1 + (clips.shape[-1] - 400) // 160
    cols = max(1, (frames - config.patch_size) // config.time_stride + 1)
    bands = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    out = {"fbank": inputs["input_values"][:, :frames]}
    names = ["patch", *(f"block{i + 1}" for i in range(config.num_hidden_layers))]
    assert len(base.hidden_states) == len(names)
    for name, hidden in zip(names, base.hidden_states):
        out[name] = columns_of(hidden, bands, cols)
    out["norm"] = columns_of(base.last_hidden_state, bands, cols)
    out["features"] = base.pooler_output
    out["logits"] = logits
    return out


def noise(samples: int, rows: int = 1, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((rows, samples))).astype(np.float32)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: small models run faster than on two threads fighting over a shared core
    (the repository's conftest.py has the same fixture, which a plugin-rooted run does not load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
