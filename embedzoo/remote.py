"""Inputs behind a URL (s3://, gs://, az://, hf://, http(s)://, file://: any protocol fsspec has):
listed, identified and fetched through fsspec, so a corpus in object storage is embedded without
mounting it. Torch-free.

A remote file's identity is its URL, its size and a version stamp (the store's mtime or an http
Last-Modified where it gives one, else a hash of its ETag; -1 when it has neither, and then only
its content's sha256 says whether it changed). To decode, a worker copies the object to a local temporary file (every
decoder, and the hash, read it there; one file at a time per worker, deleted when done), so an
hour-long recording takes local disk, never memory.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from contextlib import contextmanager
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

__all__ = ["is_url", "expand", "stat", "sha256", "local_copy", "temporary_file"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_MAGIC = re.compile(r"[*?[]")


def is_url(text: object) -> bool:
    """A string with a protocol (`s3://...`); a Path never is one."""
    return isinstance(text, str) and _URL.match(text) is not None


def _fs(url: str) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError:  # pragma: no cover - fsspec comes with datasets / huggingface_hub
        raise OSError("reading URLs needs fsspec: pip install fsspec (and s3fs, gcsfs, adlfs ... for its protocol)") from None
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package missing
        raise OSError(f"cannot open {url}: {exc}") from None


def expand(url: str, extensions: tuple[str, ...]) -> list[tuple[str, PurePosixPath]]:
    """(file URL, name relative to the URL's folder or glob root) for a file, a folder (every
    audio file below it, hidden ones skipped) or a glob pattern, sorted by name."""
    fs, path = _fs(url)
    if _MAGIC.search(path):
        parts = PurePosixPath(path).parts
        fixed = []
        for part in parts[:-1]:
            if _MAGIC.search(part):
                break
            fixed.append(part)
        root = PurePosixPath(*fixed) if fixed else PurePosixPath("")
        matches = fs.glob(path)
    elif fs.isdir(path):
        root, matches = PurePosixPath(path), fs.find(path)
    elif fs.isfile(path):
        return [(url, PurePosixPath(PurePosixPath(path).name))]
    else:
        return []
    found = []
    for match in matches:
        relative = PurePosixPath(match).relative_to(root) if str(root) else PurePosixPath(match)
        if any(part.startswith(".") for part in relative.parts) or relative.suffix.lower() not in extensions:
            continue
        found.append((fs.unstrip_protocol(match), relative))
    return sorted(found, key=lambda item: str(item[1]))


def _stamp(info: dict[str, Any]) -> int:
    """The object's version as an integer: its mtime in ns where the store gives one, else a hash
    of its ETag, else -1 (unknown: compare contents)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return int(value * 1e9)
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, str) and value:
            try:
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
            except ValueError:
                pass
    if info.get("Last-Modified"):  # http(s): the header, to the second
        try:
            return int(parsedate_to_datetime(str(info["Last-Modified"])).timestamp() * 1e9)
        except (TypeError, ValueError):
            pass
    for key in ("ETag", "etag", "md5Hash", "version_id"):
        if info.get(key):
            return int(hashlib.sha256(str(info[key]).encode()).hexdigest()[:15], 16)
    return -1


def stat(url: str) -> tuple[int, int]:
    """(size in bytes, version stamp) of a remote file; OSError if it is missing or unreadable."""
    fs, path = _fs(url)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # network and permission errors come in each library's own types
        raise OSError(f"cannot reach {url}: {exc}") from None
    if info.get("type") == "directory":
        raise IsADirectoryError(url)
    size = info.get("size")
    return (int(size) if size is not None else -1), _stamp(info)


def sha256(url: str) -> str:
    """The content's sha256, streamed."""
    fs, path = _fs(url)
    digest = hashlib.sha256()
    with fs.open(path, "rb", block_size=1 << 22) as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def temporary_file(suffix: str = "") -> Iterator[Path]:
    """A new, empty local temporary file named with `suffix` (the decoders read the extension),
    deleted on exit."""
    handle, local = tempfile.mkstemp(prefix="embedzoo-fetch-", suffix=suffix)
    os.close(handle)
    try:
        yield Path(local)
    finally:
        os.unlink(local)


@contextmanager
def local_copy(url: str) -> Iterator[Path]:
    """The object copied to a local temporary file (keeping its extension), deleted on exit."""
    fs, path = _fs(url)
    with temporary_file(PurePosixPath(path).suffix) as local:
        try:
            fs.get_file(path, str(local))
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise OSError(f"cannot fetch {url}: {exc}") from None
        yield local
