"""BEATs (Chen, Wu, Wang, Liu, Tompkins, Chen, Wei, "BEATs: Audio Pre-Training with Acoustic
Tokenizers", ICML 2023) on embedzoo's own torch modules, with Microsoft's parameter names.

- front end: `embedzoo.frontends.KaldiFbank` (128 bins, 25 / 10 ms, torchaudio's defaults: povey
  window, no dither, 20 Hz to Nyquist, pre-emphasis 0.97, DC removal) on the waveform times 2**15,
  batched, then (x - fbank_mean) / (2 * fbank_std);
- network: `BEATsNet` (below), held as `self.model`, so the state dict is `model.` + the keys of
  Microsoft's checkpoints (`patch_embedding.weight`, `encoder.layers.N.self_attn.q_proj.weight`, ...).
  Attention runs through `torch.nn.functional.scaled_dot_product_attention`, the gated relative
  position bias passed as its additive `attn_mask` (the reference's softmax(q k^T / sqrt(d) + bias),
  with its max-subtraction and 1/32 rescaling trick, which cancel exactly in exact arithmetic).

The layers, their widths and frame grid are stated in `geometry.py`; `forward_layers` returns
`patch`, `block1`..`blockN` as (batch, columns, D), one frame per patch column (the mean over its
8 frequency patches, `embedzoo.layers.patch_columns`), and `logits` as (batch, predictor_class).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedzoo.plugin import ConfigError, Extractor, ModelCard, WeightsError, frontends, remap_state_dict, unwrap_state_dict
from embedzoo.plugin import layers as vit

from embedzoo_beats.geometry import ARCH_KEYS, CFG_DEFAULTS, NUM_MEL_BINS, SAMPLE_RATE, bands, settings


def relative_buckets(length: int, num_buckets: int, max_distance: int, device: torch.device) -> Tensor:
    """(length, length) bucket of each (query i, key j) offset j - i: T5's bidirectional buckets,
    half the buckets per sign, exact below a quarter of them, logarithmic up to max_distance."""
    position = torch.arange(length, device=device)
    offset = position[None, :] - position[:, None]
    half = num_buckets // 2
    exact = half // 2
    distance = offset.abs()
    scaled = torch.log(distance.clamp(min=1).to(torch.float32) / exact) / math.log(max_distance / exact) * (half - exact)
    far = (exact + scaled.to(torch.long)).clamp(max=half - 1)
    return (offset > 0).to(torch.long) * half + torch.where(distance < exact, distance, far)


class PositionConv(nn.Module):
    """The grouped conv position embedding with weight norm over every dim but the kernel's (dim 2),
    as `weight_g` (1, 1, K) and `weight_v` -- the checkpoints' names (torch's old weight_norm)."""

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.groups, self.padding = groups, kernel // 2
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(dim, dim // groups, kernel) * (4.0 / (kernel * dim)) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:  # (B, D, L) -> (B, D, L)
        v = self.weight_v
        weight = self.weight_g * v / v.norm(dim=(0, 1), keepdim=True)
        out = F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)
        return F.gelu(out[..., : x.shape[-1]])  # an even kernel gives one extra step: drop the last (SamePad)


class RelativeAttention(nn.Module):
    """Multi-head self-attention with BEATs' gated relative position bias (gate from each query)."""

    def __init__(self, dim: int, heads: int, gated: bool, table: tuple[int, int] | None):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.gated = gated
        if gated:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))
        if table is not None:  # layer 0 holds the one table every layer reads
            self.relative_attention_bias = nn.Embedding(table[0], heads)

    def forward(self, x: Tensor, bias: Tensor | None) -> Tensor:
        batch, length, dim = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        mask = None
        if bias is not None:  # (H, L, L)
            if self.gated:
                gate_a, gate_b = torch.sigmoid(self.grep_linear(q).view(batch, self.heads, length, 2, 4).sum(-1)).chunk(2, dim=-1)
                mask = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias  # (B, H, L, 1) * (H, L, L)
            else:
                mask = bias.unsqueeze(0).expand(batch, -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class Block(nn.Module):
    """A post-LN block with deep norm: x = LN(alpha x + attn(x)); x = LN(alpha x + ffn(x))."""

    def __init__(self, cfg: Mapping[str, Any], first: bool):
        super().__init__()
        dim = cfg["encoder_embed_dim"]
        table = (cfg["num_buckets"], cfg["max_distance"]) if cfg["relative_position_embedding"] and first else None
        self.self_attn = RelativeAttention(dim, cfg["encoder_attention_heads"], cfg["gru_rel_pos"], table)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg["encoder_ffn_embed_dim"])
        self.fc2 = nn.Linear(cfg["encoder_ffn_embed_dim"], dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.alpha = (2.0 * cfg["encoder_layers"]) ** 0.25 if cfg["deep_norm"] else 1.0
        self.activation = F.gelu if cfg["activation_fn"] == "gelu" else F.relu

    def forward(self, x: Tensor, bias: Tensor | None) -> Tensor:
        x = self.self_attn_layer_norm(x * self.alpha + self.self_attn(x, bias))
        return self.final_layer_norm(x * self.alpha + self.fc2(self.activation(self.fc1(x))))


class Encoder(nn.Module):
    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        dim = cfg["encoder_embed_dim"]
        self.pos_conv = nn.Sequential(PositionConv(dim, cfg["conv_pos"], cfg["conv_pos_groups"]))
        self.layer_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(Block(cfg, first=i == 0) for i in range(cfg["encoder_layers"]))


class BEATsNet(nn.Module):
    """The BEATs network after the fbank, with Microsoft's module names."""

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        self.cfg = dict(cfg)
        patch, embed, dim = cfg["input_patch_size"], cfg["embed_dim"], cfg["encoder_embed_dim"]
        self.patch_embedding = nn.Conv2d(1, embed, kernel_size=patch, stride=patch, bias=cfg["conv_bias"])
        self.layer_norm = nn.LayerNorm(embed)
        self.post_extract_proj = nn.Linear(embed, dim) if embed != dim else None
        self.encoder = Encoder(cfg)
        self.predictor = nn.Linear(dim, cfg["predictor_class"]) if cfg["finetuned_model"] else None

    def position_bias(self, length: int) -> Tensor | None:
        """(heads, L, L) from layer 0's table, or None without relative positions."""
        if not self.cfg["relative_position_embedding"]:
            return None
        table = self.encoder.layers[0].self_attn.relative_attention_bias
        buckets = relative_buckets(length, self.cfg["num_buckets"], self.cfg["max_distance"], table.weight.device)
        return table(buckets).permute(2, 0, 1)


class BEATs(Extractor):
    """Microsoft's BEATs checkpoints (pre-trained, or fine-tuned with an AudioSet head), as the card's `config` describes."""

    def __init__(self, card: ModelCard):
        super().__init__(card)
        self.cfg = settings(card.config)
        self.fbank = frontends.KaldiFbank(n_mels=NUM_MEL_BINS, sample_rate=SAMPLE_RATE)
        self.model = BEATsNet(self.cfg).eval()
        self.bands = bands(self.cfg)
        self.layer_names = tuple(spec.name for spec in card.layers)

    def features(self, audio: Tensor) -> Tensor:
        """The normalised fbank (B, frames, 128) of a float waveform in [-1, 1]."""
        fbank = self.fbank(audio * 2**15)
        return (fbank - self.cfg["fbank_mean"]) / (2 * self.cfg["fbank_std"])

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """Requested layers (all when None) in their natural shapes, computing no block past the
        last one asked for."""
        wanted = list(self.layer_names if layers is None else layers)
        unknown = [name for name in wanted if name not in self.layer_names]
        if unknown:
            raise ConfigError(f"{self.card.id} has no layer(s) {unknown}", hint=f"layers: {', '.join(self.layer_names)}")
        last = max(self.layer_names.index(name) for name in wanted)
        net, patch = self.model, self.cfg["input_patch_size"]
        fbank = self.features(audio)
        if fbank.shape[1] < patch:
            raise ConfigError(
                f"{self.card.id}: an input of {audio.shape[-1]} samples has {fbank.shape[1]} fbank frames; a patch needs {patch}",
                hint=f"inputs must be at least {self.card.min_window} samples (the core pads shorter windows)",
            )
        x = net.patch_embedding(fbank.unsqueeze(1))  # (B, E, columns, bands)
        cols = x.shape[2]
        x = net.layer_norm(x.flatten(2).transpose(1, 2))  # (B, columns * bands, E), time-major
        if net.post_extract_proj is not None:
            x = net.post_extract_proj(x)
        x = x + net.encoder.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = net.encoder.layer_norm(x)
        out: dict[str, Tensor] = {}

        def read(name: str, hidden: Tensor) -> None:
            if name in wanted:
                out[name] = vit.patch_columns(hidden, (self.bands, cols), layout="tf")

        read("patch", x)
        bias = net.position_bias(x.shape[1]) if last >= 1 else None
        for index, block in enumerate(net.encoder.layers):
            if last < 1 + index:
                break
            x = block(x, bias)
            read(f"block{index + 1}", x)
        if "logits" in wanted:
            out["logits"] = net.predictor(x).mean(dim=1)  # Microsoft's extract_features, before the sigmoid
        return [out[name] for name in wanted]


# ---- checkpoints ------------------------------------------------------------------------------

# openbeats' (ESPnet's) BeatsEncoder adds two frozen all-ones convs that only carry padding masks
_PAD_BUFFERS = ("patch_embedding_pad.weight", "raw2fbank_pad.weight")
_SHARED_TABLE = re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight$")
_PARAMETRIZED = {"encoder.pos_conv.0.parametrizations.weight.original0": "encoder.pos_conv.0.weight_g",
                 "encoder.pos_conv.0.parametrizations.weight.original1": "encoder.pos_conv.0.weight_v"}  # fmt: skip


def check_cfg(card: ModelCard, cfg: Mapping[str, Any]) -> None:
    """Refuse a checkpoint whose `cfg` describes another network than the card's config; a key the
    cfg leaves out means BEATsConfig's default, as Microsoft's code reads it. The frontend's
    statistics (fbank_mean, fbank_std) are compared where the cfg carries them (openbeats reads
    them from there, OpenBEATs runs may have their own), so a card never normalises another way."""
    ours = settings(card.config)
    for key in ARCH_KEYS:
        if key == "predictor_class" and not ours["finetuned_model"]:
            continue
        theirs = cfg.get(key, CFG_DEFAULTS[key])
        if theirs != ours[key] or isinstance(theirs, bool) != isinstance(ours[key], bool):
            raise WeightsError(
                f"the checkpoint's cfg says {key} = {theirs!r}; {card.id}'s config says {ours[key]!r}",
                hint=f"is this a checkpoint of {card.id}? another BEATs variant needs a card whose config matches the file's cfg",
            )
    for key in ("fbank_mean", "fbank_std"):
        theirs = cfg.get(key)
        if theirs is not None and (isinstance(theirs, bool) or not isinstance(theirs, (int, float)) or abs(theirs - ours[key]) > 1e-6):
            raise WeightsError(
                f"the checkpoint's cfg says {key} = {theirs!r}; {card.id}'s config says {ours[key]!r}",
                hint=f"the file was trained on other fbank statistics: a card for it needs config {key}: {theirs!r}",
            )


def check_repo_files(card: ModelCard, files: Mapping[str, Any]) -> None:
    """An OpenBEATs repo's ESPnet run config (`.../config.yaml`, when the card names one and the
    repo has it): its `encoder_conf.beats_config`, and the fbank statistics beside or inside it,
    must describe the card's network and frontend (`check_cfg`), or the pull is refused."""
    for name, parsed in files.items():
        if not name.endswith((".yaml", ".yml")):
            continue
        encoder = parsed.get("encoder_conf") if isinstance(parsed, Mapping) else None
        if not isinstance(encoder, Mapping) or not isinstance(encoder.get("beats_config", {}), Mapping):
            raise WeightsError(
                f"{name} of {card.id} has no encoder_conf mapping: it is not an ESPnet BEATs run config",
                hint="the card's files: should name the run's config.yaml beside the checkpoint",
            )
        cfg = dict(encoder.get("beats_config") or {})
        for key in ("fbank_mean", "fbank_std"):
            if key in encoder:
                cfg.setdefault(key, encoder[key])
        check_cfg(card, cfg)


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: BEATs) -> dict[str, Tensor]:
    """A BEATs checkpoint -> this model's keys (`model.` + Microsoft's BEATs keys).

    Accepts Microsoft's `{'cfg': {...}, 'model': state_dict[, 'label_dict': ...]}` pickles (the cfg
    is checked against the card: `check_cfg`), a bare state dict, openbeats/ESPnet layouts (an
    `encoder.` prefix around the whole encoder; the frozen padding convs `patch_embedding_pad` and
    `raw2fbank_pad`, dropped; the relative position table repeated in every layer, dropped after
    checking it equals layer 0's, which every layer reads) and torch's parametrized weight norm
    names. Any other key, a missing key or a shape that does not fit raises WeightsError naming it.
    """
    if isinstance(state_dict, Mapping) and isinstance(state_dict.get("cfg"), Mapping):
        check_cfg(model.card, state_dict["cfg"])
    state = unwrap_state_dict(state_dict, model.card.id)
    if "encoder.patch_embedding.weight" in state:  # an ESPnet model around the BeatsEncoder
        state = {key.removeprefix("encoder."): value for key, value in state.items() if key.startswith("encoder.")}
    kept: dict[str, Any] = {}
    table = state.get("encoder.layers.0.self_attn.relative_attention_bias.weight")
    for key, value in state.items():
        key = _PARAMETRIZED.get(key, key)
        if key in _PAD_BUFFERS:
            continue
        shared = _SHARED_TABLE.match(key)
        if shared and shared.group(1) != "0":
            if table is None or not isinstance(value, Tensor) or value.shape != table.shape or not torch.equal(value, table):
                raise WeightsError(
                    f"{model.card.id}: the checkpoint's {key} differs from layer 0's relative position table",
                    hint="BEATs has one relative position table (layer 0's) that every layer reads",
                )
            continue
        kept[key] = value
    return remap_state_dict(
        kept,
        model.state_dict(),
        lambda key: "model." + key,
        model_id=model.card.id,
        their_name=lambda ours: ours.removeprefix("model."),
        optional=lambda key: False,
        unused_hint="is this a BEATs checkpoint (Microsoft's BEATs_*.pt)? a fine-tuned file's predictor needs a fine-tuned card",
        missing_hint="is this a BEATs checkpoint of this variant? a pre-trained file has no predictor (logits)",
        shape_hint="is this the checkpoint of this BEATs variant (width, depth, heads, buckets, classes)?",
    )


def create_model(card: ModelCard) -> BEATs:
    """A BEATs for this card (config keys: geometry.DEFAULT_CONFIG), with random weights."""
    return BEATs(card)
