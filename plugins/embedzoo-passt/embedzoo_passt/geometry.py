"""PaSST's architecture facts, torch-free: the one place they are stated (the catalog completes
every PaSST card from `geometry(config)`, and model.py builds the network from the same config).

A PaSST is a distilled ViT on a 128-bin log-mel spectrogram with one frame every `stft_hop`
samples (centred, so an input of n samples has 1 + (n - 1) // stft_hop frames after the
pre-emphasis): 16 x 16 patches every `stride` bins and frames, so patch column j starts at mel
frame stride * j and advances by stride * stft_hop samples (the layers' frame hop); a column needs
16 mel frames, i.e. (16 - 1) * stft_hop + 1 samples (the frame field and the shortest input).
With hop 320, column j of a window is centred on sample 3200 j + 2400, the middle of its field (no
frame offset); its STFT windows reach n_fft / 2 = 512 samples further on each side, which at a
chunk's edges is the STFT's reflect padding, as at a window's: frame mode reads every column a
chunk gives (no frame skip).
Positional tables: n_mels // stride frequency rows and input_tdim // stride time columns (the
reference's grid), cut to the input's columns. Layers, in `forward_layers` order:
- `mel` (n_mels): the front end, one frame per STFT frame; window mode only, since centred STFT
  frames cannot tile frame-mode chunks; its own min_window lets the mel6 recipe read 6-frame windows;
- `patch` (embed_dim): the patch embedding before positional embeddings, one frame per column;
- `block1`..`block<depth>`, `norm` (embed_dim): tokens cls, dist, then one frame per column (the
  mean over its frequency patches: `embedzoo.layers.patch_columns`);
- `features` (embed_dim), `logits` (num_classes): one vector per forward (pooled).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from embedzoo.plugin import CardError, Geometry, LayerSpec

SAMPLE_RATE = 32000
TOKENS = ("cls", "dist")
# The mel layer's shortest input: the hop-100 card's mel6 windows (6 x 100 samples), longer than the
# centred STFT's reflect padding (n_fft // 2 = 512 samples), which a shorter input could not pad.
MEL_MIN_WINDOW = 600
# config keys and their values for PaSST-S (hear21passt's passt_s_swa_p16_128_ap476)
DEFAULT_CONFIG: dict[str, int] = {
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
    "patch_size": 16,
    "stride": 10,
    "n_mels": 128,
    "stft_hop": 320,
    "input_tdim": 998,  # mel frames the time positional table was made for
    "num_classes": 527,
}


def settings(config: Mapping[str, Any]) -> dict[str, int]:
    """A card's config over DEFAULT_CONFIG; an unknown key is a CardError (a typo would be ignored)."""
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise CardError(f"unknown PaSST config keys {unknown}", hint=f"PaSST's config keys: {', '.join(DEFAULT_CONFIG)}")
    return {key: int(value) for key, value in {**DEFAULT_CONFIG, **dict(config)}.items()}


def positions(cfg: Mapping[str, int]) -> tuple[int, int]:
    """(frequency rows, time columns) of the positional tables: the reference's img_size // stride."""
    return cfg["n_mels"] // cfg["stride"], cfg["input_tdim"] // cfg["stride"]


def columns(samples: int, cfg: Mapping[str, int]) -> int:
    """Patch columns of an input of `samples` samples (0 when shorter than one patch)."""
    mel_frames = 1 + (samples - 1) // cfg["stft_hop"]
    return max(0, (mel_frames - cfg["patch_size"]) // cfg["stride"] + 1)


def geometry(config: Mapping[str, Any]) -> Geometry:
    """Layers and windows of the PaSST `config` describes."""
    cfg = settings(config)
    dim, hop = cfg["embed_dim"], cfg["stft_hop"]
    field = (cfg["patch_size"] - 1) * hop + 1
    # the longest input: the training clips, input_tdim STFT hops rounded up to whole seconds
    max_window = math.ceil(cfg["input_tdim"] * hop / SAMPLE_RATE) * SAMPLE_RATE
    if columns(max_window, cfg) > positions(cfg)[1]:
        raise CardError(f"PaSST config {dict(config)}: a {max_window}-sample input has more patch columns than the {positions(cfg)[1]} time positions")
    blocks = [LayerSpec(f"block{i + 1}", dim, tokens=TOKENS) for i in range(cfg["depth"])]
    layers = (
        LayerSpec("mel", cfg["n_mels"], frame_mode=False, min_window=MEL_MIN_WINDOW),
        LayerSpec("patch", dim),
        *blocks,
        LayerSpec("norm", dim, tokens=TOKENS),
        LayerSpec("features", dim, pooled=True),
        LayerSpec("logits", cfg["num_classes"], pooled=True),
    )
    return Geometry(
        layers=layers,
        frame_hop=cfg["stride"] * hop,
        frame_field=field,
        min_window=field,
        max_window=max_window,
        sample_rate=SAMPLE_RATE,
        hidden_states=("patch", *(spec.name for spec in blocks)),
        frame_chunk=max_window,  # attention: a column depends on its whole chunk, so frame mode always cuts max_window
    )
