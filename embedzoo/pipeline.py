"""Files in, embeddings out: the `embedzoo embed` job.

Decoding and resampling run in DataLoader worker processes and arrive as chunks, so hour-long
files stay in bounded memory; windows of many files are packed into full batches by one
`Session`; a file that fails (also one whose embedding is NaN or Inf) is recorded in
`errors.jsonl` and the job goes on with the rest.

What the job promises about its output folder (docs/reliability.md lists the tests):
- every output is committed atomically (a temporary file renamed into place), so a killed job
  leaves finished outputs and embedzoo's own temporaries (`.embedzoo-partial-*`), never a
  half-written output; start-up removes those temporaries and nothing else;
- one job at a time per folder (an advisory lock, `embedzoo.lock`): a second job refuses with a
  message naming the first, and touches nothing;
- output names are a function of each file (`embedzoo.inputs`); `sources.jsonl` (npy) or the
  rows themselves (parquet) record each output's source: path, size, mtime and sha256. A re-run
  skips a file only when its recorded source is the same file (same path, size and mtime, or
  the same content) and its outputs are all there at their recorded sizes; a file changed in
  place is embedded again; a different file wanting a finished name takes `name~<content hash>`;
- a re-run with other settings is refused; `--overwrite` first deletes every embedzoo output of
  the folder, so settings never mix.

Output layout (`OUT/`):
    embedzoo.json                        the settings (model, weights, knobs); a re-run must match
    embedzoo.lock                        held (flock) while a job writes here
    scene/<name>.embedding.npy           (D,)          -- format npy, the HEAR eval-kit layout
    timestamp/<name>.embedding.npy       (T, D)
    timestamp/<name>.timestamps.npy      (T,) ms
    layers/<layer>/{scene,timestamp}/... with `stack`: the same layout once per layer (npy)
    sources.jsonl                        npy: one line per output name -> source and output files
    scene/part-<hash>.parquet ...        format parquet: one row per file, T x D nested lists (L x T x D with `stack`),
    timestamp/part-<hash>.parquet ...    the settings in the schema metadata (`PARQUET_METADATA_KEY`)
    errors.jsonl                         files that failed in the last run, and why
    sources.<token>.journal              npy, while a job runs: its records, merged into sources.jsonl
    corrupt/<kind>/part-<hash>.parquet   an unreadable shard found at start-up, moved out of the way

The job is a shard plan (`embedzoo.shards`): fixed chunks of the input files sorted by path,
capped by files (`shard_rows`) and seconds of audio (`shard_seconds`). A shard is batched by one
Session of its own, in plan order, so its bits never depend on what runs beside it: the local
engine (`workers` processes decode, each taking every n-th shard) and the Ray engine
(`embedzoo.ray`: the same `run_shard` on an actor pool) write the same bytes. A shard holding a
file to (re)compute is run whole -- the files already done are decoded and batched again, not
written -- so a resumed job's outputs equal a clean run's. A parquet shard is one part per kind,
named by a hash of its rows, so a name never depends on how many shards exist; each writer (the
local job, each Ray actor) has its own journal.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from embedzoo import remote
from embedzoo.audio import stream_audio
from embedzoo.card import unsafe_name
from embedzoo.errors import ConfigError, EmbedzooError
from embedzoo.extractor import ClipEmbeddings, Extractor, Session
from embedzoo.inputs import InputFile, name_candidates, safe_name
from embedzoo.remote import is_url
from embedzoo.knobs import Knobs, knob_record
from embedzoo.shards import MAX_SHARD_FILES, MAX_SHARD_SECONDS

__all__ = [
    "FORMATS", "ENGINES", "MANIFEST", "SOURCES", "LOCK", "TEMP_PREFIX", "PARQUET_METADATA_KEY", "OutputBusyError",
    "OutputError", "Failure", "Summary", "JobProgress", "SourceInfo", "OutputLayout", "ShardTask", "FileResult",
    "atomic_write", "job_manifest", "check_manifest", "embed_files", "run_shard",
]  # fmt: skip

FORMATS = ("npy", "parquet")
KINDS = ("scene", "timestamp")
MANIFEST = "embedzoo.json"
SOURCES = "sources.jsonl"
LOCK = "embedzoo.lock"
TEMP_PREFIX = ".embedzoo-partial-"
"""Every temporary file embedzoo writes starts with this; `safe_name` never gives an output such a name."""
PARQUET_METADATA_KEY = b"embedzoo"
_JOURNAL_GLOB = "sources.*.journal"
_NPY_SUFFIXES = (".embedding.npy", ".timestamps.npy")
_PER_FILE_ERRNOS = {errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL}


class OutputBusyError(EmbedzooError):
    """Another embedzoo job holds the output folder's lock."""


class OutputError(EmbedzooError):
    """The output folder cannot be written (permissions, read-only or full file system, old layout)."""


@dataclass
class Failure:
    name: str
    path: str
    error: str


@dataclass
class Summary:
    """What `embedzoo embed` reports (also as --json). `redone`: files embedded again because their
    source changed or their outputs were incomplete; `notes`: things the job repaired or skipped."""

    model: str
    out_dir: str
    total: int = 0
    done: int = 0
    skipped: int = 0
    redone: int = 0
    failed: list[Failure] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["files_per_second"] = self.done / self.wall_seconds if self.wall_seconds else None
        return out


class JobProgress:
    """Live counters of a running job: the pipeline sets them and calls `changed()` after each
    decoded chunk and each finished file, which calls `on_change(self)`; a display (the CLI's)
    renders them there or from another thread. `audio_seconds` counts audio pushed through the
    model, so it moves within a long file; `current_seconds` is how far into `current` it is."""

    def __init__(self, on_change: Callable[["JobProgress"], None] | None = None) -> None:
        self.on_change = on_change
        self.total = 0
        self.skipped = 0
        self.done = 0
        self.failed = 0
        self.audio_seconds = 0.0
        self.current = ""
        self.current_seconds = 0.0

    @property
    def finished(self) -> int:
        return self.skipped + self.done + self.failed

    def changed(self) -> None:
        """Called by the pipeline after every update."""
        if self.on_change is not None:
            self.on_change(self)


# ---- files ------------------------------------------------------------------------------------


def _new_temp(folder: Path) -> Path:
    """An empty, new temporary file in `folder`, named `TEMP_PREFIX...` and created with mode 0666
    less the umask (so outputs get the permissions any other new file would)."""
    while True:
        path = folder / f"{TEMP_PREFIX}{secrets.token_hex(6)}"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return path
        except FileExistsError:
            continue


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path.parent)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save_npy(array: np.ndarray) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    return write


def _file_sha256(path: Path | str) -> str:
    from embedzoo.weights.cache import sha256_file

    return remote.sha256(path) if is_url(path) else sha256_file(path)  # type: ignore[arg-type]


def _output_error(exc: OSError, out: Path) -> OutputError:
    """An OSError while writing `out` as a message that says what to do."""
    where = exc.filename or out
    if exc.errno in (errno.EACCES, errno.EPERM):
        return OutputError(
            f"cannot write to {where}: permission denied",
            hint=f"choose an -o folder you can write to, or give yourself write access to {out} "
            "(ls -ld shows the owner; chmod u+w, or g+w for a folder shared by a group)",
        )
    if exc.errno == errno.EROFS:
        return OutputError(f"cannot write to {where}: the file system is read-only", hint="choose an -o folder on a writable disk")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(
            f"cannot write to {where}: no space left ({exc.strerror})",
            hint="free some space or choose another -o folder; finished outputs are kept and a re-run resumes",
        )
    return OutputError(f"cannot write to {where}: {exc.strerror or exc}", hint=f"check that {out} is a folder you can write to")


def _remove_temporaries(out: Path) -> int:
    """Delete embedzoo's own temporaries left by a killed job: files named `TEMP_PREFIX*` in OUT and
    below scene/, timestamp/ and layers/ (only there: OUT may be a big folder of the user's)."""
    removed = 0
    candidates = [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)] if out.is_dir() else []
    for root in [out / kind for kind in KINDS] + [out / "layers"]:
        for dirpath, _, filenames in os.walk(root):
            candidates += [Path(dirpath, n) for n in filenames if n.startswith(TEMP_PREFIX)]
    for path in candidates:
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _remove_outputs(out: Path) -> int:
    """`--overwrite`: delete every embedzoo output in OUT (npy and parquet outputs below scene/ and
    timestamp/, the source records, the error list), records first, so a later run never mixes
    settings. Other files are left; folders emptied here are removed."""
    removed = 0
    for path in [out / SOURCES, *out.glob(_JOURNAL_GLOB), out / "errors.jsonl"]:
        if path.is_file():
            path.unlink()
            removed += 1
    layer_dirs = [] if (out / "layers").is_symlink() else [d for d in sorted((out / "layers").glob("*")) if d.is_dir() and not d.is_symlink()]
    stacked = [layer / kind for layer in layer_dirs for kind in KINDS]  # `stack` npy folders (never through a link)
    for root in [out / kind for kind in KINDS] + [out / "corrupt" / kind for kind in KINDS] + stacked:
        for dirpath, _, filenames in os.walk(root, topdown=False):
            for name in filenames:
                if name.endswith(_NPY_SUFFIXES) or (name.startswith("part-") and name.endswith(".parquet")):
                    Path(dirpath, name).unlink()
                    removed += 1
            if Path(dirpath) != root and not os.listdir(dirpath):
                os.rmdir(dirpath)
    for folder in [*layer_dirs, out / "layers"]:  # stacked layers' folders, once emptied
        for kind in KINDS:
            if (folder / kind).is_dir() and not os.listdir(folder / kind):
                (folder / kind).rmdir()
        if folder.is_dir() and not folder.is_symlink() and not os.listdir(folder):
            folder.rmdir()
    return removed


# ---- one job per folder -----------------------------------------------------------------------


class _FolderLock:
    """An advisory lock on OUT/embedzoo.lock (flock; released by the kernel when the holder dies,
    so a killed job never blocks its resume). The holder's pid, host and start time are written
    into the file for the message of a job that finds it taken."""

    def __init__(self, out: Path, wait: float | None = 0.0):
        self.path, self.wait = out / LOCK, wait
        self.fd: int | None = None
        self.other: Any = None
        self.note: str | None = None

    def __enter__(self) -> "_FolderLock":
        try:
            import fcntl
        except ImportError:  # Windows: filelock, without the holder's details
            from filelock import FileLock, Timeout

            self.other = FileLock(str(self.path) + ".filelock")
            try:
                self.other.acquire(timeout=-1 if self.wait is None else self.wait)
            except Timeout:
                raise self._busy("") from None
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = None if self.wait is None else time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    holder = os.pread(self.fd, 4096, 0).decode("utf-8", "replace")
                    os.close(self.fd)
                    self.fd = None
                    raise self._busy(holder) from None
                time.sleep(0.2)
            except OSError as exc:  # a file system without locks (some network mounts)
                self.note = f"{self.path.parent}: no advisory lock on this file system ({exc.strerror}); do not run two jobs into it at once"
                break
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, (json.dumps(holder) + "\n").encode(), 0)
        return self

    def _busy(self, holder: str) -> OutputBusyError:
        try:
            who = json.loads(holder)
            by = f" (pid {who['pid']} on {who['host']}, since {who['since']})"
        except (ValueError, KeyError, TypeError):
            by = ""
        return OutputBusyError(
            f"{self.path.parent} is being written by another embedzoo job{by}",
            hint="wait for it to finish (a re-run then resumes where it ended), or write to another -o folder",
        )

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # releases the flock
            self.fd = None
        if self.other is not None:
            self.other.release()


# ---- sources: what each output was made from --------------------------------------------------


@dataclass(frozen=True)
class SourceInfo:
    """An input file as it was embedded: absolute path, size, mtime and content sha256."""

    path: str
    size: int
    mtime_ns: int
    sha256: str

    def same_file(self, path: str, size: int, mtime_ns: int, sha256: Callable[[], str]) -> bool:
        """The same path, size and mtime (cheap), or the same content wherever it now is (a moved
        or touched file); `sha256` is called only when the cheap check fails."""
        if self.path == path and self.size == size and self.mtime_ns == mtime_ns and mtime_ns >= 0:
            return True  # (-1: an object whose store gives no version; only its content can say)
        return self.size == size and self.sha256 == sha256()


def _location(path: Path | str) -> str:
    """What a source record holds: the absolute path, or the URL as given."""
    return path if is_url(path) else os.path.abspath(path)  # type: ignore[return-value]


def _text(value: str) -> str:
    """Valid UTF-8 text for a path that may not be (os.fsdecode's surrogates -> backslash escapes)."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _read_source(path: Path) -> SourceInfo:
    """Stat, hash, stat: a file that changes while it is read is refused, so a record never
    describes bytes other than those embedded (its decoding ran between the two stats)."""
    before = os.stat(path)
    sha = _file_sha256(path)
    after = os.stat(path)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise OSError(errno.EAGAIN, "the file changed while it was read; run the job again when it is complete")
    return SourceInfo(os.path.abspath(path), after.st_size, after.st_mtime_ns, sha)


# ---- outputs ----------------------------------------------------------------------------------


def _numpy(result: ClipEmbeddings) -> dict[str, np.ndarray]:
    arrays = {}
    for key in ("scene", "timestamp", "timestamps"):
        value = getattr(result, key)
        if value is not None:
            arrays[key] = value.detach().cpu().numpy().astype(np.float32)
    return arrays


@dataclass(frozen=True)
class OutputLayout:
    """What a job writes where: the folder, the kinds, the format, the stacked layers and (for
    parquet) the settings that go into each part's schema. Picklable: Ray actors get one."""

    out_dir: Path
    kinds: tuple[str, ...]
    fmt: str = "npy"
    layers: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)

    def npy_outputs(self, name: str) -> list[str]:
        """The npy files of one output name, relative to OUT (timestamps before embeddings)."""
        files = []
        for root in [f"layers/{layer}/" for layer in self.layers] or [""]:
            if "timestamp" in self.kinds:
                files += [f"{root}timestamp/{name}.timestamps.npy", f"{root}timestamp/{name}.embedding.npy"]
            if "scene" in self.kinds:
                files.append(f"{root}scene/{name}.embedding.npy")
        return files

    def shard_writer(self) -> "NpyShardWriter | ParquetShardWriter":
        return NpyShardWriter(self) if self.fmt == "npy" else ParquetShardWriter(self)


class NpyIndex:
    """The HEAR eval-kit layout's record of what is done: `sources.jsonl` plus the journals
    (`sources.<token>.journal`) of the writers of earlier or interrupted jobs, merged into
    `sources.jsonl` (sorted by name) when a job starts and ends. A file counts as done only when
    its record is there and every output has its recorded size."""

    def __init__(self, layout: OutputLayout):
        self.layout = layout
        self.out_dir = layout.out_dir
        for layer in layout.layers:
            if unsafe_name(layer) is not None:
                raise OutputError(f"layer name {layer!r} cannot name a folder ({unsafe_name(layer)})", hint="write parquet instead (--format parquet)")
        self.records: dict[str, dict[str, Any]] = self._load()
        self.compact()
        self.sources = {name: _source_of(rec) for name, rec in self.records.items()}

    def _load(self) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        for path in [self.out_dir / SOURCES, *sorted(self.out_dir.glob(_JOURNAL_GLOB))]:
            if not path.is_file():
                continue
            with open(path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    try:
                        rec = json.loads(line)
                        _source_of(rec)
                        records[rec["name"]] = rec
                    except (ValueError, KeyError, TypeError):
                        continue  # a line torn by a kill, or not ours
        return records

    def compact(self) -> None:
        """Merge every journal into `sources.jsonl`; called by the driver only, when no writer runs."""
        journals = list(self.out_dir.glob(_JOURNAL_GLOB))
        if not journals:
            return
        self.records = self._load()
        lines = "".join(json.dumps(self.records[name], sort_keys=True) + "\n" for name in sorted(self.records))
        atomic_write(self.out_dir / SOURCES, lambda tmp: tmp.write_text(lines, encoding="utf-8"))
        for path in journals:
            path.unlink(missing_ok=True)

    def complete(self, name: str) -> bool:
        outputs = self.records.get(name, {}).get("outputs", {})
        for rel in self.layout.npy_outputs(name):
            try:
                if os.stat(self.out_dir / rel).st_size != outputs[rel]["bytes"]:
                    return False
            except (OSError, KeyError, TypeError):
                return False
        return True

    def drop(self, names: list[str]) -> None:
        """Nothing to drop: a re-embedded file's outputs are replaced in place."""


class NpyShardWriter:
    """Writes the npy outputs of finished files and appends each file's record (its source, and
    its outputs with their sizes and sha256) to this writer's own journal after its outputs are in
    place: one writer per process (the local job, each Ray actor), so journals never interleave."""

    def __init__(self, layout: OutputLayout):
        self.layout = layout
        self.journal_path = layout.out_dir / f"sources.{secrets.token_hex(6)}.journal"
        self.journal: Any = None

    def write(self, index: int, name: str, source: SourceInfo, arrays: dict[str, np.ndarray]) -> None:
        data = {
            f"timestamp/{name}.timestamps.npy": arrays.get("timestamps"),
            f"timestamp/{name}.embedding.npy": arrays.get("timestamp"),
            f"scene/{name}.embedding.npy": arrays.get("scene"),
        }
        for position, layer in enumerate(self.layout.layers):  # stacked: (layers, ...) arrays, one folder per layer
            root = f"layers/{layer}/"
            data[f"{root}timestamp/{name}.timestamps.npy"] = arrays.get("timestamps")
            data[f"{root}timestamp/{name}.embedding.npy"] = None if arrays.get("timestamp") is None else arrays["timestamp"][position]
            data[f"{root}scene/{name}.embedding.npy"] = None if arrays.get("scene") is None else arrays["scene"][position]
        outputs = {}
        for rel in self.layout.npy_outputs(name):  # the embedding files after the timestamps: a reader sees pairs
            path = self.layout.out_dir / rel
            atomic_write(path, _save_npy(data[rel]))
            outputs[rel] = {"bytes": path.stat().st_size, "sha256": _file_sha256(path)}
        record = {**asdict(source), "name": name, "outputs": outputs}
        if self.journal is None:
            self.journal = open(self.journal_path, "a", encoding="utf-8")
        self.journal.write(json.dumps(record, sort_keys=True) + "\n")
        self.journal.flush()

    def begin(self, shard: int, members: Sequence[int]) -> None:
        """Nothing to prepare: every file is committed on its own."""

    def commit(self, shard: int) -> None:
        """Nothing to commit: every file was committed on its own."""

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None


def _source_of(record: dict[str, Any]) -> SourceInfo:
    return SourceInfo(str(record["path"]), int(record["size"]), int(record["mtime_ns"]), str(record["sha256"]))


_SOURCE_COLUMNS = ["name", "path", "source_size", "source_mtime_ns", "source_sha256"]


class ParquetIndex:
    """Parquet, one row per file: `name`, `path`, `source_size`, `source_mtime_ns`,
    `source_sha256`, `embedding` (scene: fixed-size list of D floats; timestamp: a list of T
    fixed-size lists of D) and, for timestamps, `timestamps` (list of T floats, ms). The schema
    metadata holds the folder's settings (`embedzoo.json`) under `PARQUET_METADATA_KEY`.

    Each shard of the plan is committed as one part per kind, atomically, named
    `part-<hash of its rows' names and sources>.parquet`. What is done is read from the rows of
    the parts present; an unreadable part is moved to `OUT/corrupt/<kind>/` (where readers of the
    folder do not trip on it) and its files are embedded again.
    """

    def __init__(self, layout: OutputLayout, notes: list[str]):
        self.layout, self.out_dir, self.notes = layout, layout.out_dir, notes
        # kind -> name -> (part, source)
        self.present: dict[str, dict[str, tuple[Path, SourceInfo]]] = {k: self._read(k) for k in layout.kinds}
        self.sources: dict[str, SourceInfo] = {}
        for kind in reversed(layout.kinds):
            self.sources.update({name: source for name, (_, source) in self.present[kind].items()})

    def _read(self, kind: str) -> dict[str, tuple[Path, SourceInfo]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        present: dict[str, tuple[Path, SourceInfo]] = {}
        for shard in sorted((self.out_dir / kind).glob("part-*.parquet")):
            try:
                names = pq.read_schema(shard).names
                if not set(_SOURCE_COLUMNS) <= set(names):
                    raise OutputError(
                        f"{shard} was written by an older embedzoo (no source columns): its rows cannot be checked",
                        hint="re-run with --overwrite to recompute the folder, or choose another -o folder",
                    )
                table = pq.read_table(shard, columns=_SOURCE_COLUMNS)
            except (pa.ArrowException, OSError) as exc:  # moved aside: readers of the folder would fail on it
                aside = self.out_dir / "corrupt" / kind / shard.name
                aside.parent.mkdir(parents=True, exist_ok=True)
                os.replace(shard, aside)
                self.notes.append(f"{kind}/{shard.name} is unreadable ({exc}); moved to {aside.relative_to(self.out_dir)}, its files are embedded again")
                continue
            for row in table.to_pylist():
                present[row["name"]] = (shard, SourceInfo(row["path"], row["source_size"], row["source_mtime_ns"], row["source_sha256"]))
        return present

    def complete(self, name: str) -> bool:
        source = self.sources.get(name)
        return source is not None and all(self.present[k].get(name, (None, None))[1] == source for k in self.layout.kinds)

    def compact(self) -> None:
        """Nothing to merge: the parts are the record."""

    def drop(self, names: list[str]) -> None:
        """Remove these files' rows (they are embedded again), rewriting each part that holds one
        atomically before any new row is written, so a file is never in two rows."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        for kind in self.layout.kinds:
            shards = {self.present[kind][n][0] for n in names if n in self.present[kind]}
            for shard in sorted(shards):
                table = pq.read_table(shard)
                kept = table.filter(pc.invert(pc.is_in(table.column("name"), value_set=_string_array(names))))
                if kept.num_rows:
                    atomic_write(shard, lambda tmp, kept=kept: pq.write_table(kept, tmp))
                else:
                    shard.unlink()
            for name in names:
                self.present[kind].pop(name, None)


class ParquetShardWriter:
    """Holds a shard's rows and commits them as one part per kind when the shard ends (or, for a
    job interrupted in-process, what it has): the same rows give the same name and bytes, so a
    retried shard overwrites its part with itself."""

    def __init__(self, layout: OutputLayout):
        self.layout = layout
        self.rows: dict[int, dict[int, tuple[str, SourceInfo, dict[str, np.ndarray]]]] = {}
        self.shard_of: dict[int, int] = {}

    def begin(self, shard: int, members: Sequence[int]) -> None:
        self.rows[shard] = {}
        self.shard_of.update({index: shard for index in members})

    def write(self, index: int, name: str, source: SourceInfo, arrays: dict[str, np.ndarray]) -> None:
        self.rows[self.shard_of[index]][index] = (name, source, arrays)

    def commit(self, shard: int) -> None:
        import pyarrow.parquet as pq

        held = self.rows.pop(shard, {})
        rows = [held[i] for i in sorted(held)]
        if not rows:
            return
        for kind in self.layout.kinds:
            table = _shard_table(kind, rows, self.layout.settings)
            digest = hashlib.sha256(json.dumps([kind, [[n, s.sha256] for n, s, _ in rows]]).encode()).hexdigest()[:16]
            path = self.layout.out_dir / kind / f"part-{digest}.parquet"
            atomic_write(path, lambda tmp, table=table: pq.write_table(table, tmp))

    def close(self) -> None:
        for shard in sorted(self.rows):  # an interrupted job keeps what it has
            self.commit(shard)


def _string_array(values: list[str]) -> Any:
    import pyarrow as pa

    return pa.array(values, type=pa.string())


def _shard_table(kind: str, rows: list[tuple[str, SourceInfo, dict[str, np.ndarray]]], settings: dict[str, Any]) -> Any:
    """The Arrow table of one part: nested fixed-size lists, what Arrow, datasets, pandas, polars
    and DuckDB read as (T, D) arrays, and the settings in the schema metadata."""
    import pyarrow as pa

    emb = [r[2][kind] for r in rows]
    dim = int(emb[0].shape[-1])
    stacked = emb[0].ndim == (2 if kind == "scene" else 3)  # the `stack` knob: a leading layer axis
    layers = int(emb[0].shape[0]) if stacked else 0
    flat = pa.array(np.concatenate([e.reshape(-1) for e in emb]), type=pa.float32())
    vectors = pa.FixedSizeListArray.from_arrays(flat, dim)
    fields = [
        pa.field("name", pa.string(), nullable=False),
        pa.field("path", pa.string()),
        pa.field("source_size", pa.int64()),
        pa.field("source_mtime_ns", pa.int64()),
        pa.field("source_sha256", pa.string()),
    ]
    columns = [
        _string_array([r[0] for r in rows]),
        _string_array([_text(r[1].path) for r in rows]),
        pa.array([r[1].size for r in rows], type=pa.int64()),
        pa.array([r[1].mtime_ns for r in rows], type=pa.int64()),
        _string_array([r[1].sha256 for r in rows]),
    ]
    if kind == "scene":
        embedding = pa.FixedSizeListArray.from_arrays(vectors, layers) if stacked else vectors
        fields.append(pa.field("embedding", embedding.type, metadata={"shape": "(L, D)" if stacked else "(D,)"}))
        columns.append(embedding)
    else:
        lengths = [e.shape[-2] for e in emb]
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        times = pa.array(np.concatenate([r[2]["timestamps"].reshape(-1) for r in rows]), type=pa.float32())
        if stacked:  # (L, T, D): L lists of T vectors per row, row-major as the arrays are
            per_layer = pa.array(np.concatenate([[0], np.cumsum(np.repeat(lengths, layers))]).astype(np.int32))
            embedding = pa.FixedSizeListArray.from_arrays(pa.ListArray.from_arrays(per_layer, vectors), layers)
        else:
            embedding = pa.ListArray.from_arrays(offsets, vectors)
        timestamps = pa.ListArray.from_arrays(offsets, times)
        fields.append(pa.field("embedding", embedding.type, metadata={"shape": "(L, T, D)" if stacked else "(T, D)"}))
        fields.append(pa.field("timestamps", timestamps.type, metadata={"unit": "ms", "shape": "(T,)"}))
        columns += [embedding, timestamps]
    metadata = {PARQUET_METADATA_KEY: json.dumps({**settings, "kind": kind}, sort_keys=True).encode()}
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=metadata))


# ---- shards: what a worker or an actor runs -------------------------------------------------


@dataclass(frozen=True)
class ShardTask:
    """One shard of the plan as a runner gets it: its files (input indices, paths, output names)
    in plan order, and which of them to write (the others are done already: they are decoded and
    computed again only so that the batches are those of a clean run, then not written)."""

    number: int
    indices: tuple[int, ...]
    paths: tuple[str, ...]
    names: tuple[str, ...]
    write: tuple[bool, ...]
    seconds: float = 0.0

    def to_json(self) -> str:
        """ASCII JSON (paths that are not valid UTF-8 survive as escaped surrogates)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ShardTask":
        raw = json.loads(text)
        return cls(raw["number"], tuple(raw["indices"]), tuple(raw["paths"]), tuple(raw["names"]), tuple(raw["write"]), raw["seconds"])


@dataclass
class FileResult:
    """What became of one file of a shard: written, failed (`error`) or neither (done before)."""

    index: int
    name: str
    path: str
    written: bool = False
    error: str | None = None
    seconds: float = 0.0


_Item = tuple[int, int, "np.ndarray | None", bool, "str | None", "dict | None"]
"""(shard, position in the shard, chunk, is_last, error, source): what decoding yields."""


def _decode_shard(task: ShardTask, sample_rate: int, block_seconds: float, payloads: Sequence[bytes] | None = None) -> Iterator[_Item]:
    """A shard's files decoded in order, in chunks at the model's rate; a file's last item carries
    its `SourceInfo` or its error. A file is a local path, a URL (`embedzoo.remote`) or, with
    `payloads`, the bytes of a dataset's row."""
    for position, path in enumerate(task.paths):
        if payloads is not None:
            pieces = _decode_bytes(payloads[position], path, Path(task.names[position]).suffix, sample_rate, block_seconds)
        elif is_url(path):
            pieces = _decode_remote(path, sample_rate, block_seconds)
        else:
            pieces = _decode_local(path, sample_rate, block_seconds)
        try:
            for piece in pieces:
                if isinstance(piece, SourceInfo):
                    yield task.number, position, None, True, None, asdict(piece)
                else:
                    yield task.number, position, piece, False, None, None
        except Exception as exc:  # a file's failure is this file's, not the job's
            yield task.number, position, None, True, _decode_error(exc), None


def _decode_error(exc: Exception) -> str:
    """What a file's failure to decode says in errors.jsonl."""
    if isinstance(exc, EmbedzooError):
        return str(exc)
    if isinstance(exc, UnicodeEncodeError):
        return "its file name is not valid UTF-8 and the decoder cannot open it; rename the file"
    if isinstance(exc, OSError):
        return f"cannot read it: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def _decode_local(path: str, sample_rate: int, block_seconds: float) -> Iterator[Any]:
    """A local file, then its source (hashed after decoding, when the file is in the page cache);
    refused if it changed while it was read."""
    before = os.stat(path)
    yield from stream_audio(path, sample_rate, block_seconds)
    source = _read_source(Path(path))
    if (source.size, source.mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise OSError(errno.EAGAIN, "the file changed while it was read; run the job again when it is complete")
    yield source


def _decode_remote(url: str, sample_rate: int, block_seconds: float) -> Iterator[Any]:
    """A URL's file, copied to a local temporary file, decoded and hashed there; refused if the
    object changed (size or version) between the copy and the end."""
    before = remote.stat(url)
    with remote.local_copy(url) as local:
        yield from stream_audio(local, sample_rate, block_seconds)
        size, sha = local.stat().st_size, _file_sha256(local)
    if remote.stat(url) != before or (before[0] >= 0 and size != before[0]):
        raise OSError(errno.EAGAIN, "the object changed while it was read; run the job again when it is complete")
    yield SourceInfo(url, size, before[1], sha)


def _decode_bytes(data: bytes, path: str, suffix: str, sample_rate: int, block_seconds: float) -> Iterator[Any]:
    """A dataset row's bytes, written to a local temporary file (with the extension the decoders
    read) and decoded there; its source is the row (size, sha256, no version)."""
    with remote.temporary_file(suffix) as local:
        local.write_bytes(data)
        yield from stream_audio(local, sample_rate, block_seconds)
    yield SourceInfo(path, len(data), -1, hashlib.sha256(data).hexdigest())


class ShardRun:
    """One shard through one Session: its files' chunks are pushed in plan order (whatever else
    runs beside it), so its batches, and the bits of every output, are those of any other run of
    the same shard. `feed` takes decoded items; `finish` flushes, commits and returns the results."""

    def __init__(self, extractor: Extractor, task: ShardTask, writer: NpyShardWriter | ParquetShardWriter, scene: bool, timestamp: bool,
                 on_chunk: Callable[[int, float, float], None] | None = None, on_file: Callable[[FileResult], None] | None = None):  # fmt: skip
        self.extractor, self.task, self.writer = extractor, task, writer
        self.session = Session(extractor, scene=scene, timestamp=timestamp)
        self.rate = extractor.card.sample_rate
        self.on_chunk, self.on_file = on_chunk, on_file
        self.lengths: dict[int, int] = {}
        self.sources: dict[int, SourceInfo] = {}
        self.results: dict[int, FileResult] = {}
        writer.begin(task.number, task.indices)

    def feed(self, item: _Item) -> None:
        _, position, chunk, last, error, source = item
        if error is not None:
            return self._fail(position, error)
        if position not in self.session.clips and position not in self.lengths:
            self.session.open(position)
            self.lengths[position] = 0
        if chunk is not None:
            self.lengths[position] += len(chunk)
            self.session.push(position, chunk)
            if self.on_chunk:
                self.on_chunk(self.task.indices[position], len(chunk) / self.rate, self.lengths[position] / self.rate)
        if last:
            self.sources[position] = SourceInfo(**source)
            try:
                self.session.close(position)
            except EmbedzooError as exc:
                self._fail(position, str(exc))
        self._take()

    def finish(self) -> list[FileResult]:
        self.session.flush()
        self._take()
        self.writer.commit(self.task.number)
        return [self.results[p] for p in sorted(self.results)]

    def _result(self, position: int, **fields: Any) -> None:
        result = FileResult(self.task.indices[position], self.task.names[position], _text(self.task.paths[position]), **fields)
        self.results[position] = result
        if self.on_file:
            self.on_file(result)

    def _fail(self, position: int, message: str) -> None:
        self.session.discard(position)
        self.lengths.pop(position, None)
        self.sources.pop(position, None)
        # a file done before keeps its outputs: it was decoded again for the batches' sake only
        self._result(position, error=message if self.task.write[position] else None)

    def _take(self) -> None:
        for position, result in self.session.take():
            self._finish(position, result)

    def _finish(self, position: int, result: ClipEmbeddings) -> None:
        seconds = self.lengths.pop(position, 0) / self.rate
        source = self.sources.pop(position)
        if not self.task.write[position]:
            return self._result(position, seconds=seconds)  # done before: computed for the batches only
        arrays = _numpy(result)
        problem = _non_finite(arrays)
        if problem:
            return self._fail(position, problem)
        try:
            self.writer.write(self.task.indices[position], self.task.names[position], source, arrays)
        except OSError as exc:
            if exc.errno not in _PER_FILE_ERRNOS:
                raise
            return self._fail(position, f"cannot write its output: {exc.strerror or exc}")
        self._result(position, written=True, seconds=seconds)


def run_shard(extractor: Extractor, task: ShardTask, writer: NpyShardWriter | ParquetShardWriter, *, scene: bool, timestamp: bool,
              block_seconds: float, prefetch: int = 4, payloads: Sequence[bytes] | None = None) -> list[FileResult]:  # fmt: skip
    """Decode one shard's files in order (in a thread, `prefetch` chunks ahead, while the model
    computes) and embed them with one Session: what each Ray actor runs for each shard.
    `payloads`: the files' bytes, in the shard's order, when they come from a dataset's rows."""
    run = ShardRun(extractor, task, writer, scene, timestamp)
    rate = extractor.card.sample_rate
    for item in _prefetched(_decode_shard(task, rate, block_seconds, payloads), prefetch):
        run.feed(item)
    return run.finish()


def _prefetched(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """`items`, produced by a thread at most `depth` ahead (decoders release the GIL), in order."""
    import queue
    import threading

    if depth <= 0:
        yield from items
        return
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put((None, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put((None, done))
        except BaseException as exc:  # handed to the consumer, which raises it
            buffer.put((exc, None))

    thread = threading.Thread(target=produce, name="embedzoo-decode", daemon=True)
    thread.start()
    try:
        while True:
            error, item = buffer.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class _DecodeShards(torch.utils.data.IterableDataset):
    """Decoding in DataLoader workers: each worker takes every n-th shard and decodes its files
    in order, so each shard's items arrive in order, whatever the interleaving of shards."""

    def __init__(self, tasks: list[ShardTask], sample_rate: int, block_seconds: float):
        self.tasks, self.sample_rate, self.block_seconds = tasks, sample_rate, block_seconds

    def __iter__(self) -> Iterator[_Item]:
        info = torch.utils.data.get_worker_info()
        mine = self.tasks if info is None else self.tasks[info.id :: info.num_workers]
        for task in mine:
            yield from _decode_shard(task, self.sample_rate, self.block_seconds)


def _loader(dataset: _DecodeShards, workers: int) -> Iterator[_Item]:
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
    """Refuse to mix embeddings of other settings into an existing output folder; with
    `overwrite`, delete every embedzoo output there first. Then record the settings."""
    path = out_dir / MANIFEST
    if path.is_file() and not overwrite:
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = {"unreadable": str(path)}
        if old != manifest:
            changes = "; ".join(f"{key}: {before!r} there, {after!r} now" for key, before, after in _differences(old, manifest))
            raise ConfigError(
                f"{out_dir} holds embeddings made with other settings ({changes})",
                hint="choose another -o folder, or pass --overwrite to delete its embeddings and recompute",
            )
    if overwrite:
        _remove_outputs(out_dir)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8"))


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf where two manifests differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [item for key in {**old, **new} for item in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _stat(path: Path | str) -> tuple[int, int] | None:
    try:
        if is_url(path):
            return remote.stat(path)  # type: ignore[arg-type]
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _claim_names(files: list[InputFile], index: NpyIndex | ParquetIndex) -> list[tuple[str, str]]:
    """Each file's output name and state ('new', 'done' or 'redo'), in input order.

    A file takes the first of its `name_candidates` that is not taken in this run and is free in
    the folder, or recorded from this same file (same path, size and mtime, or same content:
    'done' if its outputs are complete, else 'redo'), or recorded from an earlier version of the
    file at this same path ('redo': it changed). A name recorded from another file is never taken
    over: the file moves on to `name~<its content hash>`, so neither output is lost.
    """
    taken: set[str] = set()
    recorded = {name.casefold(): name for name in index.sources}
    claims = []
    for f in files:
        base = safe_name(f.base)
        path = _location(f.path)
        quick = (f.known.size, -1) if f.known else _stat(f.path)
        hashed: list[str] = [f.known.sha256] if f.known else []

        def sha(f: InputFile = f, hashed: list[str] = hashed) -> str:
            if not hashed:
                try:
                    hashed.append(_file_sha256(f.path))
                except OSError:
                    hashed.append(hashlib.sha256(os.fsencode(_location(f.path))).hexdigest())
            return hashed[0]

        claim = None
        for name in name_candidates(base, sha):
            if name.casefold() in taken:
                continue
            owner = recorded.get(name.casefold())
            if owner is None:
                claim = (name, "new")
            elif quick is None:  # missing or unreadable now: decoding will report it, nothing is replaced
                continue
            elif index.sources[owner].same_file(path, quick[0], quick[1], sha):
                claim = (owner, "done" if index.complete(owner) else "redo")
            elif index.sources[owner].path == path:
                claim = (owner, "redo")
            if claim is not None:
                break
        assert claim is not None  # name_candidates never ends
        taken.add(claim[0].casefold())
        claims.append(claim)
    return claims


def _non_finite(arrays: dict[str, np.ndarray]) -> str | None:
    bad = [key for key in ("scene", "timestamp") if key in arrays and not np.isfinite(arrays[key]).all()]
    if not bad:
        return None
    return (
        f"its {' and '.join(bad)} embedding has NaN or Inf values; nothing was written for it "
        "(check the audio for extreme values, the weights with `embedzoo cache verify`, or try --dtype float32)"
    )


ENGINES = ("local", "ray")


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
    shard_rows: int = MAX_SHARD_FILES,
    shard_seconds: float = MAX_SHARD_SECONDS,
    engine: str = "local",
    ray: Any = None,
    rows: Any = None,
    on_progress: Callable[[str, float], None] | None = None,
    progress: JobProgress | None = None,
    wait: float | None = 0.0,
) -> Summary:
    """Embed every file, skipping those already done, recording failures; see the module doc.

    `weights`: the weights' identity for the manifest (default: the one `embedzoo.load` recorded on
    the extractor; '' for an extractor built otherwise). `knobs` (a Knobs, or overrides) apply to
    this job only (`Extractor.with_knobs`); the extractor itself is left as it is. `shard_rows` and
    `shard_seconds` cap a shard (`embedzoo.shards`); `engine` runs the shards here ('local', in
    order, `workers` decoding processes) or on Ray ('ray', with `ray`: an `embedzoo.ray.RayOptions`;
    `rows`: the Ray Dataset whose audio bytes `files` describe, see `embedzoo.ray.embed_dataset`).
    `on_progress` is called with (name, seconds of audio) when a file is finished or failed;
    `progress` gets live counters (also within long files). `wait`: seconds to wait for another
    job's lock on the folder (None: as long as it takes; 0: refuse at once with `OutputBusyError`).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, not {fmt!r}")
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, not {engine!r}")
    if shard_rows < 1:
        raise ConfigError(f"shard_rows must be at least 1, not {shard_rows}")
    if not shard_seconds > 0:
        raise ConfigError(f"shard_seconds must be positive, not {shard_seconds}")
    if rows is not None and engine != "ray":
        raise ConfigError("a dataset's rows of audio bytes are embedded on Ray only", hint="pass engine='ray'")
    if knobs is not None:
        extractor = extractor.with_knobs(knobs)
    if weights is None:
        weights = extractor.weights_identity
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = _FolderLock(out, wait)
        lock.__enter__()
    except OSError as exc:
        raise _output_error(exc, out) from None
    try:
        job = _Job(extractor, files, out, scene, timestamp, fmt, weights, shard_rows, shard_seconds, on_progress, progress)
        return job.run(lock, overwrite, engine, workers, block_seconds, ray, rows)
    except OSError as exc:
        raise _output_error(exc, out) from None
    finally:
        lock.__exit__()


class _Job:
    """The driver of one job, under the folder's lock: it checks the manifest, sweeps temporaries,
    reads what is done, claims names, plans shards, hands them to an engine, and keeps the books
    (summary, progress, `errors.jsonl`, the merged source records)."""

    def __init__(self, extractor: Extractor, files: list[InputFile], out: Path, scene: bool, timestamp: bool, fmt: str, weights: str,
                 shard_rows: int, shard_seconds: float, on_progress: Callable[[str, float], None] | None, progress: JobProgress | None):  # fmt: skip
        self.extractor, self.files, self.out = extractor, files, out
        self.scene, self.timestamp, self.fmt, self.weights = scene, timestamp, fmt, weights
        self.shard_rows, self.shard_seconds = shard_rows, shard_seconds
        self.on_progress = on_progress
        self.state = progress if progress is not None else JobProgress()
        self.summary = Summary(model=extractor.card.id, out_dir=str(out), total=len(files))
        self.names: list[str] = []
        self._order: dict[str, int] = {}  # output name -> rank in the plan: errors.jsonl's order

    def run(self, lock: _FolderLock, overwrite: bool, engine: str, workers: int, block_seconds: float, ray: Any, rows: Any = None) -> Summary:
        if self.extractor.knobs.compile and engine == "local":  # torch.compile's warm-up is not the job's time
            Session(self.extractor, scene=self.scene, timestamp=self.timestamp)
        start = time.perf_counter()
        summary, state = self.summary, self.state
        if lock.note:
            summary.notes.append(lock.note)
        settings = job_manifest(self.extractor, self.scene, self.timestamp, self.fmt, self.weights)
        check_manifest(self.out, settings, overwrite)
        removed = _remove_temporaries(self.out)
        if removed:
            summary.notes.append(f"removed {removed} temporary file(s) of an interrupted job")
        state.total, state.current = len(self.files), "checking what is already done"
        state.changed()
        kinds = tuple(k for k, on in (("scene", self.scene), ("timestamp", self.timestamp)) if on)
        layers = tuple(self.extractor.knobs.layers) if self.extractor.knobs.stack and self.fmt == "npy" else ()
        layout = OutputLayout(self.out, kinds, self.fmt, layers, settings)
        index = NpyIndex(layout) if self.fmt == "npy" else ParquetIndex(layout, summary.notes)
        claims = _claim_names(self.files, index)
        self.names = [name for name, _ in claims]
        write = [claim != "done" for _, claim in claims]
        summary.skipped = len(self.files) - sum(write)
        summary.redone = sum(claim == "redo" for _, claim in claims)
        tasks = self._plan(write) if any(write) else []
        index.drop([self.names[i] for t in tasks for i, w in zip(t.indices, t.write) if w and self.names[i] in index.sources])
        state.skipped, state.current = summary.skipped, ""
        state.changed()
        try:
            if engine == "ray":
                from embedzoo.ray import RayOptions, run_shards

                run_shards(self.extractor, tasks, layout, scene=self.scene, timestamp=self.timestamp, block_seconds=block_seconds,
                           options=ray if ray is not None else RayOptions(), on_shard=self._shard_done, rows=rows)  # fmt: skip
            else:
                self._run_local(tasks, layout, workers, block_seconds)
        finally:
            index.compact()
            summary.failed.sort(key=lambda f: self._order.get(f.name, 0))
            summary.wall_seconds = time.perf_counter() - start
            lines = "".join(json.dumps(asdict(f)) + "\n" for f in summary.failed)
            atomic_write(self.out / "errors.jsonl", lambda tmp: tmp.write_text(lines, encoding="utf-8"))
        return summary

    def _plan(self, write: list[bool]) -> list[ShardTask]:
        """The shards holding a file to write, heaviest first is the engines' business: in plan order here."""
        from embedzoo.shards import durations, plan_shards

        self.state.current = "planning shards"
        self.state.changed()
        paths = [str(f.path) for f in self.files]
        local = [i for i, p in enumerate(paths) if not is_url(p)]  # a remote header costs a download: 0 s, planned by count
        seconds = [f.known.seconds if f.known else 0.0 for f in self.files]
        for i, length in zip(local, durations([paths[i] for i in local])):
            seconds[i] = length
        shards = plan_shards(paths, seconds, self.shard_rows, self.shard_seconds)
        self._order = {self.names[i]: rank for rank, i in enumerate(i for s in shards for i in s.members)}
        return [
            ShardTask(s.number, s.members, tuple(os.fsdecode(_location(paths[i])) for i in s.members), tuple(self.names[i] for i in s.members),
                      tuple(write[i] for i in s.members), s.seconds)  # fmt: skip
            for s in shards
            if any(write[i] for i in s.members)
        ]

    def _file_done(self, result: FileResult) -> None:
        """Book one file's result (both engines)."""
        state = self.state
        if result.error is not None:
            self.summary.failed.append(Failure(result.name, result.path, result.error))
            state.failed += 1
        elif result.written:
            self.summary.done += 1
            self.summary.audio_seconds += result.seconds
            state.done += 1
        else:
            return  # done before: counted as skipped already
        state.current, state.current_seconds = result.name, result.seconds
        state.changed()
        if self.on_progress:
            self.on_progress(result.name, result.seconds if result.error is None else 0.0)

    def _shard_done(self, results: list[FileResult], audio_seconds: float) -> None:
        """A shard came back from Ray: book its files."""
        self.state.audio_seconds += audio_seconds
        for result in results:
            self._file_done(result)

    def _chunk(self, index: int, seconds: float, so_far: float) -> None:
        state = self.state
        state.audio_seconds += seconds
        state.current, state.current_seconds = self.names[index], so_far
        state.changed()

    def _run_local(self, tasks: list[ShardTask], layout: OutputLayout, workers: int, block_seconds: float) -> None:
        """The shards here: decoded by `workers` processes (each takes every n-th shard), each
        shard embedded by its own Session; at most one open shard per worker."""
        writer = layout.shard_writer()
        runs: dict[int, ShardRun] = {}
        by_number = {t.number: t for t in tasks}
        remaining = {t.number: len(t.indices) for t in tasks}
        dataset = _DecodeShards(tasks, self.extractor.card.sample_rate, block_seconds)
        several = len(tasks) > 1 or (tasks and len(tasks[0].indices) > 1)
        try:
            for item in _loader(dataset, workers if several else 0):
                number, last = item[0], item[3]
                run = runs.get(number)
                if run is None:
                    run = runs[number] = ShardRun(self.extractor, by_number[number], writer, self.scene, self.timestamp, self._chunk, self._file_done)
                run.feed(item)
                if last:
                    remaining[number] -= 1
                    if not remaining[number]:
                        runs.pop(number).finish()
        finally:
            writer.close()  # interrupted: parquet keeps the rows of the open shards' finished files
