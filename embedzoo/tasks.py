"""Kept for compatibility: this module lives in `embedzoo.eval.tasks`."""

from embedzoo.eval.tasks import *  # noqa: F403
from embedzoo.eval.tasks import __all__  # noqa: F401
