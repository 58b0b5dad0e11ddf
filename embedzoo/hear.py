"""The HEAR 2021 API over any embedzoo model: `hear-validator embedzoo.hear -m crepe-tiny`.

`model_file_path` is a model spec (`embedzoo.spec`), as everywhere in embedzoo: a catalog id,
optionally with a preset, knobs and weights -- `crepe-tiny`, `crepe-tiny?hop_ms=25&layers=conv4,conv5`,
`passt-s-ap476:embed`; `weights=PATH` loads that file instead of the cached weights, and
`weights=random` keeps the architecture's initial weights (a conformance check needs no download).
Empty means `$EMBEDZOO_HEAR_MODEL`, else crepe-tiny.

HEAR 2021 accepts input at 16, 22.05, 44.1 or 48 kHz only. A model running at another rate
(PaSST and PANNs at 32 kHz) is presented at 48 kHz and resamples internally; pass
`?input_rate=32000` to feed it at its own rate (as hear21passt does).
"""

from __future__ import annotations

import os

from torch import Tensor

from embedzoo.extractor import Extractor
from embedzoo.loader import load
from embedzoo.registry import get_card
from embedzoo.spec import ModelSpec

DEFAULT_MODEL = "crepe-tiny"
HEAR_SAMPLE_RATES = (16000, 22050, 44100, 48000)


def load_model(model_file_path: str = "", device: str = "auto", **knobs) -> Extractor:
    """A torch.nn.Module with sample_rate, scene_embedding_size and timestamp_embedding_size."""
    spec = ModelSpec.parse(model_file_path or os.environ.get("EMBEDZOO_HEAR_MODEL") or DEFAULT_MODEL).with_knobs(**knobs)
    if "input_rate" not in spec.knobs and get_card(spec.name).sample_rate not in HEAR_SAMPLE_RATES:
        spec = spec.with_knobs(input_rate=48000)
    model = load(spec, device=device)
    model._hear_shapes()  # HEAR's arrays have no layer axis: stack=True is refused here, not mid-run
    return model


def get_scene_embeddings(audio: Tensor, model: Extractor) -> Tensor:
    """audio (n_sounds, n_samples) at model.sample_rate -> (n_sounds, model.scene_embedding_size)."""
    return model.scene_embeddings(audio, model.sample_rate)  # HEAR's contract: audio at the model's attribute


def get_timestamp_embeddings(audio: Tensor, model: Extractor) -> tuple[Tensor, Tensor]:
    """audio (n_sounds, n_samples) at model.sample_rate -> embeddings (n_sounds, T, size), timestamps (n_sounds, T) in ms."""
    return model.timestamp_embeddings(audio, model.sample_rate)
