"""embedzoo-dasheng: Dasheng (Dinkel et al. 2024, Xiaomi) as embedzoo models.

Torch-free: registers the family "dasheng" -- its geometry (`geometry.py`: layers and windows from
a card's config) and the model module (`embedzoo_dasheng.model`, imported when a Dasheng model is
first built: a ViT on timm blocks, proven against the `dasheng` package). The cards (dasheng-base,
dasheng-0.6b, dasheng-1.2b) live in embedzoo's registry; the weights are the authors' Zenodo files
(record 11511780) or the mispeech/dasheng-* Hub copies.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.plugin import Family, hookimpl

from embedzoo_dasheng.geometry import geometry

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[[Family], None]) -> None:
    """Dasheng: layers from `geometry`, built by embedzoo_dasheng.model."""
    register(Family("dasheng", "embedzoo_dasheng.model", geometry))
