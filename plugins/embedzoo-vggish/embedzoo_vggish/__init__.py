"""embedzoo-vggish: Google's VGGish (AudioSet) as an embedzoo model.

Torch-free: it only tells embedzoo that the family "vggish" is built by `embedzoo_vggish.model`,
imported when a VGGish model is first built. The card (`vggish`) lives in embedzoo's registry.yaml.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[..., None]) -> None:
    """The "vggish" family is built by embedzoo_vggish.model (create_model, checkpoint_filter_fn)."""
    register("vggish", "embedzoo_vggish.model")
