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

Layers of `forward_layers`, in their natural shapes (geometry.py declares them; see
docs/models/efficientat.md):
- `mel` (batch, frames, 128): the front end, one frame per STFT hop (320 samples);
- `block0` .. `block16` (batch, channels, bands, frames): the output map of `features[i]`
  (EfficientAT_HEAR's "b<i>"). The time stride doubles at blocks 0, 2, 4, 7 and 13: frames every
  640, 1280, 2560, 5120 and 10240 samples;
- `se4`, `se5`, `se6`, `se11` .. `se15` (batch, width): a squeeze-excitation block's bottleneck
  before its ReLU (EfficientAT_HEAR's "se features"), one vector per forward;
- `features` (batch, 6 x last channels: 960 for mn10, 3840 for mn40): the pooled embedding;
- `hidden`: the head's first Linear, before Hardswish (EfficientAT_HEAR's "classifier features");
- `logits` (batch, 527): pre-sigmoid AudioSet logits (what EfficientAT's forward returns).

Every layer returns every frame the network computes (zero-padded convolutions: frame i is centred
on sample i x frame_hop), as the reference pools them. Frame mode is the core's: geometry.py gives
each block its frame field and `frame_skip` = field // (2 hop), the first frame whose whole field
lies inside a chunk, so chunks of a long clip tile it without edge effects (but for the
squeeze-excitation gates, which average over each chunk: exact up to block 3).
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual, SqueezeExcite
from torch import Tensor, nn

from embedzoo.plugin import CardError, ConfigError, Extractor, ModelCard, frontends, remap_state_dict, unwrap_state_dict

from embedzoo_efficientat.geometry import (
    DEFAULT_CONFIG,
    HIDDEN_CHANNELS,
    LAST_EXPANSION,
    MIN_SAMPLES,
    N_FFT,
    SAMPLE_RATE,
    STEM_KERNEL,
    STEM_STRIDE,
    BlockCfg,
    block_configs,
    layer_names,
    parse_config,
    scaled,
)

__all__ = ["EfficientAT", "BlockCfg", "block_configs", "create_model", "checkpoint_filter_fn", "DEFAULT_CONFIG"]

BN = partial(nn.BatchNorm2d, eps=1e-3)  # EfficientAT's BatchNorm (momentum 0.01 only matters in training)
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "hardswish": nn.Hardswish}


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


class EfficientAT(Extractor):
    """An EfficientAT MobileNet ("mn<width>_as") behind embedzoo's extractor interface."""

    def __init__(self, card: ModelCard, config: Mapping[str, Any]):
        super().__init__(card)
        cfg = parse_config(config)
        self.width = float(cfg["width_mult"])
        self.mel = frontends.MelSTFT(n_mels=int(cfg["n_mels"]), sample_rate=SAMPLE_RATE, hop=int(cfg["stft_hop"]), n_fft=N_FFT)
        self.blocks_cfg = block_configs(self.width)
        stem = self.blocks_cfg[0].in_chs
        last_in = self.blocks_cfg[-1].out_chs
        self.embed_dim = LAST_EXPANSION * last_in
        self.hidden_dim = scaled(HIDDEN_CHANNELS, self.width)
        self.num_classes = int(cfg["num_classes"])
        self.features = nn.Sequential(
            ConvNormAct(1, stem, STEM_KERNEL, stride=STEM_STRIDE, norm_layer=BN, act_layer=nn.Hardswish),
            *[_block(b) for b in self.blocks_cfg],
            ConvNormAct(last_in, self.embed_dim, 1, norm_layer=BN, act_layer=nn.Hardswish),
        )
        self.pre_logits = nn.Linear(self.embed_dim, self.hidden_dim)  # EfficientAT's classifier.2
        self.classifier = nn.Linear(self.hidden_dim, self.num_classes)  # EfficientAT's classifier.5
        self.channels_last = bool(cfg["channels_last"])
        if self.channels_last:
            self.features.to(memory_format=torch.channels_last)
        self.layer_names: tuple[str, ...] = layer_names(cfg)
        # the features[] index a layer needs computed (-1: the front end only)
        last = len(self.features) - 1
        self._depth = {"mel": -1, **{f"block{i}": i for i in range(last + 1)}, "features": last, "hidden": last, "logits": last}
        self._depth.update({name: int(name[2:]) for name in self.layer_names if name.startswith("se")})

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
        """audio (batch, samples) at 32 kHz -> each layer in its natural shape (module docstring), every frame."""
        names = list(self.layer_names) if layers is None else list(layers)
        unknown = [n for n in names if n not in self._depth]
        if unknown:
            raise ConfigError(f"{self.card.id} has no layer(s) {unknown}", hint=f"layers: {', '.join(self.layer_names)}")
        if audio.ndim != 2 or audio.shape[-1] < MIN_SAMPLES:
            raise ConfigError(f"EfficientAT needs audio of shape (batch, samples >= {MIN_SAMPLES}), got {tuple(audio.shape)}")
        raw = self.forward_intermediates(audio, names)
        return [raw[name].transpose(1, 2) if name == "mel" else raw[name] for name in names]  # mel as (B, T, M) frames


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


def create_model(card: ModelCard) -> EfficientAT:
    """An EfficientAT MobileNet for this card (config keys: geometry.DEFAULT_CONFIG), random weights, eval mode."""
    return EfficientAT(card, card.config).eval()
