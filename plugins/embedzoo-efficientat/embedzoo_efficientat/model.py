"""EfficientAT MobileNetV3 AudioSet taggers (Schmid, Koutini, Widmer, ICASSP 2023) as embedzoo extractors.

Written from the facts of fschmid56/EfficientAT (`models/mn/model.py`, `block_types.py`) on timm's
MobileNetV3 building blocks:
- front end: `embedzoo.frontends.MelSTFT`, the same eval-mode `AugmentMelSTFT` as PaSST's (32 kHz,
  pre-emphasis, |STFT|^2 1024/800/320, 128 Kaldi mel 0-15 kHz, log(x+1e-5), (x+4.5)/5);
- `features[0]`: 3x3 conv, stride 2, BatchNorm (eps 1e-3), Hardswish (timm `ConvNormAct`);
- `features[1..15]`: MobileNetV3-Large's inverted residuals with every channel count scaled by the
  width multiplier and rounded to a multiple of 8 (`make_divisible`). Blocks without expansion are
  timm `DepthwiseSeparableConv`, the rest timm `InvertedResidual`; blocks 4-6 and 11-15 have a
  channel squeeze-and-excitation (timm `SqueezeExcite`: mean over frequency and time, 1x1 reduce to
  make_divisible(channels // 4), ReLU, 1x1 expand, sigmoid gate) -- EfficientAT's default `se_dims='c'`;
- `features[16]`: 1x1 conv to 6 x the last block's channels, BatchNorm, Hardswish;
- head ("mlp"): mean over frequency and time (the `features` embedding), Linear to
  make_divisible(1280 x width) (`classifier.2`), Hardswish, (dropout), Linear to 527 (`classifier.5`).

Layers of `forward_layers` (each (batch, frames, width); see docs/models/efficientat.md):
- `mel` (128): the front end, one frame per STFT hop (320 samples);
- `block0` .. `block16`: the output of `features[i]` (EfficientAT_HEAR's "b<i>"), time steps as
  frames, (channels, frequency bands) flattened channel-major. The time stride doubles at blocks 0,
  2, 4, 7 and 13: frames every 640, 1280, 2560, 5120 and 10240 samples;
- `se4`, `se5`, `se6`, `se11` .. `se15`: a squeeze-and-excitation block's bottleneck before its ReLU
  (EfficientAT_HEAR's "se features"), one vector per forward;
- `features` (6 x last channels: 960 for mn10, 3840 for mn40): the pooled embedding;
- `hidden`: the head's first Linear, before Hardswish (EfficientAT_HEAR's "classifier features");
- `logits` (527): pre-sigmoid AudioSet logits (what EfficientAT's forward returns).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct, make_divisible
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual, SqueezeExcite
from torch import Tensor, nn

from embedzoo.card import ModelCard
from embedzoo.errors import CardError, ConfigError
from embedzoo.extractor import Extractor
from embedzoo.frontends import MelSTFT
from embedzoo.hub import unwrap_state_dict
from embedzoo.remap import remap_state_dict

__all__ = ["EfficientAT", "BlockCfg", "block_configs", "create_model", "checkpoint_filter_fn", "DEFAULT_CONFIG"]

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
STEM_CHANNELS, HIDDEN_CHANNELS, LAST_EXPANSION = 16, 1280, 6
BN = partial(nn.BatchNorm2d, eps=1e-3)  # EfficientAT's BatchNorm (momentum 0.01 only matters in training)
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "hardswish": nn.Hardswish}


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
        return make_divisible(self.mid_chs // 4, 8)


def _channels(channels: int, width: float) -> int:
    return make_divisible(channels * width, 8)


def block_configs(width: float) -> list[BlockCfg]:
    """`features[1..15]` of a MobileNetV3-Large with width multiplier `width`."""
    out, in_chs = [], _channels(STEM_CHANNELS, width)
    for kernel, mid, chs, se, act, stride in MOBILENETV3_LARGE:
        cfg = BlockCfg(kernel, in_chs, _channels(mid, width), _channels(chs, width), se, act, stride)
        out.append(cfg)
        in_chs = cfg.out_chs
    return out


def _se_layer(cfg: BlockCfg) -> partial:
    """timm's SqueezeExcite with EfficientAT's bottleneck size and its ReLU (whatever the block's act)."""
    return partial(SqueezeExcite, rd_channels=cfg.se_chs, force_act_layer=nn.ReLU, gate_layer=nn.Sigmoid)


def _block(cfg: BlockCfg) -> nn.Module:
    act = ACTIVATIONS[cfg.act]
    se = _se_layer(cfg) if cfg.se else None
    if cfg.mid_chs == cfg.in_chs:  # no expansion conv: EfficientAT's block is dw -> (se) -> project
        return DepthwiseSeparableConv(cfg.in_chs, cfg.out_chs, cfg.kernel, cfg.stride, act_layer=act, norm_layer=BN, se_layer=se)
    block = InvertedResidual(
        cfg.in_chs, cfg.out_chs, cfg.kernel, cfg.stride, exp_ratio=cfg.mid_chs / cfg.in_chs, act_layer=act, norm_layer=BN, se_layer=se
    )
    if block.conv_pw.out_channels != cfg.mid_chs:  # timm re-derives the expansion from the ratio
        raise CardError(f"timm built {block.conv_pw.out_channels} expansion channels where EfficientAT has {cfg.mid_chs}")
    return block


def _conv_out(size: int, kernel: int, stride: int) -> int:
    """Length after a conv with symmetric 'same' padding (kernel - 1) // 2."""
    return (size + 2 * ((kernel - 1) // 2) - kernel) // stride + 1


class EfficientAT(Extractor):
    """An EfficientAT MobileNet ("mn<width>_as") behind embedzoo's extractor interface."""

    def __init__(self, card: ModelCard, config: Mapping[str, Any]):
        super().__init__(card)
        cfg = {**DEFAULT_CONFIG, **dict(config)}
        self.width = float(cfg["width_mult"])
        self.mel = MelSTFT(n_mels=int(cfg["n_mels"]), sample_rate=card.sample_rate, hop=int(cfg["stft_hop"]))
        self.blocks_cfg = block_configs(self.width)
        stem = self.blocks_cfg[0].in_chs
        last_in = self.blocks_cfg[-1].out_chs
        self.embed_dim = LAST_EXPANSION * last_in
        self.hidden_dim = _channels(HIDDEN_CHANNELS, self.width)
        self.num_classes = int(cfg["num_classes"])
        self.features = nn.Sequential(
            ConvNormAct(1, stem, 3, stride=2, norm_layer=BN, act_layer=nn.Hardswish),
            *[_block(b) for b in self.blocks_cfg],
            ConvNormAct(last_in, self.embed_dim, 1, norm_layer=BN, act_layer=nn.Hardswish),
        )
        self.pre_logits = nn.Linear(self.embed_dim, self.hidden_dim)  # EfficientAT's classifier.2
        self.classifier = nn.Linear(self.hidden_dim, self.num_classes)  # EfficientAT's classifier.5
        self.channels_last = bool(cfg["channels_last"])
        if self.channels_last:
            self.features.to(memory_format=torch.channels_last)

        # geometry of every block: channels, frequency bands, time stride and receptive field in STFT frames
        kernels = [3] + [b.kernel for b in self.blocks_cfg] + [1]
        strides = [2] + [b.stride for b in self.blocks_cfg] + [1]
        channels = [stem] + [b.out_chs for b in self.blocks_cfg] + [self.embed_dim]
        bands, total_strides, fields = [], [], []
        f, total, field = self.mel.n_mels, 1, 1
        for kernel, stride in zip(kernels, strides):
            f, field, total = _conv_out(f, kernel, stride), field + (kernel - 1) * total, total * stride
            bands.append(f)
            total_strides.append(total)
            fields.append(field)
        self.block_channels, self.block_bands = tuple(channels), tuple(bands)
        self.block_strides, self.block_fields = tuple(total_strides), tuple(fields)
        self.se_blocks = tuple(i + 1 for i, b in enumerate(self.blocks_cfg) if b.se)
        blocks = [f"block{i}" for i in range(len(channels))]
        self.layer_names: tuple[str, ...] = ("mel", *blocks, *[f"se{i}" for i in self.se_blocks], "features", "hidden", "logits")
        self.layer_widths: dict[str, int] = {
            "mel": self.mel.n_mels,
            **{name: c * b for name, c, b in zip(blocks, channels, bands)},
            **{f"se{i}": self.blocks_cfg[i - 1].se_chs for i in self.se_blocks},
            "features": self.embed_dim,
            "hidden": self.hidden_dim,
            "logits": self.num_classes,
        }
        # the features[] index a layer needs computed (-1: the front end only)
        self._depth = {"mel": -1, **{b: i for i, b in enumerate(blocks)}, **{f"se{i}": i for i in self.se_blocks}}
        for name in ("features", "hidden", "logits"):
            self._depth[name] = len(blocks) - 1
        self._check_card()

    # ---- geometry --------------------------------------------------------------------------

    def layer_geometry(self, name: str) -> dict[str, int | bool]:
        """What the card says of a layer: width, frequency bands, pooled, frame hop and frame field.

        A frame's field is its receptive field through the convolutions -- (STFT frames it sees - 1)
        x STFT hop + n_fft + 1 (pre-emphasis) samples -- rounded up so that half of it is a whole
        number of the layer's hops: frame j of an input is then the network's output frame
        j + field // (2 hop) (see `forward_layers`, frame mode). The squeeze-excitation gates see
        the whole input, beyond any field.
        """
        if name in ("mel", *(f"block{i}" for i in range(len(self.block_strides)))):
            i = -1 if name == "mel" else int(name[5:])
            stride, frames = (1, 1) if i < 0 else (self.block_strides[i], self.block_fields[i])
            hop = self.mel.hop * stride
            field = (frames - 1) * self.mel.hop + self.mel.n_fft + 1
            half = -(-field // (2 * hop))  # ceil(field / 2 / hop) hops
            bands = 1 if i < 0 else self.block_bands[i]
            return {"width": self.layer_widths[name], "bands": bands, "pooled": False, "frame_hop": hop, "frame_field": 2 * half * hop}
        return {"width": self.layer_widths[name], "bands": 1, "pooled": True, "frame_hop": 0, "frame_field": 0}

    def _check_card(self) -> None:
        for spec in self.card.layers:
            if spec.name not in self.layer_widths:
                raise CardError(f"card {self.card.id}: EfficientAT has no layer {spec.name!r}", hint=f"layers: {', '.join(self.layer_names)}")
            geometry = self.layer_geometry(spec.name)
            declared = {"width": spec.width, "bands": spec.bands, "pooled": spec.pooled, "frame_hop": 0, "frame_field": 0}
            if not spec.pooled:
                declared["frame_hop"], declared["frame_field"] = self.card.frame_geometry(spec)
            if declared != geometry or spec.tokens:
                wrong = {k: v for k, v in geometry.items() if declared[k] != v}
                raise CardError(f"card {self.card.id}: layer {spec.name} has {wrong}, the card says {({k: declared[k] for k in wrong})} (tokens {list(spec.tokens)})")
        if self.card.sample_rate != self.mel.sample_rate:
            raise CardError(f"card {self.card.id}: EfficientAT's front end runs at {self.mel.sample_rate} Hz")

    # ---- forward ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _se_taps(self, blocks: Sequence[int], out: dict[str, Tensor]) -> Iterator[None]:
        """Record the squeeze-excitation bottleneck (conv_reduce output, before ReLU) of `blocks`."""
        handles = []
        for i in blocks:
            def keep(module: nn.Module, args: Any, output: Tensor, name: str = f"se{i}") -> None:
                out[name] = output.flatten(1).clone()  # the SE block applies its ReLU in place next

            handles.append(self.features[i].se.conv_reduce.register_forward_hook(keep))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def forward_intermediates(self, audio: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """Raw outputs for the named layers: mel (B, M, T), blockK (B, C, F, T), seK (B, R),
        features (B, C), hidden (B, H), logits (B, 527). Stops after the deepest one asked."""
        deepest = max(self._depth[n] for n in names)
        out: dict[str, Tensor] = {}
        mel = self.mel(audio)
        out["mel"] = mel
        x = mel.unsqueeze(1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        se_wanted = [int(n[2:]) for n in names if n.startswith("se")]
        with self._se_taps(se_wanted, out):
            for i, layer in enumerate(self.features):
                if i > deepest:
                    return out
                x = layer(x)
                out[f"block{i}"] = x
        if any(n in ("features", "hidden", "logits") for n in names):
            features = x.mean(dim=(2, 3))
            out["features"] = features
            hidden = self.pre_logits(features)
            out["hidden"] = hidden
            out["logits"] = self.classifier(F.hardswish(hidden))
        return out

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """audio (batch, samples) at 32 kHz -> per layer (batch, frames, width); module docstring.

        Window mode returns every output frame of a layer (zero-padded convolutions: frame i is
        centred on sample i x frame_hop), as the reference pools them. Frame mode returns the frames
        whose whole field lies in the input -- frame j centred on j x frame_hop + frame_field // 2,
        the core's chunking convention -- so chunks of a long clip tile it without edge effects
        (but for the squeeze-excitation gates, which average over each chunk).
        """
        names = [spec.name for spec in self.card.layers] if layers is None else list(layers)
        unknown = [n for n in names if n not in self.layer_widths]
        if unknown:
            raise ConfigError(f"{self.card.id} has no layer(s) {unknown}", hint=f"layers: {', '.join(self.layer_names)}")
        if audio.ndim != 2 or audio.shape[-1] < MIN_SAMPLES:
            raise ConfigError(f"EfficientAT needs audio of shape (batch, samples >= {MIN_SAMPLES}), got {tuple(audio.shape)}")
        raw = self.forward_intermediates(audio, names)
        frame_mode = self.knobs.mode == "frame"
        outputs = []
        for name in names:
            x = raw[name]
            if name == "mel":
                x = x.transpose(1, 2)
            elif name.startswith("block"):
                x = x.permute(0, 3, 1, 2).flatten(2)  # (B, T, C*F), frequency fastest
            else:
                outputs.append(x[:, None, :])
                continue
            if frame_mode:
                geometry = self.layer_geometry(name)
                hop, field = int(geometry["frame_hop"]), int(geometry["frame_field"])
                count = (audio.shape[-1] - field) // hop + 1
                if count < 1:
                    raise ConfigError(f"{self.card.id}: frame mode needs chunks of at least {field} samples for {name}, got {audio.shape[-1]}")
                x = x[:, field // (2 * hop) :][:, :count]
            outputs.append(x)
        return outputs


# the shortest input the front end takes: its centred STFT reflects n_fft // 2 samples of the
# pre-emphasised signal (one sample shorter than the input)
MIN_SAMPLES = 1024 // 2 + 2


# ---- checkpoint conversion ------------------------------------------------------------------


def _conv_bn(theirs: str, conv: str, bn: str) -> dict[str, str]:
    """torchvision's Conv2dNormActivation (`.0` conv, `.1` BatchNorm) -> separate conv / bn names."""
    out = {f"{theirs}.0.weight": f"{conv}.weight"}
    for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        out[f"{theirs}.1.{p}"] = f"{bn}.{p}"
    return out


def release_key_map(model: EfficientAT) -> dict[str, str]:
    """Every key of an EfficientAT release checkpoint -> our key, derived from the architecture."""
    last = len(model.features) - 1
    mapping = {**_conv_bn("features.0", "features.0.conv", "features.0.bn"),
               **_conv_bn(f"features.{last}", f"features.{last}.conv", f"features.{last}.bn")}  # fmt: skip
    for i, cfg in enumerate(model.blocks_cfg, start=1):
        ours = f"features.{i}"
        expand = cfg.mid_chs != cfg.in_chs
        parts: list[tuple[str, str] | None] = [("conv_pw", "bn1")] if expand else []
        parts.append(("conv_dw", "bn2" if expand else "bn1"))
        if cfg.se:
            parts.append(None)
        parts.append(("conv_pwl", "bn3") if expand else ("conv_pw", "bn2"))
        for j, part in enumerate(parts):
            theirs = f"features.{i}.block.{j}"
            if part is None:  # EfficientAT's ConcurrentSEBlock with one (channel) SE: Linear layers
                for fc, conv in (("fc1", "conv_reduce"), ("fc2", "conv_expand")):
                    for p in ("weight", "bias"):
                        mapping[f"{theirs}.conc_se_layers.0.{fc}.{p}"] = f"{ours}.se.{conv}.{p}"
            else:
                mapping.update(_conv_bn(theirs, f"{ours}.{part[0]}", f"{ours}.{part[1]}"))
    for p in ("weight", "bias"):
        mapping[f"classifier.2.{p}"] = f"pre_logits.{p}"
        mapping[f"classifier.5.{p}"] = f"classifier.{p}"
    return mapping


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: EfficientAT) -> dict[str, Tensor]:
    """An EfficientAT release checkpoint (a plain state dict of `models/mn/model.py`'s MN) -> ours.

    Losslessly: every tensor is used once under its new name; the squeeze-excitation Linear
    weights (out, in) become 1x1 conv weights (out, in, 1, 1) (a reshape). BatchNorm's
    `num_batches_tracked` (a training counter, unused in eval) is filled with 0 when a file
    lacks it. Already-converted state dicts pass through (checked). Raises WeightsError naming
    any key that is unused, missing, or of the wrong shape.
    """
    mapping = release_key_map(model)
    inverse = {ours: theirs for theirs, ours in mapping.items()}

    def as_conv(ours: str, value: Tensor) -> Tensor:
        se_linear = ours.endswith((".se.conv_reduce.weight", ".se.conv_expand.weight")) and value.ndim == 2
        return value.reshape(*value.shape, 1, 1) if se_linear else value

    return remap_state_dict(
        unwrap_state_dict(state_dict, model.card.id), model.state_dict(), mapping.get, model_id=model.card.id,
        their_name=lambda key: inverse.get(key, key), adapt=as_conv,
        unused_hint="is this the EfficientAT 'mn' checkpoint of this width (mlp head, channel SE)? nothing may be left unused",
        missing_hint="the checkpoint is truncated or not an EfficientAT mn state dict",
        shape_hint="the checkpoint is of another width multiplier: pick the matching card",
    )  # fmt: skip


# ---- configs --------------------------------------------------------------------------------

DEFAULT_CONFIG: dict[str, Any] = {
    "width_mult": 1.0,  # mn04 0.4, mn05 0.5, mn10 1.0, mn20 2.0, mn30 3.0, mn40 4.0
    "n_mels": 128,
    "stft_hop": 320,
    "num_classes": 527,
    "channels_last": True,  # NHWC convolutions: 2-6x faster on CPU (bench/efficientat.py, bench/RESULTS.md)
}


def create_model(card: ModelCard) -> EfficientAT:
    """An EfficientAT MobileNet for this card (config keys as DEFAULT_CONFIG), random weights, eval mode."""
    unknown = set(card.config) - set(DEFAULT_CONFIG)
    if unknown:
        raise CardError(f"card {card.id}: unknown EfficientAT config keys {sorted(unknown)}", hint=f"known: {', '.join(DEFAULT_CONFIG)}")
    return EfficientAT(card, card.config).eval()
