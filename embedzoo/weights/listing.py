"""Hub sources that name their files by pattern (`filename: "*epoch*.pt"`), resolved to one file
each from the repo's own file list at one commit.

Some repos keep a checkpoint under a path nobody can know without listing the repo (ESPnet uploads
keep the training machine's folders: OpenBEATs' `work/nvme/.../epoch59.pt`). A card may then give
`filename` and `files` as fnmatch patterns. Before the source is fetched, each pattern is matched
against the repo's files at the commit the source is held to -- the Hub's listing online (which
also fixes a branch's commit, trust on first use), the mirror's folder, or offline the hub cache's
snapshot of that commit -- and the source becomes a plain one with those names. The weights file's
pattern must match exactly one file; a repo file's, at most one, or one beside the weights file
(none: the file is absent, as a repo without preprocessor_config.json). Every name listed is
checked to stay inside its repo.
Torch-free.
"""

from __future__ import annotations

import fnmatch
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

from embedzoo.card import Source, unsafe_relpath
from embedzoo.errors import OfflineError, WeightsError
from embedzoo.weights.cache import hf_cache_dir, is_offline, mirror_root, record_commit, recorded_pin
from embedzoo.weights.fetch import hub_endpoint, resolved_revision

__all__ = ["has_patterns", "resolve_patterns", "resolve_in_folder"]

_GLOB = frozenset("*?[")


def is_pattern(name: str) -> bool:
    return any(char in _GLOB for char in name)


def has_patterns(source: Source) -> bool:
    """Whether the hub source names its weights file or a repo file by pattern."""
    return source.kind == "hf" and any(is_pattern(name) for name in (source.filename, *source.files))


def resolve_patterns(source: Source, cache_dir: Any = None, mirror: Any = None, offline: bool | None = None) -> Source:
    """`source` with its patterns replaced by the repo's matching file names (unchanged when it has
    none). Looks in the mirror folder when one is set and holds the repo, else the Hub (online) or
    the hub cache's snapshot (offline). Raises WeightsError naming the repo, commit and pattern when
    a pattern matches no file or more than one; OfflineError when offline and nothing lists the repo."""
    if not has_patterns(source):
        return source
    mirror_dir = mirror_root(mirror)
    if mirror_dir is not None and (repo_dir := mirror_dir.joinpath(*source.repo.split("/"))).is_dir():
        return choose(source, _folder_names(repo_dir), f"mirror folder {repo_dir}")
    if is_offline(offline):
        return _resolve_from_hub_cache(source, cache_dir)
    return _resolve_online(source, cache_dir)


def resolve_in_folder(source: Source, folder: Path) -> Source | None:
    """`source` resolved against a folder laid out like its repo (weights=FOLDER), or None when the
    weights file's pattern matches nothing there."""
    try:
        return choose(source, _folder_names(folder), f"folder {folder}") if has_patterns(source) else source
    except WeightsError:
        if not any(fnmatch.fnmatchcase(name, source.filename) for name in _folder_names(folder)):
            return None
        raise


def choose(source: Source, names: Iterable[str], where: str) -> Source:
    """The source with each pattern replaced by the one name of `names` it matches."""
    names = sorted(set(names))
    for name in names:
        problem = unsafe_relpath(name)
        if problem:
            raise WeightsError(f"{where} lists the file {name!r}, which cannot be a path inside the repo ({problem})",
                               hint="this is not a repo embedzoo can read; check the card's repo")  # fmt: skip

    def matches(pattern: str) -> list[str]:
        return [name for name in names if fnmatch.fnmatchcase(name, pattern)] if is_pattern(pattern) else [pattern]

    weights = matches(source.filename)
    if len(weights) != 1:
        found = f"{len(weights)} files match it: {', '.join(weights[:5])}" if weights else f"none of its {len(names)} files matches it"
        raise WeightsError(
            f"{source.describe()}: the weights file is given by the pattern {source.filename!r} and {found} ({where})",
            hint="the card's pattern must pick exactly one file of the repo: name the file in the card's `filename`",
        )
    files = []
    for pattern in source.files:
        found = [name for name in matches(pattern) if name != weights[0]]
        beside = [name for name in found if name.rpartition("/")[0] == weights[0].rpartition("/")[0]]
        if len(found) > 1 and len(beside) == 1:  # several runs' configs: the one beside the weights
            found = beside
        if len(found) > 1:
            raise WeightsError(
                f"{source.describe()}: the repo file pattern {pattern!r} matches {len(found)} files ({where}): {', '.join(found[:5])}",
                hint="the card's pattern must pick at most one file of the repo: name the file in the card's `files`",
            )
        files += found[:1] if is_pattern(pattern) else found
    return replace(source, filename=weights[0], files=tuple(files))


def _folder_names(folder: Path, within: Path | None = None) -> list[str]:
    """Every file below `folder`, as '/'-separated paths relative to it; a link counts only when it
    resolves inside `within` (default: the folder; a hub cache snapshot links into its repo's blobs)."""
    root = (within or folder).resolve()
    out = []
    for path in folder.rglob("*"):
        if path.is_file() and path.resolve().is_relative_to(root):
            out.append(path.relative_to(folder).as_posix())
    return out


def _resolve_from_hub_cache(source: Source, cache_dir: Any) -> Source:
    """Offline: the names in the hub cache's snapshot of the commit the source is held to."""
    repo_dir = hf_cache_dir(cache_dir) / f"models--{source.repo.replace('/', '--')}"
    commit: str | None = resolved_revision(source, cache_dir)
    if commit == source.revision and not source.commit_pinned:  # a branch never held: huggingface_hub's own ref, if cached
        ref = repo_dir / "refs" / source.revision
        commit = ref.read_text().strip() if ref.is_file() else None
    snapshot = repo_dir / "snapshots" / commit if commit else None
    if snapshot is None or not snapshot.is_dir():
        raise OfflineError(
            f"{source.describe()} names its files by pattern and no listing of the repo is available offline "
            f"(no mirror folder for it, no hub cache snapshot {snapshot or repo_dir})",
            hint="on a machine with internet run `embedzoo pull <model id>` and copy its cache folder, or pass --from DIR with the repo's files",
        )
    return choose(source, _folder_names(snapshot, within=repo_dir), f"hub cache snapshot {snapshot}")


def _resolve_online(source: Source, cache_dir: Any) -> Source:
    """The Hub's file list at the held commit (a branch's first listing records the commit it saw,
    so the files are then fetched at the very commit that was listed)."""
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf_errors

    revision = resolved_revision(source, cache_dir)
    where = f"{source.repo}@{revision}"
    try:
        info = HfApi(**hub_endpoint(HfApi)).model_info(source.repo, revision=revision)
    except hf_errors.RepositoryNotFoundError as exc:
        raise WeightsError(f"{where}: the repo does not exist (or is private)", hint="check the card's repo") from exc
    except hf_errors.RevisionNotFoundError as exc:
        raise WeightsError(f"{where}: the revision does not exist in the repo", hint="update the card's revision") from exc
    except Exception as exc:  # the network, the endpoint's errors
        raise WeightsError(
            f"could not list the files of {where} on the Hugging Face Hub (the card names them by pattern): {type(exc).__name__}: {exc}",
            hint="check the connection (HF_ENDPOINT, HTTPS_PROXY), or pass --from DIR with the repo's files",
        ) from exc
    names = [sibling.rfilename for sibling in info.siblings or ()]
    chosen = choose(source, names, f"the Hub's file list at {info.sha or revision}")
    if not source.commit_pinned and info.sha and recorded_pin(source, cache_dir) is None:
        record_commit(source, info.sha, cache_dir)
    return chosen
