"""VGGish's and YAMNet's architecture facts, torch-free: the one place they are stated (the catalog
completes both families' cards from here; model.py and yamnet.py build the networks from the same
constants).

Both networks read one 0.96 s *example* (VGGish) or *patch* (YAMNet) of 96 log-mel frames: 64 HTK
bands 125-7500 Hz of 400-sample (25 ms) frames every 160 (10 ms) at 16 kHz, uncentred, so one
example is exactly 400 + 95 x 160 = 15600 samples.

Frame geometry of a conv block, in log-mel frames: output i of the block is computed from log-mel
frames first + jump * i ... first + jump * i + span - 1 (`Grid`). In frame mode the core crops a
chunk's outputs to those whose whole field lies inside the chunk (from `frame_skip`), and expects
output frame_skip + j centred on frame_field // 2 + j * frame_hop: so `frame_field` is twice the
centre of output `frame_skip` -- the receptive field widened by less than one hop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from embedzoo.plugin import CardError, Geometry, LayerSpec

# ---- the shared frontend: 0.96 s of 25 ms log-mel frames every 10 ms ------------------------------

SAMPLE_RATE = 16000
WIN, HOP, N_FFT = 400, 160, 512  # 25 ms frames every 10 ms, |rfft| of 512 points
N_MELS, FMIN, FMAX = 64, 125.0, 7500.0
EXAMPLE_FRAMES = 96
EXAMPLE_SAMPLES = WIN + (EXAMPLE_FRAMES - 1) * HOP  # 15600: one example / patch
EXAMPLE_HOP = EXAMPLE_FRAMES * HOP  # 15360: the references' examples do not overlap
KNOWN_CONFIG = ("channels_last",)  # both families: NHWC convolutions on or off (bench/vggish.py, bench/yamnet.py)


def check_config(family: str, config: Mapping[str, Any]) -> None:
    """Neither architecture has variants: a config key other than channels_last is a typo."""
    unknown = sorted(set(config) - set(KNOWN_CONFIG))
    if unknown:
        raise CardError(f"unknown {family} config keys {unknown}", hint=f"known: {', '.join(KNOWN_CONFIG)}")


@dataclass(frozen=True)
class Grid:
    """Where a conv block's output frames sit (module docstring), with its channels and bands."""

    channels: int
    bands: int
    jump: int  # log-mel frames between outputs (the block's total time stride)
    first: int  # first log-mel frame of output 0's field (< 0: it reaches into the zero padding)
    span: int  # log-mel frames in one output's field

    @property
    def frame_hop(self) -> int:
        return HOP * self.jump

    @property
    def receptive_field(self) -> int:
        """Samples one output frame depends on."""
        return HOP * (self.span - 1) + WIN

    @property
    def skip(self) -> int:
        """Outputs before the first whose field lies inside the input (`LayerSpec.frame_skip`)."""
        return math.ceil(-self.first / self.jump)

    @property
    def frame_field(self) -> int:
        """Twice the distance from the input's start to the centre of output `skip` (module docstring)."""
        return 2 * (HOP * (self.first + self.jump * self.skip) + self.receptive_field // 2)

    def spec(self, name: str, **extra: Any) -> LayerSpec:
        """The block's layer: its (channels, bands) map per frame, on this grid."""
        return LayerSpec(name, self.channels * self.bands, bands=self.bands, frame_hop=self.frame_hop,
                         frame_field=self.frame_field, frame_skip=self.skip, **extra)  # fmt: skip


def _conv(grid: Grid, channels: int, stride: int, pad_before: int) -> Grid:
    """A 3-wide conv of `stride` whose first output starts `pad_before` frames into its padding."""
    return Grid(channels, -(-grid.bands // stride), grid.jump * stride, grid.first - pad_before * grid.jump, grid.span + 2 * grid.jump)


# ---- VGGish -----------------------------------------------------------------------------------------

VGG_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")  # torchvggish's make_layers
VGGISH_LAYERS = ("logmel", "block1", "block2", "block3", "block4", "embedding", "postprocessed")
VGGISH_HIDDEN = 4096  # the fully connected head: block4 of one example (512 x 6 x 4) -> 4096 -> 4096 -> 128
EMBEDDING = 128


def vggish_blocks() -> tuple[Grid, ...]:
    """block1..block4: 3x3 convs padded by one (time and frequency kept), each stage closed by a
    2x2 max-pool (floor), which halves both and doubles the hop."""
    grid, out = Grid(1, N_MELS, 1, 0, 1), []
    for item in VGG_CFG:
        if item == "M":
            grid = Grid(grid.channels, grid.bands // 2, grid.jump * 2, grid.first, grid.span + grid.jump)
            out.append(grid)
        else:
            grid = _conv(grid, int(item), stride=1, pad_before=1)
    return tuple(out)


def vggish_head_features() -> int:
    """Inputs of the fully connected head: block4's whole map of one example (512 x 6 x 4)."""
    last = vggish_blocks()[-1]
    return last.channels * last.bands * (EXAMPLE_FRAMES // last.jump)


def vggish_shortest(grid: Grid) -> int:
    """The shortest input that gives a block one output: `jump` log-mel frames (the pools floor)."""
    return WIN + (grid.jump - 1) * HOP


def vggish_geometry(config: Mapping[str, Any]) -> Geometry:
    """VGGish reads exactly one example: the head takes 512 x 6 x 4 features, so the embedding is one
    frame per 15600 samples (frame mode steps by the references' 15360). The log-mel and the conv
    blocks are fully convolutional: they have frames of their own, and frequency bands, so
    `freq_pool` pools a block over them and frame mode reads them at their own rates."""
    check_config("VGGish", config)
    blocks = tuple(grid.spec(f"block{k}") for k, grid in enumerate(vggish_blocks(), 1))
    layers = (
        LayerSpec("logmel", N_MELS, frame_hop=HOP, frame_field=WIN),
        *blocks,
        LayerSpec("embedding", EMBEDDING),
        LayerSpec("postprocessed", EMBEDDING),
    )
    return Geometry(layers, frame_hop=EXAMPLE_HOP, frame_field=EXAMPLE_SAMPLES, max_window=EXAMPLE_SAMPLES,
                    min_window=EXAMPLE_SAMPLES, sample_rate=SAMPLE_RATE)  # fmt: skip


# ---- YAMNet -----------------------------------------------------------------------------------------

# (stride, output channels) of blocks[0] (a full 3x3 conv) and the 13 depthwise-separable blocks
YAMNET_ARCH: tuple[tuple[int, int], ...] = (
    (2, 32), (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
    (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024),
)  # fmt: skip
YAMNET_BLOCKS = tuple(f"block{k}" for k in range(1, len(YAMNET_ARCH) + 1))
YAMNET_LAYERS = ("logmel", *YAMNET_BLOCKS, "embedding", "logits")
NUM_CLASSES = 521
YAMNET_MAX_WINDOW = 10 * SAMPLE_RATE  # longest forward (the network takes any length; 10 s bounds memory)


def yamnet_blocks() -> tuple[Grid, ...]:
    """block1..block14 on the alignment where every stride-2 conv sees an even length: TF "SAME"
    then pads one zero at the end only (a stride-1 conv pads one each side)."""
    grid, out = Grid(1, N_MELS, 1, 0, 1), []
    for stride, channels in YAMNET_ARCH:
        grid = _conv(grid, channels, stride, pad_before=0 if stride == 2 else 1)
        out.append(grid)
    return tuple(out)


def yamnet_frame_pad(grid: Grid) -> int:
    """Zeros to append to a frame-mode chunk so its log-mel has a multiple of `jump` frames.

    TF "SAME" aligns a stride-2 conv's grid to its input's end (an odd length pads one zero at the
    start too), so chunks must give every strided conv an even length for their frames to sit where
    `Grid` says. A chunk of this layer is (n - 1) * frame_hop + frame_field samples: its log-mel
    frames are n - 1 jumps plus a fixed rest, so one constant pad rounds them all up."""
    rest = (grid.frame_field - WIN) // HOP + 1
    return HOP * (-rest % grid.jump)


def yamnet_geometry(config: Mapping[str, Any]) -> Geometry:
    """YAMNet: the log-mel and every block framed at their own rates (any input of at least one STFT
    frame), the embedding (mean over time and frequency) and logits one vector per 0.96 s patch."""
    check_config("YAMNet", config)
    blocks = tuple(grid.spec(name, frame_pad=yamnet_frame_pad(grid)) for name, grid in zip(YAMNET_BLOCKS, yamnet_blocks()))
    layers = (
        LayerSpec("logmel", N_MELS),
        *blocks,
        LayerSpec("embedding", YAMNET_ARCH[-1][1], pooled=True, min_window=EXAMPLE_SAMPLES),
        LayerSpec("logits", NUM_CLASSES, pooled=True, min_window=EXAMPLE_SAMPLES),
    )
    return Geometry(layers, frame_hop=HOP, frame_field=WIN, max_window=YAMNET_MAX_WINDOW, min_window=WIN, sample_rate=SAMPLE_RATE)
