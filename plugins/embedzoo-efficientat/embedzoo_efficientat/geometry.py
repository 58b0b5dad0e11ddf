"""EfficientAT's architecture facts, torch-free: the one place they are stated (the catalog and the
model read them from here).

A MobileNetV3-Large (Howard et al. 2019) on a 128-band log-mel at 32 kHz, every channel count
scaled by the config's `width_mult` and rounded to a multiple of 8. `features[0]` (a stride-2 3x3
conv), `features[1..15]` (the inverted residuals) and `features[16]` (1x1 conv to 6x channels) are
layers `block0` .. `block16`: (channels x frequency bands) maps whose frames are time steps. Every
conv is 'same' padded and symmetric in time, so a block's frame i is centred on i x its hop (no
frame offset).

A frame's field is its receptive field through the convolutions -- (STFT frames it sees - 1) x
STFT hop + n_fft + 1 (pre-emphasis) samples -- rounded up so that half of it is a whole number of
the layer's hops: frame j of a frame-mode chunk is then the network's output frame
j + field // (2 hop) (`frame_skip`). The squeeze-excitation gates (blocks 4-6, 11-15) average over
the whole input, beyond any field: frame mode is exact only up to block 3 (docs/models/efficientat.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from embedzoo.plugin import CardError, Geometry, LayerSpec

SAMPLE_RATE = 32000
N_FFT = 1024  # the front end's STFT (embedzoo.frontends.MelSTFT, PaSST's)
PREEMPHASIS_REACH = 1  # pre-emphasis reads one sample more than the STFT frame it feeds
# MobileNetV3-Large at width 1.0 (Howard et al. 2019, table 1), as EfficientAT uses it:
# (kernel, expanded channels, out channels, squeeze-excitation, activation, stride); input 16 channels.
MOBILENETV3_LARGE: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2),
    (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1),
    (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2),
    (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
)
STEM_CHANNELS, STEM_KERNEL, STEM_STRIDE = 16, 3, 2  # features[0]
LAST_EXPANSION = 6  # features[16]: a 1x1 conv to 6 x the last block's channels
HIDDEN_CHANNELS = 1280  # the head's first Linear, at width 1.0
DIVISOR = 8  # channel counts are multiples of 8
MIN_SAMPLES = N_FFT // 2 + 2  # the centred STFT reflects n_fft // 2 samples of the one-shorter pre-emphasised signal
MIN_WINDOW = N_FFT  # shorter windows are zero-padded around their centre (32 ms)
MAX_WINDOW = 10 * SAMPLE_RATE  # the training clip length: the longest window / chunk per forward

DEFAULT_CONFIG: dict[str, Any] = {
    "width_mult": 1.0,  # mn04 0.4, mn05 0.5, mn10 1.0, mn20 2.0, mn30 3.0, mn40 4.0
    "n_mels": 128,
    "stft_hop": 320,
    "num_classes": 527,
    "channels_last": True,  # NHWC convolutions: 2-6x faster on CPU (bench/efficientat.py, bench/RESULTS.md)
}


def parse_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A card's config over DEFAULT_CONFIG; unknown keys are an error."""
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise CardError(f"unknown EfficientAT config keys {unknown}", hint=f"known: {', '.join(DEFAULT_CONFIG)}")
    return {**DEFAULT_CONFIG, **dict(config)}


def make_divisible(value: float, divisor: int = DIVISOR) -> int:
    """MobileNet's channel rounding (EfficientAT's and timm's): the nearest multiple of `divisor`,
    at least `divisor`, one step up where rounding down would lose more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def scaled(channels: int, width: float) -> int:
    """A width-1.0 channel count at width multiplier `width`."""
    return make_divisible(channels * width)


@dataclass(frozen=True)
class BlockCfg:
    """One of `features[1..15]` at a given width: channels already rounded to multiples of 8."""

    kernel: int
    in_chs: int
    mid_chs: int
    out_chs: int
    se: bool
    act: str
    stride: int

    @property
    def se_chs(self) -> int:
        """Squeeze-excitation bottleneck: make_divisible(expanded // 4, 8), as EfficientAT rounds it."""
        return make_divisible(self.mid_chs // 4)


def block_configs(width: float) -> list[BlockCfg]:
    """`features[1..15]` of a MobileNetV3-Large with width multiplier `width`."""
    out, in_chs = [], scaled(STEM_CHANNELS, width)
    for kernel, mid, chs, se, act, stride in MOBILENETV3_LARGE:
        cfg = BlockCfg(kernel, in_chs, scaled(mid, width), scaled(chs, width), se, act, stride)
        out.append(cfg)
        in_chs = cfg.out_chs
    return out


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Length after a conv with symmetric 'same' padding (kernel - 1) // 2."""
    return (size + 2 * ((kernel - 1) // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class Stage:
    """One `features[i]`: its output channels and frequency bands, its total time stride and its
    receptive field in STFT frames."""

    channels: int
    bands: int
    stride: int
    field: int


def stages(config: Mapping[str, Any]) -> list[Stage]:
    """`features[0..16]` of this config, in order."""
    cfg = parse_config(config)
    blocks = block_configs(float(cfg["width_mult"]))
    kernels = [STEM_KERNEL] + [b.kernel for b in blocks] + [1]
    strides = [STEM_STRIDE] + [b.stride for b in blocks] + [1]
    channels = [blocks[0].in_chs] + [b.out_chs for b in blocks] + [LAST_EXPANSION * blocks[-1].out_chs]
    out, bands, total, field = [], int(cfg["n_mels"]), 1, 1
    for chs, kernel, stride in zip(channels, kernels, strides):
        bands, field, total = conv_out(bands, kernel, stride), field + (kernel - 1) * total, total * stride
        out.append(Stage(chs, bands, total, field))
    return out


def frame_grid(stft_frames: int, stride: int, stft_hop: int) -> tuple[int, int]:
    """(frame_hop, frame_field) in samples of frames that see `stft_frames` STFT frames, `stride` apart."""
    hop = stft_hop * stride
    field = (stft_frames - 1) * stft_hop + N_FFT + PREEMPHASIS_REACH
    return hop, 2 * hop * -(-field // (2 * hop))  # half the field a whole number of hops


def layer_names(config: Mapping[str, Any]) -> tuple[str, ...]:
    """Every layer, in forward order of what it needs computed: mel, blocks, SE bottlenecks, head."""
    se = [f"se{i + 1}" for i, b in enumerate(block_configs(float(parse_config(config)["width_mult"]))) if b.se]
    return ("mel", *(f"block{i}" for i in range(len(MOBILENETV3_LARGE) + 2)), *se, "features", "hidden", "logits")


def geometry(config: Mapping[str, Any]) -> Geometry:
    """Layers mel, block0..block16 (maps with bands), se*, features, hidden, logits (pooled)."""
    cfg = parse_config(config)
    width, stft_hop = float(cfg["width_mult"]), int(cfg["stft_hop"])
    hop, field = frame_grid(1, 1, stft_hop)  # the mel's grid, the card's own
    layers = [LayerSpec("mel", int(cfg["n_mels"]), frame_skip=field // (2 * hop))]
    for i, stage in enumerate(stages(cfg)):
        block_hop, block_field = frame_grid(stage.field, stage.stride, stft_hop)
        layers.append(
            LayerSpec(
                f"block{i}", stage.channels * stage.bands, bands=stage.bands,
                frame_hop=block_hop, frame_field=block_field, frame_skip=block_field // (2 * block_hop),
            )
        )  # fmt: skip
    blocks = block_configs(width)
    layers += [LayerSpec(f"se{i + 1}", b.se_chs, pooled=True) for i, b in enumerate(blocks) if b.se]
    layers += [
        LayerSpec("features", LAST_EXPANSION * blocks[-1].out_chs, pooled=True),
        LayerSpec("hidden", scaled(HIDDEN_CHANNELS, width), pooled=True),
        LayerSpec("logits", int(cfg["num_classes"]), pooled=True),
    ]
    return Geometry(
        layers=tuple(layers), frame_hop=hop, frame_field=field, min_window=MIN_WINDOW, max_window=MAX_WINDOW, sample_rate=SAMPLE_RATE
    )
