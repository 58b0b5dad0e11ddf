"""`embedzoo eval`: a frozen model's cached embeddings of a task -> HEAR's shallow MLP -> scores.

Embeddings come from `embedzoo.eval.embeddings` (the pipeline, cached per model, weights, knobs and
file); the downstream protocol is `embedzoo.eval.downstream`, the scores `embedzoo.eval.metrics`.
`evaluate` returns (and writes) one results dict: what was evaluated and how, the scores on the
test split(s), the chosen hyper-parameters and the timings; `result_lines` and `result_table` are
its readable report.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from embedzoo.errors import ConfigError
from embedzoo.eval.embeddings import EvalError, Embedded, ModelHandle, Progress, card_digest, digest, embed_task, open_model, plugin_version
from embedzoo.eval.metrics import get_scores
from embedzoo.eval.tasks import Task, load_task
from embedzoo.knobs import knob_record
from embedzoo.weights.cache import embedzoo_version

if TYPE_CHECKING:
    from embedzoo.eval.downstream import SplitData

__all__ = [
    "SCENE_FROM", "EvalSettings", "result_identity", "evaluate", "split_data", "finite", "default_result_path", "write_json",
    "result_lines", "result_table", "slug",
]  # fmt: skip

SCENE_FROM = ("scene", "timestamp")


def _multi_hot(labels: Sequence[str], index: dict[str, int]) -> np.ndarray:
    y = np.zeros(len(index), dtype=np.float32)
    for label in labels:
        y[index[label]] = 1.0
    return y


def split_data(task: Task, embedded: Embedded, splits: Sequence[str], scene_from: str) -> "SplitData":
    """Rows and targets of the named splits (concatenated, as HEAR joins training folds)."""
    from embedzoo.eval.downstream import SplitData

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


def result_identity(handle: ModelHandle, task: Task, settings: EvalSettings) -> dict[str, Any]:
    """Everything a result depends on: the model (card, weights, versions, resolved knobs), the
    task's content (`Task.fingerprint`), every downstream setting and the protocol they resolve
    to (the grid points drawn, the event postprocessing grid), and the device the MLPs train on.
    A sweep's cached point and eval's default results file are keyed by it, so changing any of
    these computes anew instead of returning another setting's scores."""
    from embedzoo.eval.downstream import PARAM_GRID, sample_grid

    card = handle.extractor.card
    points = sample_grid(settings.grid_points, settings.seed, **settings.fixed())
    return {
        "model": card.id,
        "card": card_digest(card),
        "weights": handle.weights_id,
        "plugin": plugin_version(card),
        "embedzoo": embedzoo_version(),
        "knobs": knob_record(handle.extractor.knobs),
        "task": task.fingerprint(card.sample_rate),
        "settings": dataclasses.asdict(settings),
        "grid": PARAM_GRID,
        "grid_points": [dataclasses.asdict(p) for p in points],
        "postprocessing_grid": task.postprocessing_grid if task.embedding_type == "event" else None,
        "device": "cuda" if handle.extractor.device.type == "cuda" else "cpu",
    }


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
    dict (written as JSON to `out` if given). `embedzoo.eval.embeddings` says what is cached."""
    from embedzoo.eval.downstream import Scorer, postprocessing_grid, run_downstream

    started = time.perf_counter()
    task = task if isinstance(task, Task) else load_task(task)
    if settings.scene_from not in SCENE_FROM:
        raise ConfigError(f"scene_from must be one of {SCENE_FROM}, not {settings.scene_from!r}")
    scores, unknown = get_scores(task.evaluation)
    if not scores:
        raise EvalError(f"task {task.name} asks for metrics embedzoo does not compute: {unknown}", hint="known: see embedzoo.eval.metrics.SCORES")
    if scores[0].kind != ("event" if task.embedding_type == "event" else "scene"):
        raise EvalError(f"task {task.name}: the primary metric {scores[0].name} does not fit a {task.embedding_type} task")
    unknown += [s.name for s in scores if s.kind != scores[0].kind]
    scores = [s for s in scores if s.kind == scores[0].kind]
    handle = model if isinstance(model, ModelHandle) else open_model(model, weights=weights, device=device, seed=settings.seed, offline=offline, mirror=mirror, cache_dir=cache_dir, knobs=knobs)
    if isinstance(model, ModelHandle) and knobs:
        handle = handle.with_knobs(knobs)
    kind = "timestamp" if task.embedding_type == "event" or settings.scene_from == "timestamp" else "scene"
    identity = result_identity(handle, task, settings)
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
        "plugin_version": plugin_version(handle.extractor.card),
        "knobs": knob_record(handle.extractor.knobs),
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
        "max_epochs": settings.max_epochs,
        "patience": settings.patience,
        "hidden_dim": settings.hidden_dim,
        "standardize": settings.standardize,
        "device": identity["device"],
        "identity": digest(identity),
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
    """embedzoo-results/<task>/<model>-<its result identity>.json (in the working folder): runs
    that differ in any setting (`result_identity`) never overwrite each other's results."""
    return Path("embedzoo-results") / slug(result["task"]["name"]) / f"{slug(result['model'])}-{result['identity'][:12]}.json"


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


def slug(text: str) -> str:
    """A file-name-safe form of a model spec or task name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]
