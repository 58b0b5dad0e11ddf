"""An hour of audio pushed through a Session in 10 s pieces (never held whole) in bounded memory:
the small twin (3-chunk frame-mode forwards of 1.2 s) in frame mode, 40 ms frames and a scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dasheng_small import SR, TWIN, dasheng_catalog  # noqa: F401  (a fixture; one_thread is conftest.py's)

import embedzoo
from embedzoo.testing import rel_err, stream_one_clip


def test_an_hour_in_bounded_memory(dasheng_catalog, one_thread) -> None:  # noqa: F811
    model = embedzoo.load(f"{TWIN}?weights=random", device="cpu")
    piece = 10 * SR
    rng = np.random.default_rng(0)
    pieces = [0.1 * rng.standard_normal(piece, dtype=np.float32) for _ in range(3)]  # reused: cheap to make

    def chunks():
        for k in range(360):
            yield pieces[k % 3]

    result, peak = stream_one_clip(model, chunks())
    hour = 3600 * SR
    assert result.timestamp.shape == (1 + hour // 640, 32)  # the core stamps every 40 ms from 0 to the end
    assert torch.isfinite(result.timestamp).all() and torch.isfinite(result.scene).all()
    assert peak < 64 * 2**20, peak  # an hour of float32 is 230 MB
    # the first frames are those of the clip's first 10 s
    (first,) = model.embed([pieces[0]], SR, scene=False)
    frames = (model.card.max_window - 480) // 640 + 1  # the first frame-mode chunk's
    assert rel_err(result.timestamp[:frames], first.timestamp[:frames]) < 1e-5


if __name__ == "__main__":
    pytest.main([__file__])
