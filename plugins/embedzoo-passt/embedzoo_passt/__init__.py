"""embedzoo-passt: PaSST (Patchout faSt Spectrogram Transformer) as embedzoo models.

Torch-free: registers the family "passt" -- its geometry (`geometry.py`: layers and windows from a
card's config) and the model module (`embedzoo_passt.model`, imported when a PaSST model is first
built). The cards (`passt-s-ap476`, ...) live in embedzoo's registry.yaml; the weights are the
authors' GitHub release files.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.plugin import Family, hookimpl

from embedzoo_passt.geometry import geometry

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[[Family], None]) -> None:
    """PaSST: layers from `geometry`, built by embedzoo_passt.model."""
    register(Family("passt", "embedzoo_passt.model", geometry))
