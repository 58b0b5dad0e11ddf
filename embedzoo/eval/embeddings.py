"""A frozen model's embeddings of a task's files, computed once through the pipeline and cached:

    <EMBEDZOO_CACHE>/embeddings/<model id>/<key>/scene/<audio sha256>.embedding.npy
                                               /timestamp/<audio sha256>.embedding.npy, .timestamps.npy
                                               /embedzoo.json       (the pipeline's manifest)

`<key>` hashes the model id, its card (`card_digest`), the weights' identity
(`embedzoo.weights.weights_identity`: the source, the original's sha256 and the converted
safetensors' sha256; a weights file's own sha256; or the seed of random weights), the plugin and
embedzoo versions, the kind (scene or timestamp) and
the knobs that shape that kind (`knob_record`: scene embeddings do not depend on the timestamp-only
knobs -- hop, window, levels -- so a sweep over those reuses them). Files are named by the sha256
of their bytes: the same clip in another task, split or copy of a task is computed once; a
regenerated task with other audio never reuses stale vectors.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from embedzoo.errors import EmbedzooError
from embedzoo.eval.tasks import Task, TaskError
from embedzoo.knobs import knob_record, scene_knobs
from embedzoo.spec import ModelSpec
from embedzoo.weights.cache import cache_root, embedzoo_version, sha256_file

if TYPE_CHECKING:
    from embedzoo.extractor import Extractor

__all__ = ["EvalError", "Progress", "ModelHandle", "open_model", "embedding_key", "card_digest", "Embedded", "embed_task", "plugin_version", "digest"]

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class EvalError(EmbedzooError):
    """An evaluation cannot run (missing files, a task the model cannot embed, ...)."""


@dataclass
class ModelHandle:
    """An extractor ready to embed, with a name for reports and the identity of its weights."""

    label: str
    extractor: "Extractor"
    weights_id: str

    def with_knobs(self, knobs: dict[str, Any]) -> "ModelHandle":
        """The same model and weights with other knobs (on top of the extractor's), for one run."""
        return ModelHandle(self.label, self.extractor.with_knobs(knobs), self.weights_id)


def open_model(
    spec: str | ModelSpec,
    *,
    weights: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    offline: bool | None = None,
    mirror: str | Path | None = None,
    cache_dir: str | Path | None = None,
    knobs: dict[str, Any] | None = None,
) -> ModelHandle:
    """Load a model spec for evaluation (as `embedzoo.load`). Weights: the catalog's (pulled once),
    a file, or 'random' (the architecture with its initial weights, drawn with `seed`: the control
    that shows what the trained weights are worth), given here or as `weights=` in the spec."""
    from embedzoo.loader import load

    extractor = load(spec, weights=weights, device=device, seed=seed, offline=offline, mirror=mirror, cache_dir=cache_dir, **(knobs or {}))
    return ModelHandle(str(spec), extractor, extractor.weights_identity)


def plugin_version(card: Any) -> str:
    try:
        return importlib.metadata.version(card.plugin)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return ""


def digest(data: Any, length: int = 16) -> str:
    """A short, stable hash of JSON-able data (cache folder and result file names)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]


def card_digest(card: Any) -> str:
    """A hash of everything the catalog says about a model (its geometry, defaults, presets, config):
    an edited card changes it even where the plugin's version stays the same (editable installs)."""
    from embedzoo.card import card_to_dict

    return digest(card_to_dict(card))


def embedding_key(handle: ModelHandle, kind: str) -> str:
    """The cache folder name of (model, card, weights, versions, kind, knobs that shape this kind)."""
    card = handle.extractor.card
    knobs = knob_record(handle.extractor.knobs, kind)
    return digest({
        "model": card.id, "card": card_digest(card), "weights": handle.weights_id, "plugin": plugin_version(card),
        "embedzoo": embedzoo_version(), "kind": kind, "knobs": knobs,
    })  # fmt: skip


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
    from embedzoo.inputs import InputFile
    from embedzoo.pipeline import embed_files

    start = time.perf_counter()
    extractor = handle.extractor
    if extractor.knobs.stack:
        raise EvalError(
            f"{handle.label}: stack=True keeps a layer axis, and a downstream probe trains on one vector per window",
            hint="leave stack off: the chosen layers are then concatenated (or evaluate each layer, e.g. a sweep over --layers)",
        )
    rate = task.audio_rate(extractor.card.sample_rate)
    entries = []
    for split in task.splits:
        for name in task.targets(split):
            path = task.audio_path(rate, split, name)
            if not path.is_file():
                raise TaskError(f"task {task.path}: audio file {path} is missing", hint=f"{split}.json lists {name}")
            entries.append((split, name, path, sha256_file(path)))
    unique = {sha: InputFile(path, sha) for _, _, path, sha in entries}
    out_dir = cache_root(cache_dir) / "embeddings" / extractor.card.id / embedding_key(handle, kind)
    total = len(unique)
    done = 0

    def on_progress(name: str, seconds: float) -> None:
        nonlocal done
        done += 1
        if progress:
            progress("embedding", done, total)

    if progress:
        progress("embedding", 0, total)
    scene = kind == "scene"
    # scene embeddings run with the timestamp-only knobs at the card's defaults, so one cached
    # folder (and its pipeline manifest) serves every hop and window
    knobs = scene_knobs(extractor.card, extractor.knobs) if scene else None
    summary = embed_files(
        extractor, list(unique.values()), out_dir, scene=scene, timestamp=not scene, fmt="npy", workers=workers,
        weights=handle.weights_id, knobs=knobs, on_progress=on_progress,
    )  # fmt: skip
    if progress and done < total:  # files found finished in the cache are not reported one by one
        progress("embedding", total, total)
    if summary.failed:
        listed = "; ".join(f"{next(e[0] + '/' + e[1] for e in entries if e[3] == f.name)}: {f.error}" for f in summary.failed[:5])
        raise EvalError(f"{len(summary.failed)} file(s) of task {task.name} could not be embedded: {listed}", hint=f"see {out_dir / 'errors.jsonl'}")
    vectors: dict[tuple[str, str], Any] = {}
    for split, name, _, sha in entries:
        if scene:
            vectors[(split, name)] = np.load(out_dir / "scene" / f"{sha}.embedding.npy")
        else:
            vectors[(split, name)] = (
                np.load(out_dir / "timestamp" / f"{sha}.embedding.npy"),
                np.load(out_dir / "timestamp" / f"{sha}.timestamps.npy"),
            )
    first = next(iter(vectors.values()))
    size = int(first.shape[-1] if scene else first[0].shape[-1])
    return Embedded(vectors, size, summary.done, summary.skipped, time.perf_counter() - start)
