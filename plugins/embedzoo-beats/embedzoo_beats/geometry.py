"""BEATs' architecture facts, torch-free: the one place they are stated (the catalog completes every
BEATs card from `geometry(config)`, and model.py builds the network from the same config).

BEATs (Chen et al. 2022) is a post-LayerNorm transformer on a 16 kHz Kaldi fbank: the waveform
times 2**15, 128 log-mel bins, one frame of 400 samples every 160 (25 / 10 ms, povey window, no
dither, no padding at the ends: n >= 400 samples give 1 + (n - 400) // 160 frames), normalised as
(x - 15.41663) / (2 * 6.55582). A 16 x 16 conv (stride 16, no bias) cuts it into 8 frequency rows
x T // 16 time columns, flattened time-major (token 8 t + f); a LayerNorm, a projection 512 -> 768,
a grouped convolutional position embedding (kernel 128, weight-normalised, + GELU) and the
encoder's LayerNorm, then 12 blocks with a bucketed relative position bias (one table, layer 0's,
gated per query by `grep_linear`) and deep norm (residuals scaled by (2 * layers) ** 0.25). No
absolute positions and no cls token: any length runs. A patch column needs 16 frames
(15 * 160 + 400 = 2800 samples, its field) and advances 16 frames (2560 samples = 160 ms).

The config keys are the checkpoints' own `cfg` names (Microsoft's BEATsConfig), so a file's cfg is
compared key by key with its card when it is converted.

Layers, in `forward_layers` order, all (batch, columns, width) unless pooled:
- `patch` (encoder_embed_dim): the blocks' input, after the patch conv, LayerNorm, projection, conv
  positions and the encoder's LayerNorm = the reference's layer_results[0];
- `block1`..`block<encoder_layers>` = layer_results[1..N] (block N is the encoder's output: a
  post-LN encoder has no final norm, so there is no `norm` layer);
  each frame is one patch column, the mean over its 8 frequency patches;
- `logits` (predictor_class, fine-tuned cards only): the AudioSet head, the mean over every patch
  of `predictor(blockN)` (Microsoft's BEATs.extract_features before its sigmoid).
"""

from __future__ import annotations

from typing import Any, Mapping

from embedzoo.plugin import CardError, Geometry, LayerSpec

SAMPLE_RATE = 16000
FBANK_FRAME = 400  # 25 ms at 16 kHz
FBANK_HOP = 160  # 10 ms
NUM_MEL_BINS = 128
MAX_WINDOW = 160000  # 10 s: the AudioSet clips BEATs was trained and fine-tuned on
# Microsoft's released BEATs cfg (every BEATs_iter*.pt; fine-tuned files add finetuned_model,
# predictor_class) plus the frontend's normalisation (openbeats' fbank_mean / fbank_std)
DEFAULT_CONFIG: dict[str, Any] = {
    "input_patch_size": 16,
    "embed_dim": 512,
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "deep_norm": True,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
    "finetuned_model": False,
    "predictor_class": 527,
    "fbank_mean": 15.41663,
    "fbank_std": 6.55582,
}
# what BEATsConfig assumes for a key a checkpoint's cfg leaves out (Microsoft's and openbeats' defaults)
CFG_DEFAULTS: dict[str, Any] = {**DEFAULT_CONFIG, "deep_norm": False, "relative_position_embedding": False,
                                "gru_rel_pos": False, "max_distance": 1280}  # fmt: skip
ARCH_KEYS = tuple(key for key in DEFAULT_CONFIG if not key.startswith("fbank_"))
_INTS = ("input_patch_size", "embed_dim", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
         "encoder_attention_heads", "conv_pos", "conv_pos_groups", "num_buckets", "max_distance", "predictor_class")  # fmt: skip
_BOOLS = ("conv_bias", "layer_norm_first", "deep_norm", "relative_position_embedding", "gru_rel_pos", "finetuned_model")
_FLOATS = ("fbank_mean", "fbank_std")
ACTIVATIONS = ("gelu", "relu")


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A card's config over DEFAULT_CONFIG, typed and checked; an unknown key is a CardError."""
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise CardError(f"unknown BEATs config keys {unknown}", hint=f"BEATs' config keys: {', '.join(DEFAULT_CONFIG)}")
    cfg = {**DEFAULT_CONFIG, **dict(config)}
    for key in _INTS:
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] <= 0:
            raise CardError(f"BEATs config {key} = {cfg[key]!r} must be a positive integer")
    for key in _BOOLS:
        if not isinstance(cfg[key], bool):
            raise CardError(f"BEATs config {key} = {cfg[key]!r} must be true or false")
    for key in _FLOATS:
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], (int, float)):
            raise CardError(f"BEATs config {key} = {cfg[key]!r} must be a number")
        cfg[key] = float(cfg[key])
    if cfg["fbank_std"] <= 0:
        raise CardError(f"BEATs config fbank_std = {cfg['fbank_std']} must be positive")
    if cfg["activation_fn"] not in ACTIVATIONS:
        raise CardError(f"BEATs config activation_fn = {cfg['activation_fn']!r} is not supported", hint=f"one of {ACTIVATIONS}")
    if cfg["layer_norm_first"]:
        raise CardError("BEATs config layer_norm_first = true (a pre-LN encoder) is not supported: every released BEATs is post-LN")
    if cfg["encoder_embed_dim"] % cfg["encoder_attention_heads"]:
        raise CardError(
            f"BEATs config encoder_embed_dim {cfg['encoder_embed_dim']} is not a multiple of encoder_attention_heads {cfg['encoder_attention_heads']}"
        )
    if cfg["encoder_embed_dim"] % cfg["conv_pos_groups"] or cfg["conv_pos"] % 2:
        raise CardError(f"BEATs config: encoder_embed_dim must be a multiple of conv_pos_groups and conv_pos even (got {cfg['conv_pos']})")
    if cfg["input_patch_size"] > NUM_MEL_BINS or NUM_MEL_BINS % cfg["input_patch_size"]:
        raise CardError(f"BEATs config input_patch_size {cfg['input_patch_size']} must divide the {NUM_MEL_BINS} mel bins")
    if cfg["relative_position_embedding"] and (cfg["num_buckets"] < 4 or cfg["max_distance"] <= cfg["num_buckets"] // 4):
        raise CardError(f"BEATs config: max_distance {cfg['max_distance']} must exceed num_buckets // 4 ({cfg['num_buckets'] // 4})")
    return cfg


def bands(cfg: Mapping[str, Any]) -> int:
    """Frequency patches per column (8 for 16 x 16 patches on 128 bins)."""
    return NUM_MEL_BINS // cfg["input_patch_size"]


def fbank_frames(samples: int) -> int:
    """Kaldi fbank frames of `samples` samples (snip_edges: whole frames only)."""
    return max(0, 1 + (samples - FBANK_FRAME) // FBANK_HOP)


def columns(samples: int, cfg: Mapping[str, Any]) -> int:
    """Patch columns of an input of `samples` samples (the conv drops a last partial column)."""
    return fbank_frames(samples) // cfg["input_patch_size"]


def geometry(config: Mapping[str, Any]) -> Geometry:
    """Layers and windows of the BEATs `config` describes."""
    cfg = settings(config)
    dim, depth, patch = cfg["encoder_embed_dim"], cfg["encoder_layers"], cfg["input_patch_size"]
    blocks = tuple(LayerSpec(f"block{i + 1}", dim) for i in range(depth))
    heads = (LayerSpec("logits", cfg["predictor_class"], pooled=True),) if cfg["finetuned_model"] else ()
    field = (patch - 1) * FBANK_HOP + FBANK_FRAME
    return Geometry(
        layers=(LayerSpec("patch", dim), *blocks, *heads),
        frame_hop=patch * FBANK_HOP,
        frame_field=field,
        min_window=field,  # one patch column (2800 samples)
        max_window=MAX_WINDOW,
        sample_rate=SAMPLE_RATE,
        hidden_states=("patch", *(spec.name for spec in blocks)),
        frame_chunk=MAX_WINDOW,  # attention and conv positions see the whole chunk: frame mode runs 10 s chunks
    )
