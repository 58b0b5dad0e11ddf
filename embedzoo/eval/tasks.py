"""Downstream tasks in the HEAR 2021 layout: read them, and write synthetic ones.

A task folder (what hearpreprocess produces, and what `embedzoo make-task` writes)::

    task_metadata.json        task_name, embedding_type (scene|event), prediction_type
                              (multiclass|multilabel), split_mode (trainvaltest|new_split_kfold|
                              presplit_kfold), splits, sample_duration, evaluation (metric names,
                              the first one selects models), evaluation_params (optional)
    labelvocabulary.csv       idx,label -- idx 0..n-1 is the output unit of each label
    <split>.json              scene: {file: [label, ...]}; event: {file: [{label, start, end}, ...]} (ms)
    <sample_rate>/<split>/<file>   the audio, once per rate the task ships

Splits: `trainvaltest` is one split (train / valid / test); a k-fold task lists folds
(`fold00`, ...) and is evaluated as HEAR does: fold i is the test, fold i+1 the validation, the
rest the training data.

The synthetic tasks are small, deterministic (same seed, same bytes) and hard enough to tell a
good embedding from a random one: `pitch` (harmonic tones of random timbres over two to four
octaves, the validation and test timbres unseen in training; pitch_acc and chroma_acc), `scene` and `scene-multilabel` (noise colours, chirps, click
trains, AM tones, one per clip or mixed), `event` (tones, noise bursts and chirps with known onsets
and offsets in longer clips; event-based onset F-measure). This module is torch-free.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from embedzoo.errors import ConfigError, EmbedzooError

__all__ = [
    "EMBEDDING_TYPES", "PREDICTION_TYPES", "KFOLD_MODES", "SPLIT_MODES",
    "EVENT_POSTPROCESSING_GRID", "TaskError", "Task", "load_task", "TRAIN_FORMANTS",
    "HELD_OUT_FORMANTS", "ALL_FORMANTS", "random_timbre", "harmonic_tone", "colored_noise", "chirp",
    "click_train", "am_tone", "SCENE_SOURCES", "midi_to_hz", "SIZES", "EVENT_CLIPS", "KINDS",
    "EVENT_LABELS", "make_task", "describe",
]  # fmt: skip

EMBEDDING_TYPES = ("scene", "event")
PREDICTION_TYPES = ("multiclass", "multilabel")
KFOLD_MODES = ("new_split_kfold", "presplit_kfold")
SPLIT_MODES = ("trainvaltest", *KFOLD_MODES)
# hear-eval-kit's default event postprocessing grid (median filter and minimum event length, ms)
EVENT_POSTPROCESSING_GRID: dict[str, list[float]] = {"median_filter_ms": [250], "min_duration": [125, 250]}


class TaskError(EmbedzooError, ValueError):
    """A task folder does not follow the HEAR layout."""


# ---------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Task:
    """One task folder in the HEAR layout (see the module doc); targets are read on demand."""

    path: Path
    metadata: dict[str, Any]
    labels: tuple[str, ...]  # labels[idx]

    @property
    def name(self) -> str:
        return str(self.metadata.get("task_name") or self.path.name)

    @property
    def embedding_type(self) -> str:
        return self.metadata["embedding_type"]

    @property
    def prediction_type(self) -> str:
        return self.metadata["prediction_type"]

    @property
    def split_mode(self) -> str:
        return self.metadata["split_mode"]

    @property
    def splits(self) -> list[str]:
        return list(self.metadata["splits"])

    @property
    def evaluation(self) -> list[str]:
        return list(self.metadata["evaluation"])

    @property
    def label_index(self) -> dict[str, int]:
        return {label: index for index, label in enumerate(self.labels)}

    @property
    def postprocessing_grid(self) -> dict[str, list[float]]:
        """The event postprocessing grid: the task's `evaluation_params`, else hear-eval-kit's."""
        params = self.metadata.get("evaluation_params") or {}
        return dict(params.get("event_postprocessing_grid") or EVENT_POSTPROCESSING_GRID)

    def data_splits(self) -> list[dict[str, list[str]]]:
        """What to train, validate and test on: one split, or one per fold (leave-one-out, HEAR's order)."""
        if self.split_mode == "trainvaltest":
            return [{"train": ["train"], "valid": ["valid"], "test": ["test"]}]
        folds = sorted(self.splits)
        out = []
        for index, test in enumerate(folds):
            valid = folds[(index + 1) % len(folds)]
            out.append({"train": [f for f in folds if f not in (test, valid)], "valid": [valid], "test": [test]})
        return out

    def targets(self, split: str) -> dict[str, Any]:
        """`<split>.json`: file -> labels (scene) or file -> events (event), labels as strings."""
        return self._targets[split]

    @cached_property
    def _targets(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        known = set(self.labels)
        for split in self.splits:
            path = self.path / f"{split}.json"
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise TaskError(f"task {self.path}: split file {path.name} is missing") from None
            except ValueError as exc:
                raise TaskError(f"task {self.path}: {path.name} is not valid JSON ({exc})") from None
            if not isinstance(raw, dict):
                raise TaskError(f"task {self.path}: {path.name} must map file names to targets")
            targets: dict[str, Any] = {}
            for name, value in raw.items():
                if self.embedding_type == "scene":
                    labels = [str(v) for v in (value if isinstance(value, list) else [value])]
                    if self.prediction_type == "multiclass" and len(labels) != 1:
                        raise TaskError(f"task {self.path}: {path.name}: {name} has {len(labels)} labels in a multiclass task")
                    bad = [label for label in labels if label not in known]
                    targets[name] = labels
                else:
                    try:
                        events = [{"label": str(e["label"]), "start": float(e["start"]), "end": float(e["end"])} for e in value]
                    except (KeyError, TypeError, ValueError):
                        raise TaskError(f"task {self.path}: {path.name}: {name} must list events as {{label, start, end}} in ms") from None
                    bad = [e["label"] for e in events if e["label"] not in known]
                    targets[name] = events
                if bad:
                    raise TaskError(f"task {self.path}: {path.name}: {name} has labels {bad} missing from labelvocabulary.csv")
            out[split] = targets
        return out

    def sample_rates(self) -> list[int]:
        """The rates the task's audio is shipped at (its numeric sub-folders)."""
        return sorted(int(p.name) for p in self.path.iterdir() if p.is_dir() and p.name.isdigit())

    def audio_rate(self, model_rate: int) -> int:
        """Which copy of the audio to read for a model: its own rate, else the next higher, else the highest."""
        rates = self.sample_rates()
        if not rates:
            raise TaskError(f"task {self.path} has no audio folders (<sample_rate>/<split>/...)")
        if model_rate in rates:
            return model_rate
        higher = [r for r in rates if r > model_rate]
        return higher[0] if higher else rates[-1]

    def audio_path(self, rate: int, split: str, name: str) -> Path:
        return self.path / str(rate) / split / name

    def fingerprint(self, model_rate: int) -> str:
        """sha256 of all a result on this task depends on, for a model of `model_rate`: the
        metadata, the label vocabulary, every split's targets and the bytes of the audio the
        model reads. Not the folder's path: a copied task keeps its results, an edited one (new
        labels, another postprocessing grid, other audio under the same names) never reuses them."""
        from embedzoo.weights.cache import sha256_file

        rate = self.audio_rate(model_rate)
        h = hashlib.sha256()
        h.update(json.dumps([self.metadata, self.labels, rate], sort_keys=True, default=str).encode())
        for split in self.splits:
            targets = self.targets(split)
            h.update(json.dumps([split, targets], sort_keys=True).encode())
            for name in targets:
                path = self.audio_path(rate, split, name)
                if not path.is_file():
                    raise TaskError(f"task {self.path}: audio file {path} is missing", hint=f"{split}.json lists {name}")
                h.update(f"{split}/{name}:{sha256_file(path)}\n".encode())
        return h.hexdigest()


def load_task(path: str | Path) -> Task:
    """Read and check a task folder; errors name the file and what is wrong with it."""
    root = Path(path).expanduser()
    meta_path = root / "task_metadata.json"
    if not meta_path.is_file():
        raise TaskError(
            f"{root} is not a HEAR task folder: no task_metadata.json",
            hint="`embedzoo make-task pitch DIR` writes an example task in this layout",
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise TaskError(f"{meta_path} is not valid JSON ({exc})") from None
    for key, allowed in (("embedding_type", EMBEDDING_TYPES), ("prediction_type", PREDICTION_TYPES), ("split_mode", SPLIT_MODES)):
        if meta.get(key) not in allowed:
            raise TaskError(f"{meta_path}: {key} must be one of {allowed}, not {meta.get(key)!r}")
    if not meta.get("splits"):
        if meta["split_mode"] == "trainvaltest":
            meta["splits"] = ["train", "valid", "test"]
        else:
            meta["splits"] = sorted(p.stem for p in root.glob("fold*.json"))
    if meta["split_mode"] == "trainvaltest" and set(meta["splits"]) != {"train", "valid", "test"}:
        raise TaskError(f"{meta_path}: a trainvaltest task has the splits train, valid, test, not {meta['splits']}")
    if meta["split_mode"] in KFOLD_MODES and len(meta["splits"]) < 3:
        raise TaskError(f"{meta_path}: a k-fold task needs at least 3 folds, found {meta['splits']}")
    if not meta.get("evaluation"):
        raise TaskError(f"{meta_path}: `evaluation` must list at least one metric")
    return Task(root, meta, _read_vocabulary(root / "labelvocabulary.csv"))


def _read_vocabulary(path: Path) -> tuple[str, ...]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise TaskError(f"{path} is missing (columns idx,label)") from None
    try:
        pairs = sorted((int(row["idx"]), str(row["label"])) for row in rows)
    except (KeyError, TypeError, ValueError):
        raise TaskError(f"{path} must have the columns idx,label with integer idx") from None
    if [i for i, _ in pairs] != list(range(len(pairs))) or not pairs:
        raise TaskError(f"{path}: idx must run 0..n-1 without gaps")
    labels = tuple(label for _, label in pairs)
    if len(set(labels)) != len(labels):
        raise TaskError(f"{path}: a label appears twice")
    return labels


# -------------------------------------------------------------------------------- synthetic audio


def _envelope(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Attack, a gentle decay and a release: notes start and end without clicks."""
    attack = max(1, int(rate * rng.uniform(0.005, 0.03)))
    release = max(1, int(rate * rng.uniform(0.02, 0.06)))
    env = np.exp(-np.arange(n) / rate * rng.uniform(0.0, 3.0))
    env[:attack] *= np.linspace(0.0, 1.0, attack, endpoint=False)
    env[n - min(release, n) :] *= np.linspace(1.0, 0.0, min(release, n))
    return env


# formant regions (Hz) of the timbres each split draws from: the validation and test timbres are
# never heard in training (as NSynth's test instruments), so a representation must know pitch
# apart from timbre to score -- the spectral shape alone does not carry over
TRAIN_FORMANTS = (150.0, 900.0)
HELD_OUT_FORMANTS = (1000.0, 5000.0)
ALL_FORMANTS = (150.0, 5000.0)  # k-fold tasks: every fold alike


def random_timbre(f0: float, count: int, rng: np.random.Generator, formants: tuple[float, float] = (150.0, 5000.0)) -> np.ndarray:
    """Amplitudes of harmonics 1..count: random per harmonic (log-normal), a random spectral
    tilt, and one to three resonances (formants) centred in `formants` Hz."""
    k = np.arange(1, count + 1)
    weights = np.exp(rng.normal(0.0, 1.0, count)) / k ** rng.uniform(0.0, 1.5)
    envelope = np.full(count, 0.05)
    for _ in range(int(rng.integers(1, 4))):
        centre = math.exp(rng.uniform(math.log(formants[0]), math.log(formants[1])))
        width = centre * rng.uniform(0.1, 0.4)
        envelope += np.exp(-0.5 * ((k * f0 - centre) / width) ** 2)
    return weights * envelope


def harmonic_tone(f0: float, n: int, rate: int, rng: np.random.Generator, formants: tuple[float, float] = (150.0, 5000.0)) -> np.ndarray:
    """A harmonic tone of a random timbre (see `random_timbre`) with random phases and a note
    envelope, band-limited below 0.45 * rate."""
    t = np.arange(n) / rate
    count = max(1, int(0.45 * rate / f0))
    x = np.zeros(n)
    for harmonic, weight in enumerate(random_timbre(f0, count, rng, formants), start=1):
        x += weight * np.sin(2 * np.pi * f0 * harmonic * t + rng.uniform(0, 2 * np.pi))
    return x / (np.abs(x).max() + 1e-9) * _envelope(n, rate, rng)


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectrum 1/f**exponent (0 white, 1 pink, 2 brown), unit peak."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=float)
    f[0] = 1.0
    x = np.fft.irfft(spectrum / f ** (exponent / 2), n)
    x -= x.mean()
    return x / (np.abs(x).max() + 1e-9)


def chirp(n: int, rate: int, f0: float, f1: float, rng: np.random.Generator) -> np.ndarray:
    """An exponential sweep from f0 to f1 Hz over the n samples."""
    seconds = n / rate
    t = np.arange(n) / rate
    ratio = math.log(f1 / f0) / seconds
    phase = 2 * np.pi * f0 * (np.exp(ratio * t) - 1) / ratio
    return np.sin(phase + rng.uniform(0, 2 * np.pi)) * _envelope(n, rate, rng)


def click_train(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Short decaying clicks at a random rate (8..40 per second)."""
    x = np.zeros(n)
    period = int(rate / rng.uniform(8, 40))
    decay = np.exp(-np.arange(int(0.004 * rate)) / (0.0008 * rate))
    for start in range(int(rng.uniform(0, period)), n, period):
        end = min(n, start + len(decay))
        x[start:end] += decay[: end - start] * rng.choice([-1.0, 1.0])
    return x


def am_tone(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A sine carrier (300..3000 Hz) amplitude-modulated at 3..15 Hz."""
    t = np.arange(n) / rate
    carrier = np.sin(2 * np.pi * rng.uniform(300, 3000) * t + rng.uniform(0, 2 * np.pi))
    modulation = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 15) * t + rng.uniform(0, 2 * np.pi)))
    return carrier * modulation * _envelope(n, rate, rng)


SCENE_SOURCES: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "white_noise": lambda n, rate, rng: colored_noise(n, 0.0, rng),
    "pink_noise": lambda n, rate, rng: colored_noise(n, 1.0, rng),
    "brown_noise": lambda n, rate, rng: colored_noise(n, 2.0, rng),
    "chirp_up": lambda n, rate, rng: chirp(n, rate, rng.uniform(100, 400), rng.uniform(2000, 0.4 * rate), rng),
    "chirp_down": lambda n, rate, rng: chirp(n, rate, rng.uniform(2000, 0.4 * rate), rng.uniform(100, 400), rng),
    "click_train": click_train,
    "am_tone": am_tone,
}


def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _finish(x: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float] = (20.0, 40.0)) -> np.ndarray:
    """Add a little white noise at a random SNR and scale to a random peak below full scale."""
    power = float(np.mean(x**2)) or 1e-6
    snr = rng.uniform(*snr_db)
    x = x + rng.standard_normal(len(x)) * math.sqrt(power / 10 ** (snr / 10))
    return x / (np.abs(x).max() + 1e-9) * rng.uniform(0.3, 0.9)


# --------------------------------------------------------------------------------- synthetic tasks


@dataclass(frozen=True)
class _Size:
    """Examples per class (scene kinds) or clips (event) for train, valid, test."""

    train: int
    valid: int
    test: int
    pitch_range: tuple[int, int] = (48, 71)  # MIDI, inclusive


SIZES: dict[str, _Size] = {
    "tiny": _Size(3, 1, 2, (48, 71)),
    "small": _Size(4, 2, 3, (36, 71)),
    "medium": _Size(8, 3, 4, (36, 83)),
}
EVENT_CLIPS: dict[str, tuple[int, int, int]] = {"tiny": (12, 4, 4), "small": (24, 8, 8), "medium": (60, 16, 16)}
KINDS = ("pitch", "scene", "scene-multilabel", "event")


@dataclass
class _Example:
    name: str
    audio_by_rate: dict[int, np.ndarray]
    target: Any


@dataclass
class _Spec:
    metadata: dict[str, Any]
    labels: list[str]
    make: Callable[[int, str, int, np.random.Generator], tuple[np.ndarray, Any]]  # (index, split, rate, rng) -> (audio, target)
    counts: dict[str, int] = field(default_factory=dict)  # examples per split


def _pitch_spec(size: _Size, seconds: float) -> _Spec:
    low, high = size.pitch_range
    pitches = list(range(low, high + 1))

    def make(index: int, split: str, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
        pitch = pitches[index % len(pitches)]
        f0 = midi_to_hz(pitch + rng.uniform(-0.15, 0.15))  # within +-15 cents of the note
        formants = {"train": TRAIN_FORMANTS, "valid": HELD_OUT_FORMANTS, "test": HELD_OUT_FORMANTS}.get(split, ALL_FORMANTS)
        return _finish(harmonic_tone(f0, int(seconds * rate), rate, rng, formants), rng), [str(pitch)]

    meta = {
        "embedding_type": "scene",
        "prediction_type": "multiclass",
        "sample_duration": seconds,
        "evaluation": ["pitch_acc", "chroma_acc"],
        "pitch_range_min": low,
        "pitch_range_max": high,
    }
    per_class = len(pitches)
    return _Spec(meta, [str(p) for p in pitches], make, {"train": size.train * per_class, "valid": size.valid * per_class, "test": size.test * per_class})


def _scene_spec(size: _Size, seconds: float, multilabel: bool) -> _Spec:
    names = list(SCENE_SOURCES)

    def make(index: int, split: str, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
        n = int(seconds * rate)
        if multilabel:
            count = int(rng.integers(1, 4))
            chosen = sorted(rng.choice(len(names), size=count, replace=False).tolist())
            if index % len(names) not in chosen:  # every label appears regularly
                chosen[0] = index % len(names)
            chosen = sorted(set(chosen))
        else:
            chosen = [index % len(names)]
        x = np.zeros(n)
        for choice in chosen:
            x += SCENE_SOURCES[names[choice]](n, rate, rng) * rng.uniform(0.5, 1.0)
        return _finish(x, rng), [names[c] for c in chosen]

    meta = {
        "embedding_type": "scene",
        "prediction_type": "multilabel" if multilabel else "multiclass",
        "sample_duration": seconds,
        "evaluation": (["mAP", "d_prime", "aucroc"] if multilabel else ["top1_acc", "mAP", "d_prime", "aucroc"]),
    }
    k = len(names)
    return _Spec(meta, names, make, {"train": size.train * k, "valid": size.valid * k, "test": size.test * k})


EVENT_LABELS = ("tone", "burst", "chirp")


def _event_spec(clips: tuple[int, int, int], seconds: float) -> _Spec:
    def make(index: int, split: str, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
        n = int(seconds * rate)
        x = colored_noise(n, 1.0, rng) * 0.01
        events = []
        cursor = rng.uniform(0.05, 0.3)
        while True:
            length = rng.uniform(0.2, 0.6)
            if cursor + length > seconds - 0.05:
                break
            label = EVENT_LABELS[int(rng.integers(len(EVENT_LABELS)))]
            start, count = int(round(cursor * rate)), int(round(length * rate))
            if label == "tone":
                piece = harmonic_tone(midi_to_hz(rng.uniform(48, 80)), count, rate, rng)
            elif label == "burst":
                piece = colored_noise(count, rng.uniform(0.0, 1.0), rng) * _envelope(count, rate, rng)
            else:
                piece = chirp(count, rate, rng.uniform(200, 500), rng.uniform(2000, 0.4 * rate), rng)
            x[start : start + count] += piece * rng.uniform(0.4, 1.0)
            events.append({"label": label, "start": round(start / rate * 1000, 3), "end": round((start + count) / rate * 1000, 3)})
            cursor += length + rng.uniform(0.1, 0.5)
        x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.3, 0.9)
        return x, events

    meta = {
        "embedding_type": "event",
        "prediction_type": "multilabel",
        "sample_duration": seconds,
        "evaluation": ["event_onset_200ms_fms", "event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"],
        "evaluation_params": {"event_postprocessing_grid": {"median_filter_ms": [0, 60, 150], "min_duration": [0, 60, 120]}},
    }
    return _Spec(meta, list(EVENT_LABELS), make, dict(zip(("train", "valid", "test"), clips)))


def make_task(
    kind: str,
    out_dir: str | Path,
    *,
    size: str = "small",
    seed: int = 0,
    sample_rates: Sequence[int] = (16000,),
    folds: int = 0,
    overwrite: bool = False,
) -> Task:
    """Write a synthetic task of `kind` (pitch, scene, scene-multilabel, event) in the HEAR layout.

    `size`: tiny | small (the default; what the tests use) | medium. `folds` > 0 writes that many
    folds (split_mode new_split_kfold) holding the same examples instead of train/valid/test.
    Audio is synthesised at the highest of `sample_rates` and resampled for the others. The same
    arguments always give the same files.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown task kind {kind!r}", hint=f"kinds: {', '.join(KINDS)}")
    if size not in SIZES:
        raise ConfigError(f"unknown task size {size!r}", hint=f"sizes: {', '.join(SIZES)}")
    if folds and folds < 3:
        raise ConfigError("a k-fold task needs at least 3 folds")
    rates = sorted({int(r) for r in sample_rates}, reverse=True)
    if not rates or rates[-1] < 8000:
        raise ConfigError("sample rates must be at least 8000 Hz")
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} exists and is not empty", hint="choose another folder or pass --overwrite")
        if not (out / "task_metadata.json").is_file():
            raise ConfigError(f"{out} is not a task folder; refusing to overwrite it", hint="choose an empty or new folder")
        shutil.rmtree(out)
    if kind == "pitch":
        spec = _pitch_spec(SIZES[size], 0.2)
    elif kind in ("scene", "scene-multilabel"):
        spec = _scene_spec(SIZES[size], 0.5, multilabel=kind == "scene-multilabel")
    else:
        spec = _event_spec(EVENT_CLIPS[size], 3.0)

    total = sum(spec.counts.values())
    if folds:
        split_names = [f"fold{i:02d}" for i in range(folds)]
        assignment = [split_names[i % folds] for i in range(total)]
    else:
        split_names = ["train", "valid", "test"]
        assignment = [s for s in split_names for _ in range(spec.counts[s])]
    examples: dict[str, list[_Example]] = {s: [] for s in split_names}
    offsets = {"train": 0, "valid": 1, "test": 2}
    for index in range(total):
        split = assignment[index]
        # one random stream per example, so every example is reproducible on its own
        stream = np.random.default_rng([seed, offsets.get(split, 3), index])
        audio, target = spec.make(index, split, rates[0], stream)
        by_rate = {rates[0]: audio.astype(np.float32)}
        if len(rates) > 1:
            from embedzoo.audio import resample

            for rate in rates[1:]:
                by_rate[rate] = resample(by_rate[rates[0]], rates[0], rate)
        examples[split].append(_Example(f"{kind}-{split}-{index:05d}.wav", by_rate, target))

    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    for split, items in examples.items():
        for item in items:
            for rate, audio in item.audio_by_rate.items():
                folder = out / str(rate) / split
                folder.mkdir(parents=True, exist_ok=True)
                sf.write(folder / item.name, np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16")
        targets = {item.name: item.target for item in items}
        (out / f"{split}.json").write_text(json.dumps(targets, indent=1) + "\n", encoding="utf-8")
    with open(out / "labelvocabulary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["idx", "label"])
        writer.writerows(enumerate(spec.labels))
    metadata = {
        "task_name": f"embedzoo_synth_{kind.replace('-', '_')}",
        "version": f"embedzoo-{size}-seed{seed}",
        **spec.metadata,
        "split_mode": "new_split_kfold" if folds else "trainvaltest",
        "splits": split_names,
        "sample_rates": sorted(rates),
        "embedzoo_synthetic": {"kind": kind, "size": size, "seed": seed, "folds": folds},
    }
    (out / "task_metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return load_task(out)


def describe(task: Task) -> str:
    """One line for the CLI: name, type, labels, splits and file counts."""
    counts = ", ".join(f"{s} {len(task.targets(s))}" for s in task.splits)
    return (
        f"{task.name}: {task.embedding_type} / {task.prediction_type}, {len(task.labels)} labels, "
        f"{counts} files, audio at {', '.join(str(r) for r in task.sample_rates())} Hz, metrics {', '.join(task.evaluation)}"
    )
