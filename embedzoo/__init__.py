"""embedzoo: one model zoo, one interface, for general-purpose audio embeddings.

    import embedzoo
    model = embedzoo.load("crepe-tiny", hop_ms=10, layers=["conv5"])
    scene = model.scene_embeddings(audio, sample_rate)             # (batch, D)
    emb, ts = model.timestamp_embeddings(audio, sample_rate)      # (batch, T, D), (batch, T) ms

Importing embedzoo does not import torch: the torch-bound names load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from embedzoo.card import LayerSpec, ModelCard, Source  # noqa: E402  (torch-free)
from embedzoo.errors import EmbedzooError  # noqa: E402
from embedzoo.loader import list_models, load  # noqa: E402  (imports torch only when called)
from embedzoo.spec import ModelSpec  # noqa: E402  (torch-free)

_LAZY = {"Extractor": "embedzoo.extractor", "ClipEmbeddings": "embedzoo.extractor", "Session": "embedzoo.extractor"}

__all__ = ["load", "list_models", "ModelSpec", "ModelCard", "LayerSpec", "Source", "EmbedzooError", "Extractor", "ClipEmbeddings", "Session"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embedzoo' has no attribute {name!r}")
