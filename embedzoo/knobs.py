"""The knobs of the HEAR study, for every model: time resolution, embedding level, receptive field.

`Knobs` is torch-free, so the CLI can check a user's choices against the card before loading any
model. Values come from, in order: the card's `defaults`, a named preset of the card, the user.

- time resolution: `hop_ms` (timestamp hop), `scene_hop_ms` (hop of scene windows on long clips);
- embedding level: `layers` (one or more, concatenated) and `readout` ('mean', 'max', 'center',
  'first', 'last', 'flat' (every frame of the window, flattened channel-major; scenes are then the
  mean of the timestamp windows' vectors), or a layer's named
  token such as 'cls'; '+'-joined to concatenate); `freq_pool` ('flat', 'mean', 'max',
  'mean+max') pools CNN feature maps over frequency first;
- `levels`: presets whose timestamp embeddings are appended to these (same hop and timestamps;
  scene embeddings stay this configuration's) -- the 2-level recipes of the HEAR PaSST study;
- receptive field: `window_ms` (timestamp window), `scene_window_ms` (longest scene forward);
- `mode`: 'window' (one forward per timestamp window, the HEAR recipe) or 'frame' (one forward per
  chunk, the model's own frames read at the hop: cheap);
- `pad_mode`: how clips are padded at their ends ('constant' zeros or 'reflect');
- `batch_size` (windows per forward; default: as many as fill `batch_seconds` of audio), `dtype`;
- `input_rate`: the rate callers' audio arrives at when none is given (HEAR passes none); it is
  resampled to the model's rate. Default: the model's own rate.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from embedzoo.card import LayerSpec, ModelCard
from embedzoo.errors import ConfigError

MODES = ("window", "frame")
PAD_MODES = ("constant", "reflect")
DTYPES = ("float32", "bfloat16", "float16")
FRAME_READOUTS = ("mean", "max", "center", "first", "last")
FREQ_POOLS = ("flat", "mean", "max", "mean+max")
# a level inherits the main configuration but for the knobs that shape its windows and vectors
LEVEL_KNOBS = ("layers", "readout", "freq_pool", "window_ms", "pad_mode")


@dataclass(frozen=True)
class Knobs:
    """Resolved extraction settings for one model (validated against its card)."""

    layers: tuple[str, ...]
    readout: str = "mean"
    mode: str = "window"
    hop_ms: float = 50.0
    window_ms: float | None = None
    scene_window_ms: float | None = None
    scene_hop_ms: float | None = None
    pad_mode: str = "constant"
    batch_size: int | None = None
    batch_seconds: float = 32.0
    dtype: str = "float32"
    preset: str | None = None
    input_rate: int | None = None
    freq_pool: str = "flat"
    levels: tuple[str, ...] = ()

    @property
    def readout_parts(self) -> tuple[str, ...]:
        return tuple(self.readout.split("+"))

    @property
    def freq_pool_parts(self) -> tuple[str, ...]:
        return tuple(self.freq_pool.split("+"))


KNOB_NAMES = tuple(f.name for f in dataclasses.fields(Knobs))


def _coerce(name: str, value: Any) -> Any:
    """Accept strings from the CLI / HEAR model strings as well as Python values."""
    if value is None:
        return None
    if name in ("layers", "levels"):
        if isinstance(value, str):
            value = [part for part in value.replace(" ", "").split(",") if part]
        return tuple(str(v) for v in value)
    if name in ("hop_ms", "window_ms", "scene_window_ms", "scene_hop_ms", "batch_seconds"):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"knob {name} must be a number, not {value!r}") from None
    if name in ("batch_size", "input_rate"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"knob {name} must be an integer, not {value!r}") from None
    return str(value)


def resolve_knobs(card: ModelCard, overrides: Mapping[str, Any] | None = None) -> Knobs:
    """Card defaults, then the chosen preset, then the user's values; checked against the card."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(overrides) - set(KNOB_NAMES)
    if unknown:
        raise ConfigError(f"unknown knob(s) {sorted(unknown)}", hint=f"knobs are: {', '.join(KNOB_NAMES)}")
    values: dict[str, Any] = {"layers": (card.layers[-1].name,)}
    values.update({k: _coerce(k, v) for k, v in card.defaults.items() if k in KNOB_NAMES})
    preset = overrides.get("preset")
    if preset is not None:
        if preset not in card.presets:
            choices = ", ".join(card.presets) or "none"
            raise ConfigError(f"model {card.id} has no preset {preset!r}", hint=f"presets of {card.id}: {choices}")
        values.update({k: _coerce(k, v) for k, v in card.presets[preset].items()})
    values.update({k: _coerce(k, v) for k, v in overrides.items()})
    knobs = Knobs(**values)
    check_knobs(card, knobs)
    return knobs


def level_knobs(card: ModelCard, knobs: Knobs) -> list[Knobs]:
    """The main configuration followed by one per level: the level's preset applied to the knobs in
    LEVEL_KNOBS, everything else (hop, mode, batching, dtype) shared with the main one."""
    out = [knobs]
    for name in knobs.levels:
        preset = card.presets[name]
        values = {k: _coerce(k, v) for k, v in preset.items() if k in LEVEL_KNOBS}
        level = dataclasses.replace(knobs, levels=(), preset=name, **values)
        check_knobs(card, level)
        out.append(level)
    return out


def check_knobs(card: ModelCard, knobs: Knobs) -> None:
    """Raise ConfigError, naming the knob and the allowed values, for anything the model can't do."""
    if not knobs.layers:
        raise ConfigError(f"model {card.id}: choose at least one layer")
    specs = [card.layer(name) for name in knobs.layers]
    if knobs.mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, not {knobs.mode!r}")
    if knobs.pad_mode not in PAD_MODES:
        raise ConfigError(f"pad_mode must be one of {PAD_MODES}, not {knobs.pad_mode!r}")
    if knobs.dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {DTYPES}, not {knobs.dtype!r}")
    if knobs.freq_pool not in FREQ_POOLS:
        raise ConfigError(f"freq_pool must be one of {FREQ_POOLS}, not {knobs.freq_pool!r}")
    if knobs.mode == "frame":
        pooled = [spec.name for spec in specs if spec.pooled]
        if pooled:
            raise ConfigError(
                f"layer(s) {pooled} of {card.id} are one vector per window, with no frames for frame mode",
                hint="use mode 'window' for them, or choose layers with a frame sequence",
            )
    for name in knobs.levels:
        if name not in card.presets:
            raise ConfigError(f"level {name!r} is not a preset of {card.id}", hint=f"presets: {', '.join(card.presets) or 'none'}")
        if card.presets[name].get("levels"):
            raise ConfigError(f"preset {name!r} of {card.id} has levels of its own and cannot be a level")
        if knobs.mode == "frame":
            raise ConfigError("levels concatenate timestamp windows of several sizes; they need mode 'window'")
        stray = sorted(set(card.presets[name]) - set(LEVEL_KNOBS) - {"hop_ms", "mode"})
        if stray:
            raise ConfigError(f"preset {name!r} sets {stray}, which a level shares with the main configuration", hint=f"a level sets only {', '.join(LEVEL_KNOBS)}")
    for part in knobs.readout_parts:
        if part in FRAME_READOUTS:
            continue
        if knobs.mode == "frame":
            raise ConfigError(
                f"readout {part!r} is a token of a whole window; frame mode reads the frame sequence",
                hint=f"use mode 'window' for {part!r}, or a frame readout ({', '.join(FRAME_READOUTS)})",
            )
        if part == "flat":
            continue
        missing = [spec.name for spec in specs if part not in spec.tokens]
        if missing:
            tokens = sorted({t for spec in specs for t in spec.tokens})
            raise ConfigError(
                f"readout {part!r} does not exist for layer(s) {missing} of {card.id}",
                hint=f"readouts: {', '.join(FRAME_READOUTS + tuple(tokens))}, joined with '+'",
            )
    max_ms = card.samples_to_ms(card.max_window)
    for name in ("hop_ms", "window_ms", "scene_window_ms", "scene_hop_ms"):
        value = getattr(knobs, name)
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise ConfigError(f"{name} must be a positive number of milliseconds, not {value}")
    if card.ms_to_samples(knobs.hop_ms) < 1:
        raise ConfigError(f"hop_ms {knobs.hop_ms} is shorter than one sample at {card.sample_rate} Hz")
    for name in ("window_ms", "scene_window_ms"):
        value = getattr(knobs, name)
        if value is not None and card.ms_to_samples(value) > card.max_window:
            raise ConfigError(
                f"{name}={value:g} exceeds the longest input {card.id} takes ({max_ms:g} ms)",
                hint=f"choose {name} <= {max_ms:g}",
            )
    if knobs.batch_size is not None and knobs.batch_size < 1:
        raise ConfigError("batch_size must be at least 1")
    if knobs.input_rate is not None and knobs.input_rate <= 0:
        raise ConfigError("input_rate must be a positive number of Hz")
    if knobs.batch_seconds <= 0:
        raise ConfigError("batch_seconds must be positive")


def frame_width(spec: LayerSpec, knobs: Knobs) -> int:
    """Width of one frame of a layer after `freq_pool`."""
    if spec.bands == 1 or knobs.freq_pool == "flat":
        return spec.width
    return spec.channels * len(knobs.freq_pool_parts)


def embedding_width(card: ModelCard, knobs: Knobs) -> int | None:
    """Width of one embedding vector: layers concatenated, each read out once per readout part.
    None when it depends on the window (the 'flat' readout); the extractor then measures it."""
    if knobs.mode == "frame":
        return sum(frame_width(card.layer(name), knobs) for name in knobs.layers)
    if "flat" in knobs.readout_parts:
        return None
    return sum(frame_width(card.layer(name), knobs) for name in knobs.layers) * len(knobs.readout_parts)
