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
  depthwise, BN, ReLU, 1x1 pointwise, BN, ReLU, no skip), strides and widths as in `geometry.YAMNET_ARCH`;
- every conv pads like TF "SAME" (timm's `padding='same'`: a stride-2 conv on an even length pads
  one zero at the end only);
- head: mean over time and frequency (the 1024-d `embedding`), Linear to 521 AudioSet classes
  (`logits`, before the sigmoid TF applies).

Layers (`geometry.py` states their widths, bands and frames), in their natural shapes:
- `logmel` (batch, frames, 64): one frame per 160 samples;
- `block1` .. `block14` (batch, channels, bands, frames): the output of `blocks[k-1]` (the
  reference's `layer<k>`); time and frequency halve at blocks 1, 3, 5, 7 and 13;
- `embedding` (batch, 1024), `logits` (batch, 521): one vector per forward (pooled).

`forward_layers` is the reference's computation on whatever it is given (a 15600-sample window is
one YAMNet patch): every output frame of a block, zero-padded "SAME" convolutions included. Frame
mode is the core's: it appends the blocks' declared `frame_pad` to each chunk, so every stride-2
conv sees an even length and the stride grid sits on the chunk's start whatever its length, and
keeps the frames whose whole receptive field lies in the chunk (`frame_skip`), so chunks of a long
clip tile it exactly (see `geometry.yamnet_blocks`).

Speed: float32 inference (no autograd, no autocast) folds each BatchNorm into the conv before it
(`YAMNet.folded`, remade when a weight changes): MobileNet's maps are small, and the BatchNorm
passes took about a third of the blocks' time. Autograd and autocast run the timm blocks as they are.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from timm.layers.conv2d_same import Conv2dSame
from timm.layers.padding import pad_same
from timm.models._efficientnet_blocks import DepthwiseSeparableConv
from torch import Tensor, nn

from embedzoo.plugin import ConfigError, Extractor, ModelCard, frontends, onednn, remap_state_dict, unwrap_state_dict

from embedzoo_vggish.geometry import (
    FMAX, FMIN, HOP, N_FFT, N_MELS, NUM_CLASSES, SAMPLE_RATE, WIN, YAMNET_ARCH, YAMNET_BLOCKS, YAMNET_LAYERS, check_config,
)  # fmt: skip

__all__ = ["YAMNet", "create_model", "checkpoint_filter_fn", "release_key_map"]

LOG_OFFSET = 0.001  # YAMNet's (VGGish uses 0.01)
BN_EPS = 1e-4  # TF YAMNet's BatchNorm epsilon (PyTorch's default 1e-5 changes the outputs)
KERNEL = 3
BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# how deep each layer sits: the log-mel, the blocks, then the pooled head
DEPTH = {"logmel": 0, **{name: k for k, name in enumerate(YAMNET_BLOCKS, 1)}, "embedding": len(YAMNET_BLOCKS), "logits": len(YAMNET_BLOCKS)}


# ---- model ------------------------------------------------------------------------------------


class YAMNet(onednn.DerivedCache, Extractor):
    """YAMNet driven by embedzoo's extractor interface; the module docstring lists its layers."""

    def __init__(self, card: ModelCard, channels_last: bool = True):
        super().__init__(card)
        # torch-vggish-yamnet's log-mel, uncentred: torchaudio's HTK triangles (drawn in Hz), offset 0.001
        self.frontend = frontends.VGGishLogMel(SAMPLE_RATE, WIN, HOP, N_FFT, N_MELS, FMIN, FMAX, log_offset=LOG_OFFSET, triangles="hz")
        norm = partial(nn.BatchNorm2d, eps=BN_EPS)
        blocks: list[nn.Module] = []
        in_chs = 1
        for index, (stride, out_chs) in enumerate(YAMNET_ARCH):
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

    # ---- forward ----------------------------------------------------------------------------

    def forward_intermediates(self, audio: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """Raw outputs of the named layers: logmel (B, T, 64), blockK (B, C, T', F), embedding
        (B, 1024), logits (B, 521). Stops after the deepest layer asked."""
        deepest = max(DEPTH[n] for n in names)
        out: dict[str, Tensor] = {}
        mel = self.frontend(audio)
        out["logmel"] = mel
        if deepest == 0:
            return out
        x = mel[:, None]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        folded = folded_inference(x, self)
        for k, block in enumerate(self.blocks, 1):
            x = self.folded_block(k - 1, x) if folded else block(x)
            out[f"block{k}"] = x
            if k == deepest:
                break
        if "embedding" in names or "logits" in names:
            embedding = x.mean(dim=(2, 3))
            out["embedding"] = embedding
            out["logits"] = self.classifier(embedding)
        return out

    def folded_block(self, index: int, x: Tensor) -> Tensor:
        """Block `index` with each BatchNorm folded into the conv before it (conv + bias, ReLU in place):
        one pass over the map less per conv, what half of the blocks' time went to (bench/RESULTS.md)."""
        for conv, (weight, bias) in zip(_convs(self.blocks[index]), self.folded()[index]):
            if isinstance(conv, Conv2dSame):  # TF "SAME": a stride-2 conv pads the end only on even lengths
                x = F.conv2d(pad_same(x, conv.kernel_size, conv.stride, conv.dilation), weight, bias, conv.stride, 0, conv.dilation, conv.groups)
            else:
                x = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
            x = x.relu_()
        return x

    def folded(self) -> list[list[tuple[Tensor, Tensor]]]:
        """Every block's (weight, bias) pairs with their BatchNorm folded in, in the convs' memory
        layout; remade whenever a weight or statistic changed since (loading a checkpoint writes them
        in place, bumping `_version`)."""
        return self.derived("folded", lambda: [[onednn.fold_batchnorm(*pair) for pair in _conv_norms(block)] for block in self.blocks])

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """audio (batch, samples >= 400) at 16 kHz -> per layer its natural shape (module docstring):
        the reference network on exactly this input, every frame it computes."""
        names = list(YAMNET_LAYERS) if layers is None else list(layers)
        unknown = [n for n in names if n not in DEPTH]
        if unknown:
            raise ConfigError(f"{self.card.id} has no layer(s) {unknown}", hint=f"layers: {', '.join(YAMNET_LAYERS)}")
        if audio.ndim != 2 or audio.shape[-1] < WIN:
            raise ConfigError(f"YAMNet needs audio of shape (batch, samples >= {WIN}), got {tuple(audio.shape)}")
        raw = self.forward_intermediates(audio, names)
        # blocks run on (B, C, T, F); a map's natural shape is (B, C, F, T)
        return [raw[name].transpose(2, 3) if name in YAMNET_BLOCKS else raw[name] for name in names]


def _conv_norms(block: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """A block's (conv, BatchNorm + ReLU) pairs in forward order."""
    if isinstance(block, ConvNormAct):
        return [(block.conv, block.bn)]
    return [(block.conv_dw, block.bn1), (block.conv_pw, block.bn2)]


def _convs(block: nn.Module) -> list[nn.Conv2d]:
    return [conv for conv, _ in _conv_norms(block)]


folded_inference = onednn.folded_inference


# ---- checkpoint conversion ----------------------------------------------------------------------


def release_key_map() -> dict[str, str]:
    """Every key of w-hc's `yamnet.pth` (torch-vggish-yamnet's `YAMNet` state dict) -> ours."""
    mapping = {"layer1.fused.conv.weight": "blocks.0.conv.weight", "classifier.weight": "classifier.weight", "classifier.bias": "classifier.bias"}
    mapping.update({f"layer1.fused.bn.{p}": f"blocks.0.bn.{p}" for p in BN_PARAMS})
    for k in range(2, len(YAMNET_ARCH) + 1):
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

CHANNELS_LAST = True  # NHWC convolutions: the faster layout (bench/yamnet.py, bench/RESULTS.md)


def create_model(card: ModelCard) -> YAMNet:
    """YAMNet with random weights, in eval mode; `config.channels_last` (optional) picks the
    convolutions' memory layout."""
    check_config("YAMNet", card.config)
    return YAMNet(card, channels_last=bool(card.config.get("channels_last", CHANNELS_LAST))).eval()
