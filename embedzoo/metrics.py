"""Kept for compatibility: this module lives in `embedzoo.eval.metrics`."""

from embedzoo.eval.metrics import *  # noqa: F403
from embedzoo.eval.metrics import __all__  # noqa: F401
