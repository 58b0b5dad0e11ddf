"""CED's architecture facts, torch-free: the one place they are stated (the catalog completes every
CED card from `geometry(config)`, and model.py builds the network from the same config).

A CED (Dinkel et al., ICASSP 2024) is a ViT on a 16 kHz log-mel spectrogram: torchaudio's
MelSpectrogram (n_fft = win 512, hop 160, centred reflect-padded frames, periodic Hann, power 2,
64 HTK-scale mel bands 0-8 kHz without norm) -> AmplitudeToDB (10 log10, amin 1e-10, top_db 120)
-> BatchNorm2d over the mel bins (`init_bn`). An input of n samples has 1 + n // 160 frames.
Patches 16 x 16 with stride 16: 64 / 16 = 4 frequency rows, one column per 16 frames (2560
samples, 160 ms). Positions are separable: `time_pos_embed` (1, D, 1, target_length // 16) and
`freq_pos_embed` (1, D, 4, 1); a shorter input uses the first time positions. The authors' model
takes one chunk of `target_length` (1012) frames per forward -- 63 columns, its last 4 frames
unused -- and cuts longer spectrograms into such chunks (see docs/models/ced.md: embedzoo windows
long audio instead).

Layers, in `forward_layers` order (no tokens: CED pools by mean):
- `patch` (embed_dim): the patch embedding plus both positional tables (hidden_states[0]);
- `block1`..`block<depth>` (embed_dim): each transformer block's output;
- `norm` (embed_dim): the final LayerNorm (what the authors' `forward_features` returns);
  the sequence layers give one frame per patch column, the mean over its 4 frequency patches;
- `features` (embed_dim): the mean of `norm` over all patches (the HEAR_CED scene embedding and
  the head's input);
- `logits` (outputdim, 527 AudioSet classes): `outputlayer` (LayerNorm + Linear) on `features`,
  before the sigmoid the authors' forward applies.
"""

from __future__ import annotations

from typing import Any, Mapping

from embedzoo.plugin import CardError, Geometry, LayerSpec

SAMPLE_RATE = 16000
# ced-base (RicherMans/CED models/audiotransformer.py `AudioTransformer` and the Hub's CedConfig defaults)
DEFAULT_CONFIG: dict[str, Any] = {
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "patch_size": 16,
    "patch_stride": 16,
    "target_length": 1012,  # frames of one chunk (10.12 s)
    "n_mels": 64,
    "n_fft": 512,
    "win_size": 512,
    "hop_size": 160,
    "f_min": 0,
    "f_max": 8000,
    "outputdim": 527,
}
_INTS = ("embed_dim", "depth", "num_heads", "patch_size", "patch_stride", "target_length", "n_mels", "n_fft", "win_size",
         "hop_size", "outputdim")  # fmt: skip
_FLOATS = ("mlp_ratio", "f_min", "f_max")


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A card's config over DEFAULT_CONFIG, typed and checked; an unknown key is a CardError."""
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise CardError(f"unknown CED config keys {unknown}", hint=f"CED's config keys: {', '.join(DEFAULT_CONFIG)}")
    cfg = {**DEFAULT_CONFIG, **dict(config)}
    try:
        for key in _INTS:
            if isinstance(cfg[key], bool) or int(cfg[key]) != cfg[key]:
                raise ValueError(key)
            cfg[key] = int(cfg[key])
        for key in _FLOATS:
            if isinstance(cfg[key], bool):
                raise ValueError(key)
            cfg[key] = float(cfg[key])
    except (TypeError, ValueError) as exc:
        raise CardError(f"CED config {dict(config)}: {exc} must be a number (integers for sizes)") from None
    if not isinstance(cfg["qkv_bias"], bool):
        raise CardError(f"CED config {dict(config)}: qkv_bias must be true or false")
    if min(cfg[key] for key in _INTS) <= 0 or cfg["mlp_ratio"] <= 0:
        raise CardError(f"CED config {dict(config)}: sizes must be positive")
    if cfg["embed_dim"] % cfg["num_heads"]:
        raise CardError(f"CED config {dict(config)}: embed_dim {cfg['embed_dim']} is not a multiple of num_heads {cfg['num_heads']}")
    if cfg["patch_size"] != cfg["patch_stride"]:
        raise CardError(f"CED config {dict(config)}: only non-overlapping patches (patch_stride = patch_size) are supported")
    if cfg["n_mels"] % cfg["patch_size"] or cfg["target_length"] < cfg["patch_size"]:
        raise CardError(f"CED config {dict(config)}: n_mels must be a multiple of patch_size and target_length at least one patch")
    if cfg["win_size"] != cfg["n_fft"]:
        raise CardError(f"CED config {dict(config)}: win_size must equal n_fft (every CED checkpoint uses 512)")
    if not 0 <= cfg["f_min"] < cfg["f_max"] <= SAMPLE_RATE / 2:
        raise CardError(f"CED config {dict(config)}: mel band edges must satisfy 0 <= f_min < f_max <= 8000")
    return cfg


def grid(cfg: Mapping[str, Any]) -> tuple[int, int]:
    """(frequency rows, time positions) of the positional tables, as the authors' AudioPatchEmbed sizes them."""
    return cfg["n_mels"] // cfg["patch_stride"], cfg["target_length"] // cfg["patch_stride"]


def frames(samples: int, cfg: Mapping[str, Any]) -> int:
    """Mel frames of an input of `samples` samples (centred STFT)."""
    return 1 + samples // cfg["hop_size"]


def geometry(config: Mapping[str, Any]) -> Geometry:
    """Layers and windows of the CED `config` describes."""
    cfg = settings(config)
    dim, depth, patch, hop = cfg["embed_dim"], cfg["depth"], cfg["patch_size"], cfg["hop_size"]
    blocks = tuple(LayerSpec(f"block{i + 1}", dim) for i in range(depth))
    layers = (
        LayerSpec("patch", dim),
        *blocks,
        LayerSpec("norm", dim),
        LayerSpec("features", dim, pooled=True),
        LayerSpec("logits", cfg["outputdim"], pooled=True),
    )
    chunk = (cfg["target_length"] - 1) * hop  # the shortest input with target_length frames: 161760 (10.11 s)
    return Geometry(
        layers=layers,
        frame_hop=patch * hop,  # one patch column: 2560 samples (160 ms)
        frame_field=(patch - 1) * hop,  # the shortest input with one column (16 frames): 2400; column j centred on 2560 j + 1200
        min_window=(patch - 1) * hop,
        max_window=chunk,
        sample_rate=SAMPLE_RATE,
        hidden_states=("patch", *(spec.name for spec in blocks)),
        frame_chunk=chunk,  # attention: frame-mode chunks are always one full CED chunk
    )
