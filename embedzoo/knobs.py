"""The knobs of the HEAR study, for every model: time resolution, embedding level, receptive field.

`Knobs` is torch-free, so the CLI can check a user's choices against the card before loading any
model. Values come from, in order: the card's `defaults`, a named preset of the card, the user.
What else is known about a knob -- its command-line help, type and choices, whether it changes
results (batching does not), whether it shapes timestamp embeddings only, whether a level or a
sweep sets it -- is the `KnobInfo` metadata of its field: a new knob is one field.

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
- `batch_size` (windows per forward; default: as many as fill `batch_seconds` of audio on the CPU,
  `gpu_batch_seconds` on a GPU: the two devices' best batches differ by an order of magnitude),
  `dtype`, `compile` (torch.compile, opt-in; docs/performance.md);
- `input_rate`: the rate of the audio HEAR's `get_*_embeddings` and `model(audio)` take (they pass
  none; every other call says its rate); it is resampled to the model's rate. Default: the model's own rate.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from embedzoo.card import LayerSpec, ModelCard
from embedzoo.errors import ConfigError

MODES = ("window", "frame")
PAD_MODES = ("constant", "reflect")
DTYPES = ("float32", "bfloat16", "float16")
FRAME_READOUTS = ("mean", "max", "center", "first", "last")
FREQ_POOLS = ("flat", "mean", "max", "mean+max")


@dataclass(frozen=True)
class KnobInfo:
    """What the commands, output manifests and embedding caches need to know about one knob. It is
    the metadata of the knob's `Knobs` field, so that a new knob is one field."""

    help: str  # the command-line help, and the knob's one-line documentation
    kind: type = str  # how a string value is read: str, int, float, bool, or tuple (comma-separated names)
    choices: tuple[str, ...] = ()  # the allowed values, when they are a fixed set
    results: bool = True  # False: it changes speed or memory only (batching), never an embedding
    timestamp_only: bool = False  # it shapes timestamp embeddings only, never a scene embedding
    per_level: bool = False  # a level takes it from its own preset (see `level_knobs`)
    option: bool = True  # a command-line option (`input_rate` only matters for in-memory callers)
    sweep_label: str | None = None  # `embedzoo sweep` may vary it; the label of its plots' x axis


def knob(default: Any = dataclasses.MISSING, **info: Any) -> Any:
    """A `Knobs` field with its `KnobInfo` (keyword arguments) as metadata."""
    return dataclasses.field(default=default, metadata={"knob": KnobInfo(**info)})


@dataclass(frozen=True, kw_only=True)
class Knobs:
    """Resolved extraction settings for one model (validated against its card)."""

    preset: str | None = knob(None, help="A named preset of the model's knobs (see `embedzoo info`).")
    layers: tuple[str, ...] = knob(
        help="Layer(s) to read, comma-separated; concatenated in that order.", kind=tuple, per_level=True, sweep_label="layer(s)"
    )
    readout: str = knob("mean", help="mean | max | center | first | last | flat | a token (cls, dist...); join with '+'.", per_level=True)
    freq_pool: str = knob(
        "flat", help="Pool CNN feature maps over frequency before the readout (flat keeps channels x bands).", choices=FREQ_POOLS, per_level=True
    )
    levels: tuple[str, ...] = knob(
        (), help="Presets whose timestamp embeddings are appended (e.g. the 2-level recipes), comma-separated.", kind=tuple, timestamp_only=True
    )
    hop_ms: float = knob(
        50.0, help="Time resolution: hop between timestamp embeddings, ms.", kind=float, timestamp_only=True, sweep_label="hop (ms): time resolution"
    )
    window_ms: float | None = knob(
        None, help="Receptive field: window each timestamp embedding sees, ms.", kind=float, timestamp_only=True, per_level=True,
        sweep_label="window (ms): receptive field",
    )  # fmt: skip
    scene_window_ms: float | None = knob(None, help="Longest scene forward, ms (default: the model's maximum).", kind=float)
    scene_hop_ms: float | None = knob(None, help="Hop of scene windows over clips longer than the scene window, ms.", kind=float)
    mode: str = knob(
        "window", help="window: one forward per timestamp window (HEAR recipe); frame: the model's own frames from one forward per chunk (cheap).",
        choices=MODES, sweep_label="extraction mode",
    )  # fmt: skip
    pad_mode: str = knob("constant", help="How clips are padded at their ends.", choices=PAD_MODES, per_level=True)
    padding: str | None = knob(
        None, help="How the model treats a window shorter than its full input, where it offers a choice (`embedzoo info` lists them;"
        " e.g. AST: reference | crop, Whisper: trim | reference); the first is the default.", per_level=True,
    )  # fmt: skip
    stack: bool = knob(
        False, help="Return the layers stacked, (layers, T, D) and (layers, D), instead of concatenated (all layers of one width).",
        kind=bool,
    )  # fmt: skip
    batch_size: int | None = knob(None, help="Windows per forward (default: fill the model's batch_seconds).", kind=int, results=False)
    batch_seconds: float = knob(32.0, help="Seconds of audio per forward when no batch size is given (frame mode: the longest chunk).", kind=float, results=False)
    gpu_batch_seconds: float = knob(
        256.0, help="Seconds of audio per forward on a GPU (CUDA, MPS) when no batch size is given; batch_seconds is the CPU's.",
        kind=float, results=False,
    )  # fmt: skip
    dtype: str = knob("float32", help="Autocast dtype (float32 is exact; docs/performance.md: bfloat16's error per family).", choices=DTYPES)
    compile: bool = knob(
        False, help="torch.compile the model's forward: compiled before the first file, for the job's batch shapes; within 1e-5 of eager.",
        kind=bool, results=False,
    )  # fmt: skip
    input_rate: int | None = knob(None, help="The rate the HEAR API and model(audio) take audio at (they pass none), Hz.", kind=int, option=False)

    @property
    def readout_parts(self) -> tuple[str, ...]:
        return tuple(self.readout.split("+"))

    @property
    def freq_pool_parts(self) -> tuple[str, ...]:
        return tuple(self.freq_pool.split("+"))


def knob_fields(knobs: type = Knobs) -> dict[str, KnobInfo]:
    """Every knob of a `Knobs` class and its metadata, in field order."""
    return {f.name: f.metadata["knob"] for f in dataclasses.fields(knobs)}


KNOBS = knob_fields()
KNOB_NAMES = tuple(KNOBS)
# a level inherits the main configuration but for the knobs that shape its windows and vectors
LEVEL_KNOBS = tuple(name for name, info in KNOBS.items() if info.per_level)
SWEEP_KNOBS = tuple(name for name, info in KNOBS.items() if info.sweep_label)  # the axes of `embedzoo sweep`


def knob_record(knobs: Knobs, kind: str | None = None) -> dict[str, Any]:
    """The knobs an embedding depends on, as JSON values: what manifests, result files and cache
    keys record. Batching is left out (it changes speed, not results); the compute dtype is kept,
    since bfloat16 rounds the results. For `kind` 'scene', the timestamp-only knobs are left out too."""
    fields = knob_fields(type(knobs))
    return {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in dataclasses.asdict(knobs).items()
        if fields[name].results and not (kind == "scene" and fields[name].timestamp_only)
    }


def scene_knobs(card: ModelCard, knobs: Knobs) -> Knobs:
    """`knobs` with every timestamp-only knob at the card's default (and no levels): the same scene
    embeddings, under one setting whatever the hop and window, so a cache of them serves them all."""
    base = dataclasses.replace(resolve_knobs(card), levels=())
    return dataclasses.replace(knobs, **{name: getattr(base, name) for name, info in knob_fields(type(knobs)).items() if info.timestamp_only})


_NAME_SEPARATORS = re.compile(r"[\s,]+")


def split_names(value: str) -> list[str]:
    """A list of names as typed: separated by commas and/or white space ('a,b', 'a b', 'a, b' are
    the same two names), everywhere a list knob is read -- options, model specs, sweeps."""
    return [part for part in _NAME_SEPARATORS.split(value) if part]


def coerce_knob(name: str, value: Any) -> Any:
    """Accept strings from the CLI / model specs as well as Python values; a value that is not of
    the knob's kind is a ConfigError naming the knob."""
    if value is None:
        return None
    kind = KNOBS[name].kind
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"knob {name} must be true or false, not {value!r}", hint=f"e.g. {name}=true")
    if kind is tuple:
        if isinstance(value, str):
            return tuple(split_names(value))
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"knob {name} must be a list of names, not {value!r}", hint=f"e.g. {name}=a,b")
        return tuple(part for v in value for part in split_names(str(v)))
    if kind in (int, float):
        what = "a number" if kind is float else "a whole number"
        number = None
        if not isinstance(value, bool):
            try:
                number = float(value)
            except (TypeError, ValueError):
                pass
        if number is None or not math.isfinite(number) or (kind is int and not number.is_integer()):
            raise ConfigError(f"knob {name} must be {what}, not {value!r}", hint=f"e.g. {name}={'16000' if kind is int else '50'}")
        return int(number) if kind is int else number
    return str(value)


def resolve_knobs(card: ModelCard, overrides: Mapping[str, Any] | None = None) -> Knobs:
    """Card defaults, then the chosen preset, then the user's values; checked against the card."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(overrides) - set(KNOB_NAMES)
    if unknown:
        raise ConfigError(f"unknown knob(s) {sorted(unknown)}", hint=f"knobs are: {', '.join(KNOB_NAMES)}")
    values: dict[str, Any] = {"layers": (card.layers[-1].name,)}
    values.update({k: coerce_knob(k, v) for k, v in card.defaults.items() if k in KNOB_NAMES})
    preset = overrides.get("preset")
    if preset is not None:
        if preset not in card.presets:
            choices = ", ".join(card.presets) or "none"
            raise ConfigError(f"model {card.id} has no preset {preset!r}", hint=f"presets of {card.id}: {choices}")
        values.update({k: coerce_knob(k, v) for k, v in card.presets[preset].items()})
    values.update({k: coerce_knob(k, v) for k, v in overrides.items()})
    values["layers"] = expand_layers(card, values["layers"])
    if values.get("padding") is None and card.paddings:
        values["padding"] = card.paddings[0]
    knobs = Knobs(**values)
    check_knobs(card, knobs)
    return knobs


def expand_layers(card: ModelCard, layers: tuple[str, ...]) -> tuple[str, ...]:
    """`all` among the layers stands for the card's hidden states (`ModelCard.all_layers`)."""
    if "all" not in layers or any(spec.name == "all" for spec in card.layers):
        return tuple(layers)
    return tuple(part for name in layers for part in (card.all_layers if name == "all" else (name,)))


def level_knobs(card: ModelCard, knobs: Knobs) -> list[Knobs]:
    """The main configuration followed by one per level: the level's preset applied to the knobs in
    LEVEL_KNOBS, everything else (hop, mode, batching, dtype) shared with the main one."""
    out = [knobs]
    for name in knobs.levels:
        preset = card.presets[name]
        values = {k: coerce_knob(k, v) for k, v in preset.items() if k in LEVEL_KNOBS}
        if "layers" in values:
            values["layers"] = expand_layers(card, values["layers"])
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
        unframed = [spec.name for spec in specs if not spec.frame_mode]
        if unframed:
            framed = [spec.name for spec in card.layers if spec.frame_mode and not spec.pooled]
            raise ConfigError(
                f"layer(s) {unframed} of {card.id} cannot run in frame mode: their frames depend on the whole window (see the model's page)",
                hint=f"use mode 'window' for them{', or frame-mode layers: ' + ', '.join(framed) if framed else ''}",
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
    if card.paddings and knobs.padding not in card.paddings:
        raise ConfigError(f"model {card.id} has no padding {knobs.padding!r}", hint=f"paddings of {card.id}: {', '.join(card.paddings)}")
    if not card.paddings and knobs.padding is not None:
        raise ConfigError(f"model {card.id} offers no choice of padding (padding={knobs.padding!r})", hint="leave padding unset")
    if knobs.stack:
        if knobs.levels:
            raise ConfigError("stack gives one (layers, T, D) array per clip; levels append windows of other sizes", hint="use stack or levels, not both")
        if "flat" in knobs.readout_parts and knobs.mode != "frame":
            raise ConfigError("the 'flat' readout's width depends on the window: it cannot be stacked", hint="use another readout with stack")
        widths = {name: frame_width(card.layer(name), knobs) for name in knobs.layers}
        if len(set(widths.values())) > 1:
            raise ConfigError(
                f"stack needs layers of one width; {card.id}'s are {', '.join(f'{k} {v}' for k, v in widths.items())}",
                hint=f"choose layers of one width (e.g. layers=all: {', '.join(card.all_layers)}), or leave stack off to concatenate",
            )
    if knobs.batch_size is not None and knobs.batch_size < 1:
        raise ConfigError("batch_size must be at least 1")
    if knobs.input_rate is not None and knobs.input_rate <= 0:
        raise ConfigError("input_rate must be a positive number of Hz")
    for name in ("batch_seconds", "gpu_batch_seconds"):
        if not getattr(knobs, name) > 0:
            raise ConfigError(f"{name} must be positive, not {getattr(knobs, name)}", hint=f"e.g. {name}=32")


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
