"""embedzoo-clap: the audio tower of LAION's CLAP (HTS-AT, a Swin transformer on log-mel
spectrograms) as embedzoo models, on transformers' `ClapAudioModelWithProjection`.

Torch-free: registers the family "clap" -- its geometry (`geometry.py`: layers and windows from a
card's config) and the model module (`embedzoo_clap.model`, imported when a CLAP model is first
built). The cards (`clap-htsat-unfused`, ...) are catalog entries; the weights are the Hugging
Face repos of the whole CLAP model, of which the conversion keeps the audio tower.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.plugin import Family, hookimpl

from embedzoo_clap.geometry import geometry

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[[Family], None]) -> None:
    """CLAP's audio tower: layers from `geometry`, built by embedzoo_clap.model."""
    register(Family("clap", "embedzoo_clap.model", geometry))
