"""The weights wing: sources -> verified local files -> safetensors converted once -> extraction.

- `embedzoo.weights.fetch`    -- fetch and verify: a card's source (hub, url, package, mirror) to a
                                 local file whose sha256 (or pinned revision) is checked;
- `embedzoo.weights.store`    -- convert and store: the original to the model's state dict, saved
                                 once as safetensors (`pull`), read back by `load_weights`;
- `embedzoo.weights.cache`    -- the cache: settings, on-disk layout, first-use pins, `ls`/`rm`/`verify`;
- `embedzoo.weights.identity` -- what a model's weights are, for manifests and embedding caches;
- `embedzoo.weights.mirror`   -- copy a model's verified originals into a mirror folder
                                 (`mirror_model`), never weights whose licence forbids it;
- `embedzoo.weights.listing`  -- hub sources naming their files by pattern, resolved from the
                                 repo's file list at one commit (`resolve_patterns`).

Download and conversion progress on stderr is `embedzoo.progress` (`ByteProgress`, `Working`).

Importing this package does not import torch (`embedzoo list` asks `is_cached` for every card).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it: imported on first use, so `embedzoo list` (which asks
# `is_cached` of every card) pays for the cache module only, not for fetch and store
_HOMES = {
    "unwrap_state_dict": "embedzoo.remap",
    **dict.fromkeys(
        ("CacheEntry", "EmbeddingsEntry", "cache_entries", "cache_root", "converted_path", "embeddings_entries", "forget_pin",
         "hf_cache_dir", "is_cached", "recorded_pin", "remove", "verify"),
        "embedzoo.weights.cache",
    ),
    **dict.fromkeys(("Progress", "fetch_source"), "embedzoo.weights.fetch"),
    **dict.fromkeys(("RANDOM", "weights_identity"), "embedzoo.weights.identity"),
    **dict.fromkeys(("check_redistributable", "mirror_model"), "embedzoo.weights.mirror"),
    **dict.fromkeys(("has_patterns", "resolve_patterns"), "embedzoo.weights.listing"),
    **dict.fromkeys(("convert_checkpoint", "damage", "load_weights", "pull"), "embedzoo.weights.store"),
}  # fmt: skip
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'embedzoo.weights' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
