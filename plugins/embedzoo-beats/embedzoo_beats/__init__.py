"""embedzoo-beats: Microsoft's BEATs audio transformers as embedzoo models.

Torch-free: registers the family "beats" -- its geometry (`geometry.py`: layers and windows from a
card's config) and the model module (`embedzoo_beats.model`, imported when a BEATs model is first
built). The cards (`beats-iter3`, `beats-iter3-plus-as2m`, ...) live in embedzoo's registry; the
weights are Microsoft's `{'cfg': ..., 'model': ...}` pickles from the unilm/beats README.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.plugin import Family, hookimpl

from embedzoo_beats.geometry import geometry

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[[Family], None]) -> None:
    """BEATs: layers from `geometry`, built by embedzoo_beats.model."""
    register(Family("beats", "embedzoo_beats.model", geometry))
