"""Checks a plugin's test suite shares with the core's (as numpy.testing does for numpy users)."""

from __future__ import annotations

import tracemalloc
from typing import Iterable

import numpy as np

from embedzoo.extractor import ClipEmbeddings, Extractor, Session


def stream_one_clip(extractor: Extractor, chunks: Iterable[np.ndarray]) -> tuple[ClipEmbeddings, int]:
    """Push one clip chunk by chunk through a Session, as a decoder or a live stream feeds it (the
    clip is never held whole): its scene and timestamp embeddings, and the peak of traced Python
    and numpy memory meanwhile, in bytes -- what an hour-long test bounds."""
    tracemalloc.start()
    try:
        session = Session(extractor)
        session.open("clip")
        for chunk in chunks:
            session.push("clip", chunk)
        session.close("clip")
        session.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ((key, result),) = session.take()
    assert key == "clip" and session.pending == 0
    return result, peak
