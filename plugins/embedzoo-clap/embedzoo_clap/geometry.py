"""HTS-AT (the CLAP audio tower)'s architecture facts, torch-free: the one place they are stated
(the catalog completes every CLAP card from `geometry(config)`, and model.py builds the network and
its frontend from the same config).

A card's `config` is flat: the keys of transformers' `ClapAudioConfig` (the repo's config.json
`audio_config`) and of `ClapFeatureExtractor` (its preprocessor_config.json), by their own names,
so `check_repo_files` compares them one to one.

What one forward sees: a window of at most `max_length_s` seconds (10 s, 480000 samples at 48 kHz);
a shorter one is first brought to exactly 10 s the way the feature extractor does it (`padding`:
repeatpad = repeat the window whole, then zeros; repeat = repeat and cut; pad = zeros). Its log-mel
has 1 + 480000 // 480 = 1001 frames x 64 bands, which the model stretches (bicubic) to 1024 frames
and folds into a 256 x 256 "image": 4 consecutive chunks of 256 frames stacked along the frequency
axis (freq_ratio = spec_size // num_mel_bins = 4). Swin patches of 4 x 4 make a 64 x 64 token grid;
each stage halves it (patch merging between stages). So a stage's token map of H x W tokens is, in
time order, freq_ratio * W columns (chunk by chunk) of H / freq_ratio frequency rows -- the same
regrouping transformers applies to the last hidden state.

Layers, in `forward_layers` order (all maps are (batch, channels, bands, frames), time-ordered):
- `patch`: the patch embedding (= transformers' hidden_states[0]), 96 channels x 16 bands x 256;
- `stage1`..`stage<L>`: each Swin stage's output before its patch merging (= hidden_states[1..L]
  with output_hidden_states_before_downsampling=True): 96 x 16 x 256, 192 x 8 x 128, 384 x 4 x 64,
  768 x 2 x 32 for HTSAT-tiny;
- `norm`: the final LayerNorm (transformers' last_hidden_state, already in this layout), 768 x 2 x 32;
- `features`: its mean over every token (pooler_output), one vector per window;
- `projection`: the audio embedding in the joint text-audio space, L2-normalised as
  `ClapModel.get_audio_features` returns it (512), one vector per window.
No layer runs in frame mode (`frame_mode=False`): the frames are columns of a 10-s image stretched
from 1001 to 1024 mel frames, one every 480000 / 1023 * 32 = 15014.7 samples at the last stage --
no whole-sample grid -- and every one of them depends on the whole 10-s window (the padding of a
shorter window included). Timestamps are window mode: one forward per timestamp window.
"""

from __future__ import annotations

from typing import Any, Mapping

from embedzoo.plugin import CardError, Geometry, LayerSpec

# transformers.ClapAudioConfig's keys that shape the audio tower, at its defaults (HTSAT-tiny, unfused)
AUDIO_DEFAULTS: dict[str, Any] = {
    "window_size": 8,
    "num_mel_bins": 64,
    "spec_size": 256,
    "patch_size": 4,
    "patch_stride": [4, 4],
    "hidden_size": 768,
    "projection_dim": 512,
    "depths": [2, 2, 6, 2],
    "num_attention_heads": [4, 8, 16, 32],
    "enable_fusion": False,
    "fusion_type": None,
    "patch_embed_input_channels": 1,
    "flatten_patch_embeds": True,
    "patch_embeds_hidden_size": 96,
    "enable_patch_layer_norm": True,
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "aff_block_r": 4,
    "hidden_act": "gelu",
    "projection_hidden_act": "relu",
    "layer_norm_eps": 1e-5,
}
# transformers.ClapFeatureExtractor's keys, at the values of the LAION repos' preprocessor_config.json
# (the class's own defaults differ: frequency_min 0, truncation "fusion")
FRONTEND_DEFAULTS: dict[str, Any] = {
    "sampling_rate": 48000,
    "feature_size": 64,
    "fft_window_size": 1024,
    "hop_length": 480,
    "max_length_s": 10,
    "frequency_min": 50,
    "frequency_max": 14000,
    "top_db": None,
    "truncation": "rand_trunc",  # decides the mel filters: rand_trunc -> slaney, fusion -> HTK (see model.py)
    "padding": "repeatpad",  # how the reference fills a clip shorter than 10 s: the default `padding`
}
# ClapFeatureExtractor's own defaults, for a preprocessor_config.json that omits a key
FEATURE_EXTRACTOR_CLASS_DEFAULTS: dict[str, Any] = {**FRONTEND_DEFAULTS, "frequency_min": 0, "truncation": "fusion"}
DEFAULT_CONFIG: dict[str, Any] = {**AUDIO_DEFAULTS, **FRONTEND_DEFAULTS}

FILLS = ("repeatpad", "repeat", "pad")  # ClapFeatureExtractor's paddings of a clip shorter than 10 s
TRUNCATIONS = ("rand_trunc", "fusion")
FUSION = "+fusion"  # suffix of the paddings that take a fused model's fusion branch (is_longer=True)


def _pair(value: Any, key: str) -> tuple[int, int]:
    """An int or a 2-list (ClapAudioConfig accepts both) as a pair."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise CardError(f"CLAP config {key} must be an int or two ints, not {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A card's config over DEFAULT_CONFIG, checked; an unknown key is a CardError (a typo would be ignored)."""
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise CardError(f"unknown CLAP config keys {unknown}", hint=f"CLAP's config keys: {', '.join(DEFAULT_CONFIG)}")
    cfg = {**DEFAULT_CONFIG, **dict(config)}
    cfg["depths"] = [int(d) for d in cfg["depths"]]
    cfg["num_attention_heads"] = [int(h) for h in cfg["num_attention_heads"]]
    cfg["patch_stride"] = list(_pair(cfg["patch_stride"], "patch_stride"))
    if cfg["truncation"] not in TRUNCATIONS:
        raise CardError(f"CLAP config truncation must be one of {TRUNCATIONS}, not {cfg['truncation']!r}",
                        hint="it names the mel filters: rand_trunc = slaney (unfused repos), fusion = HTK (fused repos)")  # fmt: skip
    if cfg["padding"] not in FILLS:
        raise CardError(f"CLAP config padding must be one of {FILLS}, not {cfg['padding']!r}")
    if cfg["fusion_type"] == "channel_map":
        raise CardError("CLAP fusion_type channel_map is not supported (transformers' patch embedding cannot run it)",
                        hint="the LAION fused checkpoints use aff_2d")  # fmt: skip
    if int(cfg["feature_size"]) != int(cfg["num_mel_bins"]):
        raise CardError(f"CLAP config: feature_size {cfg['feature_size']} (mel bands made) != num_mel_bins {cfg['num_mel_bins']} (bands the model reads)")
    if len(cfg["depths"]) != len(cfg["num_attention_heads"]) or not cfg["depths"]:
        raise CardError(f"CLAP config: depths {cfg['depths']} and num_attention_heads {cfg['num_attention_heads']} need one entry per stage")
    stages = len(cfg["depths"])
    width = int(cfg["patch_embeds_hidden_size"]) * 2 ** (stages - 1)
    if int(cfg["hidden_size"]) != width:
        raise CardError(f"CLAP config: hidden_size {cfg['hidden_size']} must be the last stage's width, "
                        f"patch_embeds_hidden_size * 2**(stages - 1) = {width}")  # fmt: skip
    if _pair(cfg["patch_size"], "patch_size") != tuple(cfg["patch_stride"]):
        raise CardError(f"CLAP config: patch_size {cfg['patch_size']} must equal patch_stride {cfg['patch_stride']} (non-overlapping patches)")
    return cfg


def max_samples(cfg: Mapping[str, Any]) -> int:
    """The samples of one forward: max_length_s seconds (the feature extractor's nb_max_samples)."""
    return int(cfg["max_length_s"]) * int(cfg["sampling_rate"])


def mel_frames(cfg: Mapping[str, Any]) -> int:
    """Mel frames of a full window (centred STFT): 1001 for 10 s at hop 480."""
    return 1 + max_samples(cfg) // int(cfg["hop_length"])


def freq_ratio(cfg: Mapping[str, Any]) -> int:
    """How many time chunks the model stacks along the frequency axis of its square image."""
    return int(cfg["spec_size"]) // int(cfg["num_mel_bins"])


def stage_grids(cfg: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(height, width) of the token map of each stage (the patch embedding's is the first stage's)."""
    spec, (stride_h, stride_w) = int(cfg["spec_size"]), cfg["patch_stride"]
    return [(spec // stride_h // 2**i, spec // stride_w // 2**i) for i in range(len(cfg["depths"]))]


def stage_maps(cfg: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    """(channels, bands, frames) of each stage's time-ordered map."""
    ratio = freq_ratio(cfg)
    out = []
    for i, (height, width) in enumerate(stage_grids(cfg)):
        if height % ratio or height < ratio:
            raise CardError(f"CLAP config: stage {i + 1}'s {height} token rows do not split into {ratio} time chunks")
        out.append((int(cfg["patch_embeds_hidden_size"]) * 2**i, height // ratio, ratio * width))
    return out


def paddings(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The `padding` choices: the card's own first (the default), then the feature extractor's
    others; a fused model adds each with "+fusion" (is_longer=True: its fusion branch on 4 copies
    of the window's mel, what the reference computes for a batch of one clip)."""
    fills = (cfg["padding"], *(p for p in FILLS if p != cfg["padding"]))
    return fills + tuple(p + FUSION for p in fills) if cfg["enable_fusion"] else fills


def geometry(config: Mapping[str, Any]) -> Geometry:
    """Layers and windows of the CLAP audio tower `config` describes."""
    cfg = settings(config)
    window = max_samples(cfg)
    ratio = freq_ratio(cfg)
    spec_width, spec_height = int(cfg["spec_size"]) * ratio, int(cfg["spec_size"]) // ratio
    if ratio < 1 or mel_frames(cfg) > spec_width or int(cfg["num_mel_bins"]) > spec_height:
        raise CardError(f"CLAP config: {mel_frames(cfg)} mel frames x {cfg['num_mel_bins']} bands do not fit the "
                        f"{spec_width} x {spec_height} input of spec_size {cfg['spec_size']}")  # fmt: skip
    maps = stage_maps(cfg)

    def grid_layer(name: str, channels: int, bands: int, frames: int) -> LayerSpec:
        # nominal grid (a frame every window / frames samples), never used for frame mode; each sees the window
        return LayerSpec(name, channels * bands, bands=bands, frame_hop=window // frames, frame_field=window, frame_mode=False)

    stages = [grid_layer(f"stage{i + 1}", *shape) for i, shape in enumerate(maps)]
    hidden = int(cfg["hidden_size"])
    layers = (
        grid_layer("patch", *maps[0]),
        *stages,
        grid_layer("norm", hidden, maps[-1][1], maps[-1][2]),
        LayerSpec("features", hidden, pooled=True, frame_field=window, frame_mode=False),
        LayerSpec("projection", int(cfg["projection_dim"]), pooled=True, frame_field=window, frame_mode=False),
    )
    return Geometry(
        layers=layers,
        frame_hop=window // maps[-1][2],
        frame_field=window,
        min_window=1,  # any window is brought to 10 s by `padding`, as the feature extractor does
        max_window=window,
        sample_rate=int(cfg["sampling_rate"]),
        hidden_states=("patch", *(spec.name for spec in stages)),
        paddings=paddings(cfg),
        padded=paddings(cfg),  # every one fills the window to 10 s: batches count 10 s per window
    )
