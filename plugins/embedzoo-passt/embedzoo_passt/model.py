"""PaSST (Koutini et al., "Efficient Training of Audio Transformers with Patchout", 2022).

A DeiT-B distilled ViT on log-mel spectrograms, written from hear21passt's facts on timm blocks:
- front end: `embedzoo.frontends.MelSTFT` (hear21passt's AugmentMelSTFT in eval mode);
- patch embedding: Conv2d 16x16, stride 10 (PaSST-N: 16) over (128 mel bins, T frames);
- factorised positional embeddings: one per frequency row, one per time column (the first columns
  for shorter inputs, as the reference does: `embedzoo.layers.crop_time_embedding`), plus one per
  cls/dist token;
- 12 timm `Block`s (fused attention), final LayerNorm, head = LayerNorm + Linear(527) on
  features = (cls + dist) / 2 after the final norm; `head_dist` is kept (lossless) but unused, as in
  the reference's eval forward.

The layers, their widths, tokens and frame grid are stated in `geometry.py`; `forward_layers`
returns them in their natural shapes: `mel` (batch, STFT frames, 128), `patch` (batch, columns,
768), `block1`..`blockN` and `norm` (batch, 2 + columns, 768: cls, dist, then one frame per patch
column, `embedzoo.layers.patch_columns`), `features` (batch, 768) and `logits` (batch, 527).
hear21passt's embedding (mode "all", 1295-d) is layers [logits, features] with readout "mean".
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any, Mapping, Sequence

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from embedzoo.plugin import ConfigError, Extractor, ModelCard, frontends, remap_state_dict, unwrap_state_dict
from embedzoo.plugin import layers as vit  # embedzoo.layers: patch columns, positional-table cropping

from embedzoo_passt.geometry import TOKENS, positions, settings


class PaSST(Extractor):
    """PaSST-S / -N / -L / hop-variants / 20 s / 30 s, as the card's `config` describes."""

    def __init__(self, card: ModelCard):
        super().__init__(card)
        cfg = settings(card.config)
        self.depth, dim = cfg["depth"], cfg["embed_dim"]
        self.mel = frontends.MelSTFT(n_mels=cfg["n_mels"], sample_rate=card.sample_rate, hop=cfg["stft_hop"])
        grid_f, grid_t = positions(cfg)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, dim, kernel_size=cfg["patch_size"], stride=cfg["stride"])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, len(TOKENS), dim))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, dim, grid_f, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, dim, 1, grid_t))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[Block(dim, cfg["num_heads"], mlp_ratio=4.0, qkv_bias=True, norm_layer=norm) for _ in range(self.depth)])
        self.norm = norm(dim)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, cfg["num_classes"]))
        self.head_dist = nn.Linear(dim, cfg["num_classes"])
        for p in (self.cls_token, self.dist_token, self.new_pos_embed, self.freq_new_pos_embed, self.time_new_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        # geometry.py's order: mel, patch, block1..blockN, norm, features, logits
        self.layer_names = tuple(spec.name for spec in card.layers)

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """Requested layers (all when None) in their natural shapes, computing no block past the
        last one asked for."""
        wanted = list(self.layer_names if layers is None else layers)
        unknown = [name for name in wanted if name not in self.layer_names]
        if unknown:
            raise ConfigError(f"{self.card.id} has no layer(s) {unknown}", hint=f"layers: {', '.join(self.layer_names)}")
        last = max(self.layer_names.index(name) for name in wanted)
        out: dict[str, Tensor] = {}
        mel = self.mel(audio)  # (B, F, T)
        out["mel"] = mel.transpose(1, 2)
        if last >= 1:
            x = self.patch_embed.proj(mel.unsqueeze(1))  # (B, E, Fp, Tp)
            batch, dim, grid_f, grid_t = x.shape
            columns = partial(vit.patch_columns, grid=(grid_f, grid_t))
            out["patch"] = columns(x.flatten(2).transpose(1, 2))
            time = vit.crop_time_embedding(self.time_new_pos_embed, grid_t, model_id=self.card.id)
            x = x + time + self.freq_new_pos_embed
            x = x.flatten(2).transpose(1, 2)  # (B, Fp*Tp, E), frequency-major
            cls = self.cls_token.expand(batch, -1, -1) + self.new_pos_embed[:, :1]
            dist = self.dist_token.expand(batch, -1, -1) + self.new_pos_embed[:, 1:]
            x = torch.cat((cls, dist, x), dim=1)
            for index, block in enumerate(self.blocks):
                if last < 2 + index:
                    break
                x = block(x)
                name = f"block{index + 1}"
                if name in wanted:
                    out[name] = columns(x, tokens=len(TOKENS))
            if last > 1 + self.depth:
                x = self.norm(x)
                out["norm"] = columns(x, tokens=len(TOKENS))
                features = (x[:, 0] + x[:, 1]) / 2
                out["features"] = features
                out["logits"] = self.head(features)
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
    fit raises WeightsError naming it (`remap_state_dict`).
    """
    state = unwrap_state_dict(state_dict, model.card.id)
    prefix = next((p for p in ("net_swa.", "net.") if any(k.startswith(p) for k in state)), "")
    kept = {k: v for k, v in state.items() if not _IGNORED.match(k) and not (prefix == "net_swa." and k.startswith("net."))}
    target = model.state_dict()

    def rename(key: str) -> str | None:
        return key[len(prefix) :] if prefix and key.startswith(prefix) else None

    def linear_patchify(ours: str, value: Tensor) -> Tensor:
        # early PaSST checkpoints store the patch projection as a Linear: (E, 16*16) -> (E, 1, 16, 16)
        expected = target[ours]
        if ours == "patch_embed.proj.weight" and value.ndim < 4 and value.numel() == expected.numel():
            return value.reshape(expected.shape)
        return value

    return remap_state_dict(
        kept,
        target,
        rename,
        model_id=model.card.id,
        their_name=lambda key: prefix + key,
        adapt=linear_patchify,
        optional=lambda key: False,  # PaSST has no BatchNorm: every tensor must come from the file
        unused_hint="is this a PaSST checkpoint?",
        missing_hint="is this a PaSST checkpoint?",
        shape_hint="is this the checkpoint of this PaSST variant (stride, STFT hop, clip length)?",
    )


def create_model(card: ModelCard) -> PaSST:
    """A PaSST for this card (config keys: geometry.DEFAULT_CONFIG), with random weights."""
    return PaSST(card)
