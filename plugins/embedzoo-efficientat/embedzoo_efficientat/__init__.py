"""embedzoo-efficientat: the EfficientAT MobileNetV3 AudioSet taggers (Schmid et al. 2023) as embedzoo models.

Torch-free: registers the family "efficientat" -- its geometry (`geometry.py`: channels per width,
frequency bands, frame grids, window limits) and the model module (`embedzoo_efficientat.model`,
imported when an EfficientAT model is first built). The cards (`efficientat-mn04-as` ...
`efficientat-mn40-as`, `efficientat-mn40-as-ext`) live in embedzoo's registry.yaml; their weights
come from the GitHub release v0.0.1 of fschmid56/EfficientAT.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.plugin import Family, hookimpl

from embedzoo_efficientat.geometry import geometry

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[[Family], None]) -> None:
    """EfficientAT: layers from `geometry`, built by embedzoo_efficientat.model."""
    register(Family("efficientat", "embedzoo_efficientat.model", geometry))
