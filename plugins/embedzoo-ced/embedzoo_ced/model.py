"""CED (Dinkel, Wang, Yan, Zhang, Wang, "CED: Consistent ensemble distillation for audio tagging",
ICASSP 2024), written from its published architecture on timm's ViT blocks (the authors' code is
GPL-3.0 and is not used; `dasheng`'s AudioTransformerMAE_Encoder, configured as CED, is the
runnable reference of the tests).

- front end: `embedzoo.frontends.DBMelSpectrogram` (n_fft 512, hop 160, centred, periodic Hann,
  64 HTK mel bands 0-8 kHz without norm: torchaudio's MelSpectrogram), dB with top_db 120 per clip,
  then `init_bn` (BatchNorm2d over the mel bins, eval statistics);
- network: `patch_embed.proj` (Conv2d 16 x 16, stride 16), the separable positional tables (time
  cut to the input's columns), `blocks` (timm `Block`s: pre-norm, fused qkv, attention through
  torch.nn.functional.scaled_dot_product_attention, GELU MLP; LayerNorm eps 1e-6), `norm`, and
  the head `outputlayer` (LayerNorm + Linear). The state dict keys are the authors' (Zenodo files)
  without the front end's buffers; `checkpoint_filter_fn` maps both published layouts to them.

`forward_layers` returns `patch`, `block1`..`blockN`, `norm` as (batch, columns, D) (one frame per
patch column: the mean over its frequency patches, `embedzoo.layers.patch_columns`), `features`
(batch, D) and `logits` (batch, outputdim).
"""

from __future__ import annotations

import math
import re
from functools import partial
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from embedzoo.plugin import ConfigError, Extractor, ModelCard, WeightsError, frontends, remap_state_dict, unwrap_state_dict
from embedzoo.plugin import layers as vit

from embedzoo_ced.geometry import SAMPLE_RATE, frames, grid, settings


class CED(Extractor):
    """A CED ViT as the card's `config` describes (tiny 192 x 12, mini 256, small 384, base 768)."""

    def __init__(self, card: ModelCard):
        super().__init__(card)
        from timm.models.vision_transformer import Block

        cfg = self.cfg = settings(card.config)
        dim = cfg["embed_dim"]
        self.grid = grid(cfg)  # (4, 63) for every published checkpoint
        self.mel = frontends.DBMelSpectrogram(
            SAMPLE_RATE, cfg["n_fft"], cfg["hop_size"], cfg["n_mels"], cfg["f_min"], cfg["f_max"],
            scale="htk", norm=None, amin=1e-10, top_db=120.0,
        )  # fmt: skip
        self.init_bn = nn.BatchNorm2d(cfg["n_mels"], momentum=0.01)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, dim, kernel_size=cfg["patch_size"], stride=cfg["patch_stride"])
        self.time_pos_embed = nn.Parameter(torch.zeros(1, dim, 1, self.grid[1]))
        self.freq_pos_embed = nn.Parameter(torch.zeros(1, dim, self.grid[0], 1))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(
            *(Block(dim, cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"], qkv_bias=cfg["qkv_bias"], norm_layer=norm) for _ in range(cfg["depth"]))
        )
        for block in self.blocks:  # SDPA (timm picks it by default; made explicit, so no env var changes the maths)
            block.attn.fused_attn = True
        self.norm = norm(dim)
        self.outputlayer = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, cfg["outputdim"]))  # eps 1e-5, as the authors'
        self.eval()
        # geometry.py's order: patch, block1..blockN, norm, features, logits
        self.layer_names = tuple(spec.name for spec in card.layers)

    def spectrogram(self, audio: Tensor) -> Tensor:
        """(batch, samples) -> the normalised log-mel (batch, 1, n_mels, frames) the patches are cut from."""
        mel = self.mel(audio).transpose(1, 2)  # (B, n_mels, frames), float32
        return self.init_bn(mel.unsqueeze(2).to(self.init_bn.weight.dtype)).transpose(1, 2)

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """Requested layers (all when None) in their natural shapes, computing no block past the
        last one asked for."""
        wanted = list(self.layer_names if layers is None else layers)
        unknown = [name for name in wanted if name not in self.layer_names]
        if unknown:
            raise ConfigError(f"{self.card.id} has no layer(s) {unknown}", hint=f"layers: {', '.join(self.layer_names)}")
        cfg = self.cfg
        count = frames(audio.shape[-1], cfg)
        if count > cfg["target_length"]:
            raise ConfigError(
                f"{self.card.id}: an input of {audio.shape[-1]} samples has {count} mel frames; one CED chunk takes at most {cfg['target_length']}",
                hint=f"inputs must be at most {self.card.max_window} samples (the core windows longer audio)",
            )
        if count < cfg["patch_size"]:
            raise ConfigError(
                f"{self.card.id}: an input of {audio.shape[-1]} samples has {count} mel frames, less than one {cfg['patch_size']}-frame patch",
                hint=f"inputs must be at least {self.card.min_window} samples (the core pads shorter windows)",
            )
        last = max(self.layer_names.index(name) for name in wanted)
        hidden, (bands, cols) = self._embed(self.spectrogram(audio))
        out: dict[str, Tensor] = {}

        def read(sequence: Tensor) -> Tensor:
            return vit.patch_columns(sequence, (bands, cols))

        if "patch" in wanted:
            out["patch"] = read(hidden)
        depth = cfg["depth"]
        for index, block in enumerate(self.blocks):
            if last < 1 + index:
                break
            hidden = block(hidden)
            name = f"block{index + 1}"
            if name in wanted:
                out[name] = read(hidden)
        if last > depth:
            hidden = self.norm(hidden)
            out["norm"] = read(hidden)
            out["features"] = hidden.mean(dim=1)
            out["logits"] = self.outputlayer(out["features"])
        return [out[name] for name in wanted]


    def _embed(self, spectrogram: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patches + positions of one chunk's spectrogram: (B, F * T, D) frequency-major, and (F, T)."""
        x = self.patch_embed.proj(spectrogram)  # (B, D, F, T)
        bands, cols = x.shape[-2:]
        x = x + vit.crop_time_embedding(self.time_pos_embed, cols, model_id=self.card.id) + self.freq_pos_embed
        return x.flatten(2).transpose(1, 2), (bands, cols)

    @torch.inference_mode()
    def chunked(self, audio: Tensor) -> dict[str, Tensor]:
        """The authors' own long-input path for whole clips (batch, samples) of any length, outside
        the core's windowing: the clip's spectrogram cut into target_length-frame chunks after
        `init_bn`, the last one zero-padded to a full chunk -- and, as the authors' code does, a last
        chunk of exactly full length dropped when the clip is longer than one chunk. Returns
        `features` (the mean of every chunk's final norm: HEAR_CED's scene embedding, eval_avg
        "cat") and `tags` (the mean over chunks of sigmoid(outputlayer(mean)): the authors'
        `forward`, eval_avg "mean"). One forward per chunk, all chunks in one batch."""
        spectrogram = self.spectrogram(audio)
        length = self.cfg["target_length"]
        if spectrogram.shape[-1] <= length:
            chunks = [spectrogram]
        else:
            chunks = list(spectrogram.split(length, dim=-1))
            if chunks[-1].shape[-1] < length:
                chunks[-1] = torch.nn.functional.pad(chunks[-1], (0, length - chunks[-1].shape[-1]))  # zeros after init_bn
            else:
                chunks = chunks[:-1]  # the authors' `else: torch.stack(splits[:-1])`
        batch = audio.shape[0]
        hidden, _ = self._embed(torch.cat(chunks))
        hidden = self.norm(self.blocks(hidden)).unflatten(0, (len(chunks), batch))  # (chunks, B, N, D)
        pooled = hidden.mean(dim=2)
        return {"features": hidden.transpose(0, 1).flatten(1, 2).mean(dim=1), "tags": torch.sigmoid(self.outputlayer(pooled)).mean(dim=0)}


# ---- checkpoints ------------------------------------------------------------------------------

# the front end's fixed buffers in the authors' files (torchaudio's window and mel matrix): recomputed here
_FRONT_END = re.compile(r"^front_end\.0\.(spectrogram\.window|mel_scale\.fb)$")


def _ours(key: str) -> str:
    """A key of the authors' layout (Zenodo) or the Hub's (`encoder.` prefix, BatchNorm unwrapped) -> ours."""
    key = key.removeprefix("encoder.")
    return re.sub(r"^init_bn\.1\.", "init_bn.", key)


def _their_name(ours: str) -> str:
    """One of our keys as the authors' files name it (for errors about a missing key)."""
    return re.sub(r"^init_bn\.", "init_bn.1.", ours)


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: CED) -> dict[str, Tensor]:
    """A CED checkpoint -> this model's keys (the authors' names without the front end).

    Accepts the authors' Zenodo files (`{'model': state_dict}`: `init_bn.1.*`, `patch_embed.proj.*`,
    `time_pos_embed`, `freq_pos_embed`, `blocks.N.*`, `norm.*`, `outputlayer.{0,1}.*`, plus the
    front end's torchaudio buffers `front_end.0.spectrogram.window` and `front_end.0.mel_scale.fb`,
    which are checked against ours and dropped), the Hub's `model.safetensors` (the same under
    `encoder.`, `init_bn.*` without the `1.`, `outputlayer.*` unprefixed, no front end) and wrapped
    files ("model"/"state_dict", "module."). Any other key, a missing key or a shape that does not
    fit raises WeightsError naming it (`remap_state_dict`).
    """
    state = dict(unwrap_state_dict(state_dict, model.card.id))
    for key in [key for key in state if _FRONT_END.match(key.removeprefix("encoder."))]:
        _check_front_end(key, state.pop(key), model)
    return remap_state_dict(
        state,
        model.state_dict(),
        lambda key: _ours(key),
        model_id=model.card.id,
        their_name=_their_name,
        unused_hint="is this a CED checkpoint (an mispeech/ced-* repo's model.safetensors, or the authors' audiotransformer_*.pt)?",
        missing_hint="is this a CED audio tagger checkpoint (with its outputlayer head)?",
        shape_hint="is this the checkpoint of this CED size (embed_dim, depth, outputdim, target_length)?",
    )


def _check_front_end(key: str, value: Any, model: CED) -> None:
    """A stored front-end buffer must be the front end we compute (else the file's model heard another spectrogram)."""
    if not isinstance(value, Tensor):
        raise WeightsError(f"checkpoint key {key!r} holds a {type(value).__name__}, not a tensor")
    cfg = model.cfg
    if key.endswith("window"):
        ours = torch.hann_window(cfg["win_size"], periodic=True, dtype=torch.float64)
    else:  # torchaudio's fb: (n_fft // 2 + 1, n_mels)
        ours = model.mel.mel.double()
    if tuple(value.shape) != tuple(ours.shape) or not torch.allclose(value.double(), ours, rtol=0.0, atol=1e-4):  # torchaudio computes its bank in float32: 5e-6 off
        raise WeightsError(
            f"checkpoint key {key!r} ({tuple(value.shape)}) is not the front end of {model.card.id}'s config",
            hint="a checkpoint with another STFT or mel bank needs a card whose config says so (n_fft, win_size, n_mels, f_min, f_max)",
        )


# ---- the Hub repo's own files -------------------------------------------------------------------

# config.json key -> ours (CedConfig: missing keys are its defaults, as the Hub's remote code reads them)
_CONFIG_KEYS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "patch_size", "patch_stride", "target_length",
                "outputdim", "n_mels", "n_fft", "win_size", "hop_size", "f_min", "f_max")  # fmt: skip
_NAMED = {"ced-tiny": (192, 3), "ced-mini": (256, 4), "ced-small": (384, 6), "ced-base": (768, 12)}  # CedConfig(name=...) overrides


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return ours == theirs
    try:
        return math.isclose(float(ours), float(theirs), rel_tol=1e-6, abs_tol=0.0)
    except (TypeError, ValueError):
        return False


def check_repo_files(card: ModelCard, files: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse a Hub repo whose config.json or preprocessor_config.json disagrees with the card (an
    architecture or front-end key); the error names the file and the key."""
    cfg = settings(card.config)

    def refuse(name: str, key: str, theirs: Any, ours: Any) -> None:
        raise WeightsError(
            f"{name} of {card.id}'s checkpoint says {key} = {theirs!r}; the card's config says {ours!r}",
            hint=f"is this a checkpoint of {card.id}? a checkpoint of another CED size needs a card whose config matches its {name}",
        )

    config = files.get("config.json")
    if config is not None:
        theirs_cfg = dict(config)
        named = _NAMED.get(str(theirs_cfg.get("name")))
        if named:  # CedConfig sets embed_dim and num_heads from the name, whatever the file says
            theirs_cfg["embed_dim"], theirs_cfg["num_heads"] = named
        for key in _CONFIG_KEYS:
            theirs = theirs_cfg.get(key, cfg[key] if key not in ("embed_dim", "depth", "num_heads", "outputdim", "target_length") else _HUB_DEFAULTS[key])
            if not _same(cfg[key], theirs):
                refuse("config.json", key, theirs, cfg[key])
        for key, ours in (("pooling", "mean"), ("pad_last", True), ("center", True)):
            theirs = theirs_cfg.get(key, ours)
            if theirs != ours:
                refuse("config.json", key, theirs, ours)
    preprocessor = files.get("preprocessor_config.json")
    if preprocessor is not None:
        expected = {"sampling_rate": SAMPLE_RATE, "n_fft": cfg["n_fft"], "win_size": cfg["win_size"], "hop_size": cfg["hop_size"],
                    "feature_size": cfg["n_mels"], "f_min": cfg["f_min"], "center": True}  # fmt: skip
        for key, ours in expected.items():
            theirs = preprocessor.get(key, ours)
            if not _same(ours, theirs):
                refuse("preprocessor_config.json", key, theirs, ours)
        f_max = preprocessor.get("f_max")
        if f_max is not None and not _same(cfg["f_max"], f_max):  # None: Nyquist (8000)
            refuse("preprocessor_config.json", "f_max", f_max, cfg["f_max"])


# CedConfig's defaults for the architecture keys (a config.json that omits one means these)
_HUB_DEFAULTS = {"embed_dim": 768, "depth": 12, "num_heads": 12, "outputdim": 527, "target_length": 1012}


def create_model(card: ModelCard) -> CED:
    """A CED for this card (config keys: geometry.DEFAULT_CONFIG), with random weights."""
    return CED(card)
