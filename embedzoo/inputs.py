"""Input discovery for jobs: files, folders and glob patterns -> a sorted list of uniquely named files.

`embedzoo embed` names each output after its input's path relative to the folder (or glob root) it
was found in, extension kept, made safe for every file system and shell (`safe_name`). Names are
a function of each file, never of the rest of the input set: when two files want one name (also
case-insensitively, for macOS and Windows outputs), the first input keeps it and the other takes
`name~<8 hex of its content's sha256>` (`name_candidates`), so adding an input never renames the
outputs of the others. Folders and globs pick what `embedzoo.audio` can decode (`AUDIO_EXTENSIONS`).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Sequence

from embedzoo.audio import AUDIO_EXTENSIONS
from embedzoo.errors import AudioError
from embedzoo.remote import expand, is_url
from embedzoo.remote import sha256 as remote_sha256

__all__ = ["NAME_BYTES", "InputFile", "KnownSource", "collect_inputs", "name_candidates", "safe_name", "tagged_name"]


@dataclass(frozen=True)
class KnownSource:
    """What is known of an input without reading it again (a row of a Ray Dataset of audio bytes,
    described on the cluster): its size, its content's sha256 and its duration from the header."""

    size: int
    sha256: str
    seconds: float = 0.0


@dataclass(frozen=True)
class InputFile:
    """One audio file to process; `name` (relative to its input root, extension kept) names its outputs.

    `path` is a local Path, or a URL string (`s3://...`: `embedzoo.remote`). `base` is the name
    before a clash was resolved (`name` may be `base` plus `~<content hash>`);
    `embed_files` resolves clashes again against what the output folder already holds.
    """

    path: Path | str
    name: str
    base: str = field(default="", compare=False, repr=False)
    known: KnownSource | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.base:
            object.__setattr__(self, "base", self.name)


@dataclass
class _Found:
    path: Path
    root: Path  # absolute folder the name is relative to
    relative: PurePosixPath
    source: int  # index of the input that found it


_GLOB_MAGIC = re.compile(r"[*?[]")


def _has_magic(text: str) -> bool:
    return _GLOB_MAGIC.search(text) is not None


def _absolute(path: str | Path) -> Path:
    """Absolute and lexically normalised ('a/../b' -> 'b'), symlinks kept: names follow what the user typed."""
    return Path(os.path.abspath(path))


def _is_hidden(relative: PurePosixPath) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _has_audio_extension(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def _files_under(folder: Path, root: Path, source: int) -> list[_Found]:
    """Audio files below `folder`, skipping hidden files and folders, sorted by name relative to `root`.

    Symlinked folders are followed (datasets are often linked in), each real folder once, so a
    link cycle cannot loop forever.
    """
    found = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            path = Path(dirpath, filename)
            if filename.startswith(".") or not _has_audio_extension(path) or not path.is_file():
                continue
            relative = PurePosixPath(_absolute(path).relative_to(root).as_posix())
            found.append(_Found(path, root, relative, source))
    return sorted(found, key=lambda f: str(f.relative))


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard: names are relative to it."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if _has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _expand(text: str, source: int) -> list[_Found]:
    if is_url(text):  # object storage, http: listed through fsspec (embedzoo.remote)
        try:
            found = [_Found(url, Path("/"), relative, source) for url, relative in expand(text, AUDIO_EXTENSIONS)]  # type: ignore[arg-type]
        except OSError as exc:
            raise AudioError(f"cannot list '{text}': {exc}", hint="check the URL, your credentials and that fsspec has its protocol (s3fs, gcsfs, ...)", path=text) from None
        if not found:
            raise AudioError(f"'{text}' holds no audio files", hint=f"embedzoo looks for {', '.join(AUDIO_EXTENSIONS)} (hidden files are skipped)", path=text)
        return found
    path = Path(text).expanduser()
    if path.is_file():
        absolute = _absolute(path)
        return [_Found(path, absolute.parent, PurePosixPath(absolute.name), source)]
    if path.is_dir():
        found = _files_under(path, _absolute(path), source)
        if not found:
            raise AudioError(f"no audio files in folder '{text}'", hint=f"embedzoo looks for {', '.join(AUDIO_EXTENSIONS)} (hidden files are skipped)", path=text)
        return found
    if path.exists():
        raise AudioError(f"'{text}' is neither a file nor a folder", hint="pass audio files, folders or glob patterns", path=text)
    if not _has_magic(text):
        raise AudioError(f"no such file or folder: '{text}'", hint="check the path (relative paths start from the current folder)", path=text)
    root = _absolute(_glob_root(str(path)))
    found = []
    for match in sorted(glob.glob(str(path), recursive=True)):
        match_path = Path(match)
        if match_path.is_dir():
            found += _files_under(match_path, root, source)
        elif match_path.is_file() and _has_audio_extension(match_path):
            relative = PurePosixPath(_absolute(match_path).relative_to(root).as_posix())
            if not _is_hidden(relative):
                found.append(_Found(match_path, root, relative, source))
    found.sort(key=lambda f: str(f.relative))
    if not found:
        raise AudioError(f"the pattern '{text}' matches no audio files", hint=f"embedzoo looks for {', '.join(AUDIO_EXTENSIONS)}; quote the pattern so the shell does not expand it", path=text)
    return found


# ---- names ------------------------------------------------------------------------------------

NAME_BYTES = 240
"""Longest name component, in UTF-8 bytes: 255 (NAME_MAX) less the longest output suffix
('.timestamps.npy'), so every output's file name fits the file system."""

_TEMP_LOOKALIKE = ".embedzoo-"  # what embedzoo's own temporary files start with (see pipeline)


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (os.fsdecode's surrogateescape)
        return f"%{code - 0xDC00:02X}"
    if code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029):  # control characters, newlines
        return f"%{code:02X}" if code < 0x100 else f"%u{code:04X}"
    if 0xD800 <= code <= 0xDFFF:  # any other lone surrogate: not encodable
        return f"%u{code:04X}"
    return char


def _shorten(part: str, limit: int = NAME_BYTES) -> str:
    """`part` if it fits in `limit` UTF-8 bytes, else its start + '~' + 8 hex of its hash + its extension."""
    if len(part.encode("utf-8")) <= limit:
        return part
    head, _, tail = part.rpartition(".")
    ext = "." + tail if head and len(tail) <= 16 else ""
    stem = part[: len(part) - len(ext)]
    tag = "~" + hashlib.sha256(part.encode("utf-8")).hexdigest()[:8] + ext
    budget = limit - len(tag.encode("utf-8"))
    return stem.encode("utf-8")[:budget].decode("utf-8", "ignore") + tag


def safe_name(name: str) -> str:
    """A name every file system and shell tool takes, changed only where it must be.

    Per '/'-separated component: bytes that are not UTF-8 and control characters (newlines, tabs)
    become %XX; a leading '-' (read as an option by `rm *`) becomes %2D; a component that could be
    taken for embedzoo's temporary files gets its '.' escaped (%2E); '.' and '..' are escaped; a
    component longer than `NAME_BYTES` is cut and gets a hash of the whole. Deterministic, and the
    identity on ordinary names; two names it maps together are told apart like any clash.
    """
    parts = []
    for part in name.split("/"):
        if not part:
            continue
        safe = "".join(_escaped(c) for c in part)
        if safe in (".", ".."):
            safe = safe.replace(".", "%2E")
        if safe.startswith("-"):
            safe = "%2D" + safe[1:]
        if safe.startswith(_TEMP_LOOKALIKE):
            safe = "%2E" + safe[1:]
        parts.append(_shorten(safe))
    return "/".join(parts) or "%00"


def tagged_name(name: str, tag: str) -> str:
    """`name` with `~tag` before the extension of its last component ('a/x.wav' -> 'a/x~tag.wav')."""
    folder, _, last = name.rpartition("/")
    stem, dot, ext = last.rpartition(".")
    if not stem:
        stem, dot, ext = last, "", ""
    tagged = _shorten(f"{stem}~{tag}{dot}{ext}")
    return f"{folder}/{tagged}" if folder else tagged


def name_candidates(base: str, content_sha256: Callable[[], str]) -> Iterator[str]:
    """The names a file may take, in order: its own name, then `name~<8 hex of its content's
    sha256>`, then `~<hash>-2`, `-3`, ... (files of the same content and name). A function of the
    file alone, so adding or removing other inputs never renames an output; `content_sha256` is
    called only when the plain name is taken."""
    yield base
    tag = content_sha256()[:8]
    yield tagged_name(base, tag)
    copy = 2
    while True:
        yield tagged_name(base, f"{tag}-{copy}")
        copy += 1


def _file_sha256(path: Path | str) -> str:
    from embedzoo.weights.cache import sha256_file  # torch-free; memoised by (path, size, mtime)

    try:
        return remote_sha256(path) if is_url(path) else sha256_file(path)
    except OSError:
        return hashlib.sha256(os.fsencode(str(path))).hexdigest()  # unreadable: decoding reports it


def _unique_names(found: list[_Found]) -> list[str]:
    """Names that never clash (also not case-insensitively, for macOS/Windows outputs).

    Each file is named after its path relative to its root (`safe_name`); when an earlier input
    already holds that name, the file takes the next of its `name_candidates` (`x~1a2b3c4d.wav`,
    from its content), so a clash renames only the later file and never the rest of the inputs.
    """
    taken: set[str] = set()
    names = []
    for f in found:
        base = safe_name(f.relative.as_posix())
        for name in name_candidates(base, lambda f=f: _file_sha256(f.path)):
            if name.casefold() not in taken:
                break
        taken.add(name.casefold())
        names.append(name)
    return names


def collect_inputs(inputs: Sequence[str | Path]) -> list[InputFile]:
    """Files, folders (recursive) and glob patterns to a deduplicated list of uniquely named files.

    Order: inputs in the order given, each one's files sorted. A file found twice (same resolved
    path) keeps its first name. Folders and globs pick files with `AUDIO_EXTENSIONS` and skip
    hidden files and folders; a file named directly is taken whatever its extension.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if not inputs:
        raise AudioError("no audio inputs given", hint="pass audio files, folders or glob patterns such as 'clips/**/*.wav'")
    found: list[_Found] = []
    seen: set[Path] = set()
    for source, item in enumerate(inputs):
        for f in _expand(str(item), source):
            resolved = f.path if is_url(f.path) else f.path.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found.append(f)
    return [InputFile(f.path, name, safe_name(f.relative.as_posix())) for f, name in zip(found, _unique_names(found))]
