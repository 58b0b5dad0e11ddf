"""Kept for compatibility: the weights wing lives in `embedzoo.weights` (fetch, store, cache, identity)."""

from embedzoo.weights import *  # noqa: F403
from embedzoo.weights import __all__  # noqa: F401
