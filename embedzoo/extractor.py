"""The one interface every model implements, and everything the core derives from it.

A plugin writes `forward_layers`; the core provides, for every model alike: resampling from any
rate, windowing (receptive field) and hop (time resolution), layer and readout selection
(embedding level), scene pooling, HEAR timestamps (ms, window centres), packing the windows of many
clips into device-sized batches, device and dtype handling -- in `window` and `frame` mode.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from embedzoo.card import LayerSpec, ModelCard
from embedzoo.errors import AudioError, ConfigError
from embedzoo.framing import ChunkFramer, Segments, WholeFramer, WindowFramer
from embedzoo.knobs import Knobs, check_knobs, embedding_width, frame_width, level_knobs, resolve_knobs

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ClipEmbeddings:
    """What one clip yields: a scene vector (D,), and/or timestamp vectors (T, D) with times (T,) in ms;
    with the `stack` knob, one per layer: scene (layers, D), timestamp (layers, T, D)."""

    scene: Tensor | None = None
    timestamp: Tensor | None = None
    timestamps: Tensor | None = None


def available_devices() -> list[str]:
    """The devices this machine has, as `--device` spells them: cpu, cuda, cuda:0, ..., mps."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' is CUDA when present (then Apple's MPS), else the CPU. A device torch does not know
    ('gpu') or this machine lacks ('cuda' without a GPU) is a ConfigError listing the ones there
    are, raised here rather than at the first forward, after minutes of loading."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    here = ", ".join(["auto", *available_devices()])
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {str(device)!r}", hint=f"use one of: {here} ('cuda' is an NVIDIA or AMD GPU, 'mps' Apple's)") from None
    if chosen.type == "cpu":
        return chosen
    if chosen.type == "cuda":
        present = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if chosen.index is None and present or chosen.index is not None and chosen.index < present:
            return chosen
        what = "no CUDA GPU" if not present else f"{present} CUDA GPU(s), numbered 0 to {present - 1}"
    elif chosen.type == "mps":
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return chosen
        what = "no Apple MPS device"
    else:
        backend = getattr(torch, chosen.type, None)
        if backend is not None and getattr(backend, "is_available", lambda: False)():
            return chosen
        what = f"no {chosen.type} device"
    raise ConfigError(f"device {str(device)!r} is not available: this machine has {what}", hint=f"use one of: {here}")


class Extractor(torch.nn.Module, abc.ABC):
    """Base class of every model. Subclasses implement `forward_layers`; nothing else is required."""

    card: ModelCard
    weights_identity: str = ""  # which weights it holds (card, file hash or random); set by embedzoo.load

    def __init__(self, card: ModelCard):
        super().__init__()
        if not card.complete:
            from embedzoo.errors import PluginError

            raise PluginError(f"model {card.id}: the card has no layers yet", hint=f"its family's plugin ({card.plugin}) completes it: is it installed? `embedzoo plugins`")
        self.card = card
        self.knobs: Knobs = resolve_knobs(card)
        self._compiled: dict[str, Any] = {}  # the `compile` knob's forward and the shapes warmed up, shared by with_knobs views

    @abc.abstractmethod
    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """audio (batch, samples) at card.sample_rate, min_window <= samples <= max_window.

        Returns one tensor per requested layer (all of card.layers when None), in that order, each
        in its natural shape: (batch, width) for a pooled layer, (batch, len(tokens) + frames, width)
        for a sequence (named tokens first), or (batch, channels, bands, frames) for a conv map.
        Every frame the network computes comes back; the core crops frame-mode chunks to the valid
        ones (`LayerSpec.frame_skip`) and flattens maps channel-major. A pure function of the
        audio: it never reads the engine's knobs. It may stop after the last layer asked.
        """

    # ---- settings -------------------------------------------------------------------------

    def configure(self, **knobs: Any) -> "Extractor":
        """Set knobs on top of earlier ones (card defaults, then preset, then yours); returns self."""
        overrides = {**getattr(self, "_overrides", {}), **{k: v for k, v in knobs.items() if v is not None}}
        self.knobs = resolve_knobs(self.card, overrides)
        self._overrides = overrides
        return self

    def with_knobs(self, knobs: Knobs | dict[str, Any]) -> "Extractor":
        """This extractor with other knobs, for one job: the same modules and weights (a shallow
        copy, nothing duplicated), so a caller never has to change and restore a shared model's
        settings. A dict applies on top of this extractor's knobs, as `configure` would; a `Knobs`
        (checked against the card) replaces them."""
        view = copy.copy(self)
        if isinstance(knobs, Knobs):
            check_knobs(self.card, knobs)
            view.knobs = knobs
            return view
        return view.configure(**knobs)

    @property
    def sample_rate(self) -> int:
        """The rate this extractor expects its input at (HEAR's attribute): `input_rate` or the model's."""
        return self.knobs.input_rate or self.card.sample_rate

    @property
    def scene_embedding_size(self) -> int:
        return self._width(self.knobs)

    @property
    def timestamp_embedding_size(self) -> int:
        return sum(self._width(knobs) for knobs in self.levels)

    @property
    def levels(self) -> list[Knobs]:
        """The main knobs, then one set per `levels` preset (their timestamp embeddings are appended)."""
        return level_knobs(self.card, self.knobs)

    def _width(self, knobs: Knobs) -> int:
        width = embedding_width(self.card, knobs)
        if width is None:  # the 'flat' readout: as wide as the window has frames; measure it
            probe = np.zeros((1, self._window(knobs)), dtype=np.float32)
            width = int(self.embed_segments(probe, knobs=knobs).shape[-1])
        return width

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    # ---- geometry in samples --------------------------------------------------------------

    @property
    def hop_samples(self) -> int:
        return self.card.ms_to_samples(self.knobs.hop_ms)

    @property
    def window_samples(self) -> int:
        return self._window(self.knobs)

    def _window(self, knobs: Knobs) -> int:
        if knobs.window_ms is not None:
            return self.card.ms_to_samples(knobs.window_ms)
        return max(self.card.layer_min_window(self.card.layer(name)) for name in knobs.layers)

    @property
    def scene_window_samples(self) -> int:
        ms = self.knobs.scene_window_ms
        return self.card.max_window if ms is None else self.card.ms_to_samples(ms)

    @property
    def scene_hop_samples(self) -> int:
        ms = self.knobs.scene_hop_ms
        return self.scene_window_samples // 2 if ms is None else self.card.ms_to_samples(ms)

    @property
    def batch_budget(self) -> int:
        """Samples of audio per forward on this extractor's device: `batch_seconds` on the CPU,
        `gpu_batch_seconds` on a GPU, whose best batches are an order of magnitude larger."""
        seconds = self.knobs.batch_seconds if self.device.type == "cpu" else self.knobs.gpu_batch_seconds
        return int(seconds * self.card.sample_rate)

    def chunk_samples(self, frame_field: int) -> int:
        """Frame mode: the longest chunk one forward takes: the family's `frame_chunk` when its
        frames depend on the chunk (so batching never changes them), else within the batch budget."""
        if self.card.frame_chunk:
            return self.card.frame_chunk
        budget = self.batch_budget
        return int(min(self.card.max_window, max(frame_field, budget)))

    def frame_groups(self) -> list[tuple[tuple[int, int, int], tuple[str, ...]]]:
        """Frame mode: the chosen layers grouped by frame grid (hop, field, offset), one chunking each."""
        groups: dict[tuple[tuple[int, int, int], int], list[str]] = {}
        for name in self.knobs.layers:
            spec = self.card.layer(name)
            groups.setdefault((self.card.frame_grid(spec), spec.frame_pad), []).append(name)  # one forward: one frame_pad
        return [(geometry, tuple(names)) for (geometry, _), names in groups.items()]

    def batch_rows(self, size: int) -> int:
        """How many segments of `size` samples go into one forward (each costs `max_window` when
        the model pads every input to it under the chosen padding: `Geometry.padded`)."""
        if self.knobs.batch_size is not None:
            return self.knobs.batch_size
        if self.knobs.padding is not None and self.knobs.padding in self.card.padded:
            size = self.card.max_window
        return max(1, self.batch_budget // max(size, 1))

    # ---- one batch of segments ------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = _DTYPES[self.knobs.dtype]
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _pads(self, specs: Sequence[LayerSpec], length: int, frames: bool) -> tuple[int, int]:
        """Zeros (left, right) a batch of `length`-sample segments gets: short windows are centred
        in the layers' `min_window`; a frame-mode chunk gets its group's `frame_pad` on the right."""
        short = max(self.card.layer_min_window(spec) for spec in specs) - length
        left, right = (short // 2, short - short // 2) if short > 0 and not frames else (0, 0)
        if frames and specs[0].frame_pad:  # a frame group shares its frame_pad (frame_groups)
            right += specs[0].frame_pad
        return left, right

    def host_batch(self, blocks: Sequence[np.ndarray], frames: bool = False, knobs: Knobs | None = None) -> Tensor:
        """(n, size) blocks of segments as one padded float32 batch, in one host copy: into pinned
        memory when the model is on a CUDA device, so that the copy to it runs without a sync."""
        knobs = knobs or self.knobs
        length = blocks[0].shape[1]
        left, right = self._pads([self.card.layer(name) for name in knobs.layers], length, frames)
        shape = (sum(len(block) for block in blocks), left + length + right)
        if self.device.type == "cuda":
            batch = torch.empty(shape, dtype=torch.float32, pin_memory=True)
            out = batch.numpy()
        else:
            out = np.empty(shape, dtype=np.float32)  # numpy's allocation, as np.array made it before: the same kernels' paths
            batch = torch.from_numpy(out)
        out[:, :left], out[:, left + length :] = 0.0, 0.0
        row = 0
        for block in blocks:
            out[row : row + len(block), left : left + length] = block
            row += len(block)
        return batch

    def _forward(self) -> Any:
        """`forward_layers`, or its torch.compile'd version under the `compile` knob (made once)."""
        if not self.knobs.compile:
            return self.forward_layers
        if "forward" not in self._compiled:
            self._compiled["forward"] = torch.compile(self.forward_layers)
        return self._compiled["forward"]

    def warm_up(self, shapes: Iterable[tuple[int, int, bool, Knobs]]) -> None:
        """The `compile` knob: compile the forward for each (rows, samples, frames, knobs) batch a
        job will run, on zeros, before its first file -- so compiling does not count against it
        (each shape once per model). Does nothing without the knob."""
        if not self.knobs.compile:
            return
        warmed = self._compiled.setdefault("shapes", set())
        for rows, size, frames, knobs in shapes:
            key = (rows, size, frames, knobs.layers, knobs.padding)
            if key not in warmed:
                self.embed_segments(np.zeros((rows, size), dtype=np.float32), frames=frames, knobs=knobs)
                warmed.add(key)

    def embed_batch(self, batch: Tensor, length: int, frames: bool = False, knobs: Knobs | None = None) -> Tensor:
        """Forward a padded batch (`host_batch`, or a tensor padded alike) of `length`-sample segments
        and read out the chosen layers, leaving the result on the model's device: nothing here waits
        for the device, so the next batch is assembled while this one computes."""
        if self.training:
            raise ConfigError(f"{self.card.id} is in training mode", hint="call .eval() before extracting embeddings")
        knobs = knobs or self.knobs
        specs = [self.card.layer(name) for name in knobs.layers]
        device = self.device
        if batch.device != device:
            batch = batch.to(device, non_blocking=batch.is_pinned())
        # a family that offers paddings (Geometry.paddings) is told the chosen one; none other is
        choice = {"padding": knobs.padding} if self.card.paddings else {}
        with torch.inference_mode(), self._autocast():
            outputs = self._forward()(batch, list(knobs.layers), **choice)
        if len(outputs) != len(specs):
            raise RuntimeError(f"{self.card.id}: forward_layers returned {len(outputs)} tensors for {len(specs)} layers")
        parts = []
        for spec, output in zip(specs, outputs):
            output = as_sequence(output.float(), spec, self.card.id)
            if frames:
                hop, field = self.card.frame_geometry(spec)
                output = valid_frames(output, spec, (length - field) // hop + 1, self.card.id)
            output = pool_frequency(output, spec, knobs.freq_pool_parts)
            if frames:
                parts.append(output)
            else:
                parts.extend(readout(output, spec, knobs.readout_parts))
        if frames:
            lengths = {part.shape[1] for part in parts}
            if len(lengths) > 1:
                raise RuntimeError(f"{self.card.id}: layers {list(knobs.layers)} of one frame geometry returned different frame counts {sorted(lengths)}")
        return torch.cat(parts, dim=-1)

    def embed_segments(self, segments: np.ndarray | Tensor, frames: bool = False, knobs: Knobs | None = None) -> Tensor:
        """Forward a batch of equal-length segments and read out the chosen layers.

        Returns (n, width) -- one vector per segment, readout applied -- or, with `frames`, the
        frame sequences (n, frames, width). `knobs` (default: this extractor's) picks layers,
        `freq_pool` and readout. Segments shorter than the layers' `min_window` are zero-padded
        around their centre -- not frame-mode chunks, which the framer cut to whole frame fields
        (padding would move their frames). Output is float32 on the CPU (a `Session` keeps it on
        the device until a clip is done instead).
        """
        knobs = knobs or self.knobs
        length = segments.shape[-1]
        if isinstance(segments, Tensor):
            left, right = self._pads([self.card.layer(name) for name in knobs.layers], length, frames)
            batch = torch.nn.functional.pad(segments.float(), (left, right)) if left or right else segments.float()
        else:
            batch = self.host_batch([np.asarray(segments, dtype=np.float32)], frames, knobs)
        return self.embed_batch(batch, length, frames, knobs).cpu()

    # ---- the public API ---------------------------------------------------------------------

    def _prepare(self, audio: Tensor | np.ndarray | Sequence, sample_rate: int) -> list[np.ndarray]:
        """Rows of a (batch, samples) tensor/array, or a sequence of 1-d clips, checked and at the
        model's rate. The rate is never guessed: a wrong guess gives plausible, wrong embeddings."""
        from embedzoo.audio import _check_rate, as_float_samples, check_audio, resample

        if sample_rate is None:
            raise AudioError(
                f"{self.card.id}: the audio's sample rate is missing",
                hint=f"pass it, e.g. model.embed(clips, 16000); the model runs at {self.card.sample_rate} Hz and other rates are resampled"
                f" (HEAR's get_*_embeddings and model(audio) take audio at model.sample_rate, {self.sample_rate} Hz)",
            )
        try:
            rate = _check_rate(sample_rate, "sample_rate")
        except AudioError as error:
            raise AudioError(f"{self.card.id}: {error.message}", hint=error.hint) from None

        def samples(x: Any, name: str) -> np.ndarray:
            if isinstance(x, Tensor):
                x = x.detach().cpu()
                x = (x.float() if x.is_floating_point() else x).numpy()  # ints keep their dtype, to be scaled as PCM
            return as_float_samples(x, name)

        if isinstance(audio, (Tensor, np.ndarray)):
            array = samples(audio, "audio")
            if array.ndim not in (1, 2):
                raise AudioError(
                    f"audio must be (samples,) or (batch, samples), got shape {tuple(array.shape)}",
                    hint="down-mix channels first (e.g. audio.mean(axis=-1) for (batch, samples, channels)), or pass a list of 1-d clips",
                )
            clips = [array] if array.ndim == 1 else list(array)
        elif isinstance(audio, (str, bytes)) or not isinstance(audio, Sequence):
            raise AudioError(
                f"audio must be an array, a tensor or a list of 1-d clips, got {type(audio).__name__}",
                hint="for files, decode them first (embedzoo.audio.load_audio) or use `embedzoo embed`",
            )
        else:
            clips = []
            for index, clip in enumerate(audio):
                clip = samples(clip, f"clip {index}")
                if clip.ndim != 1:
                    raise AudioError(
                        f"clip {index} must be 1-d (samples,), got shape {tuple(clip.shape)}",
                        hint="down-mix channels first (e.g. clip.mean(axis=-1)); pass each clip of a batch separately",
                    )
                clips.append(clip)
        out = []
        for index, clip in enumerate(clips):
            if clip.size == 0:
                raise AudioError(f"clip {index} is empty", hint="pass at least one sample per clip")
            clip = check_audio(clip, f"clip {index}", rate, warn=False)  # NaN/Inf or beyond 2**24: refused, with the time
            if rate != self.card.sample_rate:
                clip = resample(clip, rate, self.card.sample_rate)
            out.append(clip)
        return out

    def embed(
        self, clips: Iterable, sample_rate: int, scene: bool = True, timestamp: bool = True,
        knobs: Knobs | dict[str, Any] | None = None,
    ) -> list[ClipEmbeddings]:
        """Embeddings of clips of any lengths (1-d arrays/tensors, or rows of a 2-d one) at
        `sample_rate` Hz (required: resampled to the model's rate); `knobs` (see `with_knobs`)
        apply to this call only. float samples are taken as they are, int16/int32 PCM is scaled."""
        if knobs is not None:
            return self.with_knobs(knobs).embed(clips, sample_rate, scene, timestamp)
        prepared = self._prepare(clips if isinstance(clips, (Tensor, np.ndarray, str, bytes)) else list(clips), sample_rate)
        session = Session(self, scene=scene, timestamp=timestamp)
        # pushed in slices, so a long clip is windowed as it goes rather than copied whole
        step = max(self.card.max_window, self.batch_budget)
        for key, clip in enumerate(prepared):
            session.open(key)
            for start in range(0, len(clip), step):
                session.push(key, clip[start : start + step])
            session.close(key)
        session.flush()
        done = dict(session.take())
        return [done[key] for key in range(len(prepared))]

    def _hear_shapes(self) -> None:
        if self.knobs.stack:
            raise ConfigError(
                f"{self.card.id}: the HEAR API returns (batch, T, D) arrays, and stack=True gives a layer axis",
                hint="use model.embed(...) for stacked layers, or stack=False to concatenate them",
            )

    def scene_embeddings(self, audio: Tensor | np.ndarray, sample_rate: int) -> Tensor:
        """(batch, samples) at `sample_rate` Hz -> (batch, scene_embedding_size), on the input's device for tensors."""
        self._hear_shapes()
        results = self.embed(audio, sample_rate, scene=True, timestamp=False)
        out = torch.stack([r.scene for r in results])
        return out.to(audio.device) if isinstance(audio, Tensor) else out

    def timestamp_embeddings(self, audio: Tensor | np.ndarray, sample_rate: int) -> tuple[Tensor, Tensor]:
        """(batch, samples) at `sample_rate` Hz -> ((batch, T, timestamp_embedding_size), (batch, T) centres in ms)."""
        self._hear_shapes()
        results = self.embed(audio, sample_rate, scene=False, timestamp=True)
        embeddings = torch.stack([r.timestamp for r in results])
        timestamps = torch.stack([r.timestamps for r in results])
        if isinstance(audio, Tensor):
            return embeddings.to(audio.device), timestamps.to(audio.device)
        return embeddings, timestamps

    def forward(self, audio: Tensor, sample_rate: int | None = None) -> Tensor:
        """nn.Module call: scene embeddings of a (batch, samples) tensor, at `sample_rate` or, as in
        the HEAR API, at `self.sample_rate` (`input_rate`, else the model's rate)."""
        return self.scene_embeddings(audio, self.sample_rate if sample_rate is None else sample_rate)


def as_sequence(output: Tensor, spec: LayerSpec, model_id: str = "") -> Tensor:
    """A layer's natural output as (n, tokens + frames, width): a pooled (n, width) vector becomes
    one frame; a (n, channels, bands, frames) map becomes frames flattened channel-major (frequency
    fastest), which `pool_frequency` can pool over its bands. Checks the shape against the spec."""
    where = f"{model_id}: layer {spec.name}"
    if output.ndim == 2:
        if not spec.pooled:
            raise RuntimeError(f"{where} returned one vector {tuple(output.shape)} but its geometry does not declare it pooled")
        output = output[:, None]
    elif output.ndim == 4:
        channels, bands = output.shape[1], output.shape[2]
        if bands != spec.bands or channels * bands != spec.width:
            raise RuntimeError(f"{where} returned a {channels} x {bands} map; its geometry says width {spec.width} with {spec.bands} bands")
        output = output.permute(0, 3, 1, 2).flatten(2)
    elif output.ndim != 3:
        raise RuntimeError(f"{where} returned shape {tuple(output.shape)}; expected (n, width), (n, frames, width) or (n, channels, bands, frames)")
    elif spec.bands > 1:
        raise RuntimeError(f"{where} has {spec.bands} bands: return it as a (n, channels, bands, frames) map")
    if output.shape[-1] != spec.width:
        raise RuntimeError(f"{where} has width {output.shape[-1]}, its geometry says {spec.width}")
    if output.shape[1] < len(spec.tokens) + (0 if spec.pooled else 1):
        raise RuntimeError(f"{where} returned {output.shape[1]} rows for {len(spec.tokens)} tokens and at least one frame")
    if spec.pooled and output.shape[1] != 1:
        raise RuntimeError(f"{where} is pooled but returned {output.shape[1]} frames")
    return output


def valid_frames(output: Tensor, spec: LayerSpec, count: int, model_id: str = "") -> Tensor:
    """Frame mode: drop a sequence's tokens and the frames before `spec.frame_skip` (their fields
    reach past the chunk's start), keeping the `count` frames the chunk's length gives."""
    start = len(spec.tokens) + spec.frame_skip
    if count < 1 or output.shape[1] < start + count:
        raise RuntimeError(f"{model_id}: layer {spec.name} computed {output.shape[1] - len(spec.tokens)} frames; frame mode needs {spec.frame_skip + count} (frame_skip {spec.frame_skip})")
    return output[:, start : start + count]


def pool_frequency(output: Tensor, spec: LayerSpec, parts: Sequence[str]) -> Tensor:
    """Pool a layer's channel-major (channels, bands) frames over its bands; tokens pass as they are."""
    if spec.bands == 1 or tuple(parts) == ("flat",):
        return output
    maps = output.unflatten(-1, (spec.channels, spec.bands))
    return torch.cat([maps.mean(dim=-1) if part == "mean" else maps.amax(dim=-1) for part in parts], dim=-1)


def readout(output: Tensor, spec: LayerSpec, parts: Sequence[str]) -> list[Tensor]:
    """One (n, width) vector per readout part from a layer's (n, tokens+frames, width) output."""
    tokens = len(spec.tokens)
    frames = output[:, tokens:]
    vectors = []
    for part in parts:
        if part in spec.tokens:
            vectors.append(output[:, spec.tokens.index(part)])
            continue
        if frames.shape[1] == 0:
            raise RuntimeError(f"layer {spec.name} returned no frames to read out with {part!r}")
        if part == "mean":
            vectors.append(frames.mean(dim=1))
        elif part == "max":
            vectors.append(frames.amax(dim=1))
        elif part == "center":
            vectors.append(frames[:, (frames.shape[1] - 1) // 2])
        elif part == "first":
            vectors.append(frames[:, 0])
        elif part == "last":
            vectors.append(frames[:, -1])
        elif part == "flat":
            vectors.append(frames.transpose(1, 2).flatten(1))
        else:
            raise ConfigError(f"unknown readout {part!r} for layer {spec.name}")
    return vectors


# ---- the streaming engine -----------------------------------------------------------------


@dataclass
class _Piece:
    key: Hashable
    track: str
    first_index: int
    data: np.ndarray


@dataclass(frozen=True)
class _Track:
    """One way a clip is cut and forwarded: 'timestamp:<level>', 'scene', or 'frames:<group>'."""

    name: str
    knobs: Knobs
    frames: bool = False
    geometry: tuple[int, int, int] = (0, 0, 0)  # frame mode: (frame_hop, frame_field, frame_offset) of its layers


def _tracks(extractor: Extractor, scene: bool, timestamp: bool) -> list[_Track]:
    knobs = extractor.knobs
    if knobs.mode == "frame":
        return [
            _Track(f"frames:{i}", dataclasses.replace(knobs, layers=names), True, geometry)
            for i, (geometry, names) in enumerate(extractor.frame_groups())
        ]
    tracks = [_Track(f"timestamp:{i}", level) for i, level in enumerate(extractor.levels)] if timestamp else []
    return tracks + ([_Track("scene", knobs)] if scene else [])


def _scene_is_windowed(knobs: Knobs) -> bool:
    """A readout whose width depends on the window ('flat') cannot read a whole clip: the scene is
    then the mean of the timestamp windows' vectors."""
    return "flat" in knobs.readout_parts


def _scene_framer(extractor: Extractor, knobs: Knobs, with_timestamps: bool) -> WholeFramer | WindowFramer:
    """Past one scene window (from the start, for 'flat' readouts) a scene is the mean of windows;
    when those are the timestamp track's own windows (VGGish's, YAMNet's defaults) it reuses them."""
    window, hop = extractor._window(knobs), extractor.hop_samples
    if _scene_is_windowed(knobs):
        return WholeFramer(0, hop, knobs.pad_mode, fallback=False) if with_timestamps else WindowFramer(window, hop, knobs.pad_mode)
    limit, scene_hop = extractor.scene_window_samples, extractor.scene_hop_samples
    shared = with_timestamps and (limit, scene_hop) == (window, hop)
    return WholeFramer(limit, scene_hop, knobs.pad_mode, fallback=not shared)


class _Clip:
    """Book-keeping of one clip inside a Session: a framer and the results of each track."""

    def __init__(self, extractor: Extractor, tracks: list[_Track]):
        self.framers: dict[str, Any] = {}
        with_timestamps = any(track.name == "timestamp:0" for track in tracks)
        for track in tracks:
            knobs = track.knobs
            if track.frames:
                hop, field, offset = track.geometry
                self.framers[track.name] = ChunkFramer(extractor.chunk_samples(field), hop, field, knobs.pad_mode, offset)
            elif track.name == "scene":
                self.framers[track.name] = _scene_framer(extractor, knobs, with_timestamps)
            else:
                self.framers[track.name] = WindowFramer(extractor._window(knobs), extractor.hop_samples, knobs.pad_mode)
        self.results: dict[str, dict[int, Tensor]] = {name: {} for name in self.framers}
        self.emitted: dict[str, int] = {name: 0 for name in self.framers}
        self.ready: Any = None  # CUDA: the event after the copy of this clip's last rows to the host
        self.length = 0
        self.closed = False

    def complete(self) -> bool:
        return self.closed and all(len(self.results[n]) == self.emitted[n] for n in self.framers)


class Session:
    """Streams many clips through one extractor: open/push/close clips in any interleaving, and
    windows from all of them are packed into full batches. `take()` returns finished clips."""

    def __init__(self, extractor: Extractor, scene: bool = True, timestamp: bool = True):
        if not (scene or timestamp):
            raise ConfigError("ask for scene and/or timestamp embeddings")
        self.extractor = extractor
        self.scene, self.timestamp = scene, timestamp
        self.tracks = {track.name: track for track in _tracks(extractor, scene, timestamp)}
        self.clips: dict[Hashable, _Clip] = {}
        self.queues: OrderedDict[tuple[str, int], list[_Piece]] = OrderedDict()
        self.queued_samples = 0
        self.finished: list[tuple[Hashable, ClipEmbeddings]] = []
        self.max_queued_samples = 4 * max(extractor.batch_budget, extractor.card.max_window)
        if extractor.knobs.compile:
            extractor.warm_up(self._batch_shapes())

    def _batch_shapes(self) -> list[tuple[int, int, bool, Knobs]]:
        """(rows, samples, frames, knobs) of each track's full batches: what `compile` warms up.
        (A scene of a clip shorter than the scene window, and a last partial batch, are other
        shapes; torch.compile turns dynamic on the second.)"""
        ex, shapes = self.extractor, []
        for track in self.tracks.values():
            if track.frames:
                size = ex.chunk_samples(track.geometry[1])
            elif track.name == "scene":
                size = ex.scene_window_samples if not _scene_is_windowed(track.knobs) else ex._window(track.knobs)
            else:
                size = ex._window(track.knobs)
            shapes.append((ex.batch_rows(size), size, track.frames, track.knobs))
        return shapes

    def open(self, key: Hashable) -> None:
        if key in self.clips:
            raise KeyError(f"clip {key!r} is already open in this session")
        self.clips[key] = _Clip(self.extractor, list(self.tracks.values()))

    def push(self, key: Hashable, chunk: np.ndarray) -> None:
        clip = self.clips[key]
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        clip.length += len(chunk)
        for name, framer in clip.framers.items():
            self._enqueue(key, name, framer.push(chunk))
        self._run_full()

    def close(self, key: Hashable) -> None:
        clip = self.clips[key]
        if clip.length == 0:
            del self.clips[key]
            raise AudioError(f"clip {key!r} is empty", hint="pass at least one sample")
        clip.closed = True
        for name, framer in clip.framers.items():
            self._enqueue(key, name, framer.close())
        self._run_full()
        self._collect(key)

    def discard(self, key: Hashable) -> None:
        """Drop a clip (e.g. its file failed half-way): its queued windows are never computed."""
        self.clips.pop(key, None)
        for queue_key, pieces in list(self.queues.items()):
            kept = [p for p in pieces if p.key != key]
            self.queued_samples -= sum(p.data.size for p in pieces if p.key == key)
            if kept:
                self.queues[queue_key] = kept
            else:
                del self.queues[queue_key]

    def flush(self) -> None:
        """Run every queued window, full batch or not."""
        while self.queues:
            self._run(next(iter(self.queues)))
        for key in list(self.clips):
            self._collect(key)

    def take(self) -> list[tuple[Hashable, ClipEmbeddings]]:
        """Finished clips since the last call, in the order they finished."""
        done, self.finished = self.finished, []
        return done

    @property
    def pending(self) -> int:
        return len(self.clips)

    # -- internals --

    def _enqueue(self, key: Hashable, track: str, segments: list[Segments]) -> None:
        clip = self.clips[key]
        for seg in segments:
            clip.emitted[track] += len(seg.data)
            # windows of one size share batches across clips, tracks and purposes when they are
            # read out alike (the scene and the timestamp windows of a short clip, for example)
            knobs = self.tracks[track].knobs
            group = track if self.tracks[track].frames else repr((knobs.layers, knobs.readout, knobs.freq_pool))
            queue_key = (group, seg.data.shape[1])
            self.queues.setdefault(queue_key, []).append(_Piece(key, track, seg.first_index, seg.data))
            self.queued_samples += seg.data.size

    def _run_full(self) -> None:
        for queue_key in list(self.queues):
            if queue_key in self.queues and sum(len(p.data) for p in self.queues[queue_key]) >= self.extractor.batch_rows(queue_key[1]):
                self._run(queue_key)
        while self.queued_samples > self.max_queued_samples and self.queues:
            self._run(next(iter(self.queues)))

    def _run(self, queue_key: tuple[str, int]) -> None:
        """Forward the queued segments of one size, in batches, and file the results."""
        pieces = self.queues.pop(queue_key)
        self.queued_samples -= sum(p.data.size for p in pieces)
        rows = self.extractor.batch_rows(queue_key[1])
        track = self.tracks[pieces[0].track]
        owners = [(p.key, p.track, p.first_index + i) for p in pieces for i in range(len(p.data))]
        blocks = [p.data for p in pieces]
        position = 0
        while position < len(owners):
            parts, taken = _take_rows(blocks, rows)
            batch = self.extractor.host_batch(parts, frames=track.frames, knobs=track.knobs)
            output, ready = _to_host(self.extractor.embed_batch(batch, queue_key[1], frames=track.frames, knobs=track.knobs))
            for row, (key, name, index) in enumerate(owners[position : position + taken]):
                clip = self.clips.get(key)
                if clip is not None:
                    clip.results[name][index] = output[row]
                    clip.ready = ready if ready is not None else clip.ready
            position += taken
        for key in {p.key for p in pieces}:
            self._collect(key)

    def _collect(self, key: Hashable) -> None:
        clip = self.clips.get(key)
        if clip is None or not clip.complete():
            return
        if clip.ready is not None:  # the device's one wait, per clip rather than per batch
            clip.ready.synchronize()
        del self.clips[key]
        self.finished.append((key, self._finish(clip)))

    def _finish(self, clip: _Clip) -> ClipEmbeddings:
        result = self._concatenated(clip)
        return stacked(result, len(self.extractor.knobs.layers)) if self.extractor.knobs.stack else result

    def _concatenated(self, clip: _Clip) -> ClipEmbeddings:
        ex = self.extractor
        result = ClipEmbeddings()
        rate = ex.card.sample_rate
        if ex.knobs.mode == "frame":
            hop = ex.hop_samples
            centres = np.arange(1 + clip.length // hop) * hop
            scene_parts, timestamp_parts = {}, {}
            for track in self.tracks.values():
                framer: ChunkFramer = clip.framers[track.name]
                rows = clip.results[track.name]
                frames = torch.cat([rows[i][: framer.frames_in(i)] for i in range(len(rows))])
                frame_hop, _, offset = track.geometry
                nearest = np.clip(np.rint((centres - offset) / frame_hop).astype(np.int64), 0, len(frames) - 1)
                widths = [frame_width(ex.card.layer(name), track.knobs) for name in track.knobs.layers]
                for name, scene, stamp in zip(
                    track.knobs.layers, frames.mean(dim=0).split(widths), frames[torch.from_numpy(nearest)].split(widths, dim=-1)
                ):
                    scene_parts[name], timestamp_parts[name] = scene, stamp
            if self.scene:
                result.scene = torch.cat([scene_parts[name] for name in ex.knobs.layers])
            if self.timestamp:
                result.timestamp = torch.cat([timestamp_parts[name] for name in ex.knobs.layers], dim=-1)
                result.timestamps = torch.from_numpy(centres * 1000.0 / rate).float()
            return result
        if self.timestamp:
            levels = [clip.results[f"timestamp:{i}"] for i in range(len(ex.levels))]
            count = min(len(rows) for rows in levels)  # odd windows can give one window more
            result.timestamp = torch.cat([torch.stack([rows[i] for i in range(count)]) for rows in levels], dim=-1)
            result.timestamps = (torch.arange(count, dtype=torch.float64) * ex.hop_samples * 1000.0 / rate).float()
        if self.scene:
            reused = getattr(clip.framers["scene"], "reuses_timestamps", False)
            rows = clip.results["timestamp:0" if reused else "scene"]
            result.scene = torch.stack([rows[i] for i in range(len(rows))]).mean(dim=0)
        return result


def stacked(result: ClipEmbeddings, layers: int) -> ClipEmbeddings:
    """The `stack` knob: a clip's concatenated layers (layer-major, one width each -- `check_knobs`
    makes sure) as a layer axis: scene (layers, D), timestamp (layers, T, D), as `transformers`'
    hidden_states and s3prl stack them."""
    scene = None if result.scene is None else result.scene.unflatten(-1, (layers, -1))
    timestamp = None if result.timestamp is None else result.timestamp.unflatten(-1, (layers, -1)).transpose(0, 1).contiguous()
    return ClipEmbeddings(scene=scene, timestamp=timestamp, timestamps=result.timestamps)


def _to_host(output: Tensor) -> tuple[Tensor, Any]:
    """A batch's result on the host. From a CUDA device: a copy into pinned memory that runs
    behind the device's queue, and the event to wait for before reading it; elsewhere the result
    itself (the CPU's) or a copy (MPS's), and None."""
    if output.device.type != "cuda":
        return output.cpu(), None
    host = torch.empty(output.shape, dtype=output.dtype, pin_memory=True)
    host.copy_(output, non_blocking=True)
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(output.device))
    return host, event


def _take_rows(blocks: list[np.ndarray], rows: int) -> tuple[list[np.ndarray], int]:
    """Pop up to `rows` rows off the front of a list of (n, size) blocks: the pieces of one batch,
    copied once, by `Extractor.host_batch`, into the batch itself."""
    taken, parts = 0, []
    while blocks and taken < rows:
        block = blocks[0]
        need = rows - taken
        if len(block) <= need:
            parts.append(block)
            taken += len(block)
            blocks.pop(0)
        else:
            parts.append(block[:need])
            blocks[0] = block[need:]
            taken += need
    return parts, taken
