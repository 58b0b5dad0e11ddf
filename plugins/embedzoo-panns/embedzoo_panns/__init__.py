"""embedzoo-panns: PANNs CNN14 (Kong et al. 2020) at 32 kHz and 16 kHz as embedzoo models.

Torch-free: registers the family "panns" -- its geometry (`geometry.py`: layers, frame grids,
window limits) and the model module (`embedzoo_panns.model`, imported when a PANNs model is first
built). The cards (`panns-cnn14`, `panns-cnn14-16k`, `panns-cnn14-dlm`) live in embedzoo's
registry.yaml; their weights come from Zenodo record 3987831.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.plugin import Family, hookimpl

from embedzoo_panns.geometry import geometry

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[[Family], None]) -> None:
    """PANNs: layers from `geometry`, built by embedzoo_panns.model."""
    register(Family("panns", "embedzoo_panns.model", geometry))
