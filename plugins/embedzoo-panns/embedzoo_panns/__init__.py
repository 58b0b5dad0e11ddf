"""embedzoo-panns: PANNs CNN14 (Kong et al. 2020) at 32 kHz and 16 kHz as embedzoo models.

This module is torch-free: it only tells embedzoo that the family "panns" is built by
`embedzoo_panns.model`, imported when a PANNs model is first built. The cards (`panns-cnn14`,
`panns-cnn14-16k`) live in embedzoo's registry.yaml; their weights come from Zenodo record 3987831.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[..., None]) -> None:
    """The "panns" family is built by embedzoo_panns.model (create_model, checkpoint_filter_fn)."""
    register("panns", "embedzoo_panns.model")
