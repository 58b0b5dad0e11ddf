"""Kept for compatibility: `evaluate` and `sweep` live in `embedzoo.eval` (embeddings, evaluate, sweep)."""

from embedzoo.eval.embeddings import *  # noqa: F403
from embedzoo.eval.embeddings import __all__ as _embeddings
from embedzoo.eval.evaluate import *  # noqa: F403
from embedzoo.eval.evaluate import __all__ as _evaluate
from embedzoo.eval.sweep import *  # noqa: F403
from embedzoo.eval.sweep import __all__ as _sweep

__all__ = [*_embeddings, *_evaluate, *_sweep]
