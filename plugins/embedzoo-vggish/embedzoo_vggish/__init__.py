"""embedzoo-vggish: Google's VGGish and YAMNet (AudioSet) as embedzoo models.

Torch-free: registers the families "vggish" (built by `embedzoo_vggish.model`) and "yamnet"
(`embedzoo_vggish.yamnet`), each with its geometry from `geometry.py`; the model modules are
imported when such a model is first built. The cards (`vggish`, `yamnet`) live in embedzoo's
registry.yaml.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.plugin import Family, hookimpl

from embedzoo_vggish.geometry import vggish_geometry, yamnet_geometry

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[[Family], None]) -> None:
    """VGGish and YAMNet share a frontend, a distribution and geometry.py; each is a family of its own."""
    register(Family("vggish", "embedzoo_vggish.model", vggish_geometry))
    register(Family("yamnet", "embedzoo_vggish.yamnet", yamnet_geometry))
