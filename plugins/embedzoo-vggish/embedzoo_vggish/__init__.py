"""embedzoo-vggish: Google's VGGish and YAMNet (AudioSet) as embedzoo models.

Torch-free: it only tells embedzoo that the family "vggish" is built by `embedzoo_vggish.model`
and the family "yamnet" by `embedzoo_vggish.yamnet`, imported when such a model is first built.
The cards (`vggish`, `yamnet`) live in embedzoo's registry.yaml.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[..., None]) -> None:
    """Each family's module (create_model, checkpoint_filter_fn): vggish in .model, yamnet in .yamnet."""
    register("vggish", "embedzoo_vggish.model")
    register("yamnet", "embedzoo_vggish.yamnet")
