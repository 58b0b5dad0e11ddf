"""embedzoo-openl3: the twelve OpenL3 audio embedding models (Cramer et al. 2019) for embedzoo.

Torch-free: it only tells embedzoo that the family "openl3" is built by `embedzoo_openl3.model`,
imported when an OpenL3 model is first built. The cards (`openl3-{mel128,mel256,linear}-{music,env}-
{512,6144}`, alias `openl3` for mel256/music/6144) live in embedzoo's registry.yaml; the weights are
torchopenl3's port of the authors' Keras models.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[..., None]) -> None:
    """The "openl3" family is built by embedzoo_openl3.model (create_model, checkpoint_filter_fn)."""
    register("openl3", "embedzoo_openl3.model")
