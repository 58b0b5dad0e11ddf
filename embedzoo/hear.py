"""The HEAR 2021 API over any embedzoo model: `hear-validator embedzoo.hear -m crepe-tiny`.

`model_file_path` names a catalog model, optionally with knobs or a preset:
`crepe-tiny`, `crepe-tiny?hop_ms=25&layers=conv4,conv5`, `passt-s-ap476:2levelmel`; a
`weights=PATH` knob loads that file instead of the cached weights. Empty means
`$EMBEDZOO_HEAR_MODEL`, else crepe-tiny.
"""

from __future__ import annotations

import os

from torch import Tensor

from embedzoo.extractor import Extractor
from embedzoo.loader import load, split_model_spec

DEFAULT_MODEL = "crepe-tiny"


def load_model(model_file_path: str = "", device: str = "auto", **knobs) -> Extractor:
    """A torch.nn.Module with sample_rate, scene_embedding_size and timestamp_embedding_size."""
    spec = model_file_path or os.environ.get("EMBEDZOO_HEAR_MODEL", DEFAULT_MODEL)
    name, spec_knobs = split_model_spec(spec)
    weights = spec_knobs.pop("weights", None)
    return load(name, weights=weights, device=device, **{**spec_knobs, **knobs})


def get_scene_embeddings(audio: Tensor, model: Extractor) -> Tensor:
    """audio (n_sounds, n_samples) at model.sample_rate -> (n_sounds, model.scene_embedding_size)."""
    return model.scene_embeddings(audio)


def get_timestamp_embeddings(audio: Tensor, model: Extractor) -> tuple[Tensor, Tensor]:
    """audio (n_sounds, n_samples) -> embeddings (n_sounds, T, size), timestamps (n_sounds, T) in ms."""
    return model.timestamp_embeddings(audio)
