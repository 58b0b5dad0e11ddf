"""embedzoo-ssl: the speech self-supervised family (wav2vec2, HuBERT, WavLM, data2vec-audio).

Torch-free: registers the family "ssl" -- its geometry (`geometry.py`: layers and windows from a
card's config) and the model module (`embedzoo_ssl.model`, imported when a model is first built).
The cards (`wav2vec2-base`, `hubert-base-ls960`, `wavlm-base-plus`, ...) are catalog entries whose
`config` names the transformers model type; the weights are the Hugging Face repos' files.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.plugin import Family, hookimpl

from embedzoo_ssl.geometry import geometry as ssl_geometry  # the submodule stays embedzoo_ssl.geometry

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[[Family], None]) -> None:
    """ssl: layers from `geometry`, built by embedzoo_ssl.model on transformers' model classes."""
    register(Family("ssl", "embedzoo_ssl.model", ssl_geometry))
