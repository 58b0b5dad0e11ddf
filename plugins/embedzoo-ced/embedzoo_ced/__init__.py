"""embedzoo-ced: CED, the consistent-ensemble-distilled AudioSet ViTs (Xiaomi), as embedzoo models.

Torch-free: registers the family "ced" -- its geometry (`geometry.py`: layers and windows from a
card's config) and the model module (`embedzoo_ced.model`, imported when a CED model is first
built). The cards (`ced-tiny`, `ced-mini`, `ced-small`, `ced-base`) live in embedzoo's registry.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.plugin import Family, hookimpl

from embedzoo_ced.geometry import geometry

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[[Family], None]) -> None:
    """CED: layers from `geometry`, built by embedzoo_ced.model."""
    register(Family("ced", "embedzoo_ced.model", geometry))
