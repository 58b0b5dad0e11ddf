"""YAMNet (Plakal & Ellis, Google 2019) as an embedzoo extractor, numerically equal to torch-vggish-yamnet.

Written from the facts of `torch_vggish_yamnet` (its `yamnet/model.py`, `input_proc.py`, `params.py`,
a port of the TF model whose released weights are w-hc's `yamnet.pth`) on timm building blocks:
- front end (the core's `VGGishLogMel` with YAMNet's settings): 16 kHz, frames of 400 samples every
  160, periodic Hann, |rfft_512| (magnitude), 64 HTK mel bands 125-7500 Hz with torchaudio's
  triangles (drawn in Hz, as the reference's torchaudio MelSpectrogram), log(x + 0.001). The
  reference centres its STFT (reflect padding); here frame t covers samples [160 t, 160 t + 400) of
  the input -- the same values, since |DFT| does not change when the windowed frame moves inside the
  512 points -- so a forward sees only its own samples and 400 + 95 x 160 = 15600 samples are
  exactly one 96-frame (0.96 s) YAMNet patch. The reference's centred frames are those of the clip
  padded by 200 samples (see docs/models/yamnet.md);
- `blocks[0]`: 3x3 conv, stride 2, 32 channels, BatchNorm (eps 1e-4), ReLU (timm `ConvNormAct`);
- `blocks[1..13]`: MobileNetV1 depthwise-separable blocks (timm `DepthwiseSeparableConv`: 3x3
  depthwise, BN, ReLU, 1x1 pointwise, BN, ReLU, no skip), strides and widths as in `ARCH`;
- every conv pads like TF "SAME" (timm's `padding='same'`: a stride-2 conv on an even length pads
  one zero at the end only);
- head: mean over time and frequency (the 1024-d `embedding`), Linear to 521 AudioSet classes
  (`logits`, before the sigmoid TF applies).

Layers of `forward_layers` (each (batch, frames, width)):
- `logmel` (64): one frame per 160 samples;
- `block1` .. `block14`: the output of `blocks[k-1]` (the reference's `layer<k>`), time steps as
  frames, (channels, frequency bands) flattened channel-major; time and frequency halve at blocks
  1, 3, 5, 7 and 13;
- `embedding` (1024), `logits` (521): one vector per forward (pooled).

Window mode returns every output frame of a block (zero-padded "SAME" convolutions), as the
reference computes them on a patch. Frame mode returns only the frames whose whole receptive field
lies in the input, on one fixed alignment of the stride grid, so chunks of a long clip tile it
exactly (see `block_geometry` and `forward_layers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping, Sequence

import torch
from timm.layers import ConvNormAct
from timm.models._efficientnet_blocks import DepthwiseSeparableConv
from torch import Tensor, nn

from embedzoo.card import ModelCard
from embedzoo.errors import CardError, ConfigError
from embedzoo.extractor import Extractor
from embedzoo.frontends import VGGishLogMel
from embedzoo.hub import unwrap_state_dict
from embedzoo.remap import remap_state_dict

__all__ = ["YAMNet", "block_geometry", "create_model", "checkpoint_filter_fn", "release_key_map"]

SAMPLE_RATE = 16000
WIN, HOP, N_FFT = 400, 160, 512  # 25 ms frames every 10 ms
N_MELS, FMIN, FMAX = 64, 125.0, 7500.0
LOG_OFFSET = 0.001  # YAMNet's (VGGish uses 0.01)
PATCH_FRAMES = 96
PATCH_SAMPLES = WIN + (PATCH_FRAMES - 1) * HOP  # 15600: one 0.96 s patch
BN_EPS = 1e-4  # TF YAMNet's BatchNorm epsilon (PyTorch's default 1e-5 changes the outputs)
NUM_CLASSES = 521
KERNEL = 3
# (stride, output channels) of blocks[0] (a full conv) and the 13 depthwise-separable blocks
ARCH: tuple[tuple[int, int], ...] = (
    (2, 32), (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
    (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024),
)  # fmt: skip
BLOCKS = tuple(f"block{k}" for k in range(1, len(ARCH) + 1))
LAYERS = ("logmel", *BLOCKS, "embedding", "logits")
BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


# ---- geometry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockGeometry:
    """Where a block's output frames sit, on the alignment where every stride-2 conv sees an even
    length (its "SAME" padding is then one zero at the end; a stride-1 conv pads one each side).

    Output i of the block is computed from STFT frames first + jump*i ... first + jump*i + span - 1.
    """

    channels: int
    bands: int
    jump: int  # STFT frames between outputs (the block's total time stride)
    first: int  # first STFT frame of output 0's receptive field (<= 0: reaches into the padding)
    span: int  # STFT frames in one output's receptive field

    @property
    def frame_hop(self) -> int:
        return HOP * self.jump

    @property
    def receptive_field(self) -> int:
        """Samples one output frame depends on."""
        return HOP * (self.span - 1) + WIN

    @property
    def skip(self) -> int:
        """Outputs before the first whose receptive field lies inside the input."""
        return math.ceil(-self.first / self.jump)

    @property
    def frame_field(self) -> int:
        """The card's frame_field: twice the distance from the input's start to the centre of
        output `skip` -- the receptive field widened (by less than one hop) so that frame j is
        centred on frame_field // 2 + j * frame_hop, the core's frame-mode convention."""
        centre = HOP * (self.first + self.jump * self.skip) + self.receptive_field // 2
        return 2 * centre


def block_geometry() -> tuple[BlockGeometry, ...]:
    """The geometry of block1..block14 in frame mode, derived from ARCH."""
    out = []
    first, jump, span, bands = 0, 1, 1, N_MELS
    for stride, channels in ARCH:
        first -= 0 if stride == 2 else jump * (KERNEL // 2)
        span += (KERNEL - 1) * jump
        jump *= stride
        bands = -(-bands // stride)
        out.append(BlockGeometry(channels, bands, jump, first, span))
    return tuple(out)


# ---- model ------------------------------------------------------------------------------------


class YAMNet(Extractor):
    """YAMNet driven by embedzoo's extractor interface; the module docstring lists its layers."""

    def __init__(self, card: ModelCard, channels_last: bool = True):
        super().__init__(card)
        # torch-vggish-yamnet's log-mel, uncentred: torchaudio's HTK triangles (drawn in Hz), offset 0.001
        self.frontend = VGGishLogMel(SAMPLE_RATE, WIN, HOP, N_FFT, N_MELS, FMIN, FMAX, log_offset=LOG_OFFSET, triangles="hz")
        norm = partial(nn.BatchNorm2d, eps=BN_EPS)
        blocks: list[nn.Module] = []
        in_chs = 1
        for index, (stride, out_chs) in enumerate(ARCH):
            if index == 0:
                blocks.append(ConvNormAct(in_chs, out_chs, KERNEL, stride=stride, padding="same", norm_layer=norm, act_layer=nn.ReLU))
            else:
                blocks.append(
                    DepthwiseSeparableConv(
                        in_chs, out_chs, dw_kernel_size=KERNEL, stride=stride, pad_type="same",
                        noskip=True, pw_act=True, act_layer=nn.ReLU, norm_layer=norm,
                    )
                )  # fmt: skip
            in_chs = out_chs
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(in_chs, NUM_CLASSES)
        self.channels_last = channels_last
        if channels_last:
            self.blocks.to(memory_format=torch.channels_last)
        self.geometry = dict(zip(BLOCKS, block_geometry()))
        self.layer_widths = {"logmel": N_MELS, **{n: g.channels * g.bands for n, g in self.geometry.items()}, "embedding": in_chs, "logits": NUM_CLASSES}
        self._check_card()

    def layer_spec(self, name: str) -> dict[str, int | bool]:
        """What the card must say of a layer: width, bands, pooled, frame_hop, frame_field, min_window."""
        if name == "logmel":
            return {"width": N_MELS, "bands": 1, "pooled": False, "frame_hop": HOP, "frame_field": WIN, "min_window": WIN}
        if name in self.geometry:
            g = self.geometry[name]
            return {"width": g.channels * g.bands, "bands": g.bands, "pooled": False, "frame_hop": g.frame_hop, "frame_field": g.frame_field, "min_window": WIN}
        return {"width": self.layer_widths[name], "bands": 1, "pooled": True, "frame_hop": 0, "frame_field": 0, "min_window": PATCH_SAMPLES}

    def _check_card(self) -> None:
        card = self.card
        if card.sample_rate != SAMPLE_RATE or card.min_window < WIN:
            raise CardError(f"card {card.id}: YAMNet runs at {SAMPLE_RATE} Hz on inputs of at least {WIN} samples")
        for spec in card.layers:
            if spec.name not in self.layer_widths:
                raise CardError(f"card {card.id}: YAMNet has no layer {spec.name!r}", hint=f"layers: {', '.join(LAYERS)}")
            expected = self.layer_spec(spec.name)
            hop, field = (0, 0) if spec.pooled else card.frame_geometry(spec)
            declared = {"width": spec.width, "bands": spec.bands, "pooled": spec.pooled, "frame_hop": hop, "frame_field": field,
                        "min_window": card.layer_min_window(spec)}  # fmt: skip
            wrong = {k: v for k, v in expected.items() if declared[k] != v}
            if wrong or spec.tokens:
                raise CardError(f"card {card.id}: layer {spec.name} must have {wrong}, the card says {({k: declared[k] for k in wrong})} (tokens {list(spec.tokens)})")

    # ---- forward ----------------------------------------------------------------------------

    def forward_intermediates(self, audio: Tensor, names: Sequence[str], time_multiple: int = 1) -> dict[str, Tensor]:
        """Raw outputs of the named layers: logmel (B, T, 64), blockK (B, C, T', F), embedding
        (B, 1024), logits (B, 521). Stops after the deepest layer asked. `time_multiple` > 1 pads the
        log-mel with zeros at the end to a multiple of that many frames before the blocks."""
        depth = {"logmel": 0, **{n: k for k, n in enumerate(BLOCKS, 1)}, "embedding": len(BLOCKS), "logits": len(BLOCKS)}
        deepest = max(depth[n] for n in names)
        out: dict[str, Tensor] = {}
        mel = self.frontend(audio)
        out["logmel"] = mel
        if deepest == 0:
            return out
        short = -mel.shape[1] % time_multiple
        x = nn.functional.pad(mel, (0, 0, 0, short))[:, None] if short else mel[:, None]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for k, block in enumerate(self.blocks, 1):
            x = block(x)
            out[f"block{k}"] = x
            if k == deepest:
                break
        if "embedding" in names or "logits" in names:
            embedding = x.mean(dim=(2, 3))
            out["embedding"] = embedding
            out["logits"] = self.classifier(embedding)
        return out

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """audio (batch, samples >= 400) at 16 kHz -> per layer (batch, frames, width).

        Window mode returns every frame a layer computes on the input (a 15600-sample window is one
        YAMNet patch, the reference's computation). Frame mode returns block frames whose receptive
        field lies wholly in the input, frame j centred on frame_field // 2 + j * frame_hop: the log-mel
        is padded to a multiple of 32 frames so that every stride-2 conv sees an even length, which
        fixes the stride grid to the input's start whatever its length (`BlockGeometry`).
        """
        names = list(LAYERS) if layers is None else list(layers)
        unknown = [n for n in names if n not in self.layer_widths]
        if unknown:
            raise ConfigError(f"{self.card.id} has no layer(s) {unknown}", hint=f"layers: {', '.join(LAYERS)}")
        if audio.ndim != 2 or audio.shape[-1] < WIN:
            raise ConfigError(f"YAMNet needs audio of shape (batch, samples >= {WIN}), got {tuple(audio.shape)}")
        frame_mode = self.knobs.mode == "frame"
        if frame_mode and any(self.layer_spec(n)["pooled"] for n in names):
            raise ConfigError(f"{self.card.id}: layers embedding and logits are pooled over a window; frame mode has no frames for them")
        stride = max((self.geometry[n].jump for n in names if n in self.geometry), default=1)
        raw = self.forward_intermediates(audio, names, time_multiple=stride if frame_mode else 1)
        outputs = []
        for name in names:
            x = raw[name]
            if name in ("embedding", "logits"):
                outputs.append(x[:, None, :])
                continue
            if name in self.geometry:
                x = x.permute(0, 2, 1, 3).flatten(2)  # (B, C, T, F) -> (B, T, C*F), frequency fastest
                if frame_mode:
                    g = self.geometry[name]
                    count = (audio.shape[-1] - g.frame_field) // g.frame_hop + 1
                    if count < 1:
                        raise ConfigError(f"{self.card.id}: frame mode needs chunks of at least {g.frame_field} samples for {name}, got {audio.shape[-1]}")
                    x = x[:, g.skip : g.skip + count]
            outputs.append(x)
        return outputs


# ---- checkpoint conversion ----------------------------------------------------------------------


def release_key_map() -> dict[str, str]:
    """Every key of w-hc's `yamnet.pth` (torch-vggish-yamnet's `YAMNet` state dict) -> ours."""
    mapping = {"layer1.fused.conv.weight": "blocks.0.conv.weight", "classifier.weight": "classifier.weight", "classifier.bias": "classifier.bias"}
    mapping.update({f"layer1.fused.bn.{p}": f"blocks.0.bn.{p}" for p in BN_PARAMS})
    for k in range(2, len(ARCH) + 1):
        ours = f"blocks.{k - 1}"
        for theirs, conv, bn in (("depthwise_conv", "conv_dw", "bn1"), ("pointwise_conv", "conv_pw", "bn2")):
            mapping[f"layer{k}.{theirs}.conv.weight"] = f"{ours}.{conv}.weight"
            mapping.update({f"layer{k}.{theirs}.bn.{p}": f"{ours}.{bn}.{p}" for p in BN_PARAMS})
    return mapping


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: YAMNet) -> dict[str, Tensor]:
    """w-hc's `yamnet.pth` (a plain state dict of the reference `YAMNet`: `layer<k>.*`, `classifier.*`) -> ours.

    Lossless: every tensor is used once under its new name, unchanged. BatchNorm's
    `num_batches_tracked` (a training counter, unused in eval) is filled with 0 when a file lacks
    it. Already-converted keys pass through. Raises WeightsError naming any key that is unused,
    missing, duplicated or of the wrong shape.
    """
    mapping = release_key_map()
    theirs = {ours: key for key, ours in mapping.items()}
    return remap_state_dict(
        unwrap_state_dict(state_dict, model.card.id), model.state_dict(), mapping.get, model_id=model.card.id,
        their_name=lambda key: theirs.get(key, key),
        unused_hint="is this w-hc's yamnet.pth (torch-vggish-yamnet's YAMNet state dict)? nothing may be left unused",
        missing_hint="the checkpoint is truncated or not a YAMNet state dict",
    )  # fmt: skip


# ---- configs ----------------------------------------------------------------------------------

DEFAULT_CONFIG: dict[str, Any] = {
    "channels_last": True,  # NHWC convolutions (bench/yamnet.py, bench/RESULTS.md)
}


def create_model(card: ModelCard) -> YAMNet:
    """YAMNet for this card (config keys as DEFAULT_CONFIG) with random weights, in eval mode."""
    unknown = set(card.config) - set(DEFAULT_CONFIG)
    if unknown:
        raise CardError(f"card {card.id}: unknown YAMNet config keys {sorted(unknown)}", hint=f"known: {', '.join(DEFAULT_CONFIG)}")
    cfg = {**DEFAULT_CONFIG, **card.config}
    return YAMNet(card, channels_last=bool(cfg["channels_last"])).eval()
