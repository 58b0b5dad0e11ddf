"""AST's architecture facts, torch-free: the one place they are stated (the catalog completes every
AST card from `geometry(config)`, and model.py builds the network from the same config).

An AST (Gong, Chung, Glass 2021) is a DeiT-B distilled ViT on a 16 kHz Kaldi fbank: 128 log-mel
bins, one frame every 160 samples, each of 400 samples (25 ms every 10 ms, no padding at the ends:
an input of n >= 400 samples has 1 + (n - 400) // 160 frames), normalised as
(x - mean) / (2 * std). 16 x 16 patches every `frequency_stride` bins and `time_stride` frames,
so patch column j starts at fbank frame time_stride * j and advances by time_stride * 160 samples
(the layers' frame hop); a column needs 16 frames, i.e. 15 * 160 + 400 = 2800 samples (its field).
The positional table holds (num_mel_bins - 16) // frequency_stride + 1 rows by
(max_length - 16) // time_stride + 1 columns (12 x 101 for the AudioSet cards), flat after the
cls and distillation tokens, as transformers' ASTEmbeddings has it.

Paddings (the `padding` knob; `forward_layers(..., padding=)`):
- "reference" (the default): the fbank is zero-padded to max_length frames before it is normalised,
  as ASTFeatureExtractor does, so every input up to max_window (10.24 s) gives transformers'
  numbers exactly; the sequence layers keep the patch columns the input covers (the others see only
  padding);
- "crop": no padding; the time positions are cut from the middle of the table to the input's
  columns, as the original AST code adapts its AudioSet table to shorter inputs (a departure from
  transformers, which accepts max_length frames only).

Layers, in `forward_layers` order:
- `fbank` (num_mel_bins): the normalised fbank, one frame per Kaldi frame (hop 160, field 400);
- `patch` (hidden_size): the embeddings' output (patches + positions, after the cls and
  distillation tokens) = transformers' hidden_states[0];
- `block1`..`block<num_hidden_layers>` (hidden_size) = hidden_states[1..N];
- `norm` (hidden_size): last_hidden_state (after the final LayerNorm);
  `patch`, the blocks and `norm` have tokens cls, dist, then one frame per patch column (the mean
  over its frequency patches: `embedzoo.layers.patch_columns`);
- `features` (hidden_size): (cls + dist) / 2 after the norm = ASTModel's pooler_output;
- `logits` (num_labels): ASTForAudioClassification's classifier on `features`.
"""

from __future__ import annotations

from typing import Any, Mapping

from embedzoo.plugin import CardError, Geometry, LayerSpec

SAMPLE_RATE = 16000
TOKENS = ("cls", "dist")
PADDINGS = ("reference", "crop")
FBANK_FRAME = 400  # 25 ms at 16 kHz (Kaldi's frame_length), what one fbank frame needs
FBANK_HOP = 160  # 10 ms (frame_shift)
# ASTConfig's and ASTFeatureExtractor's defaults (transformers 5.24): MIT/ast-finetuned-audioset-10-10-0.4593
DEFAULT_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "qkv_bias": True,
    "patch_size": 16,
    "frequency_stride": 10,
    "time_stride": 10,
    "max_length": 1024,  # fbank frames the time positions were made for (10.24 s)
    "num_mel_bins": 128,
    "num_labels": 527,
    "mean": -4.2677393,  # preprocessor_config.json: the fbank normalisation (x - mean) / (2 * std)
    "std": 4.5689974,
}
_INTS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
         "frequency_stride", "time_stride", "max_length", "num_mel_bins", "num_labels")  # fmt: skip
_FLOATS = ("layer_norm_eps", "mean", "std")


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A card's config over DEFAULT_CONFIG, typed and checked; an unknown key is a CardError (a typo
    would otherwise be ignored)."""
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise CardError(f"unknown AST config keys {unknown}", hint=f"AST's config keys: {', '.join(DEFAULT_CONFIG)}")
    cfg = {**DEFAULT_CONFIG, **dict(config)}
    try:
        for key in _INTS:
            if isinstance(cfg[key], bool) or int(cfg[key]) != cfg[key]:
                raise ValueError(key)
            cfg[key] = int(cfg[key])
        for key in _FLOATS:
            cfg[key] = float(cfg[key])
    except (TypeError, ValueError) as exc:
        raise CardError(f"AST config {dict(config)}: {exc} must be a number (integers for sizes)") from None
    if not isinstance(cfg["qkv_bias"], bool) or not isinstance(cfg["hidden_act"], str):
        raise CardError(f"AST config {dict(config)}: qkv_bias must be true/false and hidden_act a name (gelu)")
    if min(cfg[key] for key in _INTS) <= 0 or cfg["std"] <= 0 or cfg["layer_norm_eps"] <= 0:
        raise CardError(f"AST config {dict(config)}: sizes, strides, std and layer_norm_eps must be positive")
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise CardError(f"AST config {dict(config)}: hidden_size {cfg['hidden_size']} is not a multiple of num_attention_heads {cfg['num_attention_heads']}")
    if cfg["patch_size"] > min(cfg["num_mel_bins"], cfg["max_length"]):
        raise CardError(f"AST config {dict(config)}: a {cfg['patch_size']}-wide patch needs num_mel_bins and max_length of at least {cfg['patch_size']}")
    return cfg


def grid(cfg: Mapping[str, Any]) -> tuple[int, int]:
    """(frequency rows, time columns) of the positional table: transformers' ASTEmbeddings.get_shape."""
    patch = cfg["patch_size"]
    return (cfg["num_mel_bins"] - patch) // cfg["frequency_stride"] + 1, (cfg["max_length"] - patch) // cfg["time_stride"] + 1


def fbank_frames(samples: int) -> int:
    """Kaldi fbank frames of an input of `samples` samples (snip_edges: whole frames only)."""
    return max(0, 1 + (samples - FBANK_FRAME) // FBANK_HOP)


def columns(frames: int, cfg: Mapping[str, Any]) -> int:
    """Patch columns an input of `frames` fbank frames covers (at least one: a shorter input is padded
    to one patch, with the value the reference pads with)."""
    return max(1, (frames - cfg["patch_size"]) // cfg["time_stride"] + 1)


def geometry(config: Mapping[str, Any]) -> Geometry:
    """Layers and windows of the AST `config` describes."""
    cfg = settings(config)
    dim, depth = cfg["hidden_size"], cfg["num_hidden_layers"]
    field = (cfg["patch_size"] - 1) * FBANK_HOP + FBANK_FRAME
    blocks = tuple(LayerSpec(f"block{i + 1}", dim, tokens=TOKENS) for i in range(depth))
    layers = (
        LayerSpec("fbank", cfg["num_mel_bins"], frame_hop=FBANK_HOP, frame_field=FBANK_FRAME),
        LayerSpec("patch", dim, tokens=TOKENS),
        *blocks,
        LayerSpec("norm", dim, tokens=TOKENS),
        LayerSpec("features", dim, pooled=True),
        LayerSpec("logits", cfg["num_labels"], pooled=True),
    )
    return Geometry(
        layers=layers,
        frame_hop=cfg["time_stride"] * FBANK_HOP,
        frame_field=field,
        min_window=FBANK_FRAME,  # one fbank frame; the model pads it to a patch (both paddings)
        max_window=(cfg["max_length"] - 1) * FBANK_HOP + FBANK_FRAME,  # max_length frames: 164080 (10.24 s)
        sample_rate=SAMPLE_RATE,
        hidden_states=("patch", *(spec.name for spec in blocks)),
        paddings=PADDINGS,
        padded=("reference",),  # every forward runs on max_length frames: batches count 10.24 s per window
        frame_chunk=(cfg["max_length"] - 1) * FBANK_HOP + FBANK_FRAME,  # attention: frame-mode chunks are always the full input
    )
