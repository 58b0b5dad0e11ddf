"""PaSST (Koutini et al., "Efficient Training of Audio Transformers with Patchout", 2022).

A DeiT-B distilled ViT on log-mel spectrograms, written from hear21passt's facts on timm blocks:
- front end: `embedzoo.frontends.MelSTFT` (hear21passt's AugmentMelSTFT in eval mode);
- patch embedding: Conv2d 16x16, stride 10 (PaSST-N: 16) over (128 mel bins, T frames);
- factorised positional embeddings: one per frequency row, one per time column (cut to the input's
  columns for shorter inputs, as the reference does), plus one per cls/dist token;
- 12 timm `Block`s (fused attention), final LayerNorm, head = LayerNorm + Linear(527) on
  features = (cls + dist) / 2 after the final norm; `head_dist` is kept (lossless) but unused, as in
  the reference's eval forward.

Layers of `forward_layers` (each (batch, tokens + frames, width)):
- `mel` (128): the front end, one frame per centred STFT frame (hop 320/160/100 samples, NOT the
  card's frame_hop: window mode only; its own min_window, 600 samples, lets the 2levelmel recipe
  read 6-frame windows);
- `patch` (768): the patch embedding (conv output, before positional embeddings), one frame per
  patch column = mean over the frequency patches;
- `block1`..`blockN` (768), `norm` (768, after the final LayerNorm): tokens `cls`, `dist`, then one
  frame per patch column (mean over the frequency patches of that column);
- `features` (768): one frame, (cls + dist) / 2 after the final norm -- what hear21passt's `net`
  returns as `features`;
- `logits` (527): one frame, the head on `features` (pre-sigmoid).
hear21passt's embedding (mode "all", 1295-d) is layers [logits, features] with readout "mean".
Patch column j covers samples [3200 j - 512, 3200 j + 5312) of a window (hop 320 models) and is
centred on 3200 j + 2400; the card's frame_field 4801 is the shortest input giving one column.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any, Mapping, Sequence

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from embedzoo.card import ModelCard
from embedzoo.hub import unwrap_state_dict
from embedzoo.errors import CardError, ConfigError, WeightsError
from embedzoo.extractor import Extractor
from embedzoo.frontends import MelSTFT

TOKENS = ("cls", "dist")


class PaSST(Extractor):
    """PaSST-S / -N / hop-variants / 20 s / 30 s, as the card's `config` describes."""

    def __init__(self, card: ModelCard, config: Mapping[str, Any]):
        super().__init__(card)
        cfg = {**DEFAULT_CONFIG, **dict(config)}
        self.depth, dim = int(cfg["depth"]), int(cfg["embed_dim"])
        stride, patch = int(cfg["stride"]), int(cfg["patch_size"])
        self.mel = MelSTFT(n_mels=int(cfg["n_mels"]), sample_rate=card.sample_rate, hop=int(cfg["stft_hop"]))
        grid_f = int(cfg["n_mels"]) // stride
        grid_t = int(cfg["input_tdim"]) // stride
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, dim))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, dim, grid_f, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, dim, 1, grid_t))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(
            *[Block(dim, int(cfg["num_heads"]), mlp_ratio=4.0, qkv_bias=True, norm_layer=norm) for _ in range(self.depth)]
        )
        self.norm = norm(dim)
        classes = int(cfg["num_classes"])
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, classes))
        self.head_dist = nn.Linear(dim, classes)
        for p in (self.cls_token, self.dist_token, self.new_pos_embed, self.freq_new_pos_embed, self.time_new_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        self.layer_names = ("mel", "patch", *[f"block{i + 1}" for i in range(self.depth)], "norm", "features", "logits")
        self._check_card(dim, classes, stride)

    def _check_card(self, dim: int, classes: int, stride: int) -> None:
        widths = {"mel": self.mel.n_mels, "logits": classes}
        for spec in self.card.layers:
            if spec.name not in self.layer_names:
                raise CardError(f"card {self.card.id}: PaSST has no layer {spec.name!r}; layers: {', '.join(self.layer_names)}")
            if spec.width != widths.get(spec.name, dim):
                raise CardError(f"card {self.card.id}: layer {spec.name} has width {widths.get(spec.name, dim)}, card says {spec.width}")
        if self.card.frame_hop != stride * self.mel.hop:
            raise CardError(f"card {self.card.id}: frame_hop must be stride*stft_hop = {stride * self.mel.hop}")

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """Requested layers (all when None), computing no block past the last one asked for."""
        wanted = list(self.layer_names if layers is None else layers)
        unknown = [name for name in wanted if name not in self.layer_names]
        if unknown:
            raise ConfigError(f"{self.card.id} has no layer(s) {unknown}", hint=f"layers: {', '.join(self.layer_names)}")
        if "mel" in wanted and self.knobs.mode == "frame":
            raise ConfigError(
                f"{self.card.id}: frame mode cannot tile the centred STFT frames of layer 'mel'",
                hint="read 'mel' in window mode (e.g. preset mel6: readout 'flat' of a 6-frame window)",
            )
        last = max(self.layer_names.index(name) for name in wanted)
        out: dict[str, Tensor] = {}
        mel = self.mel(audio)  # (B, F, T)
        out["mel"] = mel.transpose(1, 2)
        if last >= 1:
            x = self.patch_embed.proj(mel.unsqueeze(1))  # (B, E, Fp, Tp)
            batch, dim, grid_f, grid_t = x.shape
            if grid_t > self.time_new_pos_embed.shape[-1]:
                raise ConfigError(
                    f"{self.card.id}: input has {grid_t} patch columns, the model takes {self.time_new_pos_embed.shape[-1]}",
                    hint=f"inputs must be at most {self.card.max_window} samples",
                )
            out["patch"] = x.mean(dim=2).transpose(1, 2)
            x = x + self.time_new_pos_embed[:, :, :, :grid_t] + self.freq_new_pos_embed
            x = x.flatten(2).transpose(1, 2)  # (B, Fp*Tp, E), frequency-major
            cls = self.cls_token.expand(batch, -1, -1) + self.new_pos_embed[:, :1]
            dist = self.dist_token.expand(batch, -1, -1) + self.new_pos_embed[:, 1:]
            x = torch.cat((cls, dist, x), dim=1)

            def columns(seq: Tensor) -> Tensor:
                frames = seq[:, 2:].reshape(batch, grid_f, grid_t, dim).mean(dim=1)
                return torch.cat((seq[:, :2], frames), dim=1)

            for index, block in enumerate(self.blocks):
                if last < 2 + index:
                    break
                x = block(x)
                name = f"block{index + 1}"
                if name in wanted:
                    out[name] = columns(x)
            if last > 1 + self.depth:
                x = self.norm(x)
                out["norm"] = columns(x)
                features = (x[:, 0] + x[:, 1]) / 2
                out["features"] = features[:, None]
                out["logits"] = self.head(features)[:, None]
        return [out[name] for name in wanted]


# ---- checkpoints ------------------------------------------------------------------------------

# Training checkpoints (PaSST's lightning experiments) hold the network twice, as `net.` and its
# stochastic-weight average `net_swa.`; the released "-swa" files are the latter. These keys of a
# training checkpoint are not network weights: the HEAR wrapper's device proxy, and the front end's
# buffers (all recomputed from the card).
_IGNORED = re.compile(r"^(device_proxy|mel\..*)$")


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: PaSST) -> dict[str, Tensor]:
    """An original PaSST checkpoint -> this model's keys (identical to hear21passt's PaSST keys).

    Accepts released files (plain state dict, or under "model"/"state_dict") and training
    checkpoints with `net.`/`net_swa.` prefixes (the SWA copy is used when present; the other copy and
    the wrapper's `mel.*`/`device_proxy` entries are dropped by name). Old checkpoints with a linear
    patch projection are reshaped to the conv. Any other key, a missing key or a shape that does not
    fit raises WeightsError naming it.
    """
    state = unwrap_state_dict(state_dict, model.card.id)
    if any(k.startswith("net_swa.") for k in state):
        prefix, other = "net_swa.", "net."
    elif any(k.startswith("net.") for k in state):
        prefix, other = "net.", None
    else:
        prefix, other = "", None
    expected = model.state_dict()
    out: dict[str, Tensor] = {}
    unused: list[str] = []
    for key, value in state.items():
        if prefix and not key.startswith(prefix):
            if (other and key.startswith(other)) or _IGNORED.match(key):
                continue
            unused.append(key)
            continue
        if not prefix and _IGNORED.match(key):
            continue
        name = key[len(prefix) :]
        if name not in expected:
            unused.append(key)
            continue
        if not isinstance(value, Tensor):
            raise WeightsError(f"checkpoint entry {key} is not a tensor")
        if name == "patch_embed.proj.weight" and value.ndim < 4:
            value = value.reshape(expected[name].shape)
        if tuple(value.shape) != tuple(expected[name].shape):
            raise WeightsError(
                f"checkpoint tensor {key} has shape {tuple(value.shape)}, {model.card.id} needs {tuple(expected[name].shape)}",
                hint="is this the checkpoint of this PaSST variant (stride, STFT hop, clip length)?",
            )
        out[name] = value
    if unused:
        raise WeightsError(f"checkpoint keys not used by {model.card.id}: {unused[:8]}", hint="is this a PaSST checkpoint?")
    missing = [k for k in expected if k not in out]
    if missing:
        raise WeightsError(f"checkpoint lacks {missing[:8]} for {model.card.id}", hint="is this a PaSST checkpoint?")
    return out


# ---- configs --------------------------------------------------------------------------------

DEFAULT_CONFIG: dict[str, Any] = {
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
    "patch_size": 16,
    "stride": 10,
    "n_mels": 128,
    "stft_hop": 320,
    "input_tdim": 998,
    "num_classes": 527,
}


def create_model(card: ModelCard) -> PaSST:
    """A PaSST for this card (config keys as DEFAULT_CONFIG), with random weights."""
    unknown = set(card.config) - set(DEFAULT_CONFIG)
    if unknown:
        raise CardError(f"card {card.id}: unknown PaSST config keys {sorted(unknown)}")
    return PaSST(card, card.config)
