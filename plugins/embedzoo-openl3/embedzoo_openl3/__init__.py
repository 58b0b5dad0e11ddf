"""embedzoo-openl3: the twelve OpenL3 audio embedding models (Cramer et al. 2019) for embedzoo.

Torch-free: registers the family "openl3" -- its geometry (`geometry.py`) and the model module
(`embedzoo_openl3.model`, imported when an OpenL3 model is first built). The cards (`openl3-{mel128,
mel256,linear}-{music,env}-{512,6144}`, alias `openl3` for mel256/music/6144) live in embedzoo's
registry.yaml; the weights are torchopenl3's port of the authors' Keras models.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.plugin import Family, hookimpl

from embedzoo_openl3.geometry import geometry

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[[Family], None]) -> None:
    """OpenL3: layers from `geometry`, built by embedzoo_openl3.model."""
    register(Family("openl3", "embedzoo_openl3.model", geometry))
