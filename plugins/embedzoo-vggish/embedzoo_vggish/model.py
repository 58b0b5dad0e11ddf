"""VGGish (Hershey et al., ICASSP 2017) as an embedzoo extractor, numerically equal to torchvggish.

One example is 96 log-mel frames (0.96 s of hops), which at 16 kHz with a 400-sample STFT window
and hop 160 is exactly 400 + 95 * 160 = 15600 samples (min_window = max_window = 15600): the fully
connected head takes exactly 512 x 6 x 4 features. The log-mel and the conv blocks take any length
(frame mode reads them at their own rates); `geometry.py` states every layer's width, bands and frames.

Layers, in their natural shapes:
- `logmel` (batch, frames, 64): one frame per 160 samples;
- `block1`..`block4` (batch, channels, bands, frames): the output of each VGG stage (after its
  max-pool): 64x32, 128x16, 256x8, 512x4 (channels x mel bands), frames every 320, 640, 1280, 2560
  samples (48, 24, 12, 6 in an example);
- `embedding` (batch, 1, 128): the output of the last fully connected layer (after torchvggish's
  ReLU), one frame per example;
- `postprocessed` (batch, 1, 128): PCA (with whitening) + clip to [-2, 2] + 8-bit quantisation to
  0..255, exactly as torchvggish's `Postprocessor` (AudioSet's released features). Needs the PCA
  parameters in the checkpoint (see `checkpoint_filter_fn`).

The log-mel frontend is the core's `embedzoo.frontends.VGGishLogMel` (|STFT| 512 of 400-sample
frames every 160, 64 HTK mel bands 125-7500 Hz, log(x + 0.01)), equal to torchvggish's
`vggish_input.waveform_to_examples` to float32 precision.

Module names follow torchvggish (`features.N`, `embeddings.N`), so conversion is a checked identity
plus the two PCA tensors.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from embedzoo.plugin import ConfigError, Extractor, ModelCard, WeightsError, frontends, remap_state_dict, unwrap_state_dict

from embedzoo_vggish.geometry import (
    EMBEDDING, EXAMPLE_HOP, EXAMPLE_SAMPLES, FMAX, FMIN, HOP, N_FFT, N_MELS, SAMPLE_RATE, VGG_CFG, VGGISH_HIDDEN,
    VGGISH_LAYERS, WIN, check_config, vggish_blocks, vggish_head_features, vggish_shortest,
)  # fmt: skip

__all__ = ["VGGish", "create_model", "checkpoint_filter_fn", "EXAMPLE_HOP", "EXAMPLE_SAMPLES", "LAYERS"]

LAYERS = VGGISH_LAYERS
LOG_OFFSET = 0.01
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0
PCA_KEYS = {"pca_eigen_vectors": "pca.eigen_vectors", "pca_means": "pca.means"}  # PCA file -> ours
# NHWC convolutions: same results, 17-25% less time on CPU (bench/vggish.py, bench/RESULTS.md);
# a card's `config.channels_last` overrides it
CHANNELS_LAST = True
# the shortest input of each layer: one STFT frame, a block's stride in frames, one whole example
SHORTEST = {"logmel": WIN, **{f"block{k}": vggish_shortest(g) for k, g in enumerate(vggish_blocks(), 1)},
            "embedding": EXAMPLE_SAMPLES, "postprocessed": EXAMPLE_SAMPLES}  # fmt: skip


def make_features() -> nn.Sequential:
    """torchvggish's `make_layers`: conv3x3(pad 1) + ReLU stacks with 2x2 max-pools."""
    layers: list[nn.Module] = []
    in_chs = 1
    for v in VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_chs, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_chs = int(v)
    return nn.Sequential(*layers)


class PCA(nn.Module):
    """Holder of AudioSet's PCA parameters (`pca.eigen_vectors` (128, 128), `pca.means` (128,)).

    Random, as every weight of a fresh model is (so `weights=random` reads every layer); a
    checkpoint without the PCA file sets them to NaN ("not provided", refused by
    `VGGish.postprocess`). Named apart from the PCA file's own keys (`pca_eigen_vectors`,
    `pca_means`) so that a merged original file always goes through `checkpoint_filter_fn`."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("eigen_vectors", torch.randn(EMBEDDING, EMBEDDING) / EMBEDDING**0.5)
        self.register_buffer("means", 0.1 * torch.randn(EMBEDDING))


class VGGish(Extractor):
    """VGGish driven by embedzoo's extractor interface: one 0.96 s example per row (the head), any
    length for the log-mel and the blocks."""

    def __init__(self, card: ModelCard):
        super().__init__(card)
        self.frontend = frontends.VGGishLogMel(SAMPLE_RATE, WIN, HOP, N_FFT, N_MELS, FMIN, FMAX, LOG_OFFSET)
        self.features = make_features()
        self.channels_last = bool(card.config.get("channels_last", CHANNELS_LAST))
        if self.channels_last:
            self.features.to(memory_format=torch.channels_last)
        self.embeddings = nn.Sequential(
            nn.Linear(vggish_head_features(), VGGISH_HIDDEN), nn.ReLU(True),
            nn.Linear(VGGISH_HIDDEN, VGGISH_HIDDEN), nn.ReLU(True),
            nn.Linear(VGGISH_HIDDEN, EMBEDDING), nn.ReLU(True),
        )  # fmt: skip
        # PCA + whitening of AudioSet's released features (the postprocessed layer)
        self.pca = PCA()
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self.block_ends = {index: f"block{n + 1}" for n, index in enumerate(pools)}

    @property
    def has_pca(self) -> bool:
        return bool(torch.isfinite(self.pca.eigen_vectors).all() and torch.isfinite(self.pca.means).all())

    def postprocess(self, embedding: Tensor) -> Tensor:
        """(N, 128) -> (N, 128): torchvggish's Postprocessor (PCA, clip to [-2, 2], round to 0..255)."""
        if not self.has_pca:
            raise ConfigError(
                f"model {self.card.id}: layer 'postprocessed' needs VGGish's PCA parameters, which these weights lack",
                hint="use layer 'embedding', or convert a checkpoint that includes pca_eigen_vectors and pca_means",
            )
        pca = torch.mm(self.pca.eigen_vectors, embedding.float().t() - self.pca.means[:, None]).t()
        clipped = torch.clamp(pca, QUANTIZE_MIN, QUANTIZE_MAX)
        return torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """audio (batch, samples) at 16 kHz -> per layer its natural shape (module docstring); the
        embedding needs exactly one example (15600 samples), the log-mel and blocks any length that
        gives them a frame. Stops after the last layer asked."""
        names = list(LAYERS) if layers is None else list(layers)
        unknown = [name for name in names if name not in LAYERS]
        if unknown:
            raise ConfigError(f"model {self.card.id} has no layer(s) {unknown}", hint=f"choose from: {', '.join(LAYERS)}")
        deepest = max(LAYERS.index(n) for n in names)
        if audio.ndim != 2:
            raise ConfigError(f"VGGish needs audio of shape (batch, samples), got {tuple(audio.shape)}")
        if deepest >= LAYERS.index("embedding") and audio.shape[-1] != EXAMPLE_SAMPLES:
            raise ConfigError(f"VGGish's embedding needs exactly one example: audio of shape (batch, {EXAMPLE_SAMPLES}), got {tuple(audio.shape)}")
        if audio.shape[-1] < SHORTEST[LAYERS[deepest]]:
            raise ConfigError(f"VGGish's {LAYERS[deepest]} needs at least {SHORTEST[LAYERS[deepest]]} samples, got {audio.shape[-1]}")
        out: dict[str, Tensor] = {}
        x = self.frontend(audio)  # (B, T, 64)
        out["logmel"] = x
        if deepest >= 1:
            x = x[:, None]
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for index, module in enumerate(self.features):
                x = module(x)
                if index in self.block_ends:
                    name = self.block_ends[index]
                    out[name] = x.transpose(2, 3)  # (B, C, T, F) -> the natural (B, C, F, T)
                    if LAYERS.index(name) >= deepest:
                        break
        if deepest >= LAYERS.index("embedding"):
            # torchvggish flattens (B, C, T, F) as (B, T, F, C)
            flat = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
            embedding = self.embeddings(flat)
            out["embedding"] = embedding[:, None]  # one frame per example
            if deepest == LAYERS.index("postprocessed"):
                out["postprocessed"] = self.postprocess(embedding)[:, None]
        return [out[name] for name in names]


# ---- checkpoint conversion --------------------------------------------------------------------


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: VGGish) -> dict[str, Tensor]:
    """torchvggish's `vggish-10086976.pth` state dict (`features.N.*`, `embeddings.N.*`) -> ours, losslessly.

    The PCA parameters come from a second file (`vggish_pca_params-970ea276.pth`: `pca_eigen_vectors`
    (128, 128), `pca_means` (128,) or (128, 1)). When the state dict includes them (a merge of both
    files) they are converted too; when it does not, the PCA buffers stay NaN and the `postprocessed`
    layer raises a clear error. Nothing else is invented; any unused, missing or mis-shaped key is a
    WeightsError naming it.
    """
    source = dict(unwrap_state_dict(state_dict, model.card.id))
    for key in PCA_KEYS:
        if key in source:  # the PCA file holds numpy arrays (or tensors); pca_means is (128,) or (128, 1)
            value = source[key] if isinstance(source[key], Tensor) else torch.as_tensor(np.asarray(source[key]))
            source[key] = (value.reshape(128) if key == "pca_means" and value.numel() == 128 else value).float()
    have_pca = [key for key in PCA_KEYS if key in source or PCA_KEYS[key] in source]
    if len(have_pca) == 1:
        raise WeightsError(f"checkpoint has {have_pca[0]!r} but not the other PCA tensor of {tuple(PCA_KEYS)}")
    return remap_state_dict(
        source, model.state_dict(), lambda key: PCA_KEYS.get(key), model_id=model.card.id,
        # without the PCA file the buffers stay NaN: "not provided", checked by VGGish.postprocess
        optional=lambda key: key.startswith("pca.") and not have_pca,
        fill=lambda key, tensor: torch.full_like(tensor, float("nan")),
        unused_hint="is this torchvggish's vggish-10086976.pth (optionally merged with its PCA params)? nothing may be left unused",
        missing_hint="the checkpoint is truncated or not a torchvggish VGGish state dict",
    )  # fmt: skip


def create_model(card: ModelCard) -> VGGish:
    """VGGish with random weights (PCA parameters unset), in eval mode; `config.channels_last`
    (optional) picks the convolutions' memory layout."""
    check_config("VGGish", card.config)
    return VGGish(card).eval()
