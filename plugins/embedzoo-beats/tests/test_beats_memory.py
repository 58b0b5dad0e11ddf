"""An hour of audio pushed through a Session in 10 s pieces (never held whole) in bounded memory:
the small twin at the family's defaults (frame mode, one frame per 160 ms patch column, 10 s
frame-mode chunks) and its scene."""

from __future__ import annotations

import numpy as np
import torch
from beats_small import PRETRAINED, SR, TOLERANCE, beats_catalog, small_id  # noqa: F401  (a fixture; one_thread is conftest.py's)

import embedzoo
from embedzoo.testing import rel_err, stream_one_clip


def test_an_hour_in_bounded_memory(beats_catalog, one_thread) -> None:  # noqa: F811
    model = embedzoo.load(f"{small_id(PRETRAINED)}?weights=random", device="cpu")
    card = model.card
    piece = 10 * SR
    rng = np.random.default_rng(0)
    pieces = [0.1 * rng.standard_normal(piece, dtype=np.float32) for _ in range(3)]  # reused: cheap to make
    result, peak = stream_one_clip(model, (pieces[k % 3] for k in range(360)))
    hour = 3600 * SR
    assert result.timestamp.shape == (1 + hour // card.frame_hop, card.layer("block2").width)  # every 160 ms, 0 to the end
    assert torch.isfinite(result.timestamp).all() and torch.isfinite(result.scene).all()
    assert peak < 64 * 2**20, peak  # an hour of float32 is 230 MB
    # the first frame-mode chunk's frames are those of the clip's first 10 s alone
    (first,) = model.embed([pieces[0]], SR, scene=False)
    frames = (card.frame_chunk - card.frame_field) // card.frame_hop + 1
    assert rel_err(result.timestamp[:frames], first.timestamp[:frames]) < TOLERANCE
