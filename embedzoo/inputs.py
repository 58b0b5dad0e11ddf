"""Input discovery for jobs: files, folders and glob patterns -> a sorted list of uniquely named files.

`embedzoo embed` names each output after its input's path relative to the folder (or glob root) it
was found in, extension kept, so names are a function of each file, never of the rest of the input
set; clashes (also case-insensitive ones, for macOS and Windows outputs) are resolved
deterministically. Folders and globs pick what `embedzoo.audio` can decode (`AUDIO_EXTENSIONS`).
"""

from __future__ import annotations

import glob
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from embedzoo.audio import AUDIO_EXTENSIONS
from embedzoo.errors import AudioError

__all__ = ["InputFile", "collect_inputs"]


@dataclass(frozen=True)
class InputFile:
    """One audio file to process; `name` (relative to its input root, extension kept) names its outputs."""

    path: Path
    name: str


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


def _unique_names(found: list[_Found]) -> list[str]:
    """Names that never clash (also not case-insensitively, for macOS/Windows outputs).

    A clash is resolved by prefixing every file of the clashing inputs with their root's folder
    name, then its parent's, ... until the names differ; files whose whole absolute paths differ
    only in letter case get a `~2`, `~3` suffix instead. Deterministic given the inputs' order.
    """
    relatives = [f.relative for f in found]
    by_full_path: dict[str, list[int]] = defaultdict(list)
    for index, f in enumerate(found):
        by_full_path[(f.root / f.relative.as_posix()).as_posix().casefold()].append(index)
    for indices in by_full_path.values():
        for copy, index in enumerate(indices[1:], start=2):
            rel = relatives[index]
            relatives[index] = rel.with_name(f"{rel.stem}~{copy}{rel.suffix}")

    root_parts = [f.root.parts[1:] for f in found]  # without the anchor ('/' or 'C:\\')
    level: dict[int, int] = defaultdict(int)  # per input: how many root folders prefix its names
    while True:
        names = []
        for index, f in enumerate(found):
            depth = min(level[f.source], len(root_parts[index]))
            prefix = root_parts[index][len(root_parts[index]) - depth :]
            names.append("/".join((*prefix, *relatives[index].parts)))
        groups: dict[str, list[int]] = defaultdict(list)
        for index, name in enumerate(names):
            groups[name.casefold()].append(index)
        clashing = [indices for indices in groups.values() if len(indices) > 1]
        if not clashing:
            return names
        sources = {found[i].source for indices in clashing for i in indices if level[found[i].source] < len(root_parts[i])}
        if not sources:  # roots exhausted (cannot happen for distinct absolute paths); keep it terminating
            for indices in clashing:
                for copy, index in enumerate(indices[1:], start=2):
                    rel = relatives[index]
                    relatives[index] = rel.with_name(f"{rel.stem}~{copy}{rel.suffix}")
            continue
        for source in sources:
            level[source] += 1


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
            resolved = f.path.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found.append(f)
    return [InputFile(f.path, name) for f, name in zip(found, _unique_names(found))]
