"""An hour of audio pushed through a Session in 10 s pieces (never held whole) in bounded memory:
the small twin of ced-mini in the family's default window mode (the `features` of 480 ms windows,
HEAR_CED's recipe), every 250 ms rather than 50 (14,401 windows: the same code, a fifth of the
forwards), and its scene."""

from __future__ import annotations

import numpy as np
import torch
from ced_small import SR, TOLERANCE, ced_catalog, small_id  # noqa: F401  (a fixture; one_thread is conftest.py's)

import embedzoo
from embedzoo.testing import rel_err, stream_one_clip


def test_an_hour_in_bounded_memory(ced_catalog, one_thread) -> None:  # noqa: F811
    model = embedzoo.load(f"{small_id('ced-mini')}?weights=random&hop_ms=250", device="cpu")
    hop, window = model.card.ms_to_samples(model.knobs.hop_ms), model.card.ms_to_samples(model.knobs.window_ms)
    assert (model.knobs.mode, hop, window) == ("window", 4000, 7680)
    piece = 10 * SR
    rng = np.random.default_rng(0)
    pieces = [0.1 * rng.standard_normal(piece, dtype=np.float32) for _ in range(3)]  # reused: cheap to make
    result, peak = stream_one_clip(model, (pieces[k % 3] for k in range(360)))
    hour = 3600 * SR
    assert result.timestamp.shape == (1 + hour // hop, model.card.layer("features").width)  # every 250 ms, 0 to the end
    assert torch.isfinite(result.timestamp).all() and torch.isfinite(result.scene).all()
    assert peak < 64 * 2**20, peak  # an hour of float32 is 230 MB
    # windows that end inside the first 10 s are those of that piece alone
    (first,) = model.embed([pieces[0]], SR, scene=False)
    inside = (piece - window // 2) // hop + 1
    assert rel_err(result.timestamp[:inside], first.timestamp[:inside]) < TOLERANCE
