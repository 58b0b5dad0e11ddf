"""The audio tower of CLAP (Wu, Chen et al., "Large-scale Contrastive Language-Audio Pretraining
with Feature Fusion and Keyword-to-Caption Augmentation", ICASSP 2023): HTS-AT (Chen et al. 2022),
a 4-stage Swin transformer, and the projection into the joint text-audio space.

The network is transformers' `ClapAudioModelWithProjection` (the reference), built from the card's
config, its window attention through SDPA (`SdpaWindowAttention`); `forward_layers` drives its
encoder's modules one stage at a time (so it stops after the last layer asked) and reads every
stage before its patch merging. In front of it, what
`ClapFeatureExtractor` does to a clip of at most 10 s, in torch and batched:
- fill the window to exactly 10 s (`padding`): repeatpad (the window repeated whole
  480000 // samples times, then zeros), repeat (repeated and cut) or pad (zeros);
- log-mel: |STFT|^2 (1024-point periodic Hann, hop 480, centred, reflect), mel filters 50 Hz-14 kHz,
  10 log10(max(x, 1e-10)) (`embedzoo.frontends.DBMelSpectrogram`) -- slaney-scale, slaney-normed
  filters when the repo's `truncation` is "rand_trunc" (the unfused repos), HTK-scale unnormed ones
  when it is "fusion" (the fused repo), exactly the feature extractor's choice;
- a fused model gets `is_longer=False` (its global branch only), or with a "+fusion" padding
  `is_longer=True` and the 4 identical copies of the mel that the feature extractor stacks for a
  clip of at most 10 s.
The feature extractor's random choices never arise: embedzoo windows long audio itself (at most
10 s per forward), so `rand_trunc`'s random crop and `fusion`'s random chunks have nothing to do;
and its random pick of one clip per batch to be "longer" is replaced by the fixed `padding` choice.

Natural shapes: `patch`, `stage1`..`stageL`, `norm` are (batch, channels, bands, frames) maps in time
order (geometry.py); `features` (batch, hidden_size) and `projection` (batch, projection_dim).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import ClapAudioConfig, ClapAudioModelWithProjection
from transformers.models.clap.modeling_clap import ClapAudioSelfAttention

from embedzoo.plugin import ConfigError, Extractor, ModelCard, WeightsError, frontends, is_bn_counter, remap_state_dict, unwrap_state_dict

from embedzoo_clap.geometry import (
    AUDIO_DEFAULTS,
    FEATURE_EXTRACTOR_CLASS_DEFAULTS,
    FRONTEND_DEFAULTS,
    FUSION,
    freq_ratio,
    max_samples,
    settings,
)


def audio_config(cfg: Mapping[str, Any]) -> ClapAudioConfig:
    """transformers' config of the audio tower, from a card's settings."""
    values = {key: cfg[key] for key in AUDIO_DEFAULTS}
    values["depths"], values["num_attention_heads"] = list(values["depths"]), list(values["num_attention_heads"])
    return ClapAudioConfig(**values)


def log_mel(cfg: Mapping[str, Any]) -> nn.Module:
    """The feature extractor's log-mel: its `truncation` picks the filter bank (see the module doc)."""
    slaney = cfg["truncation"] == "rand_trunc"
    return frontends.DBMelSpectrogram(
        int(cfg["sampling_rate"]), int(cfg["fft_window_size"]), int(cfg["hop_length"]), int(cfg["feature_size"]),
        float(cfg["frequency_min"]), float(cfg["frequency_max"]), scale="slaney" if slaney else "htk",
        norm="slaney" if slaney else None, top_db=None if cfg["top_db"] is None else float(cfg["top_db"]),
    )  # fmt: skip


def fill(audio: Tensor, length: int, how: str) -> Tensor:
    """A (batch, samples <= length) window brought to `length` samples as ClapFeatureExtractor does
    (`_get_input_mel`): repeatpad tiles it length // samples times, then pads zeros; repeat tiles it
    once more and cuts; pad pads zeros."""
    samples = audio.shape[-1]
    if samples > length:
        raise ConfigError(f"a CLAP window holds at most {length} samples, got {samples}", hint="the core windows longer audio: pass windows of at most 10 s")
    if samples == length:
        return audio
    if how == "repeatpad":
        audio = audio.repeat(1, length // samples)
    elif how == "repeat":
        audio = audio.repeat(1, length // samples + 1)[:, :length]
    return F.pad(audio, (0, length - audio.shape[-1]))


def time_map(tokens: Tensor, grid: tuple[int, int], ratio: int) -> Tensor:
    """A stage's (batch, H*W, C) tokens as a (batch, C, H // ratio, ratio * W) time-ordered map: the
    image's H rows are `ratio` time chunks of H // ratio frequency rows, which are put back side by
    side in time (transformers' regrouping of the last hidden state, for every stage)."""
    batch, _, channels = tokens.shape
    height, width = grid
    x = tokens.transpose(1, 2).reshape(batch, channels, ratio, height // ratio, width)
    return x.permute(0, 1, 3, 2, 4).reshape(batch, channels, height // ratio, ratio * width)


class SdpaWindowAttention(ClapAudioSelfAttention):
    """HTS-AT's window attention through `F.scaled_dot_product_attention`: the relative position
    bias and the shifted windows' mask are its additive `attn_mask`. transformers' class multiplies
    and softmaxes explicitly (it has no SDPA path); the maths and parameters are its own."""

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None, output_attentions: bool | None = False) -> tuple[Tensor, ...]:
        if output_attentions:  # the weights are only there explicitly
            return super().forward(hidden_states, attention_mask, output_attentions)
        windows, tokens, _ = hidden_states.shape
        shape = (windows, tokens, self.num_attention_heads, self.attention_head_size)
        query, key, value = (proj(hidden_states).view(shape).transpose(1, 2) for proj in (self.query, self.key, self.value))
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(tokens, tokens, -1).permute(2, 0, 1)[None]  # (1, heads, tokens, tokens)
        if attention_mask is not None:  # (windows per image, tokens, tokens), repeating over the batch
            per_image = attention_mask.shape[0]
            bias = (bias + attention_mask[:, None].to(bias.dtype)).repeat(windows // per_image, 1, 1, 1)
        dropout = self.dropout.p if self.training else 0.0
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype), dropout_p=dropout)
        return (context.transpose(1, 2).reshape(windows, tokens, self.all_head_size),)


def use_sdpa(model: nn.Module) -> None:
    """Every HTS-AT window attention of `model` attends through SDPA (same parameters, same keys)."""
    for module in model.modules():
        if type(module) is ClapAudioSelfAttention:
            module.__class__ = SdpaWindowAttention


class ClapAudio(Extractor):
    """The CLAP audio tower (HTSAT-tiny / -base, unfused or fused) the card's `config` describes."""

    def __init__(self, card: ModelCard):
        super().__init__(card)
        cfg = settings(card.config)
        self.window = max_samples(cfg)
        self.ratio = freq_ratio(cfg)
        self.fused = bool(cfg["enable_fusion"])
        self.mel = log_mel(cfg)
        # state-dict keys model.audio_model.audio_encoder.* and model.audio_projection.*, the hub's under "model."
        self.model = ClapAudioModelWithProjection(audio_config(cfg))
        use_sdpa(self.model)
        self.model.eval()
        self.layer_names = tuple(spec.name for spec in card.layers)  # geometry.py's order

    def input_features(self, audio: Tensor, padding: str) -> Tensor:
        """What ClapFeatureExtractor returns as `input_features` for these windows: (batch, 1, 1001,
        64), or for a fused model (batch, 4, 1001, 64), four identical copies (its global branch
        reads the first, the fusion branch the other three)."""
        log_mels = self.mel(fill(audio, self.window, padding.removesuffix(FUSION)))[:, None]
        return log_mels.expand(-1, 4, -1, -1) if self.fused else log_mels

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None, padding: str | None = None) -> list[Tensor]:
        """Requested layers (all when None) in their natural shapes, computing no stage past the last
        one asked for. `padding` (default: the card's) fills windows shorter than 10 s."""
        padding = padding or self.card.paddings[0]
        if padding not in self.card.paddings:
            raise ConfigError(f"{self.card.id} has no padding {padding!r}", hint=f"paddings: {', '.join(self.card.paddings)}")
        wanted = list(self.layer_names if layers is None else layers)
        unknown = [name for name in wanted if name not in self.layer_names]
        if unknown:
            raise ConfigError(f"{self.card.id} has no layer(s) {unknown}", hint=f"layers: {', '.join(self.layer_names)}")
        last = max(self.layer_names.index(name) for name in wanted)
        encoder = self.model.audio_model.audio_encoder
        features = self.input_features(audio, padding)
        # ClapAudioEncoder.forward, module by module: BatchNorm over the mel bands, the 256 x 256 image
        normalised = encoder.batch_norm(features.transpose(1, 3)).transpose(1, 3)
        longer = None
        if self.fused:  # is_longer for every window alike (the reference draws one clip at random)
            count = audio.shape[0] if padding.endswith(FUSION) else 0
            longer = torch.arange(count, device=audio.device)
        hidden = encoder.patch_embed(encoder.reshape_mel2img(normalised), longer)
        out: dict[str, Tensor] = {"patch": time_map(hidden, encoder.input_resolutions[0], self.ratio)}
        for index, stage in enumerate(encoder.layers):
            if last < 1 + index:
                break
            grid = encoder.input_resolutions[index]
            hidden, before, _ = stage(hidden, grid, output_attentions=False, always_partition=False)
            out[f"stage{index + 1}"] = time_map(before, grid, self.ratio)
        if last > len(encoder.layers):
            norm = time_map(encoder.norm(hidden), encoder.input_resolutions[-1], self.ratio)
            pooled = encoder.avgpool(norm.flatten(2)).flatten(1)
            out["norm"], out["features"] = norm, pooled
            out["projection"] = F.normalize(self.model.audio_projection(pooled), dim=-1)
        return [out[name] for name in wanted]


# ---- checkpoints ------------------------------------------------------------------------------

# The hub repos hold the whole ClapModel; these are not the audio tower and are dropped by name:
# the text encoder and its projection (text_model.*, text_projection.*), and the two learnt
# temperatures of the contrastive loss (logit_scale_a, logit_scale_t), which scale text-audio
# logits only.
_TEXT_SIDE = re.compile(r"^(text_model\..*|text_projection\..*|logit_scale_[at])$")
_AUDIO_SIDE = ("audio_model.", "audio_projection.")


def _derived(key: str) -> bool:
    """Keys a file may lack: BatchNorm's counter, and the Swin windows' relative position index
    (a buffer computed from window_size; older files may not store it)."""
    return is_bn_counter(key) or key.endswith("relative_position_index")


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: ClapAudio) -> dict[str, Tensor]:
    """A hub CLAP checkpoint (`ClapModel` or `ClapAudioModelWithProjection`, as save_pretrained
    writes it: model.safetensors or pytorch_model.bin) -> this model's keys (`model.` + the hub's).

    Keeps `audio_model.*` and `audio_projection.*`; drops the text side by name (`_TEXT_SIDE`). Any
    other key, a missing one or a shape that does not fit raises WeightsError naming it."""
    state = unwrap_state_dict(state_dict, model.card.id)
    kept = {key: value for key, value in state.items() if not _TEXT_SIDE.match(key)}
    target = model.state_dict()

    def rename(key: str) -> str | None:
        return f"model.{key}" if key.startswith(_AUDIO_SIDE) else None

    def derived_value(key: str, tensor: Tensor) -> Tensor:
        return tensor.clone() if key.endswith("relative_position_index") else tensor.new_zeros(tensor.shape)

    return remap_state_dict(
        kept,
        target,
        rename,
        model_id=model.card.id,
        their_name=lambda key: key.removeprefix("model."),
        optional=_derived,
        fill=derived_value,
        unused_hint="is this a transformers CLAP checkpoint (ClapModel / ClapAudioModelWithProjection)?",
        missing_hint="is this a CLAP checkpoint with its audio projection (a bare ClapAudioModel has none)?",
        shape_hint="is this the checkpoint of this CLAP variant (HTSAT-tiny vs -base, fused or not)?",
    )


# ---- the repo's config files ---------------------------------------------------------------------


def _same(ours: Any, theirs: Any) -> bool:
    """Equal as config values: 4 and [4, 4] are one patch stride, 1e-05 and 1e-5 one epsilon."""
    if isinstance(ours, (list, tuple)) or isinstance(theirs, (list, tuple)):
        as_list = lambda v: [v, v] if not isinstance(v, (list, tuple)) else list(v)  # noqa: E731
        a, b = as_list(ours), as_list(theirs)
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(ours, bool) or isinstance(theirs, bool) or ours is None or theirs is None or isinstance(ours, str) or isinstance(theirs, str):
        return ours == theirs
    return math.isclose(float(ours), float(theirs), rel_tol=1e-9, abs_tol=0.0)


def _fusion_kind(value: Any) -> str | None:
    """fusion_type as it acts in transformers: only "channel_map" changes the patch embedding (the
    fused LAION repo leaves it unset; "aff_2d" is the same network)."""
    return "channel_map" if value == "channel_map" else None


def check_repo_files(card: ModelCard, files: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse a repo whose config.json (its `audio_config`, and the top-level projection settings a
    ClapModel imposes on it) or preprocessor_config.json disagrees with the card's config, naming
    the file and key. A key a file omits stands for transformers' default."""
    cfg = settings(card.config)
    theirs: list[tuple[str, str, Any]] = []  # (file, key, the file's value)
    config = files.get("config.json")
    if config is not None:
        audio = config.get("audio_config") if "audio_config" in config else config
        if not isinstance(audio, Mapping):
            raise WeightsError(f"{card.id}: config.json has no audio_config", hint="is this the repo of a CLAP model?")
        effective = {key: audio.get(key, default) for key, default in AUDIO_DEFAULTS.items()}
        if "audio_config" in config:  # ClapConfig.__post_init__ hands its projection settings to the audio tower
            effective["projection_dim"] = config.get("projection_dim", 512)
            effective["projection_hidden_act"] = config.get("projection_hidden_act", "relu")
        theirs += [("config.json", key, value) for key, value in effective.items()]
    preprocessor = files.get("preprocessor_config.json")
    if preprocessor is not None:
        theirs += [("preprocessor_config.json", key, preprocessor.get(key, FEATURE_EXTRACTOR_CLASS_DEFAULTS[key])) for key in FRONTEND_DEFAULTS]
    differ = [
        (file, key, value) for file, key, value in theirs
        if not (_fusion_kind(cfg[key]) == _fusion_kind(value) if key == "fusion_type" else _same(cfg[key], value))
    ]  # fmt: skip
    if differ:
        said = "; ".join(f"{file} {key}={value!r}" for file, key, value in differ)
        ours = ", ".join(f"{key}={cfg[key]!r}" for _, key, _ in differ)
        raise WeightsError(
            f"the repo of {card.id} disagrees with its card: {said} (the card says {ours})",
            hint="the card's config must state the repo's architecture and frontend; fix the catalog entry or pick the matching card",
        )


def create_model(card: ModelCard) -> ClapAudio:
    """A CLAP audio tower for this card (config keys: geometry.DEFAULT_CONFIG), with random weights."""
    return ClapAudio(card)
