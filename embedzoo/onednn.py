"""Faster float32 inference for CNN plugins: an eval-mode BatchNorm folded into the conv before it,
and on the CPU conv weights reordered once into oneDNN's blocked layout (so the convolutions run on
oneDNN tensors end to end, with no reorder of weights or maps per call), kept until a weight or a
statistic changes. Measured on PANNs, OpenL3 and YAMNet (bench/RESULTS.md); outputs differ from
the unfolded network by float rounding only (each plugin's parity tests hold them within 1e-5).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["fold_batchnorm", "folded_inference", "onednn_inference", "pack_conv", "run_blocks", "DerivedCache"]

T = TypeVar("T")


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> tuple[Tensor, Tensor]:
    """The conv's (weight, bias) with the BatchNorm after it folded in: w * g / sqrt(var + eps) and
    (b - mean) * g / sqrt(var + eps) + beta (b = 0 for a bias-free conv); the weight keeps the
    conv's memory layout. Without a BatchNorm, the conv's own."""
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device)
    layout = torch.channels_last if conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.dim() == 4 else torch.contiguous_format
    if bn is None:
        return conv.weight.contiguous(memory_format=layout), bias.contiguous()
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    return weight.contiguous(memory_format=layout), ((bias - bn.running_mean) * scale + bn.bias).contiguous()


def folded_inference(x: Tensor, module: nn.Module) -> bool:
    """Whether `module` may use folded BatchNorms for `x`: float32 inference (eval mode, no
    autograd, no autocast); training, gradients and mixed precision take the module's own path."""
    return (
        x.dtype == torch.float32 and not module.training and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled(x.device.type)
    )  # fmt: skip


def onednn_inference(x: Tensor, module: nn.Module) -> bool:
    """`folded_inference` on the CPU with oneDNN available and enabled: the oneDNN-tensor path."""
    return x.device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled and folded_inference(x, module)


def pack_conv(weight: Tensor, bias: Tensor, padding: Sequence[int], stride: Sequence[int] = (1, 1), dilation: Sequence[int] = (1, 1),
              groups: int = 1) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A (folded) conv's weight reordered into oneDNN's layout for `torch.mkldnn_convolution`, and
    its bias, as oneDNN tensors: what each call would otherwise reorder again."""
    packed = torch._C._nn.mkldnn_reorder_conv2d_weight(weight.contiguous().to_mkldnn(), list(padding), list(stride), list(dilation), groups)
    return packed, bias.contiguous().to_mkldnn()


def run_blocks(x: Tensor, blocks: Sequence[nn.Module], names: Sequence[str], out: dict[str, Tensor]) -> Tensor:
    """`x` through `blocks` in order, filing the outputs `names` asks for as `out["block<k>"]`;
    a oneDNN input takes each block's oneDNN path, and every output filed or returned is dense."""
    mkldnn = x.is_mkldnn
    for index, block in enumerate(blocks):
        x = block(x)
        if f"block{index + 1}" in names:
            out[f"block{index + 1}"] = x.to_dense() if mkldnn else x
    return x.to_dense() if mkldnn else x


class DerivedCache:
    """A mixin for an nn.Module that keeps tensors derived from its weights (folded, packed):
    `derived(name, make)` remakes them when any parameter or buffer changed since (loading a
    checkpoint writes them in place, bumping `_version`); copies and pickles leave them behind
    (oneDNN tensors have no storage to copy) and make their own at first use."""

    def derived(self, name: str, make: Callable[[], T]) -> T:
        module: Any = self
        key = tuple((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers()))
        store = self.__dict__.setdefault("_derived", {})
        if name not in store or store[name][0] != key:
            store[name] = (key, make())
        return store[name][1]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # type: ignore[misc]
        state.pop("_derived", None)
        return state
