"""VGGish (Hershey et al., ICASSP 2017) as an embedzoo extractor, numerically equal to torchvggish.

One forward sees one VGGish *example*: 96 log-mel frames (0.96 s of hops), which at 16 kHz with a
400-sample STFT window and hop 160 needs exactly 400 + 95 * 160 = 15600 samples (min_window =
max_window = 15600). The fully connected head takes exactly 512 x 6 x 4 features, so one example is
the architecture's only input size; longer clips are windowed by the core.

Layers (each (batch, frames, width)):
- `logmel`    : the 96 input frames, 64 mel bands;
- `block1`..`block4`: the output of each VGG stage (after its max-pool), time steps as frames
  (48, 24, 12, 6), channels x mel bins flattened channel-major (64x32, 128x16, 256x8, 512x4 = 2048);
- `embedding` : the 128-d output of the last fully connected layer (after torchvggish's ReLU), 1 frame;
- `postprocessed`: PCA (with whitening) + clip to [-2, 2] + 8-bit quantisation to 0..255, exactly as
  torchvggish's `Postprocessor` (AudioSet's released features), 1 frame. Needs the PCA parameters in
  the checkpoint (see `checkpoint_filter_fn`).

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

from embedzoo.card import ModelCard
from embedzoo.hub import unwrap_state_dict
from embedzoo.remap import remap_state_dict
from embedzoo.errors import CardError, ConfigError, WeightsError
from embedzoo.extractor import Extractor
from embedzoo.frontends import VGGishLogMel

__all__ = ["VGGish", "create_model", "checkpoint_filter_fn"]

SAMPLE_RATE = 16000
WIN = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
N_MELS = 64
FMIN, FMAX = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96
EXAMPLE_SAMPLES = WIN + (EXAMPLE_FRAMES - 1) * HOP  # 15600
EXAMPLE_HOP = EXAMPLE_FRAMES * HOP  # 15360: the reference's examples do not overlap
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0
CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
LAYERS = ("logmel", "block1", "block2", "block3", "block4", "embedding", "postprocessed")
PCA_KEYS = {"pca_eigen_vectors": "pca.eigen_vectors", "pca_means": "pca.means"}  # PCA file -> ours
# NHWC convolutions: same results, 17-25% less time on CPU (bench/vggish.py, bench/RESULTS.md);
# a card's `config.channels_last` overrides it
CHANNELS_LAST = True


def make_features() -> nn.Sequential:
    """torchvggish's `make_layers`: conv3x3(pad 1) + ReLU stacks with 2x2 max-pools."""
    layers: list[nn.Module] = []
    in_chs = 1
    for v in CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_chs, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_chs = int(v)
    return nn.Sequential(*layers)


class PCA(nn.Module):
    """Holder of AudioSet's PCA parameters (`pca.eigen_vectors` (128, 128), `pca.means` (128,)).

    NaN until a checkpoint provides them. Named apart from the PCA file's own keys
    (`pca_eigen_vectors`, `pca_means`) so that a merged original file always goes through
    `checkpoint_filter_fn`."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("eigen_vectors", torch.full((128, 128), float("nan")))
        self.register_buffer("means", torch.full((128,), float("nan")))


class VGGish(Extractor):
    """VGGish driven by embedzoo's extractor interface: one 0.96 s example per row."""

    def __init__(self, card: ModelCard):
        super().__init__(card)
        self.frontend = VGGishLogMel(SAMPLE_RATE, WIN, HOP, N_FFT, N_MELS, FMIN, FMAX, LOG_OFFSET)
        self.features = make_features()
        self.channels_last = bool(card.config.get("channels_last", CHANNELS_LAST))
        if self.channels_last:
            self.features.to(memory_format=torch.channels_last)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True), nn.Linear(4096, 4096), nn.ReLU(True), nn.Linear(4096, 128), nn.ReLU(True)
        )
        # PCA + whitening of AudioSet's released features; NaN until a checkpoint provides them.
        self.pca = PCA()
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self.block_ends = {f"block{n + 1}": index for n, index in enumerate(pools)}
        self.layer_names = LAYERS
        self.layer_widths = {"logmel": N_MELS, **{f"block{n}": 2048 for n in range(1, 5)}, "embedding": 128, "postprocessed": 128}
        self._check_card()

    def _check_card(self) -> None:
        for spec in self.card.layers:
            if self.layer_widths.get(spec.name) != spec.width or spec.tokens:
                raise CardError(
                    f"model {self.card.id}: VGGish layer {spec.name!r} (width {spec.width}, tokens {list(spec.tokens)}) does not exist",
                    hint=f"VGGish's layers: {self.layer_widths}",
                )
        if self.card.sample_rate != SAMPLE_RATE or self.card.max_window != EXAMPLE_SAMPLES or self.card.min_window != EXAMPLE_SAMPLES:
            raise CardError(f"model {self.card.id}: VGGish takes exactly {EXAMPLE_SAMPLES} samples at {SAMPLE_RATE} Hz")

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
        """audio (batch, 15600) at 16 kHz -> per layer (batch, frames, width); stops after the last layer asked."""
        names = list(self.layer_names) if layers is None else list(layers)
        for name in names:
            if name not in self.layer_names:
                raise ConfigError(f"model {self.card.id} has no layer {name!r}", hint=f"choose from: {', '.join(self.layer_names)}")
        if audio.ndim != 2 or audio.shape[-1] != EXAMPLE_SAMPLES:
            raise ConfigError(f"VGGish needs audio of shape (batch, {EXAMPLE_SAMPLES}), got {tuple(audio.shape)}")
        deepest = max(self.layer_names.index(n) for n in names)
        out: dict[str, Tensor] = {}
        x = self.frontend(audio)  # (B, 96, 64)
        out["logmel"] = x
        if deepest >= 1:
            x = x[:, None]
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            ends = {index: name for name, index in self.block_ends.items()}
            for index, module in enumerate(self.features):
                x = module(x)
                if index in ends:
                    name = ends[index]
                    # (B, C, T, F) -> (B, T, C*F), channel-major
                    out[name] = x.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)
                    if self.layer_names.index(name) >= deepest:
                        break
        if deepest >= self.layer_names.index("embedding"):
            # torchvggish flattens (B, C, T, F) as (B, T, F, C)
            flat = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
            embedding = self.embeddings(flat)
            out["embedding"] = embedding[:, None]
            if deepest == self.layer_names.index("postprocessed"):
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
    unknown = set(card.config) - {"channels_last"}
    if unknown:
        raise CardError(f"model {card.id}: unknown VGGish config keys {sorted(unknown)}", hint="known: channels_last")
    return VGGish(card).eval()
