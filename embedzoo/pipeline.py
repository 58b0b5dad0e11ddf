"""Files in, embeddings out: the `embedzoo embed` job.

Decoding and resampling run in DataLoader worker processes and arrive as chunks, so hour-long
files stay in bounded memory; windows of many files are packed into full batches by one
`Session`; every output is written atomically; a re-run skips finished files and a killed job
resumes; a file that fails is recorded in `errors.jsonl` and the job goes on with the rest.

Output layout (`OUT/`):
    embedzoo.json                          what was computed (model, weights, knobs); a re-run must match
    scene/<name>.embedding.npy             (D,)          -- format npy, the HEAR eval-kit layout
    timestamp/<name>.embedding.npy         (T, D)
    timestamp/<name>.timestamps.npy        (T,) ms
    scene/part-00000.parquet ...           -- format parquet: one row per file, sharded
    timestamp/part-00000.parquet ...
    errors.jsonl                           files that failed in the last run, and why
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from embedzoo.audio import stream_audio
from embedzoo.errors import ConfigError, EmbedzooError
from embedzoo.extractor import ClipEmbeddings, Extractor, Session
from embedzoo.inputs import InputFile
from embedzoo.knobs import Knobs, knob_record

FORMATS = ("npy", "parquet")
MANIFEST = "embedzoo.json"


@dataclass
class Failure:
    name: str
    path: str
    error: str


@dataclass
class Summary:
    """What `embedzoo embed` reports (also as --json)."""

    model: str
    out_dir: str
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[Failure] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["files_per_second"] = self.done / self.wall_seconds if self.wall_seconds else None
        return out


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_npy(array: np.ndarray) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    return write


# ---- outputs ----------------------------------------------------------------------------------


class NpyWriter:
    """The HEAR eval-kit layout: one .npy per file and kind."""

    def __init__(self, out_dir: Path, scene: bool, timestamp: bool):
        self.out_dir, self.scene, self.timestamp = out_dir, scene, timestamp

    def done(self, name: str) -> bool:
        ok = True
        if self.scene:
            ok &= (self.out_dir / "scene" / f"{name}.embedding.npy").is_file()
        if self.timestamp:
            ok &= (self.out_dir / "timestamp" / f"{name}.embedding.npy").is_file()
            ok &= (self.out_dir / "timestamp" / f"{name}.timestamps.npy").is_file()
        return ok

    def write(self, name: str, path: Path, result: ClipEmbeddings) -> None:
        if self.timestamp:
            base = self.out_dir / "timestamp"
            # timestamps first: the embedding file is the "done" mark of this file
            atomic_write(base / f"{name}.timestamps.npy", _save_npy(result.timestamps.numpy().astype(np.float32)))
            atomic_write(base / f"{name}.embedding.npy", _save_npy(result.timestamp.numpy().astype(np.float32)))
        if self.scene:
            atomic_write(self.out_dir / "scene" / f"{name}.embedding.npy", _save_npy(result.scene.numpy().astype(np.float32)))

    def close(self) -> None:
        pass


class ParquetWriter:
    """Sharded parquet, one row per file; a shard is written atomically once full, so a killed
    job loses at most the rows of the shard in progress, which the next run recomputes."""

    def __init__(self, out_dir: Path, scene: bool, timestamp: bool, shard_rows: int = 512):
        import pyarrow.parquet as pq

        self.out_dir, self.shard_rows = out_dir, shard_rows
        self.kinds = [k for k, on in (("scene", scene), ("timestamp", timestamp)) if on]
        self.rows: dict[str, list[dict[str, Any]]] = {k: [] for k in self.kinds}
        self.finished: dict[str, set[str]] = {}
        for kind in self.kinds:
            names: set[str] = set()
            for shard in sorted((out_dir / kind).glob("part-*.parquet")):
                names.update(pq.read_table(shard, columns=["name"]).column("name").to_pylist())
            self.finished[kind] = names

    def done(self, name: str) -> bool:
        return all(name in self.finished[k] for k in self.kinds)

    def write(self, name: str, path: Path, result: ClipEmbeddings) -> None:
        for kind in self.kinds:
            if name in self.finished[kind]:
                continue
            if kind == "scene":
                row = {"name": name, "path": str(path), "embedding": result.scene.numpy().astype(np.float32)}
            else:
                emb = result.timestamp.numpy().astype(np.float32)
                row = {
                    "name": name,
                    "path": str(path),
                    "frames": emb.shape[0],
                    "dim": emb.shape[1],
                    "embedding": emb.reshape(-1),
                    "timestamps": result.timestamps.numpy().astype(np.float32),
                }
            self.rows[kind].append(row)
            if len(self.rows[kind]) >= self.shard_rows:
                self._flush(kind)

    def _flush(self, kind: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self.rows[kind]
        if not rows:
            return
        folder = self.out_dir / kind
        folder.mkdir(parents=True, exist_ok=True)
        index = len(list(folder.glob("part-*.parquet")))
        columns: dict[str, Any] = {}
        for key in rows[0]:
            values = [r[key] for r in rows]
            if isinstance(values[0], np.ndarray):
                columns[key] = pa.array(values, type=pa.list_(pa.float32()))
            else:
                columns[key] = pa.array(values)
        table = pa.table(columns)
        atomic_write(folder / f"part-{index:05d}.parquet", lambda tmp: pq.write_table(table, tmp))
        self.finished[kind].update(r["name"] for r in rows)
        self.rows[kind] = []

    def close(self) -> None:
        for kind in self.kinds:
            self._flush(kind)


# ---- decoding in workers ----------------------------------------------------------------------


class _DecodeFiles(torch.utils.data.IterableDataset):
    """Yields (file index, chunk, is_last, error) at the model's rate; each worker takes every
    n-th file, so a file's chunks always arrive in order."""

    def __init__(self, files: list[InputFile], indices: list[int], sample_rate: int, block_seconds: float):
        self.files, self.indices = files, indices
        self.sample_rate, self.block_seconds = sample_rate, block_seconds

    def __iter__(self) -> Iterator[tuple[int, np.ndarray | None, bool, str | None]]:
        info = torch.utils.data.get_worker_info()
        mine = self.indices if info is None else self.indices[info.id :: info.num_workers]
        for index in mine:
            try:
                for chunk in stream_audio(self.files[index].path, self.sample_rate, self.block_seconds):
                    yield index, chunk, False, None
                yield index, None, True, None
            except EmbedzooError as exc:
                yield index, None, True, str(exc)
            except Exception as exc:  # an unexpected decoder failure is this file's, not the job's
                yield index, None, True, f"{type(exc).__name__}: {exc}"


def _loader(dataset: _DecodeFiles, workers: int) -> Iterator:
    if workers <= 0:
        return iter(dataset)
    return iter(
        torch.utils.data.DataLoader(
            dataset, batch_size=None, num_workers=workers, persistent_workers=False, prefetch_factor=4
        )
    )


# ---- the job ----------------------------------------------------------------------------------


def job_manifest(extractor: Extractor, scene: bool, timestamp: bool, fmt: str, weights: str) -> dict[str, Any]:
    """What an output folder's embeddings depend on: the model, the identity of its weights
    (`embedzoo.weights.weights_identity`) and the knobs that change results (`knob_record`)."""
    return {
        "model": extractor.card.id,
        "weights": weights,
        "knobs": knob_record(extractor.knobs),
        "sample_rate": extractor.card.sample_rate,
        "scene": scene,
        "timestamp": timestamp,
        "format": fmt,
        "embedding_size": extractor.timestamp_embedding_size,
    }


def check_manifest(out_dir: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix embeddings of other settings into an existing output folder."""
    path = out_dir / MANIFEST
    if path.is_file() and not overwrite:
        old = json.loads(path.read_text())
        if old != manifest:
            diff = {k: (old.get(k), v) for k, v in manifest.items() if old.get(k) != v}
            raise ConfigError(
                f"{out_dir} holds embeddings made with other settings: {diff}",
                hint="choose another -o folder, or pass --overwrite to recompute everything there",
            )
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))


def embed_files(
    extractor: Extractor,
    files: list[InputFile],
    out_dir: str | Path,
    *,
    scene: bool = True,
    timestamp: bool = True,
    fmt: str = "npy",
    workers: int = 1,
    overwrite: bool = False,
    weights: str | None = None,
    knobs: Knobs | dict[str, Any] | None = None,
    block_seconds: float = 30.0,
    shard_rows: int = 512,
    on_progress: Callable[[str, float], None] | None = None,
) -> Summary:
    """Embed every file, skipping those already done, recording failures; see the module doc.

    `weights`: the weights' identity for the manifest (default: the one `embedzoo.load` recorded on
    the extractor; '' for an extractor built otherwise). `knobs` (a Knobs, or overrides) apply to
    this job only (`Extractor.with_knobs`); the extractor itself is left as it is.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, not {fmt!r}")
    if knobs is not None:
        extractor = extractor.with_knobs(knobs)
    if weights is None:
        weights = extractor.weights_identity
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_manifest(out, job_manifest(extractor, scene, timestamp, fmt, weights), overwrite)
    for stale in out.rglob(".*.tmp"):  # left by a job killed mid-write; never a finished output
        stale.unlink(missing_ok=True)
    if overwrite:
        for kind in ("scene", "timestamp"):
            for stale in (out / kind).glob("part-*.parquet"):
                stale.unlink()
    writer = NpyWriter(out, scene, timestamp) if fmt == "npy" else ParquetWriter(out, scene, timestamp, shard_rows)
    summary = Summary(model=extractor.card.id, out_dir=str(out), total=len(files))
    start = time.perf_counter()
    todo = [i for i, f in enumerate(files) if overwrite or not writer.done(f.name)]
    summary.skipped = len(files) - len(todo)
    session = Session(extractor, scene=scene, timestamp=timestamp)
    rate = extractor.card.sample_rate
    lengths: dict[int, int] = {}

    def finish(index: int, result: ClipEmbeddings) -> None:
        writer.write(files[index].name, files[index].path, result)
        summary.done += 1
        seconds = lengths.pop(index, 0) / rate
        summary.audio_seconds += seconds
        if on_progress:
            on_progress(files[index].name, seconds)

    def fail(index: int, message: str) -> None:
        session.discard(index)
        lengths.pop(index, None)
        summary.failed.append(Failure(files[index].name, str(files[index].path), message))
        if on_progress:
            on_progress(files[index].name, 0.0)

    dataset = _DecodeFiles(files, todo, rate, block_seconds)
    try:
        for index, chunk, last, error in _loader(dataset, workers if len(todo) > 1 else 0):
            if error is not None:
                fail(index, error)
                continue
            if index not in session.clips and index not in lengths:
                session.open(index)
                lengths[index] = 0
            if chunk is not None:
                lengths[index] += len(chunk)
                session.push(index, chunk)
            if last:
                try:
                    session.close(index)
                except EmbedzooError as exc:
                    fail(index, str(exc))
            for key, result in session.take():
                finish(key, result)
        session.flush()
        for key, result in session.take():
            finish(key, result)
    finally:
        writer.close()
        summary.wall_seconds = time.perf_counter() - start
        errors = out / "errors.jsonl"
        lines = "".join(json.dumps(asdict(f)) + "\n" for f in summary.failed)
        atomic_write(errors, lambda tmp: tmp.write_text(lines))
    return summary
