"""`embedzoo.load`: a catalog name in, a ready extractor out (weights pulled, verified, converted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedzoo.card import ModelCard
from embedzoo.errors import WeightsError
from embedzoo.registry import get_registry
from embedzoo.spec import ModelSpec


def build_model(card: ModelCard):
    """A model of the card's family with random weights (the plugin is imported here, lazily)."""
    from embedzoo.plugins import family_module

    return family_module(card.family, card.plugin).create_model(card)


def load(
    model: str | ModelSpec,
    weights: str | Path | None = None,
    device: str = "auto",
    *,
    offline: bool | None = None,
    mirror: str | Path | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    quiet: bool = False,
    **knobs: Any,
):
    """Load a model by catalog id or alias, ready to embed.

    `model` is a model spec (`embedzoo.spec`): an id or alias, optionally with a preset, knobs and
    weights -- `"passt-s-ap476:2levelmel?hop_ms=50&weights=random"`. `weights` (or `weights=` in the
    spec): None pulls (or reuses) the card's weights; a `.safetensors` path is loaded as is; any
    other file is an original-format checkpoint, converted in memory; a folder laid out like the
    model's hub repo (what `save_pretrained` writes) has its weights file converted and its
    config.json / preprocessor_config.json checked against the card; 'random' keeps the
    architecture's initial weights, drawn with `seed` (a control for evaluations, and conformance
    checks such as hear-validator without any download). `knobs` are the extraction settings
    (layers, readout, mode, hop_ms, window_ms, ... see `embedzoo.knobs`), on top of the spec's.
    `quiet` hides the download and conversion progress a first pull shows on stderr.

    The extractor's `weights_identity` says which weights it holds (`embedzoo.weights.weights_identity`):
    `embed_files` records it in an output folder's manifest, `embedzoo eval` keys its cache with it.
    """
    from embedzoo import weights as store
    from embedzoo.extractor import pick_device

    import torch

    spec = ModelSpec.parse(model).with_weights(weights)
    card = get_registry().get(spec.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        extractor = build_model(card)
    extractor.configure(**{**spec.overrides(), **knobs})  # check knobs before any download
    if spec.weights is None:
        path = store.pull(card, offline=offline, mirror=mirror, cache_dir=cache_dir, quiet=quiet)
        load_state(extractor, store.load_weights(path), source=str(path))
    elif spec.weights != store.RANDOM:
        path = Path(spec.weights).expanduser()
        if not (path.is_file() or path.is_dir()):
            raise WeightsError(
                f"weights {path} do not exist",
                hint="pass a .safetensors file, an original checkpoint, or a folder laid out like the model's hub repo",
            )
        # safetensors in the model's own layout pass through; an original release (pickle or
        # safetensors in the authors' layout) is converted in memory by the plugin's filter
        load_state(extractor, store.convert_checkpoint(card, path), source=str(path))
    extractor.weights_identity = store.weights_identity(card, spec.weights, seed=seed, cache_dir=cache_dir)
    return extractor.to(pick_device(device)).eval()


def load_state(model, state: dict, source: str) -> None:
    """load_state_dict(strict=True), with an error that lists what does not fit."""
    result_missing = [k for k in model.state_dict() if k not in state]
    unexpected = [k for k in state if k not in model.state_dict()]
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(model.state_dict()[k].shape)}"
        for k, v in state.items()
        if k in model.state_dict() and tuple(v.shape) != tuple(model.state_dict()[k].shape)
    ]
    if result_missing or unexpected or shapes:
        raise WeightsError(
            f"weights {source} do not fit {model.card.id}: missing {result_missing[:5]}, "
            f"unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}",
            hint="are these the weights of this model? `embedzoo cache verify` checks the cache",
        )
    model.load_state_dict(state, strict=True)


def list_models(pattern: str | None = None) -> list[ModelCard]:
    """Cards in the catalog whose id or alias matches a glob or contains the text."""
    return get_registry().find(pattern)
