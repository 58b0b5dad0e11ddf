"""Dasheng's architecture facts, torch-free: the one place they are stated (the catalog completes
every Dasheng card from `geometry(config)`, and model.py builds the network from the same config).

Dasheng (Dinkel et al., "Scaling up masked audio encoder learning for general audio
classification", Interspeech 2024) is a ViT on a 16 kHz log-mel spectrogram, as the `dasheng`
package (0.0.9, `dasheng.pretrained.pretrained.Dasheng`) computes it:

- front end: |STFT|^2, n_fft = win 512 (periodic Hann), hop 160, centred (reflect padding); 64 HTK
  mel bands 0-8 kHz (torchaudio's MelSpectrogram: triangles in Hz, no norm); dB (10 log10, amin
  1e-10) floored at the input's maximum minus top_db 120; a BatchNorm over the 64 mel bins (eval:
  running statistics). An input of n samples has 1 + n // 160 mel frames;
- patches 64 x 4 (all mel bins by 4 frames, stride 4): one token per 40 ms, token j from mel
  frames 4j .. 4j+3 (centred on samples 640j .. 640j + 480), so an input has (1 + n // 160) // 4 tokens;
- the reference cuts the token sequence into chunks of target_length // 4 = 252 tokens (1008 mel
  frames, 10.08 s) and runs each chunk through the transformer on its own (positions 0.. of the
  time table, attention within the chunk), then concatenates the chunks' tokens; the front end
  (reflect padding, the top_db floor, BatchNorm) is computed over the whole input first;
- positions: a learned time table (252 columns) and a frequency table (1 row) added to the patches;
  no cls token (pooling "mean"); blocks are pre-norm ViT blocks (LayerNorm eps 1e-6, exact GELU,
  qkv bias), then a final LayerNorm.

A forward here is the reference's forward on one clip, chunking included: `max_window` is
`chunks` reference chunks (6: 60.48 s), so a clip up to a minute is embedded exactly as
`Dasheng(clip)` does it (the core windows longer audio). The reference's top_db floor uses the
maximum over the whole *batch* (torchaudio's amplitude_to_DB on a (batch, mels, frames) tensor);
here it is each clip's own maximum, i.e. the reference run on each clip alone.

Layers, in `forward_layers` order, each (batch, tokens, embed_dim), one frame per token:
- `patch`: the patch embedding plus positions, the blocks' input (hidden_states[0]);
- `block1`..`block<depth>`: each block's output (hidden_states[1..depth]);
- `norm`: the final LayerNorm of the last block: the reference's output.

Frame grid: token j of an input is centred on sample 640 j + 240 (its four mel frames' centres
span 640 j .. 640 j + 480), so frame_hop 640, frame_field 480, frame_offset 240: the core's
frame-mode chunk of (n - 1) * 640 + 480 samples has exactly n tokens, and frame j of a clip is
token j of a forward on the clip. min_window is 480 samples (four mel frames: one token).
"""

from __future__ import annotations

from typing import Any, Mapping

from embedzoo.plugin import CardError, Geometry, LayerSpec

SAMPLE_RATE = 16000
N_FFT = 512
MEL_HOP = 160  # 10 ms
N_MELS = 64
F_MIN, F_MAX = 0.0, 8000.0
TOP_DB = 120.0
PATCH_FRAMES = 4  # mel frames per token (patch 64 x 4, stride 4)
TOKEN_HOP = PATCH_FRAMES * MEL_HOP  # 640 samples, 40 ms
FRAME_FIELD = (PATCH_FRAMES - 1) * MEL_HOP  # 480: from the first to the last of a token's mel-frame centres
FRAME_OFFSET = FRAME_FIELD // 2  # 240: token j of an input is centred on sample 640 j + 240

# the `dasheng` package's constructor defaults (AudioTransformerMAE_Encoder) and dasheng_base's sizes
DEFAULT_CONFIG: dict[str, Any] = {
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "target_length": 1008,  # mel frames per reference chunk (10.08 s), and the time table's length x 4
    "chunks": 6,  # reference chunks per forward (max_window = 6 x 10.08 s)
}
_INTS = ("embed_dim", "depth", "num_heads", "target_length", "chunks")


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A card's config over DEFAULT_CONFIG, typed and checked; an unknown key is a CardError."""
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise CardError(f"unknown Dasheng config keys {unknown}", hint=f"Dasheng's config keys: {', '.join(DEFAULT_CONFIG)}")
    cfg = {**DEFAULT_CONFIG, **dict(config)}
    for key in _INTS:
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value <= 0:
            raise CardError(f"Dasheng config {dict(config)}: {key} must be a positive integer, got {value!r}")
        cfg[key] = int(value)
    if not isinstance(cfg["qkv_bias"], bool):
        raise CardError(f"Dasheng config {dict(config)}: qkv_bias must be true or false")
    try:
        cfg["mlp_ratio"] = float(cfg["mlp_ratio"])
    except (TypeError, ValueError):
        raise CardError(f"Dasheng config {dict(config)}: mlp_ratio must be a number") from None
    if cfg["embed_dim"] % cfg["num_heads"]:
        raise CardError(f"Dasheng config {dict(config)}: embed_dim {cfg['embed_dim']} is not a multiple of num_heads {cfg['num_heads']}")
    if cfg["target_length"] % PATCH_FRAMES:
        raise CardError(f"Dasheng config {dict(config)}: target_length must be a multiple of {PATCH_FRAMES} mel frames")
    return cfg


def chunk_tokens(cfg: Mapping[str, Any]) -> int:
    """Tokens per reference chunk (the time table's length): 252 for target_length 1008."""
    return cfg["target_length"] // PATCH_FRAMES


def tokens(samples: int) -> int:
    """Tokens of an input of `samples` samples: (1 + samples // 160) // 4."""
    return (1 + samples // MEL_HOP) // PATCH_FRAMES


def geometry(config: Mapping[str, Any]) -> Geometry:
    """Layers and windows of the Dasheng `config` describes."""
    cfg = settings(config)
    dim = cfg["embed_dim"]
    blocks = tuple(LayerSpec(f"block{i + 1}", dim, frame_offset=FRAME_OFFSET) for i in range(cfg["depth"]))
    max_window = cfg["chunks"] * cfg["target_length"] * MEL_HOP  # 6 x 161280 samples: 6 x 252 tokens
    return Geometry(
        layers=(LayerSpec("patch", dim, frame_offset=FRAME_OFFSET), *blocks, LayerSpec("norm", dim, frame_offset=FRAME_OFFSET)),
        frame_hop=TOKEN_HOP,
        frame_field=FRAME_FIELD,
        min_window=FRAME_FIELD,  # 4 mel frames: one token (and more than the 256 samples reflect padding needs)
        max_window=max_window,
        sample_rate=SAMPLE_RATE,
        hidden_states=("patch", *(spec.name for spec in blocks)),
        frame_chunk=max_window,  # attention spans a reference chunk: frame mode always forwards whole reference chunks
    )
