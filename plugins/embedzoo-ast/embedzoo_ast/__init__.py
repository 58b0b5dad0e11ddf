"""embedzoo-ast: the Audio Spectrogram Transformer (AST, MIT) as embedzoo models.

Torch-free: registers the family "ast" -- its geometry (`geometry.py`: layers and windows from a
card's config) and the model module (`embedzoo_ast.model`, imported when an AST model is first
built: transformers' ASTForAudioClassification behind embedzoo's layers). The cards
(`ast-audioset-10-10-0.4593`, ...) live in embedzoo's registry; the weights are the MIT/ast-*
Hugging Face repos.
"""

from __future__ import annotations

from typing import Callable

from embedzoo.plugin import Family, hookimpl

from embedzoo_ast.geometry import geometry

__version__ = "0.1.0"


@hookimpl
def register_families(register: Callable[[Family], None]) -> None:
    """AST: layers from `geometry`, built by embedzoo_ast.model."""
    register(Family("ast", "embedzoo_ast.model", geometry))
