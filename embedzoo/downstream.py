"""Kept for compatibility: this module lives in `embedzoo.eval.downstream`."""

from embedzoo.eval.downstream import *  # noqa: F403
from embedzoo.eval.downstream import __all__  # noqa: F401
