"""Whisper's encoder facts, torch-free: the one place they are stated (the catalog completes every
Whisper card from `geometry(config)`, and model.py builds transformers' WhisperEncoder from the
same config).

The encoder reads a log-mel spectrogram of 30 s (`WhisperFeatureExtractor`: every input zero-padded
to 480000 samples, n_fft 400, hop 160, centred, the last frame dropped: 3000 mel frames; mel frame k
is centred on sample 160 k and spans [160 k - 200, 160 k + 200)), then conv1 (kernel 3, stride 1,
padding 1) and conv2 (kernel 3, stride 2, padding 1): token j reads mel frames 2j - 2 .. 2j + 2, so
it is centred on sample 320 j (hop 320 = 20 ms) and its receptive field is the 1040 samples
[320 j - 520, 320 j + 520). The frontend's floor (max - 8) and the self-attention reach the whole
30 s input, so no token is local; the field is the convolutions'.

Frame grid, as the core reads it: the core centres frame i of a frame-mode chunk on sample
frame_field // 2 + 320 i, which must be a token centre (a multiple of 320). The smallest such field
holding the true 1040 is 1280 = 2 x 640: frame_field 1280 and frame_skip 2 (tokens 0 and 1 of a
chunk reach its start, token 2's field [120, 1160) is the first inside it), no frame offset (token
j of a window is centred on its sample 320 j, as frame j of a clip is).

Paddings (`padding` knob; the reference pads every input to 30 s, since WhisperEncoder.forward
refuses anything but 3000 mel frames):
- `trim` (default): pad to 30 s as the reference does, run it, and keep the first ceil(samples / 320)
  tokens -- those centred inside the input (token j is centred on sample 320 j < samples);
- `reference`: all 1500 tokens, the untrimmed reference output.

Layers (transformers' `output_hidden_states=True`): `embed` = hidden_states[0] (GELU(conv2(GELU(
conv1(mel)))) + the positional table), `block1`..`blockN` = hidden_states[1..N] exactly as
transformers returns them -- so `blockN` is after the encoder's final LayerNorm (transformers ties
hidden_states[-1] to last_hidden_state) -- and `norm` = last_hidden_state (the same tensor as
`blockN`, named alike for every depth so the family's defaults and presets can read it).
`hidden_states` (what layers=all reads) is HF's tuple: embed, block1..blockN.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from embedzoo.plugin import CardError, Geometry, LayerSpec

SAMPLE_RATE = 16000
N_FFT = 400
MEL_HOP = 160
TOKEN_HOP = 2 * MEL_HOP  # conv2's stride 2 over mel frames: 320 samples, 20 ms
# token j's receptive field: mel frames 2j-2 .. 2j+2 (conv1 k3 then conv2 k3 s2, both padding 1),
# each n_fft samples centred on 160 k: [320 j - 520, 320 j + 520)
RECEPTIVE_FIELD = 4 * MEL_HOP + N_FFT  # 1040
# the field the core's frame grid can centre on a token: the smallest multiple of 2 x 320 >= 1040
FRAME_FIELD = 2 * TOKEN_HOP * math.ceil(RECEPTIVE_FIELD / (2 * TOKEN_HOP))  # 1280
FRAME_SKIP = FRAME_FIELD // 2 // TOKEN_HOP  # 2: tokens of a chunk before the first whose field is inside it
PADDINGS = ("trim", "reference")

# the config keys a card states (transformers' WhisperConfig names), and the defaults of the optional ones
REQUIRED = ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins")
OPTIONAL: dict[str, int] = {"max_source_positions": 1500}


def settings(config: Mapping[str, Any]) -> dict[str, int]:
    """A card's config, complete and checked: every key of REQUIRED (no silent default size), an
    unknown key is a CardError (a typo would otherwise be ignored)."""
    keys = (*REQUIRED, *OPTIONAL)
    unknown = sorted(set(config) - set(keys))
    if unknown:
        raise CardError(f"unknown Whisper config keys {unknown}", hint=f"Whisper's config keys: {', '.join(keys)}")
    missing = [key for key in REQUIRED if key not in config]
    if missing:
        raise CardError(f"Whisper config lacks {missing}", hint="state them as in the checkpoint's config.json (or use an `arch:` of the family)")
    cfg = {key: int(value) for key, value in {**OPTIONAL, **dict(config)}.items()}
    if cfg["d_model"] % cfg["encoder_attention_heads"]:
        raise CardError(f"d_model {cfg['d_model']} is not a multiple of encoder_attention_heads {cfg['encoder_attention_heads']}")
    if min(cfg.values()) <= 0:
        raise CardError(f"Whisper config values must be positive, got {cfg}")
    return cfg


def max_samples(cfg: Mapping[str, int]) -> int:
    """The reference's fixed input: max_source_positions tokens of 320 samples (480000 = 30 s)."""
    return cfg["max_source_positions"] * TOKEN_HOP


def tokens(samples: int) -> int:
    """Tokens `trim` keeps for an input of `samples` samples: those centred inside it, ceil(samples / 320)."""
    return max(1, -(-samples // TOKEN_HOP))


def layer_names(cfg: Mapping[str, int]) -> tuple[str, ...]:
    """forward_layers' order: embed, block1..blockN, norm."""
    return ("embed", *(f"block{i + 1}" for i in range(cfg["encoder_layers"])), "norm")


def geometry(config: Mapping[str, Any]) -> Geometry:
    """Layers, frame grid, windows and paddings of the Whisper encoder `config` describes."""
    cfg = settings(config)
    names = layer_names(cfg)
    layers = tuple(LayerSpec(name, cfg["d_model"], frame_skip=FRAME_SKIP) for name in names)
    return Geometry(
        layers=layers,
        frame_hop=TOKEN_HOP,
        frame_field=FRAME_FIELD,
        min_window=1,  # any input: the model pads it to 30 s itself (a centred pad would shift it)
        max_window=max_samples(cfg),
        sample_rate=SAMPLE_RATE,
        hidden_states=names[:-1],
        paddings=PADDINGS,
        padded=PADDINGS,  # both run every forward on 30 s: batches count 30 s per window
        frame_chunk=max_samples(cfg),  # attention: a frame depends on its chunk, so chunks are always 30 s
    )
