"""Dasheng (Dinkel et al., Interspeech 2024): a ViT on 64 x 4 patches of a 64-bin dB mel spectrogram,
written from the `dasheng` package's facts (0.0.9) on timm's ViT `Block` (attention through
torch.nn.functional.scaled_dot_product_attention), proven equal to it in the tests.

- front end: `embedzoo.frontends.DBMelSpectrogram` (|STFT|^2 512 / 160 centred, 64 HTK mel bands
  0-8 kHz with peaks 1 -- torchaudio's MelSpectrogram -- dB floored at the input's max - 120), then
  `init_bn`, the learned BatchNorm over mel bins (running statistics);
- network: `patch_embed` (Conv2d 1 -> D, kernel = stride = 64 x 4), plus `time_pos_embed` (cut to
  the chunk's tokens) and `freq_pos_embed`, `blocks` (timm Blocks, LayerNorm eps 1e-6), `norm`;
- the reference's chunking: the tokens of one input are cut into chunks of target_length // 4
  (252) and each chunk runs through the blocks alone, positions from 0; whole chunks are folded
  into the batch, a shorter last chunk runs on its own. Outputs are the chunks' tokens concatenated.

Layers: `patch` (the blocks' input), `block1`..`blockN`, `norm`, each (batch, tokens, embed_dim).
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from embedzoo.plugin import ConfigError, Extractor, ModelCard, WeightsError, frontends, remap_state_dict, unwrap_state_dict

from embedzoo_dasheng.geometry import F_MAX, F_MIN, MEL_HOP, N_FFT, N_MELS, PATCH_FRAMES, SAMPLE_RATE, TOP_DB, chunk_tokens, settings, tokens


class Dasheng(Extractor):
    """A Dasheng encoder (base, 0.6B, 1.2B) as the card's `config` describes it."""

    def __init__(self, card: ModelCard):
        super().__init__(card)
        from timm.models.vision_transformer import Block

        cfg = self.cfg = settings(card.config)
        dim, depth = cfg["embed_dim"], cfg["depth"]
        self.chunk = chunk_tokens(cfg)
        self.mel = frontends.DBMelSpectrogram(SAMPLE_RATE, N_FFT, MEL_HOP, N_MELS, F_MIN, F_MAX, scale="htk", norm=None, top_db=TOP_DB)
        self.init_bn = nn.BatchNorm1d(N_MELS, momentum=0.01)  # over mel bins, as the reference's init_bn
        self.patch_embed = nn.Conv2d(1, dim, kernel_size=(N_MELS, PATCH_FRAMES), stride=(N_MELS, PATCH_FRAMES))
        self.time_pos_embed = nn.Parameter(torch.randn(1, dim, 1, self.chunk) * 0.02)
        self.freq_pos_embed = nn.Parameter(torch.randn(1, dim, 1, 1) * 0.02)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(dim, cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"], qkv_bias=cfg["qkv_bias"], norm_layer=norm, act_layer=nn.GELU)
            for _ in range(depth)
        )
        self.norm = norm(dim)
        self.layer_names = tuple(spec.name for spec in card.layers)  # patch, block1..blockN, norm
        self.eval()

    def spectrogram(self, audio: Tensor) -> Tensor:
        """(B, samples) -> (B, 1, 64, frames): the dB mel spectrogram after init_bn, as the reference's
        forward_to_spec (float32 whatever the model's dtype: the reference disables autocast here)."""
        with torch.autocast(device_type=audio.device.type, enabled=False):
            mel = self.mel(audio.float()).transpose(1, 2)  # (B, 64, frames)
            bn = self.init_bn
            mel = nn.functional.batch_norm(mel, bn.running_mean.float(), bn.running_var.float(), bn.weight.float(), bn.bias.float(), False, 0.0, bn.eps)
        return mel.unsqueeze(1)

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """Requested layers (all when None), each (B, tokens, D), computing no block past the last one
        asked for; the tokens of each 252-token chunk attend within the chunk only (the reference's)."""
        wanted = list(self.layer_names if layers is None else layers)
        unknown = [name for name in wanted if name not in self.layer_names]
        if unknown:
            raise ConfigError(f"{self.card.id} has no layer(s) {unknown}", hint=f"layers: {', '.join(self.layer_names)}")
        samples = audio.shape[-1]
        if tokens(samples) < 1 or samples <= N_FFT // 2:
            raise ValueError(f"{self.card.id}: an input of {samples} samples has no token; at least {self.card.min_window} samples are needed")
        if samples > self.card.max_window:
            raise ConfigError(
                f"{self.card.id}: an input of {samples} samples is longer than one forward takes",
                hint=f"inputs must be at most {self.card.max_window} samples (the core windows longer audio)",
            )
        last = max(self.layer_names.index(name) for name in wanted)
        spec = self.spectrogram(audio)
        patches = self.patch_embed(spec.to(self.patch_embed.weight.dtype)).flatten(2).transpose(1, 2)  # (B, T, D): one frequency row
        batch, count, dim = patches.shape
        whole = count // self.chunk
        pieces = []  # (sequence, chunks folded into its batch)
        if whole:
            pieces.append((patches[:, : whole * self.chunk].reshape(batch * whole, self.chunk, dim), whole))
        if count > whole * self.chunk:
            pieces.append((patches[:, whole * self.chunk :], 1))
        time_table = self.time_pos_embed[0, :, 0].transpose(0, 1)  # (252, D)
        freq = self.freq_pos_embed[0, :, 0, 0]
        hidden = [x + time_table[: x.shape[1]] + freq for x, _ in pieces]
        out: dict[str, Tensor] = {}

        def keep(name: str) -> None:
            if name in wanted:  # the chunks back in order: (B * k, t, D) -> (B, k * t, D)
                out[name] = torch.cat([h.reshape(batch, k * h.shape[1], dim) for h, (_, k) in zip(hidden, pieces)], dim=1)

        keep("patch")
        for index, block in enumerate(self.blocks):
            if last < 1 + index:
                break
            hidden = [block(h) for h in hidden]
            keep(f"block{index + 1}")
        if last > len(self.blocks):
            hidden = [self.norm(h) for h in hidden]
            keep("norm")
        return [out[name] for name in wanted]


# ---- checkpoints ------------------------------------------------------------------------------

# the reference's frozen front-end buffers (torchaudio's MelSpectrogram): deterministic functions of
# the config, recomputed here; a checkpoint's copy is compared with ours, then dropped
_FRONT_END = {"front_end.0.spectrogram.window": "window", "front_end.0.mel_scale.fb": "fb"}
_BN = re.compile(r"^init_bn\.(?:1\.)?(weight|bias|running_mean|running_var|num_batches_tracked)$")
# the reference's constructor arguments a Zenodo file's `config` may state, with the value this
# architecture has (the card's own sizes are compared separately)
_FIXED = {"patch_size": [64, 4], "patch_stride": [64, 4], "n_fft": N_FFT, "win_size": N_FFT, "hop_size": MEL_HOP,
          "n_mels": N_MELS, "f_min": 0, "f_max": 8000, "pooling": "mean", "center": True, "top_db": 120,
          "init_values": None, "block_type": "Block", "attention_type": "Attention"}  # fmt: skip
_SIZES = ("embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "target_length")


def _equal(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, (list, tuple)) or isinstance(theirs, (list, tuple)):
        return isinstance(theirs, (list, tuple)) and list(ours) == list(theirs)
    return ours == theirs


def _check_config(config: Mapping[str, Any], model: Dasheng) -> None:
    """A Zenodo file's `config` (the reference's constructor arguments) against the card."""
    for key in _SIZES:
        if key in config and not _equal(model.cfg[key], config[key]):
            raise WeightsError(
                f"the checkpoint's config says {key} = {config[key]!r}; {model.card.id}'s card says {model.cfg[key]!r}",
                hint="is this the checkpoint of this Dasheng size (dasheng_base.pt, dasheng_06b.pt, dasheng_12b.pt)?",
            )
    for key, ours in _FIXED.items():
        if key in config and not _equal(ours, config[key]):
            raise WeightsError(f"the checkpoint's config says {key} = {config[key]!r}; embedzoo's Dasheng has {ours!r}",
                               hint="this Dasheng variant's front end or patches are not supported")  # fmt: skip


def _reference_front_end(model: Dasheng) -> dict[str, Tensor]:
    """The values of the reference's front-end buffers: a periodic Hann window of 512 and the
    (257, 64) mel bank (torchaudio's melscale_fbanks in float32, within 6e-6 of ours, float64 rounded)."""
    return {"window": torch.hann_window(N_FFT, periodic=True), "fb": model.mel.mel.detach().float().cpu()}


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: Dasheng) -> dict[str, Tensor]:
    """A Dasheng checkpoint -> this model's keys.

    Accepts the authors' Zenodo files (`{'model': state_dict, 'config': {...}}`: the reference's
    `front_end.0.*` buffers, `init_bn.1.*`, `patch_embed.proj.*`, `time_pos_embed`, `freq_pos_embed`,
    `blocks.N.*`, `norm.*`), the Hub copies (the same under `encoder.`, without the front-end buffers;
    `init_bn.1.` or `init_bn.`), and this model's own state dict. The front-end buffers are checked
    against the ones this model computes (a different window or mel bank is refused) and dropped;
    the config's sizes must be the card's. Any other key, a missing key or a wrong shape raises
    WeightsError naming it.
    """
    if isinstance(state_dict, Mapping) and isinstance(state_dict.get("config"), Mapping):
        _check_config(state_dict["config"], model)
        state_dict = {key: value for key, value in state_dict.items() if key != "config"}
    state = {key.removeprefix("encoder."): value for key, value in unwrap_state_dict(state_dict, model.card.id).items()}
    expected = _reference_front_end(model)
    for key, name in _FRONT_END.items():
        if key in state:
            value = state.pop(key)
            if not isinstance(value, Tensor) or value.shape != expected[name].shape or not torch.allclose(value.float(), expected[name], rtol=0.0, atol=2e-5):
                raise WeightsError(f"checkpoint key {key!r} is not the 16 kHz, 512-point, 64-mel (0-8 kHz) front end {model.card.id} computes",
                                   hint="this Dasheng variant's front end is not supported")  # fmt: skip

    def rename(key: str) -> str | None:
        match = _BN.match(key)
        if match:
            return f"init_bn.{match.group(1)}"
        if key.startswith("patch_embed.proj."):
            return "patch_embed." + key.removeprefix("patch_embed.proj.")
        return key  # blocks.N.*, norm.*, the positional tables: the reference's names are ours

    def their_name(ours: str) -> str:
        if ours.startswith("init_bn."):
            return "init_bn.1." + ours.removeprefix("init_bn.")
        if ours.startswith("patch_embed."):
            return "patch_embed.proj." + ours.removeprefix("patch_embed.")
        return ours

    return remap_state_dict(
        state,
        model.state_dict(),
        rename,
        model_id=model.card.id,
        their_name=their_name,
        unused_hint="is this a Dasheng encoder checkpoint (Zenodo dasheng_*.pt, or a mispeech/dasheng-* model.safetensors)?",
        missing_hint="is this a Dasheng encoder checkpoint of this size?",
        shape_hint="is this the checkpoint of this Dasheng size (embed_dim, depth, target_length)?",
    )


# ---- the Hub repo's own files -------------------------------------------------------------------


def check_repo_files(card: ModelCard, files: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse a Hub repo whose config.json states other sizes than the card (embed_dim, depth,
    num_heads, target_length, ...), naming the key. Keys it does not state are not checked."""
    cfg = settings(card.config)
    config = files.get("config.json")
    if config is None:
        return
    for key in _SIZES:
        if key in config and not _equal(cfg[key], config[key]):
            raise WeightsError(
                f"config.json of {card.id}'s checkpoint says {key} = {config[key]!r}; the card's config says {cfg[key]!r}",
                hint=f"is this a checkpoint of {card.id}? another Dasheng size needs a card whose config matches",
            )
    for key, ours in _FIXED.items():
        if key in config and not _equal(ours, config[key]):
            raise WeightsError(f"config.json of {card.id}'s checkpoint says {key} = {config[key]!r}; embedzoo's Dasheng has {ours!r}")


def create_model(card: ModelCard) -> Dasheng:
    """A Dasheng encoder for this card (config keys: geometry.DEFAULT_CONFIG), with random weights."""
    return Dasheng(card)
