"""embedzoo-efficientat: the EfficientAT MobileNetV3 AudioSet taggers (Schmid et al. 2023) as embedzoo models.

This module is torch-free: it only tells embedzoo that the family "efficientat" is built by
`embedzoo_efficientat.model`, imported when an EfficientAT model is first built. The cards
(`efficientat-mn04-as` ... `efficientat-mn40-as`, `efficientat-mn40-as-ext`) live in embedzoo's
registry.yaml; their weights come from the GitHub release v0.0.1 of fschmid56/EfficientAT.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[..., None]) -> None:
    """The "efficientat" family is built by embedzoo_efficientat.model (create_model, checkpoint_filter_fn)."""
    register("efficientat", "embedzoo_efficientat.model")
