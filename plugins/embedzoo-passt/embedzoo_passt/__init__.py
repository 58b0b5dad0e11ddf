"""embedzoo-passt: PaSST (Patchout faSt Spectrogram Transformer) as embedzoo models.

Torch-free: this module only tells embedzoo that the family "passt" is built by
`embedzoo_passt.model`, imported when a PaSST model is first built. The cards (`passt-s-ap476`, ...)
live in embedzoo's registry.yaml; the weights are the authors' GitHub release files.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[..., None]) -> None:
    """The "passt" family is built by embedzoo_passt.model (create_model, checkpoint_filter_fn)."""
    register("passt", "embedzoo_passt.model")
