"""What a model's weights are, as one string: the key output manifests and embedding caches use.

Two runs whose weights have the same identity compute the same embeddings, so `embedzoo embed`
can refuse to mix two kinds in one folder and `embedzoo eval` can reuse cached vectors. The three
kinds of weights `embedzoo.load` takes each have one:
- the catalog's (`weights=None`): where the original came from, its sha256 and the conversion's
  sha256, from the conversion's meta.json in the cache;
- a file (`weights=PATH`): the sha256 of its bytes (wherever it lies, whatever its name); a folder
  laid out like the hub repo: the sha256 of its weights file and of each repo file;
- `weights="random"`: the seed and the torch version (the initial weights depend on both).
"""

from __future__ import annotations

import os
from pathlib import Path

from embedzoo.card import ModelCard
from embedzoo.errors import WeightsError
from embedzoo.weights.cache import converted_path, read_meta, sha256_file

__all__ = ["RANDOM", "weights_identity"]

RANDOM = "random"
"""The `weights=` value that keeps the architecture's initial weights (a control; no download)."""


def weights_identity(
    card: ModelCard, weights: str | os.PathLike | None = None, *, seed: int = 0, cache_dir: str | os.PathLike | None = None
) -> str:
    """The identity of `card`'s weights as `embedzoo.load(card.id, weights=weights, seed=seed)`
    loads them. Catalog weights must have been pulled (their meta.json is read, nothing hashed)."""
    if weights is not None and str(weights) == RANDOM:
        import torch

        return f"random:seed={seed}:torch={torch.__version__}"
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():  # a folder like the hub repo: its weights file and the repo files it holds
            from embedzoo.weights.store import folder_checkpoint

            weights_file, _, repo_files = folder_checkpoint(card, path)
            parts = [f"{name}={sha256_file(file)}" for name, file in sorted((repo_files or {}).items())]
            return f"folder:sha256={sha256_file(weights_file)}" + "".join(f":{part}" for part in parts)
        return f"file:sha256={sha256_file(path)}"
    meta = read_meta(converted_path(card, cache_dir)) or {}
    if not meta.get("safetensors_sha256"):
        raise WeightsError(f"the converted weights of {card.id} have no meta.json", hint=f"run `embedzoo pull --force {card.id}`")
    return f"{meta.get('source')}:original={meta.get('original_sha256')}:converted={meta['safetensors_sha256']}"
