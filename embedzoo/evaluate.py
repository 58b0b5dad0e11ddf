"""`embedzoo eval` and `embedzoo sweep`: frozen model -> cached embeddings -> shallow MLP -> scores.

Embeddings come from the core pipeline (`embed_files`) and are cached in the embedzoo cache:

    <EMBEDZOO_CACHE>/embeddings/<model id>/<key>/scene/<audio sha256>.embedding.npy
                                               /timestamp/<audio sha256>.embedding.npy, .timestamps.npy
                                               /embedzoo.json       (the pipeline's manifest)

`<key>` hashes the model id, the weights' identity (the source, the original's sha256 and the
converted safetensors' sha256; a weights file's own sha256; or the seed of random weights), the
plugin and embedzoo versions, the kind (scene or timestamp) and the resolved knobs that shape that
kind (scene embeddings do not depend on `hop_ms`, `window_ms` or `levels`, so a sweep over those
reuses them). Files are named by the sha256 of their bytes: the same clip in another task, split or
copy of a task is computed once; a regenerated task with other audio never reuses stale vectors.

A sweep writes, under its output folder, one result JSON per grid point (`runs/`), `results.csv`
with a row per point, and `score_vs_<knob>.png` for every knob that takes more than one value;
a re-run skips the points already in `runs/`, so an interrupted sweep resumes.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import itertools
import json
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from embedzoo.cache import cache_root, embedzoo_version, read_meta, sha256_file
from embedzoo.errors import ConfigError, EmbedzooError
from embedzoo.metrics import get_scores
from embedzoo.tasks import Task, TaskError, load_task

if TYPE_CHECKING:
    from embedzoo.downstream import SplitData
    from embedzoo.extractor import Extractor

SCENE_FROM = ("scene", "timestamp")
# knobs that never change a scene embedding (they shape timestamp embeddings only)
_TIMESTAMP_ONLY = ("hop_ms", "window_ms", "levels")
# knobs that change no result at all (batching) -- left out of cache keys and reports
_NOT_RESULTS = ("batch_size", "batch_seconds")
Progress = Callable[[str, int, int], None]  # (stage, done, total)


class EvalError(EmbedzooError):
    """An evaluation cannot run (missing files, a task the model cannot embed, ...)."""


# ------------------------------------------------------------------------------------------ model


@dataclass
class ModelHandle:
    """An extractor ready to embed, with a name for reports and the identity of its weights."""

    label: str
    extractor: "Extractor"
    weights_id: str


def split_weights(spec: str) -> tuple[str, str | None]:
    """'crepe-tiny?weights=random&hop_ms=50' -> ('crepe-tiny?hop_ms=50', 'random')."""
    name, _, query = spec.partition("?")
    weights, kept = None, []
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key.strip() == "weights":
            weights = value.strip()
        else:
            kept.append(item)
    return (name + ("?" + "&".join(kept) if kept else "")), weights


def _plugin_version(card: Any) -> str:
    try:
        return importlib.metadata.version(card.plugin)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return ""


def open_model(
    spec: str,
    *,
    weights: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    offline: bool | None = None,
    mirror: str | Path | None = None,
    cache_dir: str | Path | None = None,
    knobs: dict[str, Any] | None = None,
) -> ModelHandle:
    """Load a model for evaluation. `weights`: None (the catalog's, pulled once), a file, or
    'random' (the architecture with its initial weights, drawn with `seed`: the control that
    shows what the trained weights are worth). A `weights=` entry in the spec works too."""
    import torch

    from embedzoo.loader import load

    name_spec, spec_weights = split_weights(spec)
    weights = weights if weights is not None else spec_weights
    if weights is not None and str(weights) == "random":
        extractor = load(name_spec, weights="random", device=device, seed=seed, **(knobs or {}))
        weights_id = f"random:seed={seed}:torch={torch.__version__}"
    else:
        extractor = load(name_spec, weights=weights, device=device, offline=offline, mirror=mirror, cache_dir=cache_dir, **(knobs or {}))
        weights_id = f"file:sha256={sha256_file(Path(weights).expanduser())}" if weights is not None else _catalog_weights_id(extractor.card, cache_dir)
    return ModelHandle(spec, extractor, weights_id)


def _catalog_weights_id(card: Any, cache_dir: str | Path | None = None) -> str:
    """The pulled weights: where they came from (with the hf revision or url), the original's
    sha256 (pinned by the card or recorded at first download) and the conversion's sha256."""
    from embedzoo import hub

    meta = read_meta(hub.converted_path(card, cache_dir)) or {}
    if not meta.get("safetensors_sha256"):
        raise EvalError(f"the converted weights of {card.id} have no meta.json", hint=f"run `embedzoo pull --force {card.id}`")
    return f"{meta.get('source')}:original={meta.get('original_sha256')}:converted={meta['safetensors_sha256']}"


def knob_record(extractor: "Extractor") -> dict[str, Any]:
    """The resolved knobs as plain JSON values (batching left out)."""
    out = {}
    for key, value in dataclasses.asdict(extractor.knobs).items():
        if key not in _NOT_RESULTS:
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _digest(data: Any, length: int = 16) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]


def embedding_key(handle: ModelHandle, kind: str) -> str:
    """The cache folder name of (model, weights, versions, kind, knobs that shape this kind)."""
    knobs = knob_record(handle.extractor)
    if kind == "scene":
        knobs = {k: v for k, v in knobs.items() if k not in _TIMESTAMP_ONLY}
    card = handle.extractor.card
    return _digest(
        {"model": card.id, "weights": handle.weights_id, "plugin": _plugin_version(card), "embedzoo": embedzoo_version(), "kind": kind, "knobs": knobs}
    )


@contextmanager
def _scene_settings(extractor: "Extractor") -> Iterator[None]:
    """While computing scene embeddings, present the knobs they do not depend on at the card's
    defaults, so one cached folder (and its pipeline manifest) serves every hop and window."""
    from embedzoo.knobs import resolve_knobs

    saved = extractor.knobs
    base = resolve_knobs(extractor.card)
    extractor.knobs = dataclasses.replace(saved, hop_ms=base.hop_ms, window_ms=base.window_ms, levels=())
    try:
        yield
    finally:
        extractor.knobs = saved


# ------------------------------------------------------------------------------------- embeddings


@dataclass
class Embedded:
    """A task's embeddings: (split, file) -> (D,) scene vector or ((T, D) vectors, (T,) ms)."""

    vectors: dict[tuple[str, str], Any]
    size: int
    computed: int
    cached: int
    seconds: float


def embed_task(
    handle: ModelHandle,
    task: Task,
    kind: str,
    *,
    cache_dir: str | Path | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> Embedded:
    """Embeddings of every file of the task, computed through the pipeline unless cached."""
    from embedzoo.audio import InputFile
    from embedzoo.pipeline import embed_files

    start = time.perf_counter()
    extractor = handle.extractor
    rate = task.audio_rate(extractor.card.sample_rate)
    entries = []
    for split in task.splits:
        for name in task.targets(split):
            path = task.audio_path(rate, split, name)
            if not path.is_file():
                raise TaskError(f"task {task.path}: audio file {path} is missing", hint=f"{split}.json lists {name}")
            entries.append((split, name, path, sha256_file(path)))
    unique = {digest: InputFile(path, digest) for _, _, path, digest in entries}
    out_dir = cache_root(cache_dir) / "embeddings" / extractor.card.id / embedding_key(handle, kind)
    total = len(unique)
    done = 0

    def on_progress(name: str, seconds: float) -> None:
        nonlocal done
        done += 1
        if progress:
            progress("embedding", done, total)

    scene = kind == "scene"
    with _scene_settings(extractor) if scene else nullcontext():
        summary = embed_files(
            extractor, list(unique.values()), out_dir, scene=scene, timestamp=not scene, fmt="npy", workers=workers, weights=handle.weights_id, on_progress=on_progress
        )
    if summary.failed:
        listed = "; ".join(f"{next(e[0] + '/' + e[1] for e in entries if e[3] == f.name)}: {f.error}" for f in summary.failed[:5])
        raise EvalError(f"{len(summary.failed)} file(s) of task {task.name} could not be embedded: {listed}", hint=f"see {out_dir / 'errors.jsonl'}")
    vectors: dict[tuple[str, str], Any] = {}
    for split, name, _, digest in entries:
        if scene:
            vectors[(split, name)] = np.load(out_dir / "scene" / f"{digest}.embedding.npy")
        else:
            vectors[(split, name)] = (
                np.load(out_dir / "timestamp" / f"{digest}.embedding.npy"),
                np.load(out_dir / "timestamp" / f"{digest}.timestamps.npy"),
            )
    first = next(iter(vectors.values()))
    size = int(first.shape[-1] if scene else first[0].shape[-1])
    return Embedded(vectors, size, summary.done, summary.skipped, time.perf_counter() - start)


def _multi_hot(labels: Sequence[str], index: dict[str, int]) -> np.ndarray:
    y = np.zeros(len(index), dtype=np.float32)
    for label in labels:
        y[index[label]] = 1.0
    return y


def split_data(task: Task, embedded: Embedded, splits: Sequence[str], scene_from: str) -> "SplitData":
    """Rows and targets of the named splits (concatenated, as HEAR joins training folds)."""
    from embedzoo.downstream import SplitData

    index = task.label_index
    xs, ys = [], []
    if task.embedding_type == "scene":
        for split in splits:
            for name, labels in task.targets(split).items():
                value = embedded.vectors[(split, name)]
                xs.append(value if scene_from == "scene" else value[0].mean(axis=0))
                ys.append(_multi_hot(labels, index))
        return SplitData(np.stack(xs).astype(np.float32), np.stack(ys))
    files, stamps, events = [], [], {}
    for split in splits:
        for name, file_events in task.targets(split).items():
            vectors, timestamps = embedded.vectors[(split, name)]
            key = f"{split}/{name}"
            events[key] = file_events
            for vector, t in zip(vectors, timestamps):
                # a label is on at t when start <= t <= end (HEAR: an interval tree over [start, end + 1e-4))
                active = [e["label"] for e in file_events if e["start"] <= t < e["end"] + 1e-4]
                xs.append(vector)
                ys.append(_multi_hot(active, index))
                files.append(key)
                stamps.append(float(t))
    return SplitData(np.stack(xs).astype(np.float32), np.stack(ys), files, np.asarray(stamps), events)


# ------------------------------------------------------------------------------------------- eval


@dataclass(frozen=True)
class EvalSettings:
    """How the downstream part runs (the embedding part is the model's knobs)."""

    seed: int = 0
    grid_points: int = 8
    max_epochs: int | None = None
    patience: int | None = None
    hidden_dim: int | None = None
    scene_from: str = "scene"
    standardize: bool = False

    def fixed(self) -> dict[str, Any]:
        """Hyper-parameters fixed for every grid point (None: the HEAR grid's value)."""
        return {"max_epochs": self.max_epochs, "patience": self.patience, "hidden_dim": self.hidden_dim}


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null (an undefined score), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def evaluate(
    model: str | ModelHandle,
    task: str | Path | Task,
    *,
    settings: EvalSettings = EvalSettings(),
    weights: str | Path | None = None,
    knobs: dict[str, Any] | None = None,
    device: str = "auto",
    workers: int = 1,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    mirror: str | Path | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate one model (with its current knobs) on one task, HEAR style; returns the results
    dict (written as JSON to `out` if given). See the module doc for the embedding cache."""
    from embedzoo.downstream import Scorer, postprocessing_grid, run_downstream

    started = time.perf_counter()
    task = task if isinstance(task, Task) else load_task(task)
    if settings.scene_from not in SCENE_FROM:
        raise ConfigError(f"scene_from must be one of {SCENE_FROM}, not {settings.scene_from!r}")
    scores, unknown = get_scores(task.evaluation)
    if not scores:
        raise EvalError(f"task {task.name} asks for metrics embedzoo does not compute: {unknown}", hint="known: see embedzoo.metrics.SCORES")
    if scores[0].kind != ("event" if task.embedding_type == "event" else "scene"):
        raise EvalError(f"task {task.name}: the primary metric {scores[0].name} does not fit a {task.embedding_type} task")
    unknown += [s.name for s in scores if s.kind != scores[0].kind]
    scores = [s for s in scores if s.kind == scores[0].kind]
    handle = model if isinstance(model, ModelHandle) else open_model(model, weights=weights, device=device, seed=settings.seed, offline=offline, mirror=mirror, cache_dir=cache_dir, knobs=knobs)
    if isinstance(model, ModelHandle) and knobs:
        handle.extractor.configure(**knobs)
    kind = "timestamp" if task.embedding_type == "event" or settings.scene_from == "timestamp" else "scene"
    embedded = embed_task(handle, task, kind, cache_dir=cache_dir, workers=workers, progress=progress)

    data_splits = task.data_splits()
    splits = [tuple(split_data(task, embedded, s[part], settings.scene_from) for part in ("train", "valid", "test")) for s in data_splits]
    scorer = Scorer(scores, task.labels, task.prediction_type, postprocessing_grid(task.postprocessing_grid) if task.embedding_type == "event" else [])
    def on_step(done: int, total: int) -> None:
        if progress:
            progress("training", done, total)

    device_type = handle.extractor.device.type
    outcome = run_downstream(
        splits, scorer, grid_points=settings.grid_points, seed=settings.seed, device="cuda" if device_type == "cuda" else "cpu", standardize=settings.standardize, on_step=on_step, **settings.fixed()
    )
    names = list(outcome.splits[0]["scores"])
    per_split = [s["scores"] for s in outcome.splits]
    mean, std = {}, {}
    with np.errstate(invalid="ignore"):  # NaN (undefined) folds are left out; inf (d' of a perfect fold) is kept
        for n in names:
            values = [s[n] for s in per_split if not math.isnan(s[n])]
            mean[n] = float(np.mean(values)) if values else float("nan")
            std[n] = float(np.std(values)) if values else float("nan")
    result: dict[str, Any] = {
        "embedzoo": embedzoo_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "model": handle.label,
        "model_id": handle.extractor.card.id,
        "weights": handle.weights_id,
        "plugin_version": _plugin_version(handle.extractor.card),
        "knobs": knob_record(handle.extractor),
        "scene_from": settings.scene_from if task.embedding_type == "scene" else None,
        "embedding_size": embedded.size,
        "task": {
            "name": task.name,
            "path": str(task.path.resolve()),
            "version": task.metadata.get("version"),
            "embedding_type": task.embedding_type,
            "prediction_type": task.prediction_type,
            "labels": len(task.labels),
            "metrics": [s.name for s in scores],
            "metrics_not_computed": unknown,
            "split_mode": task.split_mode,
        },
        "primary_metric": scores[0].name,
        "primary_score": mean[scores[0].name],
        "scores": mean,
        "scores_std": std if len(per_split) > 1 else None,
        "splits": [{**split, **s} for split, s in zip(data_splits, outcome.splits)],
        "hparams": dataclasses.asdict(outcome.hparams),
        "postprocessing": outcome.postprocessing,
        "grid": outcome.grid,
        "seed": settings.seed,
        "grid_points": settings.grid_points,
        "standardize": settings.standardize,
        "timings": {
            "embedding_seconds": round(embedded.seconds, 3),
            "files_computed": embedded.computed,
            "files_cached": embedded.cached,
            "downstream_seconds": round(outcome.seconds, 3),
            "total_seconds": round(time.perf_counter() - started, 3),
        },
    }
    if out is not None:
        write_json(Path(out), result)
    return result


def default_result_path(result: dict[str, Any]) -> Path:
    """embedzoo-results/<task>/<model>-<hash of what was evaluated and how>.json (in the working folder)."""
    key = _digest([result["weights"], result["knobs"], result["scene_from"], result["seed"], result["grid_points"], result["standardize"], result["task"]["path"]], 10)
    return Path("embedzoo-results") / _slug(result["task"]["name"]) / f"{_slug(result['model'])}-{key}.json"


def write_json(path: Path, data: dict[str, Any]) -> None:
    from embedzoo.pipeline import atomic_write

    text = json.dumps(finite(data), indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4f}"
    return str(value)


def result_lines(result: dict[str, Any]) -> list[str]:
    """The header of the readable report: what was evaluated, how, and how long it took."""
    knobs = result["knobs"]
    shown = {k: v for k, v in knobs.items() if v not in (None, ()) and k not in ("preset", "input_rate") and v != []}
    hp = result["hparams"]
    t = result["timings"]
    lines = [
        f"model {result['model']} ({result['weights']})",
        "knobs " + ", ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in shown.items()),
        f"task {result['task']['name']}: {result['task']['embedding_type']} / {result['task']['prediction_type']}, "
        f"{result['task']['labels']} labels, {len(result['splits'])} split(s); embedding size {result['embedding_size']}"
        + (f", scene from {result['scene_from']}" if result.get("scene_from") else ""),
        f"chosen: {hp['hidden_layers']} hidden layer(s), lr {hp['lr']:g}, {hp['initialization']}"
        + (f"; postprocessing {result['postprocessing']}" if result.get("postprocessing") else "")
        + ("; embeddings z-scored" if result.get("standardize") else "")
        + f" (best of {len(result['grid'])} grid points on the first split's validation data)",
        f"time: embeddings {t['embedding_seconds']:.1f} s ({t['files_computed']} computed, {t['files_cached']} cached), "
        f"downstream {t['downstream_seconds']:.1f} s",
    ]
    if result["task"].get("metrics_not_computed"):
        lines.append(f"not computed (unknown to embedzoo): {', '.join(result['task']['metrics_not_computed'])}")
    return lines


def result_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the scores table: metric, test mean (+- std over folds), per split."""
    splits = result["splits"]
    columns = ["metric", "test"] + ([f"test {'|'.join(s['test'])}" for s in splits] if len(splits) > 1 else [])
    rows = []
    for name, value in result["scores"].items():
        cell = _fmt(value)
        if result.get("scores_std"):
            cell += f" ± {_fmt(result['scores_std'][name])}"
        rows.append([name + (" *" if name == result["primary_metric"] else "")] + [cell] + ([_fmt(s["scores"][name]) for s in splits] if len(splits) > 1 else []))
    rows.append(["validation (primary)", _fmt(float(np.mean([s["validation_score"] for s in splits])))] + ([_fmt(s["validation_score"]) for s in splits] if len(splits) > 1 else []))
    return columns, rows


# ------------------------------------------------------------------------------------------ sweep

SWEEP_KNOBS = ("layers", "hop_ms", "window_ms", "mode")
CSV_FIXED = ["model", "layers", "hop_ms", "window_ms", "mode", "readout", "scene_from", "primary_metric", "primary_score"]


@dataclass
class SweepPoint:
    model: str
    overrides: dict[str, Any]  # the sweep's knob values at this point (None: the model's default)


def sweep_points(models: Sequence[str], grid: dict[str, Sequence[Any]]) -> list[SweepPoint]:
    """Every (model, knob values) combination, models outermost, knobs in SWEEP_KNOBS order."""
    names = [k for k in SWEEP_KNOBS if k in grid]
    values = [list(grid[k]) or [None] for k in names]
    return [SweepPoint(m, dict(zip(names, combo))) for m in models for combo in itertools.product(*values)]


def score_names(task: Task) -> list[str]:
    """Every score an evaluation of the task reports (event scores with their precision and recall)."""
    scores, _ = get_scores(task.evaluation)
    names = []
    for score in scores:
        names += [score.name] + ([f"{score.name}_precision", f"{score.name}_recall"] if score.kind == "event" else [])
    return names


def _row(result: dict[str, Any], path: Path | None, point: SweepPoint, error: str | None = None) -> dict[str, Any]:
    knobs = result.get("knobs") or {}
    row: dict[str, Any] = {
        "model": point.model,
        "layers": ",".join(knobs["layers"]) if knobs.get("layers") else (point.overrides.get("layers") or ""),
        "hop_ms": knobs.get("hop_ms", point.overrides.get("hop_ms")),
        "window_ms": knobs.get("window_ms", point.overrides.get("window_ms")),
        "mode": knobs.get("mode", point.overrides.get("mode")),
        "readout": knobs.get("readout"),
        "scene_from": result.get("scene_from"),
        "primary_metric": result.get("primary_metric"),
        "primary_score": result.get("primary_score"),
    }
    for name, value in (result.get("scores") or {}).items():
        row[name] = value
    timings = result.get("timings") or {}
    row.update(
        {
            "validation_score": float(np.mean([s["validation_score"] for s in result["splits"]])) if result.get("splits") else None,
            "embedding_size": result.get("embedding_size"),
            "hidden_layers": (result.get("hparams") or {}).get("hidden_layers"),
            "lr": (result.get("hparams") or {}).get("lr"),
            "embedding_seconds": timings.get("embedding_seconds"),
            "downstream_seconds": timings.get("downstream_seconds"),
            "weights": result.get("weights"),
            "result_file": str(path) if path else "",
            "error": error or "",
        }
    )
    return row


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from embedzoo.pipeline import atomic_write

    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v) for k, v in row.items()})

    atomic_write(path, write)


def sweep(
    models: Sequence[str | ModelHandle],
    task: str | Path | Task,
    out_dir: str | Path,
    *,
    grid: dict[str, Sequence[Any]],
    knobs: dict[str, Any] | None = None,
    settings: EvalSettings = EvalSettings(),
    device: str = "auto",
    workers: int = 1,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    mirror: str | Path | None = None,
    on_point: Callable[[int, int, SweepPoint, str], None] | None = None,
    progress: Progress | None = None,
    plot_metric: str | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every point of the grid (`layers`, `hop_ms`, `window_ms`, `mode`: lists of values)
    for every model; write runs/*.json, results.csv and the plots into `out_dir`; return the rows.

    A model is a spec (`crepe-tiny`, `crepe-tiny?weights=random`, loaded with `knobs` as its base
    settings) or a ModelHandle (its extractor's current knobs are the base).

    `on_point(index, total, point, status)` is called as each point starts ('running') and ends
    ('done', 'cached' or 'failed: ...'). Points whose knobs the model cannot honour are recorded as
    failed rows and the sweep goes on. The plots show the task's primary metric, or `plot_metric`."""
    task = task if isinstance(task, Task) else load_task(task)
    out = Path(out_dir).expanduser()
    unknown = set(grid) - set(SWEEP_KNOBS)
    if unknown:
        raise ConfigError(f"sweep knobs are {SWEEP_KNOBS}, not {sorted(unknown)}")
    if any(v is None for values in grid.values() for v in values):
        raise ConfigError("sweep values cannot be None: leave a knob out of the grid to keep the model's default")
    if plot_metric is not None and plot_metric not in score_names(task):
        raise ConfigError(f"task {task.name} has no metric {plot_metric!r} to plot", hint=f"its metrics: {', '.join(score_names(task))}")
    plotted = [k for k in SWEEP_KNOBS if len(set(map(str, grid.get(k) or [None]))) > 1]
    if plotted:
        _matplotlib()  # say what is missing before hours of work, not after
    (out / "runs").mkdir(parents=True, exist_ok=True)
    given = {m.label if isinstance(m, ModelHandle) else m: m for m in models}
    points = sweep_points(list(given), grid)
    rows: list[dict[str, Any]] = []
    handles: dict[str, ModelHandle] = {}
    for index, point in enumerate(points):
        if point.model not in handles:
            handles.clear()  # one model in memory at a time
            model = given[point.model]
            handles[point.model] = model if isinstance(model, ModelHandle) else open_model(model, device=device, seed=settings.seed, offline=offline, mirror=mirror, cache_dir=cache_dir, knobs=knobs)
        handle = handles[point.model]
        if on_point:
            on_point(index, len(points), point, "running")
        error = None
        try:
            # every point sets the same knobs (the grid's), so no earlier point's value lingers
            handle.extractor.configure(**point.overrides)
        except ConfigError as exc:
            error = exc.message
        identity = {
            "model": point.model,
            "weights": handle.weights_id,
            "knobs": point.overrides if error else knob_record(handle.extractor),
            "task": str(task.path.resolve()),
            "task_version": task.metadata.get("version"),
            "settings": dataclasses.asdict(settings),
        }
        path = out / "runs" / f"{_slug(point.model)}-{_digest(identity, 12)}.json"
        if path.is_file():
            status, result = "cached", json.loads(path.read_text(encoding="utf-8"))
        elif error:
            status, result = f"failed: {error}", {"error": error, "point": identity}
            write_json(path, result)
        else:
            status = "done"
            result = evaluate(handle, task, settings=settings, device=device, workers=workers, cache_dir=cache_dir, progress=progress)
            write_json(path, result)
        rows.append(_row({}, path, point, result["error"]) if "error" in result else _row(result, path, point))
        write_csv(out / "results.csv", rows)
        if on_point:
            on_point(index, len(points), point, status)
    write_csv(out / "results.csv", rows)
    plot_sweep(rows, out, plotted, task.name, plot_metric)
    return rows


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]


# ------------------------------------------------------------------------------------------ plots

_X_LABELS = {"layers": "layer(s)", "hop_ms": "hop (ms): time resolution", "window_ms": "window (ms): receptive field", "mode": "extraction mode"}


def _matplotlib() -> tuple[Any, Any]:
    """matplotlib's Agg canvas and Figure (no pyplot, no global state), or an error saying what to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise EmbedzooError("the sweep plots need matplotlib, which is not installed", hint="pip install 'embedzoo[eval]'") from None
    return FigureCanvasAgg, Figure


def plot_sweep(rows: list[dict[str, Any]], out_dir: Path, knobs: Sequence[str], task_name: str, metric: str | None = None) -> list[Path]:
    """score_vs_<knob>.png for each knob: one line per model, the best test score (the task's
    primary metric, or `metric`) over the other knobs."""
    if not knobs:
        return []
    FigureCanvasAgg, Figure = _matplotlib()
    column = metric or "primary_score"
    ok = [r for r in rows if not r.get("error") and isinstance(r.get(column), float) and math.isfinite(r[column])]
    metric = metric or next((r["primary_metric"] for r in ok), "score")
    paths = []
    for knob in knobs:
        fig = Figure(figsize=(5.5, 3.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        numeric = knob in ("hop_ms", "window_ms")
        values = []
        for r in ok:
            if r[knob] not in values:
                values.append(r[knob])
        if numeric:
            values = sorted(values, key=float)
        for model in dict.fromkeys(r["model"] for r in ok):
            best = {}
            for r in ok:
                if r["model"] == model:
                    best[r[knob]] = max(best.get(r[knob], -math.inf), r[column])
            xs = [v for v in values if v in best]
            positions = [float(v) for v in xs] if numeric else [values.index(v) for v in xs]
            ax.plot(positions, [best[v] for v in xs], marker="o", label=model)
        if numeric:
            floats = [float(v) for v in values]
            if floats and min(floats) > 0 and max(floats) / min(floats) >= 8:
                ax.set_xscale("log")
            ax.set_xticks(floats)
            ax.set_xticklabels([f"{v:g}" for v in floats])
        else:
            ax.set_xticks(range(len(values)))
            ax.set_xticklabels([str(v) for v in values], rotation=30 if max((len(str(v)) for v in values), default=0) > 6 else 0)
        ax.set_xlabel(_X_LABELS[knob])
        ax.set_ylabel(f"test {metric}" + (" (best over other knobs)" if len(knobs) > 1 else ""))
        ax.set_title(f"{task_name}: {metric} vs {knob}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"score_vs_{knob}.png"
        fig.savefig(path)
        paths.append(path)
    return paths
