"""embedzoo-whisper: the encoder of OpenAI's Whisper (transformers' WhisperEncoder) as embedzoo models.

Torch-free: registers the family "whisper" -- its geometry (`geometry.py`: layers, frame grid,
windows and paddings from a card's config) and the model module (`embedzoo_whisper.model`,
imported when a Whisper model is first built). The cards (`whisper-tiny` ... `whisper-large-v3`,
the English-only `.en` models) are the catalog's; the weights are the `openai/whisper-*` Hub repos,
of which only the encoder is kept.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.plugin import Family, hookimpl

from embedzoo_whisper.geometry import geometry

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[[Family], None]) -> None:
    """Whisper: layers from `geometry`, built by embedzoo_whisper.model."""
    register(Family("whisper", "embedzoo_whisper.model", geometry))
