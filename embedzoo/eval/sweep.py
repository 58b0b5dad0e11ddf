"""`embedzoo sweep`: `evaluate` over a grid of knobs for several models; a CSV and plots.

The axes are the knobs whose metadata has a `sweep_label` (`embedzoo.knobs`): layers, hop,
window and mode. Under its output folder a sweep writes one result JSON per grid point (`runs/`),
`results.csv` with a row per point, and `score_vs_<knob>.png` for every knob that takes more
than one value; a re-run skips the points already in `runs/`, so an interrupted sweep resumes.
Each point runs with its knobs on top of the model's (`ModelHandle.with_knobs`): the loaded
model itself is never reconfigured, so no point's value lingers into the next.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from embedzoo.errors import ConfigError, EmbedzooError
from embedzoo.eval.embeddings import ModelHandle, Progress, digest, open_model
from embedzoo.eval.evaluate import EvalSettings, evaluate, result_identity, slug, write_json
from embedzoo.eval.metrics import get_scores
from embedzoo.eval.tasks import Task, load_task
from embedzoo.knobs import KNOBS, SWEEP_KNOBS

__all__ = ["SWEEP_KNOBS", "SweepPoint", "sweep_points", "score_names", "write_csv", "sweep", "plot_sweep"]


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


def _axis_value(name: str, knobs: dict[str, Any], point: SweepPoint) -> Any:
    """A point's value of a sweep axis for the CSV: the resolved knob, else what the grid asked."""
    value = knobs.get(name, point.overrides.get(name))
    if KNOBS[name].kind is tuple:
        return ",".join(value) if isinstance(value, (list, tuple)) else (value or "")
    return value


def _row(result: dict[str, Any], path: Path | None, point: SweepPoint, error: str | None = None) -> dict[str, Any]:
    knobs = result.get("knobs") or {}
    row: dict[str, Any] = {
        "model": point.model,
        **{name: _axis_value(name, knobs, point) for name in SWEEP_KNOBS},
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
        if on_point:
            on_point(index, len(points), point, "running")
        error, handle = None, None
        try:
            handle = handles[point.model].with_knobs(point.overrides)
        except ConfigError as exc:
            error = exc.message
        if handle is not None:
            identity = result_identity(handle, task, settings)
        else:  # the point cannot run: its record says what was asked
            base = handles[point.model]
            identity = {"model": point.model, "weights": base.weights_id, "overrides": point.overrides, "task": task.fingerprint(base.extractor.card.sample_rate), "settings": dataclasses.asdict(settings)}
        key = digest(identity)
        path = out / "runs" / f"{slug(point.model)}-{key[:12]}.json"
        cached = _read_run(path, key)
        if cached is not None:
            status, result = "cached", cached
        elif error:
            status, result = f"failed: {error}", {"error": error, "point": identity, "identity": key}
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



def _read_run(path: Path, key: str) -> dict[str, Any] | None:
    """A point's saved result, if it is there, readable, and of exactly this identity (a file of an
    older embedzoo, or cut short, is computed again)."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("identity") == key else None


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
        numeric = KNOBS[knob].kind in (int, float)
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
        ax.set_xlabel(KNOBS[knob].sweep_label)
        ax.set_ylabel(f"test {metric}" + (" (best over other knobs)" if len(knobs) > 1 else ""))
        ax.set_title(f"{task_name}: {metric} vs {knob}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"score_vs_{knob}.png"
        fig.savefig(path)
        paths.append(path)
    return paths
