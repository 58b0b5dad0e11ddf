"""Speech SSL architecture facts, torch-free: the one place they are stated (the catalog completes
every `ssl` card from `geometry(config)`, and model.py builds the transformers model from the
same config).

wav2vec2, HuBERT, WavLM and data2vec-audio share one shape: a 7-layer conv feature encoder on the
raw 16 kHz waveform (kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2: one frame every 320 samples,
each seeing 400), a linear feature projection, a convolutional positional embedding and a stack of
transformer layers (post-LN, or pre-LN with a final LayerNorm when `do_stable_layer_norm`).
A card's `config` is `model_type` (which transformers class), `do_normalize` (the
preprocessor_config's per-window zero-mean unit-variance normalisation) and the config.json keys
that differ from transformers' defaults for that class (`ARCH_DEFAULTS`); any other key is a
CardError, so a typo is never ignored.

Layers, in `forward_layers` order (`hidden_states` = embed, block1..blockN, as transformers'
`output_hidden_states` returns them):
- `features` (conv_dim[-1], 512): the conv encoder's output, before the feature projection's
  LayerNorm (transformers' `extract_features` is that LayerNorm of it);
- `embed` (hidden_size): hidden_states[0], the transformer's input: projection + positional conv
  (+ the encoder's LayerNorm for post-LN models; pre-LN models apply none there);
- `block1`..`blockN`: hidden_states[1..N], each layer's output;
- `norm`, pre-LN (`do_stable_layer_norm`) models only: the final LayerNorm of blockN, which is
  transformers' `last_hidden_state` (hidden_states[N] is the layer's output before it; for post-LN
  models last_hidden_state is blockN itself).
Every layer has the conv encoder's frame grid: frame j spans samples [320 j, 320 j + 400) of its
window, so it is centred on 200 + 320 j (`frame_offset` 200: frame mode pads nothing in front of a
clip, so a clip is read from its first sample, as transformers reads it). Frames depend on the
whole input of a forward (attention, do_normalize, the group-norm conv encoder), so frame mode
reads clips in chunks of `frame_chunk` = max_window (30 s) whatever the batch budget.
"""

from __future__ import annotations

from typing import Any, Mapping

from embedzoo.plugin import CardError, Geometry, LayerSpec

SAMPLE_RATE = 16000
MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
# the longest input of one forward: attention is quadratic in frames (1500 at 30 s); the models
# were pretrained on crops of at most ~15-20 s and have no position table, so longer inputs work
MAX_SECONDS = 30
NORMALIZE_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm: (x - mean) / sqrt(var + 1e-7)

_COMMON: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "feat_extract_activation": "gelu",
    "conv_dim": [512, 512, 512, 512, 512, 512, 512],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
}
_NORM_STYLE: dict[str, Any] = {"feat_extract_norm": "group", "do_stable_layer_norm": False}
# transformers 5.24's defaults of the architecture keys of each class (XConfig()); the tests check
# them against the installed transformers. data2vec-audio has a layer-norm conv encoder and post-LN
# layers only (no feat_extract_norm / do_stable_layer_norm), and stacks `num_conv_pos_embeddings`
# positional convs of `conv_pos_kernel_size` taps.
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "wav2vec2": {**_COMMON, **_NORM_STYLE},
    "hubert": {**_COMMON, **_NORM_STYLE, "feat_proj_layer_norm": True, "conv_pos_batch_norm": False},
    "wavlm": {**_COMMON, **_NORM_STYLE, "num_buckets": 320, "max_bucket_distance": 800},
    "data2vec-audio": {**_COMMON, "num_conv_pos_embeddings": 5, "conv_pos_kernel_size": 19},
}
FRONTEND_DEFAULTS: dict[str, Any] = {"do_normalize": True}  # Wav2Vec2FeatureExtractor's default
# what each model type's checkpoints prefix the bare model's keys with (transformers' base_model_prefix)
BASE_PREFIX = {"wav2vec2": "wav2vec2", "hubert": "hubert", "wavlm": "wavlm", "data2vec-audio": "data2vec_audio"}


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A card's config over its model type's defaults; an unknown model type or key is a CardError."""
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise CardError(f"ssl config needs model_type, one of {', '.join(MODEL_TYPES)}; got {model_type!r}",
                        hint="state which transformers model the checkpoint is (config.json's model_type)")  # fmt: skip
    known = {"model_type", *FRONTEND_DEFAULTS, *ARCH_DEFAULTS[model_type]}
    unknown = sorted(set(config) - known)
    if unknown:
        raise CardError(f"unknown {model_type} config keys {unknown}", hint=f"{model_type} config keys: {', '.join(sorted(known))}")
    cfg = {**ARCH_DEFAULTS[model_type], **FRONTEND_DEFAULTS, **dict(config)}
    lengths = {len(cfg[key]) for key in ("conv_dim", "conv_kernel", "conv_stride")}
    if len(lengths) != 1:
        raise CardError(f"{model_type} config: conv_dim, conv_kernel and conv_stride must have one length, got {cfg['conv_dim']}, {cfg['conv_kernel']}, {cfg['conv_stride']}")
    if cfg.get("feat_extract_norm", "layer") not in ("group", "layer"):
        raise CardError(f"{model_type} config: feat_extract_norm must be 'group' or 'layer', not {cfg['feat_extract_norm']!r}")
    return cfg


def stable_layer_norm(cfg: Mapping[str, Any]) -> bool:
    """Pre-LN layers with a final encoder LayerNorm (large-lv60, XLS-R, HuBERT/WavLM large)."""
    return bool(cfg.get("do_stable_layer_norm", False))


def frame_hop(cfg: Mapping[str, Any]) -> int:
    """Samples between frames: the product of the conv strides (320)."""
    hop = 1
    for stride in cfg["conv_stride"]:
        hop *= int(stride)
    return hop


def frame_field(cfg: Mapping[str, Any]) -> int:
    """Samples one frame sees: the conv stack's receptive field (400)."""
    field, jump = 1, 1
    for kernel, stride in zip(cfg["conv_kernel"], cfg["conv_stride"]):
        field += (int(kernel) - 1) * jump
        jump *= int(stride)
    return field


def frame_count(samples: int, cfg: Mapping[str, Any]) -> int:
    """Frames the conv encoder gives for `samples` samples (no padding: each layer keeps
    (n - kernel) // stride + 1), 0 when shorter than one frame's field. For the strides and kernels
    of every released checkpoint this equals (samples - field) // hop + 1."""
    n = samples
    for kernel, stride in zip(cfg["conv_kernel"], cfg["conv_stride"]):
        if n < int(kernel):
            return 0
        n = (n - int(kernel)) // int(stride) + 1
    return n


def geometry(config: Mapping[str, Any]) -> Geometry:
    """Layers and windows of the speech SSL model `config` describes."""
    cfg = settings(config)
    hop, field = frame_hop(cfg), frame_field(cfg)
    for samples in (field, field + hop - 1, field + hop, field + 7 * hop + 3):
        if frame_count(samples, cfg) != (samples - field) // hop + 1:
            raise CardError(f"{cfg['model_type']} config: its conv stack (kernels {cfg['conv_kernel']}, strides {cfg['conv_stride']}) does not keep one frame per {hop} samples")
    width, depth = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
    grid = {"frame_offset": field // 2}
    blocks = tuple(LayerSpec(f"block{i + 1}", width, **grid) for i in range(depth))
    layers = (
        LayerSpec("features", int(cfg["conv_dim"][-1]), **grid),
        LayerSpec("embed", width, **grid),
        *blocks,
        *((LayerSpec("norm", width, **grid),) if stable_layer_norm(cfg) else ()),
    )
    max_window = MAX_SECONDS * SAMPLE_RATE
    return Geometry(
        layers=layers,
        frame_hop=hop,
        frame_field=field,
        min_window=field,
        max_window=max_window,
        sample_rate=SAMPLE_RATE,
        hidden_states=("embed", *(spec.name for spec in blocks)),
        # attention (and do_normalize, and the group-norm conv encoder) see the whole chunk: frame
        # mode reads clips in chunks of the longest input, whatever the batch budget
        frame_chunk=max_window,
    )
