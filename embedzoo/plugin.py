"""Everything a plugin may use of the core, in one place (plugins import nothing else of embedzoo).

Torch-free names (for a plugin's `__init__.py` and `geometry.py`): `hookimpl`, `Family`,
`Geometry`, `LayerSpec`, `ModelCard` and the error classes. The torch-bound names (`Extractor`,
the checkpoint helpers, `frontends`, `layers`) are imported on first use, so importing this
module for registration never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from embedzoo.card import LayerSpec, ModelCard
from embedzoo.errors import CardError, ConfigError, PluginError, WeightsError
from embedzoo.family import Family, Geometry
from embedzoo.hookspecs import hookimpl

_LAZY = {
    "Extractor": "embedzoo.extractor",
    "remap_state_dict": "embedzoo.remap",
    "unwrap_state_dict": "embedzoo.remap",
    "is_bn_counter": "embedzoo.remap",
    "frontends": None,  # the module itself: embedzoo.frontends
    "layers": None,  # the module itself: embedzoo.layers (shared transformer pieces)
    "onednn": None,  # the module itself: embedzoo.onednn (folded BatchNorms, packed oneDNN convs)
}

__all__ = [
    "hookimpl", "Family", "Geometry", "LayerSpec", "ModelCard",
    "CardError", "ConfigError", "PluginError", "WeightsError", *_LAZY,
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'embedzoo.plugin' has no attribute {name!r}")
    module = _LAZY[name]
    if module is None:
        return importlib.import_module(f"embedzoo.{name}")
    return getattr(importlib.import_module(module), name)
