"""The weights wing: sources -> verified local files -> safetensors converted once -> extraction.

- `embedzoo.weights.fetch`    -- fetch and verify: a card's source (hub, url, package, mirror) to a
                                 local file whose sha256 (or pinned revision) is checked;
- `embedzoo.weights.store`    -- convert and store: the original to the model's state dict, saved
                                 once as safetensors (`pull`), read back by `load_weights`;
- `embedzoo.weights.cache`    -- the cache: settings, on-disk layout, first-use pins, `ls`/`rm`/`verify`;
- `embedzoo.weights.identity` -- what a model's weights are, for manifests and embedding caches.

Download and conversion progress on stderr is `embedzoo.progress` (`ByteProgress`, `Working`).

Importing this package does not import torch (`embedzoo list` asks `is_cached` for every card).
"""

from __future__ import annotations

from embedzoo.remap import unwrap_state_dict
from embedzoo.weights.cache import (
    CacheEntry,
    EmbeddingsEntry,
    cache_entries,
    cache_root,
    converted_path,
    embeddings_entries,
    forget_pin,
    hf_cache_dir,
    is_cached,
    recorded_pin,
    remove,
    verify,
)
from embedzoo.weights.fetch import Progress, fetch_source
from embedzoo.weights.identity import RANDOM, weights_identity
from embedzoo.weights.store import convert_checkpoint, damage, load_weights, pull

__all__ = [
    "RANDOM", "CacheEntry", "EmbeddingsEntry", "Progress", "cache_entries", "cache_root", "convert_checkpoint",
    "converted_path", "damage", "embeddings_entries", "fetch_source", "forget_pin", "hf_cache_dir", "is_cached",
    "load_weights", "pull", "recorded_pin", "remove", "unwrap_state_dict", "verify", "weights_identity",
]  # fmt: skip
