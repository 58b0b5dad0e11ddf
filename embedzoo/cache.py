"""Kept for compatibility: the weights cache lives in `embedzoo.weights.cache`."""

from embedzoo.weights.cache import *  # noqa: F403
from embedzoo.weights.cache import __all__  # noqa: F401
