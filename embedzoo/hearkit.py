"""`embedzoo embed-task`: a model's embeddings of HEAR tasks, in the layout hear-eval-kit reads.

hear-eval-kit (`heareval` 2021.1.3) embeds tasks with `python -m heareval.embeddings.runner MODULE`
into `embeddings/<module>/<task>/` and trains and scores its shallow predictors on such a folder
with `python -m heareval.predictions.runner embeddings/<module>/<task>`. `embed_tasks` writes that
folder, file for file as heareval's `task_embeddings` does, from embedzoo's pipeline (any model
spec, batched, resumable, embeddings cached per model, weights, knobs and audio)::

    <out>/<name>/<task folder name>/
        task_metadata.json, labelvocabulary.csv, <split>.json   copies of the task's
        <split>/<file>.embedding.npy        float32: scene (D,), event (T, D)
        <split>/<file>.target-labels.json   scene: the file's labels; event: the labels on at each timestamp
        <split>/<file>.timestamps.json      event tasks: the T timestamps (ms)
        <split>.embedding-dimensions.json   [rows, D]
        <split>.embeddings.npy              the split's rows, float32, raw (what np.memmap reads, no
                                            header), files in heareval's order (random.Random(0))
        <split>.target-labels.pkl           the rows' labels
        <split>.filename-timestamps.json    event tasks: [file, timestamp] per row
        profile.embeddings.json, .done.embeddings   as heareval's runner writes them (it skips done tasks)
        embedzoo.json                       what wrote it: model, weights identity, knobs, the task's content hash

A label is on at timestamp t when start <= t < end + 0.0001 (heareval's interval tree).

`<name>` stands where heareval puts the module's name -- which is `embedzoo.hear` for every model
run through the HEAR API, so one model's task folders would replace another's. Here it is the
model spec (`--name` to choose): models and settings sit side by side. A task folder is written
under a temporary name and renamed into place once complete, so a killed run never leaves one that
heareval would train on; a re-run with the same model, weights, knobs and task skips it, and one
with other settings into the same name is refused unless `overwrite`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embedzoo.errors import ConfigError
from embedzoo.eval.embeddings import EvalError, ModelHandle, Progress, embed_task, open_model
from embedzoo.eval.tasks import Task, load_task
from embedzoo.knobs import knob_record
from embedzoo.spec import ModelSpec
from embedzoo.weights.cache import embedzoo_version

__all__ = ["DONE_FILE", "MANIFEST", "EmbedTaskError", "TaskOutput", "module_name", "labels_at", "embed_tasks", "write_layout"]

DONE_FILE = ".done.embeddings"  # heareval.embeddings.runner's marker of a finished task
MANIFEST = "embedzoo.json"
_PARTIAL = ".embedzoo-partial-"


class EmbedTaskError(EvalError):
    """A task's embeddings cannot be written where asked (another model's folder, ...)."""


@dataclass
class TaskOutput:
    """What `embed_tasks` did for one task."""

    task: str
    path: Path
    status: str  # "written" or "done already"
    rows: dict[str, int]  # split -> embeddings rows
    size: int
    seconds: float


def module_name(spec: str) -> str:
    """The folder name of a model spec where heareval puts a module's: the spec itself when it is
    a safe file name, else its safe form plus a hash of it (two specs never share a folder)."""
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in spec).lstrip(".-") or "model"
    if safe != spec or len(safe) > 80:
        safe = f"{safe[:60]}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"
    return safe


def labels_at(events: Sequence[dict[str, Any]], timestamps: Sequence[float]) -> list[list[str]]:
    """The labels on at each timestamp: start <= t < end + 0.0001, as heareval's interval tree."""
    return [[e["label"] for e in events if e["start"] <= t < e["end"] + 0.0001] for t in timestamps]


def _record(handle: ModelHandle, task: Task, kind: str) -> dict[str, Any]:
    card = handle.extractor.card
    return {
        "model": handle.label,
        "model_id": card.id,
        "weights": handle.weights_id,
        "knobs": knob_record(handle.extractor.knobs, kind),
        "kind": kind,
        "task": task.name,
        "task_fingerprint": task.fingerprint(card.sample_rate),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_partials(parent: Path, task_folder: str) -> None:
    """Remove what killed runs left of this task (their process is gone), never anything else."""
    for path in parent.glob(f"{_PARTIAL}{task_folder}-*"):
        pid = path.name.rsplit("-", 2)[-2]
        if path.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _raw_targets(task: Task, split: str) -> dict[str, Any]:
    """`<split>.json` as heareval reads it (json.load: its order, its values)."""
    return json.loads((task.path / f"{split}.json").read_text(encoding="utf-8"))


def write_layout(task: Task, vectors: dict[tuple[str, str], Any], folder: Path, final: Path, progress: Progress | None = None) -> dict[str, int]:
    """Write heareval's task folder into `folder` (to be renamed to `final`, whose path the event
    rows name, as heareval names its own); `vectors` maps (split, file) to a scene vector or to
    (embeddings, timestamps). Returns the rows per split."""
    event = task.embedding_type == "event"
    folder.mkdir(parents=True)
    for name in ("task_metadata.json", "labelvocabulary.csv"):
        shutil.copy(task.path / name, folder / name)
    prng = random.Random()
    prng.seed(0)  # heareval's: one generator for the task, shuffling each split in turn
    total = sum(len(task.targets(split)) for split in task.splits)
    written = 0
    rows: dict[str, int] = {}
    for split in task.splits:
        shutil.copy(task.path / f"{split}.json", folder / f"{split}.json")
        targets = _raw_targets(task, split)
        out = folder / split
        out.mkdir()
        labels: dict[str, Any] = {}
        stamps_of: dict[str, list[float]] = {}
        for file, target in targets.items():
            value = vectors[(split, file)]
            base = out / file
            if event:
                embeddings, timestamps = value
                stamps = stamps_of[file] = [float(t) for t in np.asarray(timestamps, dtype=np.float32)]
                np.save(f"{base}.embedding.npy", np.asarray(embeddings, dtype=np.float32))
                Path(f"{base}.timestamps.json").write_text(json.dumps(stamps), encoding="utf-8")
                labels[file] = labels_at(task.targets(split)[file], stamps)
                Path(f"{base}.target-labels.json").write_text(json.dumps(labels[file], indent=4), encoding="utf-8")
            else:
                np.save(f"{base}.embedding.npy", np.asarray(value, dtype=np.float32))
                labels[file] = target
                Path(f"{base}.target-labels.json").write_text(json.dumps(target), encoding="utf-8")
            written += 1
            if progress:
                progress("writing", written, total)
        order = list(targets)
        prng.shuffle(order)
        first = vectors[(split, order[0])] if order else None
        width = int((first[0] if event else first).shape[-1]) if first is not None else 0
        count = sum(len(vectors[(split, f)][1]) if event else 1 for f in order)
        (folder / f"{split}.embedding-dimensions.json").write_text(json.dumps((count, width)), encoding="utf-8")
        memmap = np.memmap(folder / f"{split}.embeddings.npy", dtype=np.float32, mode="w+", shape=(count, width)) if count else None
        row, row_labels, row_files = 0, [], []
        for file in order:
            value = vectors[(split, file)]
            block = np.asarray(value[0] if event else value, dtype=np.float32).reshape(-1, width)
            if memmap is not None:
                memmap[row : row + len(block)] = block
            row += len(block)
            if event:
                row_labels += labels[file]
                row_files += [(str(final / split / file), t) for t in stamps_of[file]]
            else:
                row_labels.append(labels[file])
        if memmap is not None:
            memmap.flush()
            del memmap
        else:
            (folder / f"{split}.embeddings.npy").touch()
        with open(folder / f"{split}.target-labels.pkl", "wb") as handle:
            pickle.dump(row_labels, handle)
        if event:
            (folder / f"{split}.filename-timestamps.json").write_text(json.dumps(row_files, indent=4), encoding="utf-8")
        rows[split] = count
    return rows


def embed_tasks(
    model: str | ModelHandle,
    tasks: Sequence[str | Path | Task],
    out_dir: str | Path,
    *,
    name: str | None = None,
    weights: str | Path | None = None,
    knobs: dict[str, Any] | None = None,
    device: str = "auto",
    workers: int = 1,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    mirror: str | Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    on_task: Any = None,
) -> list[TaskOutput]:
    """Write `<out_dir>/<name>/<task folder>/` in heareval's layout for every task (module doc).

    `name` defaults to `module_name` of the model spec with `weights` and `knobs` on top. Every task is checked before any work starts;
    `on_task(index, total, task_name, status)` is called as each task starts ('running') and
    ends ('written', 'done already')."""
    loaded = [t if isinstance(t, Task) else load_task(t) for t in tasks]
    if not loaded:
        raise ConfigError("no task given", hint="embedzoo embed-task MODEL TASK_DIR... -o EMB_DIR")
    folders = [t.path.name for t in loaded]
    twice = sorted({f for f in folders if folders.count(f) > 1})
    if twice:
        raise ConfigError(f"two tasks have the folder name {twice[0]}; heareval names a task's embeddings by it", hint="embed them into two --name folders, or rename one")
    handle = model if isinstance(model, ModelHandle) else open_model(model, weights=weights, device=device, seed=seed, offline=offline, mirror=mirror, cache_dir=cache_dir, knobs=knobs)
    if isinstance(model, ModelHandle) and knobs:
        handle = handle.with_knobs(knobs)
    if name is None:  # the spec with the options given on top: other knobs, another folder
        spec = handle.label if isinstance(model, ModelHandle) else str(ModelSpec.parse(model).with_weights(weights).with_knobs(**(knobs or {})))
        name = module_name(spec)
    root = Path(out_dir).expanduser() / name
    plan = []  # (task, kind, record, final folder, done already): every refusal comes before any work
    for task in loaded:
        kind = "timestamp" if task.embedding_type == "event" else "scene"
        record = _record(handle, task, kind)
        final = root / task.path.name
        done = False
        if final.exists():
            previous = _read_manifest(final)
            done = previous is not None and {k: v for k, v in previous.items() if k != "embedzoo"} == record and (final / DONE_FILE).is_file()
            if not done and not overwrite:
                what = "embeddings of other settings" if previous else "files embedzoo did not write"
                differ = sorted(k for k in record if previous and previous.get(k) != record[k])
                raise EmbedTaskError(
                    f"{final} holds {what}" + (f" ({', '.join(differ)} differ)" if differ else ""),
                    hint="pass --overwrite to replace them, or --name to write this model's next to them",
                )
        plan.append((task, kind, record, final, done))
    outputs = []
    for index, (task, kind, record, final, done) in enumerate(plan):
        start = time.perf_counter()
        if on_task:
            on_task(index, len(plan), task.name, "running")
        if done:
            dims = {s: json.loads((final / f"{s}.embedding-dimensions.json").read_text(encoding="utf-8")) for s in task.splits}
            outputs.append(TaskOutput(task.name, final, "done already", {s: d[0] for s, d in dims.items()}, dims[task.splits[0]][1], time.perf_counter() - start))
            if on_task:
                on_task(index, len(plan), task.name, "done already")
            continue
        embedded = embed_task(handle, task, kind, cache_dir=cache_dir, workers=workers, progress=progress)
        root.mkdir(parents=True, exist_ok=True)
        _clear_partials(root, task.path.name)
        partial = root / f"{_PARTIAL}{task.path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            rows = write_layout(task, embedded.vectors, partial, final, progress)
            seconds = time.perf_counter() - start
            (partial / "profile.embeddings.json").write_text(
                json.dumps({"time_elapsed": seconds, "gpu_max_mem": None, "gpu_device_name": None}, indent=4), encoding="utf-8"
            )
            (partial / MANIFEST).write_text(json.dumps({"embedzoo": embedzoo_version(), **record}, indent=2) + "\n", encoding="utf-8")
            (partial / DONE_FILE).touch()
            _swap_into_place(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        outputs.append(TaskOutput(task.name, final, "written", rows, embedded.size, time.perf_counter() - start))
        if on_task:
            on_task(index, len(plan), task.name, "written")
    return outputs


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _swap_into_place(partial: Path, final: Path) -> None:
    """Rename the finished folder to its name; an old one (overwrite) goes only once the new one is there."""
    if not final.exists():
        os.replace(partial, final)
        return
    old = final.with_name(f"{_PARTIAL}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)
