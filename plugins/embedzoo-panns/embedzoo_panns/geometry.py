"""PANNs CNN14's architecture facts, torch-free: the one place they are stated (the catalog and the
model read them from here).

A config names a frontend `variant` (rate, STFT, mel) and a `head`. Six conv blocks (two 3x3 convs,
then a 2x2 average pooling but for the last) take the 64 mel bins to 32, 16, 8, 4, 2, 2 frequency
bands and 64 -> 2048 channels; a block's layer is its (channels x bands) map.

Frame grid: every stage's output frame i is computed from STFT frames first + jump i .. last +
jump i (`Span`): a 3x3 conv widens the run by one input frame each side, a 2x2 pooling doubles
the jump and makes frame i the mean of frames 2i and 2i + 1 -- centred half a finer frame late.
STFT frame t covers samples [t hop - n_fft/2, t hop + n_fft/2) (centred), so output i is centred
on (first + last) hop / 2 + i jump hop: the layer's `frame_offset`. `frame_skip` is the first
output whose field lies wholly inside the input, and the `frame_field` twice its centre: a
frame-mode chunk's frames from there on are the network's frames over the whole clip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from embedzoo.plugin import CardError, Geometry, LayerSpec

CHANNELS = (64, 128, 256, 512, 1024, 2048)  # conv blocks 1..6
POOLS = (2, 2, 2, 2, 2, 1)  # each block's average pooling (time and frequency); block 6 does not pool
CONV_KERNEL = 3  # every conv is 3x3, 'same' padded
HEAD_FILTER = 3  # the decision-level head's max + mean filter over block-6 frames
EMBED_DIM = 2048  # fc1
CLASSES = 527  # AudioSet
HEADS = ("clip", "decision-level-max")
# the layout of the strided conv blocks (CUDA, autocast, autograd; float32 inference on the CPU runs on
# oneDNN tensors instead, model.py): NHWC, same results; a card's `config.channels_last` overrides it
CHANNELS_LAST = True
MIN_SECONDS = 1  # the shortest window read as it is; shorter ones are zero-padded around their centre
MAX_SECONDS = 60  # the longest chunk per forward: fully convolutional, so this bounds memory only
CONFIG_KEYS = ("variant", "head", "channels_last")


@dataclass(frozen=True)
class PannsCfg:
    """One CNN14 variant: its rate and frontend, its head; and how the conv blocks run."""

    sample_rate: int
    n_fft: int
    hop: int
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    head: str = "clip"
    channels_last: bool = CHANNELS_LAST


VARIANTS: dict[str, PannsCfg] = {
    # Cnn14_mAP=0.431.pth, Cnn14_DecisionLevelMax_mAP=0.385.pth
    "cnn14-32k": PannsCfg(sample_rate=32000, n_fft=1024, hop=320, fmax=14000.0),
    "cnn14-16k": PannsCfg(sample_rate=16000, n_fft=512, hop=160, fmax=8000.0),  # Cnn14_16k_mAP=0.438.pth
}


def parse_config(config: Mapping[str, Any]) -> PannsCfg:
    """A card's config -> its CNN14: `variant` (required), `head` (default clip), `channels_last`."""
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise CardError(f"unknown PANNs config keys {unknown}", hint=f"known: {', '.join(CONFIG_KEYS)}")
    variant = config.get("variant")
    if variant not in VARIANTS:
        raise CardError(f"PANNs variant {variant!r} is unknown", hint=f"set config.variant to one of {', '.join(VARIANTS)}")
    head = config.get("head", "clip")
    if head not in HEADS:
        raise CardError(f"PANNs head {head!r} is unknown", hint=f"set config.head to one of {', '.join(HEADS)}")
    return dataclasses.replace(VARIANTS[variant], head=head, channels_last=bool(config.get("channels_last", CHANNELS_LAST)))


@dataclass(frozen=True)
class Span:
    """Output frame i of a stage is computed from STFT frames first + jump*i ... last + jump*i."""

    first: int
    last: int
    jump: int

    def conv(self, kernel: int) -> "Span":
        """A 'same'-padded convolution (or filter) over time of odd `kernel` frames."""
        reach = (kernel // 2) * self.jump
        return Span(self.first - reach, self.last + reach, self.jump)

    def pool(self, size: int) -> "Span":
        """Non-overlapping pooling of `size` frames."""
        return Span(self.first, self.last + (size - 1) * self.jump, self.jump * size)


BLOCKS = tuple(f"block{i + 1}" for i in range(len(CHANNELS)))


def head_layers(head: str) -> dict[str, int]:
    """The head's layers and widths, in forward order."""
    if head == "clip":
        return {"embedding": EMBED_DIM, "logits": CLASSES}
    return {"segment_embedding": EMBED_DIM, "segment_logits": CLASSES, "logits": CLASSES}


def layer_names(head: str) -> tuple[str, ...]:
    """Every layer of a CNN14 with this head, in forward order."""
    return ("logmel", *BLOCKS, *head_layers(head))


def bands(mel_bins: int) -> tuple[int, ...]:
    """Frequency bands of blocks 1..6: each pooling block halves them."""
    out, size = [], mel_bins
    for pool in POOLS:
        size //= pool
        out.append(size)
    return tuple(out)


def spans(head: str) -> dict[str, Span]:
    """The STFT frames each framed layer's output frame is computed from (pooled layers have none)."""
    span = Span(0, 0, 1)
    out = {"logmel": span}
    for name, pool in zip(BLOCKS, POOLS):
        span = span.conv(CONV_KERNEL).conv(CONV_KERNEL).pool(pool)
        out[name] = span
    if head == "decision-level-max":
        out["segment_embedding"] = out["segment_logits"] = span.conv(HEAD_FILTER)
    return out


def frame_skip(cfg: PannsCfg, span: Span) -> int:
    """The first output frame whose field lies wholly inside the input (the STFT reflects n_fft/2 before it)."""
    before = cfg.n_fft // 2 - span.first * cfg.hop  # samples output 0's field reaches before the input
    return max(0, -(-before // (span.jump * cfg.hop)))


def min_samples(cfg: PannsCfg, name: str) -> int:
    """The fewest samples from which the network computes one frame of layer `name`, in either mode:
    the centred STFT reflects n_fft/2 samples; a block needs a whole frame of its last pooling
    (the heads one of block 6). Windows are longer still (`min_window`), frame-mode chunks a field."""
    if name == "logmel":
        depth = 0
    else:
        depth = BLOCKS.index(name) + 1 if name in BLOCKS else len(BLOCKS)
    stft_frames = 1  # T = 1 + samples // hop STFT frames give T // stft_frames frames after the poolings
    for pool in POOLS[:depth]:
        stft_frames *= pool
    return max(cfg.n_fft // 2 + 1, (stft_frames - 1) * cfg.hop)


def geometry(config: Mapping[str, Any]) -> Geometry:
    """Layers logmel, block1..block6 (maps with frequency bands) and the head's; window limits 1 s .. 60 s."""
    cfg = parse_config(config)
    framed = spans(cfg.head)
    widths = {"logmel": cfg.mel_bins, **{name: chs * b for name, chs, b in zip(BLOCKS, CHANNELS, bands(cfg.mel_bins))}, **head_layers(cfg.head)}
    band_of = dict(zip(BLOCKS, bands(cfg.mel_bins)))
    layers = []
    for name in layer_names(cfg.head):
        if name not in framed:
            layers.append(LayerSpec(name, widths[name], pooled=True))
            continue
        span = framed[name]
        hop, offset, skip = span.jump * cfg.hop, (span.first + span.last) * cfg.hop // 2, frame_skip(cfg, span)
        layers.append(
            LayerSpec(
                name, widths[name], bands=band_of.get(name, 1),
                frame_hop=hop, frame_field=2 * (offset + skip * hop), frame_offset=offset, frame_skip=skip,
            )
        )  # fmt: skip
    return Geometry(
        layers=tuple(layers),
        frame_hop=cfg.hop,
        frame_field=cfg.n_fft,
        min_window=MIN_SECONDS * cfg.sample_rate,
        max_window=MAX_SECONDS * cfg.sample_rate,
        sample_rate=cfg.sample_rate,
    )
