"""The embedzoo cache: settings, on-disk layout, trust-on-first-use pins and bookkeeping.

Torch-free on purpose: `embedzoo list` asks `is_cached` for every card and must stay fast.

Layout (root = `cache_dir=` argument, else `$EMBEDZOO_CACHE`, else `$XDG_CACHE_HOME/embedzoo`,
else `~/.cache/embedzoo`)::

    <root>/models/<model id>/<key>/model.safetensors   converted weights, the only file extraction reads
    <root>/models/<model id>/<key>/meta.json           provenance: source, original and safetensors sha256, ...
    <root>/downloads/<url key>/<basename>              originals fetched from url sources (+ .part while downloading)
    <root>/hf/                                         huggingface_hub cache (see `hf_cache_dir`)
    <root>/pins.json                                   url -> {sha256, size, first_seen} for unpinned url sources
    <root>/embeddings/<model id>/<key>/                evaluation embeddings (embedzoo.eval.embeddings); `ls`/`rm` here too

`<key>` is the first 16 hex digits of the original's sha256 when the card pins one, else of a hash
of the source's identity (hf repo@commit/file, url, or package==version/path): it changes whenever
the original can change, so a stale conversion is never reused.

Every path built from a card, a mirror or a hub answer is checked to stay inside its folder once
symlinks and '..' are resolved (`contained`), on top of the card's own name checks: a card cannot make
embedzoo write, delete or read outside the cache, the mirror or the package. Files are created with
the process umask (a group cache with `umask 002` is shared), and a permission error names the path
and what to do (`permission_error`).
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import importlib.metadata
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from embedzoo.card import ModelCard, Source

__all__ = [
    "MODEL_FILE", "META_FILE", "PINS_FILE", "cache_root", "mirror_root", "is_offline",
    "hf_cache_dir", "sha256_file", "note_hash", "atomic_write_text", "file_lock", "now_iso",
    "embedzoo_version", "source_identity", "cache_key", "converted_path", "download_dir",
    "read_meta", "meta_matches", "is_cached", "pin_key", "pin_record", "recorded_pin", "record_pin", "record_commit",
    "forget_pin", "CacheEntry", "cache_entries", "remove", "verify", "contained", "permission_error",
    "follow_umask", "EMBEDDINGS_DIR", "EmbeddingsEntry", "embeddings_entries",
]  # fmt: skip

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
PINS_FILE = "pins.json"
EMBEDDINGS_DIR = "embeddings"
_TRUE = {"1", "true", "yes", "on"}


# ---------------------------------------------------------------------------------------- settings


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The embedzoo cache folder: argument, else $EMBEDZOO_CACHE, else the user cache folder."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("EMBEDZOO_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "embedzoo"


def mirror_root(mirror: str | os.PathLike | None = None) -> Path | None:
    """The local mirror folder (argument, else $EMBEDZOO_MIRROR), or None when there is none."""
    if mirror is not None:
        return Path(mirror).expanduser()
    env = os.environ.get("EMBEDZOO_MIRROR")
    return Path(env).expanduser() if env else None


def is_offline(offline: bool | None = None) -> bool:
    """Offline mode: argument, else $EMBEDZOO_OFFLINE, else $HF_HUB_OFFLINE (read at call time)."""
    if offline is not None:
        return bool(offline)
    value = os.environ.get("EMBEDZOO_OFFLINE")
    if value is None:
        value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in _TRUE


def hf_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where hub files go.

    An explicit `cache_dir=` keeps everything in one folder: `<cache_dir>/hf`. Otherwise a hub cache
    the user configured for huggingface_hub ($HF_HUB_CACHE, else $HF_HOME/hub) is shared, so files
    already downloaded by transformers & co. are not fetched twice. Otherwise `<root>/hf`, so that
    copying the embedzoo cache to an offline machine carries the originals too.
    """
    if cache_dir is not None:
        return cache_root(cache_dir) / "hf"
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return cache_root() / "hf"


# ----------------------------------------------------------------------------- paths and permissions


def contained(path: Path, root: Path, what: str) -> Path:
    """`path` itself when it stays inside `root` once both are resolved (symlinks, '..'), else a
    WeightsError: no card, mirror or hub answer may make embedzoo touch a file outside its folder."""
    from embedzoo.errors import WeightsError

    real_root, real = Path(os.path.realpath(root)), Path(os.path.realpath(path))
    if real != real_root and real_root not in real.parents:
        raise WeightsError(
            f"{what} {path} resolves to {real}, outside {root}; embedzoo refuses to use it",
            hint="a card or plugin named a path that leaves its folder (report it to its author), "
            f"or a symbolic link inside {root} points elsewhere (put the file itself there)",
        )
    return path


def permission_error(exc: OSError, cache_dir: str | os.PathLike | None = None, action: str = "use") -> Exception:
    """A PermissionError turned into a WeightsError that names the path and the way out."""
    from embedzoo.errors import WeightsError

    root = cache_root(cache_dir)
    where = exc.filename or root
    return WeightsError(
        f"permission denied: cannot {action} {where} ({exc.strerror or exc})",
        hint=f"set EMBEDZOO_CACHE to a folder you can write; for a cache shared by a group, its owner runs "
        f"`chmod -R g+rwX {root}` and every user works with `umask 002`",
    )


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (/proc), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: Path) -> None:
    """Give a file we wrote the mode `open()` would have (0o666 minus the umask): some writers
    (safetensors, temporary files) create 0600 files, which a shared cache cannot use."""
    os.chmod(path, 0o666 & ~_umask())


# ------------------------------------------------------------------------------------------- files


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike, *, fresh: bool = False) -> str:
    """sha256 of a file, memoised per (path, size, mtime) so verify-then-record hashes once;
    `fresh` re-reads the bytes whatever the memo says (`cache verify`)."""
    stat = os.stat(path)
    memo = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if fresh or memo not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        _HASHES[memo] = digest.hexdigest()
    return _HASHES[memo]


def note_hash(path: str | os.PathLike, sha256: str) -> None:
    """Remember a hash computed under another name (a .part renamed into place) to avoid re-reading."""
    stat = os.stat(path)
    _HASHES[(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)] = sha256


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and os.replace: readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An inter-process lock (filelock, a huggingface_hub dependency), so two pulls never interleave."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)):
        yield


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def embedzoo_version() -> str:
    try:
        return importlib.metadata.version("embedzoo")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------------------ layout


def source_identity(source: Source) -> str:
    """A string that changes whenever the file behind an unhashed source may change."""
    if source.kind == "hf":
        return f"hf:{source.repo}@{source.revision}/{source.filename}"
    if source.kind == "url":
        return f"url:{source.url}"
    try:
        version = importlib.metadata.version(source.package)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return f"package:{source.package}=={version}/{source.path}"


def cache_key(card: ModelCard) -> str:
    """The folder name of a card's conversion: its pinned original sha256, else its source identity."""
    extras = [extra for source in card.sources for extra in source.extras]
    suffix = ""
    if extras:  # a checkpoint of several files: any of them changing makes another conversion
        identity = "+".join(extra.sha256 or source_identity(extra) for extra in extras)
        suffix = "-" + hashlib.sha256(identity.encode()).hexdigest()[:8]
    for source in card.sources:
        if source.sha256:
            return source.sha256[:16] + suffix
    identity = source_identity(card.sources[0]) if card.sources else f"nosource:{card.id}"
    return "id-" + hashlib.sha256(identity.encode()).hexdigest()[:16] + suffix


def converted_path(card: ModelCard, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the card's converted safetensors lives (whether or not it exists yet)."""
    models = cache_root(cache_dir) / "models"
    return contained(models / card.id / cache_key(card) / MODEL_FILE, models, f"the converted weights of {card.id}")


def download_dir(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """One folder per url (basenames like `model.pth` are not unique across urls)."""
    return cache_root(cache_dir) / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16]


def read_meta(model_path: Path) -> dict[str, Any] | None:
    """The meta.json beside a converted file, or None when missing or unreadable."""
    try:
        return json.loads((model_path.parent / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def meta_matches(card: ModelCard, model_path: Path) -> bool:
    """True when a finished conversion for exactly this card and key sits at `model_path` (no hashing)."""
    meta = read_meta(model_path)
    if meta is None or meta.get("model_id") != card.id or meta.get("key") != cache_key(card):
        return False
    try:
        return model_path.stat().st_size == meta.get("size")
    except OSError:
        return False


def is_cached(card: ModelCard, cache_dir: str | os.PathLike | None = None) -> bool:
    """True when the card's converted weights are in the cache, by meta.json and size (no hashing:
    `embedzoo list` asks for every card; `pull` checks the sha256 at first use in a process)."""
    from embedzoo.errors import WeightsError

    try:
        return meta_matches(card, converted_path(card, cache_dir))
    except WeightsError:  # a models/<id> folder that links outside the cache: not usable, not cached
        return False


# -------------------------------------------------------------------------------------------- pins


def _pins_path(cache_dir: str | os.PathLike | None) -> Path:
    return cache_root(cache_dir) / PINS_FILE


def _read_pins(cache_dir: str | os.PathLike | None) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_pins_path(cache_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        from embedzoo.errors import WeightsError

        raise WeightsError(
            f"the pins file {_pins_path(cache_dir)} is unreadable ({exc})",
            hint="fix or delete it; deleting forgets the hashes recorded for unpinned urls",
        ) from exc
    return data if isinstance(data, dict) else {}


def pin_key(source: Source) -> str | None:
    """The pins.json key of an unpinned source: a url without sha256, or an hf source on a branch
    (or tag); None for a pinned one."""
    if source.kind == "url" and source.sha256 is None:
        return source.url
    if source.kind == "hf" and not source.commit_pinned:
        return f"hf:{source.repo}@{source.revision}"
    return None


def pin_record(source: Source, cache_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The pins.json record of an unpinned source: for a url (sha256, size, first_seen), for an hf
    branch (commit, first_seen); None when nothing is recorded yet (or the source is pinned)."""
    key = pin_key(source)
    return None if key is None else _read_pins(cache_dir).get(key)


def recorded_pin(source: Source, cache_dir: str | os.PathLike | None = None) -> str | None:
    """What an unpinned source was held to at its first pull: a url's sha256, an hf branch's commit."""
    record = pin_record(source, cache_dir)
    if not record:
        return None
    return record.get("commit") if source.kind == "hf" else record.get("sha256")


def _record(key: str, record: dict[str, Any], cache_dir: str | os.PathLike | None) -> None:
    path = _pins_path(cache_dir)
    with file_lock(path.with_name(PINS_FILE + ".lock")):
        pins = _read_pins(cache_dir)
        if key in pins:
            return
        pins[key] = {**record, "first_seen": now_iso()}
        atomic_write_text(path, json.dumps(pins, indent=2, sort_keys=True) + "\n")


def record_pin(source: Source, sha256: str, size: int, cache_dir: str | os.PathLike | None = None) -> None:
    """Trust on first use: remember what an unpinned url served the first time; never overwrite."""
    _record(source.url, {"sha256": sha256, "size": size}, cache_dir)


def record_commit(source: Source, commit: str, cache_dir: str | os.PathLike | None = None) -> None:
    """Trust on first use for an hf branch: remember the commit it resolved to; never overwrite."""
    key = pin_key(source)
    if key is not None:
        _record(key, {"commit": commit}, cache_dir)


def forget_pin(key: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """Drop what an unpinned source was held to (a url, or 'hf:<repo>@<branch>'), after deciding to
    trust what it serves now; True if a record was there."""
    path = _pins_path(cache_dir)
    with file_lock(path.with_name(PINS_FILE + ".lock")):
        pins = _read_pins(cache_dir)
        if pins.pop(key, None) is None:
            return False
        atomic_write_text(path, json.dumps(pins, indent=2, sort_keys=True) + "\n")
        return True


# ------------------------------------------------------------------------------------- bookkeeping


@dataclass(frozen=True)
class CacheEntry:
    """One converted model in the cache, as `embedzoo cache ls` shows it."""

    model_id: str
    key: str
    path: Path
    size: int
    date: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class EmbeddingsEntry:
    """One folder of evaluation embeddings (`<root>/embeddings/<model id>/<key>/`), as `cache ls` shows it.

    Listed by folder, never by recomputing keys: the key is whatever `embedzoo.eval.embeddings` hashed."""

    model_id: str
    key: str
    path: Path
    size: int
    files: int
    date: str


def _iso(mtime: float) -> str:
    return _dt.datetime.fromtimestamp(mtime, _dt.timezone.utc).replace(microsecond=0).isoformat()


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def cache_entries(cache_dir: str | os.PathLike | None = None) -> list[CacheEntry]:
    """Every converted model under the cache, including unfinished ones (no meta.json)."""
    entries: list[CacheEntry] = []
    for model_dir in _subdirs(cache_root(cache_dir) / "models"):
        for key_dir in _subdirs(model_dir):
            path = key_dir / MODEL_FILE
            if not path.exists() and not (key_dir / META_FILE).exists():
                continue
            meta = read_meta(path) or {}
            try:
                stat = path.stat()
                size, mtime = stat.st_size, stat.st_mtime
            except OSError:
                size, mtime = 0, 0.0
            entries.append(CacheEntry(model_dir.name, key_dir.name, path, size, meta.get("date") or _iso(mtime), meta.get("source", ""), meta))
    return entries


def embeddings_entries(cache_dir: str | os.PathLike | None = None) -> list[EmbeddingsEntry]:
    """Every folder of evaluation embeddings in the cache, with its size, file count and last change."""
    entries: list[EmbeddingsEntry] = []
    for model_dir in _subdirs(cache_root(cache_dir) / EMBEDDINGS_DIR):
        for key_dir in _subdirs(model_dir):
            size = files = 0
            newest = 0.0
            for base, _, names in os.walk(key_dir):
                for name in names:
                    try:
                        stat = os.stat(os.path.join(base, name))
                    except OSError:
                        continue
                    size, files, newest = size + stat.st_size, files + 1, max(newest, stat.st_mtime)
            entries.append(EmbeddingsEntry(model_dir.name, key_dir.name, key_dir, size, files, _iso(newest or key_dir.stat().st_mtime)))
    return entries


def _inside(path: Path | str, folder: Path) -> bool:
    """True when `path` lies inside `folder` once both are resolved (symlinks included)."""
    real_folder, real = Path(os.path.realpath(folder)), Path(os.path.realpath(path))
    return real == real_folder or real_folder in real.parents


def _rmtree(folder: Path, root: Path, cache_dir: str | os.PathLike | None) -> None:
    """Delete a folder of the cache; refuse one that resolves outside it; say so when not allowed."""
    try:
        if folder.is_symlink():  # a link placed in the cache: remove the link, never what it points to
            contained(folder.parent, root, "the cache folder")
            folder.unlink()
            return
        contained(folder, root, "the cache folder")
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except PermissionError as exc:
        raise permission_error(exc, cache_dir, "delete") from exc


def remove(
    patterns: str | Iterable[str],
    cache_dir: str | os.PathLike | None = None,
    *,
    originals: bool = True,
    weights: bool = True,
    embeddings: bool = True,
) -> list[Path]:
    """Delete what the cache holds for the model ids matching `patterns` (ids or globs): their
    converted weights (`weights`) and their evaluation embeddings (`embeddings`).

    With `originals`, also delete the original checkpoints embedzoo downloaded for them into this
    cache (`downloads/`, `hf/`) when no remaining model uses them. pins.json is kept: forgetting a
    hash would let a changed file be accepted silently on the next pull. Only paths that resolve
    inside the cache are ever deleted. Returns what was removed.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = list(patterns)
    root = cache_root(cache_dir)

    def matches(model_id: str) -> bool:
        return any(fnmatch.fnmatchcase(model_id, p) for p in patterns)

    removed: list[Path] = []
    if weights:
        entries = cache_entries(cache_dir)
        doomed = [e for e in entries if matches(e.model_id)]
        doomed_ids = {e.model_id for e in doomed}
        for model_id in sorted(doomed_ids):
            folder = root / "models" / model_id
            _rmtree(folder, root, cache_dir)
            removed.append(folder)
        if originals:
            still_used = {path for e in entries if e.model_id not in doomed_ids for path in _originals(e.meta)}
            for entry in doomed:
                for original in _originals(entry.meta):
                    if original not in still_used:
                        removed.extend(_remove_original(Path(original), root, cache_dir))
    if embeddings:
        for model_dir in _subdirs(root / EMBEDDINGS_DIR):
            if matches(model_dir.name):
                _rmtree(model_dir, root, cache_dir)
                removed.append(model_dir)
    return removed


def _originals(meta: Mapping[str, Any]) -> list[str]:
    """The original files a conversion was made from: the checkpoint, its extra and repo files."""
    paths = [meta.get("original_path")] + [extra.get("path") for extra in meta.get("extras", ())]
    paths += [entry.get("path") for entry in (meta.get("repo_files") or {}).values()]
    return [path for path in paths if path]


def _remove_original(original: Path, root: Path, cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Remove a downloaded original, but only one inside this cache (never a mirror or a package):
    meta.json is a file on disk, so its paths are checked again, after resolution."""
    out: list[Path] = []
    downloads, hf = root / "downloads", root / "hf"
    folder = original.parent
    if _inside(folder, downloads) and os.path.realpath(folder) != os.path.realpath(downloads):
        if folder.exists():
            _rmtree(folder, downloads, cache_dir)
            out.append(folder)
    elif _inside(folder, hf) and os.path.lexists(original):
        blob = original.resolve()
        try:
            original.unlink()
            out.append(original)
            if blob != original and blob.exists() and _inside(blob, hf):
                blob.unlink()
                out.append(blob)
        except PermissionError as exc:
            raise permission_error(exc, cache_dir, "delete") from exc
    return out


def verify(cache_dir: str | os.PathLike | None = None) -> list[tuple[CacheEntry, bool, str]]:
    """Re-hash every converted file against its meta.json and check that safetensors can open it."""
    from safetensors import safe_open

    results: list[tuple[CacheEntry, bool, str]] = []
    for entry in cache_entries(cache_dir):
        problem = ""
        if not entry.meta:
            problem = f"no readable {META_FILE} (interrupted conversion?)"
        elif not entry.path.exists():
            problem = f"{MODEL_FILE} is missing"
        elif entry.size != entry.meta.get("size"):
            problem = f"size is {entry.size} bytes, meta.json says {entry.meta.get('size')}"
        else:
            try:
                actual = sha256_file(entry.path, fresh=True)  # verify must really re-read the bytes
            except PermissionError as exc:
                actual, problem = "", f"cannot read it ({exc.strerror}): ask its owner for read access (chmod -R a+rX)"
            if problem:
                pass
            elif actual != entry.meta.get("safetensors_sha256"):
                problem = f"sha256 is {actual}, meta.json says {entry.meta.get('safetensors_sha256')}"
            else:
                try:
                    with safe_open(str(entry.path), framework="pt") as handle:
                        for name in handle.keys():
                            handle.get_slice(name).get_shape()
                except Exception as exc:  # safetensors raises its own error types
                    problem = f"safetensors cannot open it: {exc}"
        results.append((entry, not problem, problem))
    return results
