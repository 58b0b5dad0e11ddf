"""wav2vec2 / HuBERT / WavLM / data2vec-audio on transformers' own model classes.

One code path for the four: the card's `model_type` picks `Wav2Vec2Model`, `HubertModel`,
`WavLMModel` or `Data2VecAudioModel`, built from the card's config (geometry.settings) with random
weights; the Hub checkpoints load into it unchanged (`model.` + the bare model's keys).

`forward_layers` is the reference's recipe, read layer by layer from transformers' own modules so
that it can stop after the last layer asked for:
- frontend: with `do_normalize`, each window (or frame-mode chunk) is normalised to zero mean and
  unit variance, (x - mean) / sqrt(var + 1e-7), as Wav2Vec2FeatureExtractor does per clip;
- `features`: `feature_extractor` (the conv encoder), (batch, frames, conv_dim[-1]);
- `embed`: `feature_projection`, plus `encoder.pos_conv_embed`, plus `encoder.layer_norm` for
  post-LN models: transformers' hidden_states[0];
- `block<i>`: `encoder.layers[i - 1]` (WavLM's pass their relative position bias on, and attend
  through SDPA: `use_sdpa`): hidden_states[i];
- `norm` (pre-LN models): `encoder.layer_norm` of the last block: last_hidden_state.
No attention mask: the core batches windows of equal length, so nothing is padded -- and the
group-norm conv encoders (wav2vec2/HuBERT/WavLM base) normalise over the whole window, so padded
samples would change every frame anyway.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

from embedzoo.plugin import ConfigError, Extractor, ModelCard, WeightsError, remap_state_dict, unwrap_state_dict

from embedzoo_ssl.geometry import ARCH_DEFAULTS, BASE_PREFIX, NORMALIZE_EPS, SAMPLE_RATE, settings, stable_layer_norm

# model_type -> (transformers config class, model class)
CLASSES = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"),
}
# inference only: no SpecAugment (so no `masked_spec_embed` parameter), no dropout, no LayerDrop
_EVAL_ONLY = {
    "mask_time_prob": 0.0,
    "mask_feature_prob": 0.0,
    "apply_spec_augment": False,
    "layerdrop": 0.0,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
}


def hf_config(config: Mapping[str, Any]):
    """The transformers config of a card's `config` (architecture keys only, eval-only settings)."""
    import transformers

    cfg = settings(config)
    config_class = getattr(transformers, CLASSES[cfg["model_type"]][0])
    arch = {key: cfg[key] for key in ARCH_DEFAULTS[cfg["model_type"]]}
    return config_class(**arch, **_EVAL_ONLY)


def normalize(audio: Tensor) -> Tensor:
    """Wav2Vec2FeatureExtractor's do_normalize over each row: zero mean, unit (population) variance."""
    mean = audio.mean(dim=-1, keepdim=True)
    var = audio.var(dim=-1, unbiased=False, keepdim=True)
    return (audio - mean) / torch.sqrt(var + NORMALIZE_EPS)


class SdpaWavLMAttention(WavLMAttention):
    """WavLM's attention with its core through `F.scaled_dot_product_attention` (the gated relative
    position bias as the additive `attn_mask`). transformers' class calls
    `multi_head_attention_forward(need_weights=True)`, the explicit softmax, and averages weights it
    is never asked for; the projections and parameters are its own."""

    def torch_multi_head_self_attention(self, hidden_states: Tensor, attention_mask: Tensor | None, gated_position_bias: Tensor) -> tuple[Tensor, None]:
        batch, frames, _ = hidden_states.shape
        shape = (batch, frames, self.num_heads, self.head_dim)
        query, key, value = (proj(hidden_states).view(shape).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        bias = gated_position_bias.view(batch, self.num_heads, frames, frames)
        if attention_mask is not None:  # 1 = a frame to attend to, as the reference's key_padding_mask
            bias = bias.masked_fill(attention_mask.ne(1)[:, None, None, :], float("-inf"))
        dropout = self.dropout if self.training else 0.0
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype), dropout_p=dropout)
        return self.out_proj(context.transpose(1, 2).reshape(batch, frames, self.embed_dim)), None


def use_sdpa(model: nn.Module) -> None:
    """Every WavLM attention of `model` attends through SDPA (same parameters, same keys)."""
    for module in model.modules():
        if type(module) is WavLMAttention:
            module.__class__ = SdpaWavLMAttention


class SpeechSSL(Extractor):
    """A wav2vec2 / HuBERT / WavLM / data2vec-audio encoder, as the card's `config` describes."""

    def __init__(self, card: ModelCard):
        super().__init__(card)
        import transformers

        cfg = settings(card.config)
        self.model_type = cfg["model_type"]
        self.do_normalize = bool(cfg["do_normalize"])
        self.stable = stable_layer_norm(cfg)
        model_class = getattr(transformers, CLASSES[self.model_type][1])
        self.model = model_class(hf_config(card.config))
        if self.model_type == "wavlm":
            use_sdpa(self.model)
        # geometry.py's order: features, embed, block1..blockN[, norm]
        self.layer_names = tuple(spec.name for spec in card.layers)

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """Requested layers (all when None), each (batch, frames, width), computing no layer past
        the last one asked for."""
        wanted = list(self.layer_names if layers is None else layers)
        unknown = [name for name in wanted if name not in self.layer_names]
        if unknown:
            raise ConfigError(f"{self.card.id} has no layer(s) {unknown}", hint=f"layers: {', '.join(self.layer_names)}")
        if audio.shape[-1] < self.card.min_window:
            raise ConfigError(
                f"{self.card.id}: an input of {audio.shape[-1]} samples is shorter than one frame of the conv encoder ({self.card.min_window} samples)",
                hint=f"pad it to {self.card.min_window} samples; embedzoo's scene/timestamp calls pad short windows themselves",
            )
        last = max(self.layer_names.index(name) for name in wanted)
        out: dict[str, Tensor] = {}
        x = normalize(audio) if self.do_normalize else audio
        model = self.model
        hidden = model.feature_extractor(x).transpose(1, 2)
        out["features"] = hidden
        if last >= 1:
            projected = model.feature_projection(hidden)
            hidden = projected[0] if isinstance(projected, tuple) else projected  # HuBERT's returns one tensor
            encoder = model.encoder
            hidden = hidden + encoder.pos_conv_embed(hidden)
            if not self.stable:
                hidden = encoder.layer_norm(hidden)
            out["embed"] = hidden
            bias = None
            for index, layer in enumerate(encoder.layers[: last - 1]):
                if self.model_type != "wavlm":
                    hidden = layer(hidden, attention_mask=None)
                elif self.stable:
                    hidden, bias = layer(hidden, attention_mask=None, position_bias=bias)
                else:
                    hidden, bias = layer(hidden, attention_mask=None, position_bias=bias, index=index)
                out[f"block{index + 1}"] = hidden
            if "norm" in wanted:
                out["norm"] = encoder.layer_norm(hidden)
        return [out[name] for name in wanted]


# ---- checkpoints ------------------------------------------------------------------------------

# Tensors of Hub checkpoints that are not the bare encoder, dropped by name:
# - pretraining wrappers (Wav2Vec2ForPreTraining): the quantizer (`quantizer.codevectors`,
#   `quantizer.weight_proj`) and the contrastive heads `project_q`, `project_hid`;
# - fine-tuned heads: CTC `lm_head` (the -960h models), sequence classification `projector`,
#   `classifier`, `layer_weights`: not exposed (the family reads the encoder's hidden states);
# - `masked_spec_embed`: SpecAugment's learned mask vector, used in training only.
_HEADS = re.compile(r"^(quantizer\.|project_q\.|project_hid\.|lm_head\.|projector\.|classifier\.|layer_weights$)")
_TRAINING_ONLY = ("masked_spec_embed",)
# torch.nn.utils.weight_norm's names (older transformers, `pytorch_model.bin` on most Hub mains)
# -> torch.nn.utils.parametrizations.weight_norm's, which transformers 5 builds and saves
_LEGACY_WEIGHT_NORM = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: SpeechSSL) -> dict[str, Tensor]:
    """A Hub checkpoint (`model.safetensors` or `pytorch_model.bin`) -> this model's keys.

    Accepts the bare model's keys (`feature_extractor.…`, `encoder.…`) and those of transformers'
    wrappers, prefixed with the model type's `wav2vec2.` / `hubert.` / `wavlm.` / `data2vec_audio.`
    (ForPreTraining, ForCTC, ForSequenceClassification); the wrappers' heads and
    `masked_spec_embed` are dropped by name (_HEADS, _TRAINING_ONLY). The positional conv's weight
    norm is accepted in both namings: `weight_g`/`weight_v` (old files) and
    `parametrizations.weight.original0/1` (transformers >= 4.3x). Any other key, a missing key or a
    wrong shape raises WeightsError naming it (`remap_state_dict`).
    """
    state = unwrap_state_dict(state_dict, model.card.id)
    prefix = BASE_PREFIX[model.model_type] + "."
    prefixed = any(key.startswith(prefix) for key in state)

    def inner(key: str) -> str:
        return key[len(prefix) :] if key.startswith(prefix) else key

    kept = {k: v for k, v in state.items() if not _HEADS.match(k) and inner(k) not in _TRAINING_ONLY}
    target = model.state_dict()

    def rename(key: str) -> str | None:
        name = inner(key)
        for old, new in _LEGACY_WEIGHT_NORM.items():
            if name.endswith(old):
                name = name[: -len(old)] + new
        return "model." + name

    return remap_state_dict(
        kept,
        target,
        rename,
        model_id=model.card.id,
        their_name=lambda key: (prefix if prefixed else "") + key.removeprefix("model."),
        # every tensor must come from the file; only a BatchNorm counter (HuBERT's conv_pos_batch_norm) may be absent
        unused_hint=f"is this a {model.model_type} checkpoint? the bare model's keys, or {prefix}-prefixed ones of a transformers wrapper, are expected",
        missing_hint=f"is this a complete {model.model_type} checkpoint of {model.card.id}?",
        shape_hint=f"is this the checkpoint of {model.card.id}'s size? (hidden_size, layers, conv dims in the card's config)",
    )


# ---- the repo's own config files ----------------------------------------------------------------


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
        return [*ours] == [*theirs]
    return ours == theirs


def check_repo_files(card: ModelCard, files: Mapping[str, Mapping[str, Any] | None]) -> None:
    """The source repo's config.json / preprocessor_config.json (parsed) against the card's config:
    every architecture key of the model type (a key config.json omits has transformers' default),
    adapters absent, and the preprocessor's do_normalize, sampling_rate and feature size. A file
    the repo lacks (absent or None) is not checked. Raises WeightsError naming every key that
    disagrees."""
    cfg = settings(card.config)
    model_type = cfg["model_type"]
    problems: list[str] = []
    config = files.get("config.json")
    if config is not None:
        if config.get("model_type") != model_type:
            problems.append(f"config.json: model_type={config.get('model_type')!r}, the card has {model_type!r}")
        else:
            for key, default in ARCH_DEFAULTS[model_type].items():
                theirs = config.get(key, default)
                if not _same(cfg[key], theirs):
                    problems.append(f"config.json: {key}={theirs!r}, the card has {cfg[key]!r}")
            layers = config.get("num_feat_extract_layers", len(cfg["conv_dim"]))
            if layers != len(cfg["conv_dim"]):
                problems.append(f"config.json: num_feat_extract_layers={layers!r}, the card's conv_dim has {len(cfg['conv_dim'])}")
            if config.get("add_adapter") or config.get("adapter_attn_dim") is not None:
                problems.append("config.json: adds adapters (add_adapter / adapter_attn_dim), which the ssl family does not build")
    preprocessor = files.get("preprocessor_config.json")
    if preprocessor is not None:
        kind = preprocessor.get("feature_extractor_type", "Wav2Vec2FeatureExtractor")
        if kind != "Wav2Vec2FeatureExtractor":
            problems.append(f"preprocessor_config.json: feature_extractor_type={kind!r}, the ssl family reproduces Wav2Vec2FeatureExtractor")
        normalize_ = preprocessor.get("do_normalize", True)  # Wav2Vec2FeatureExtractor's default
        if bool(normalize_) != bool(cfg["do_normalize"]):
            problems.append(f"preprocessor_config.json: do_normalize={normalize_!r}, the card has {cfg['do_normalize']!r}")
        for key, expected in (("sampling_rate", SAMPLE_RATE), ("feature_size", 1)):
            if preprocessor.get(key, expected) != expected:
                problems.append(f"preprocessor_config.json: {key}={preprocessor.get(key)!r}, the ssl family needs {expected}")
    if problems:
        raise WeightsError(
            f"model {card.id}: the repo's files disagree with the card -- " + "; ".join(problems),
            hint="the card's config (registry.yaml) is wrong for this repo or revision: correct the keys named, or pin the revision the card was written for",
        )


def create_model(card: ModelCard) -> SpeechSSL:
    """A speech SSL encoder for this card (config keys: geometry.ARCH_DEFAULTS), with random weights."""
    return SpeechSSL(card)
