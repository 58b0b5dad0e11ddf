"""Mirror: a model's verified original files, copied into a mirror folder laid out the way
`fetch_source` reads one (hub files at `DIR/<org>/<repo>/<filename>`, url files at
`DIR/<file name>`), so machines without the network pull from it (`EMBEDZOO_MIRROR=DIR`,
`--from DIR`) and verify every file as they would a download.

Weights whose licence forbids redistribution (a card with `redistribute: false`: NTT's evaluation
licence, ...) are refused before anything is fetched or written: embedzoo never copies them out of
its own cache; every user fetches them from the authors' source and converts them locally.
Torch-free.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from embedzoo.card import ModelCard, Source
from embedzoo.errors import WeightsError
from embedzoo.weights.cache import follow_umask
from embedzoo.weights.fetch import Progress, mirror_path
from embedzoo.weights.store import fetch_checkpoint

__all__ = ["check_redistributable", "mirror_model"]


def check_redistributable(card: ModelCard) -> None:
    """WeightsError when the card's weights may not be rehosted (`redistribute: false`)."""
    if not card.redistribute:
        raise WeightsError(
            f"{card.id}: the licence of its weights ({card.license or 'see the model card'}) forbids redistributing them, "
            "so embedzoo does not copy them into a mirror",
            hint=f"each machine fetches them from the authors' source itself: `embedzoo pull {card.id}`",
        )


def mirror_model(
    card: ModelCard,
    dest: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    progress: Progress | None = None,
    quiet: bool = False,
) -> list[Path]:
    """Copy the original files of `card`'s first source that can be had (verified as `pull` verifies
    them: its file, its extras, its repo files) into the mirror folder `dest`; returns the paths
    written. Refuses a card whose weights may not be redistributed, and a card whose weights ship
    inside an installed package (a mirror never holds those)."""
    check_redistributable(card)
    if not any(source.kind != "package" for source in card.sources):
        raise WeightsError(
            f"{card.id}: its weights ship inside an installed package, not from a download: a mirror has nothing to hold",
            hint="install the package on the other machine",
        )
    root = Path(dest).expanduser()
    downloadable = [source for source in card.sources if source.kind != "package"]
    source, original, extras, repo_files = fetch_checkpoint(
        _with_sources(card, downloadable), cache_dir, None, offline, progress, quiet
    )
    files: list[tuple[Source, Path]] = [(source, original), *zip(source.extras, extras)]
    for name, path in (repo_files or {}).items():
        files.append((Source(kind="hf", repo=source.repo, revision=source.revision, filename=name), path))
    try:
        return [_place(path, mirror_path(entry, root)) for entry, path in files]
    except PermissionError as exc:
        raise WeightsError(
            f"permission denied: cannot write {exc.filename or root} ({exc.strerror or exc})",
            hint="choose a mirror folder you can write (its owner can `chmod -R g+rwX` it for a group)",
        ) from exc


def _with_sources(card: ModelCard, sources: list[Source]) -> ModelCard:
    from dataclasses import replace

    return replace(card, sources=tuple(sources))


def _place(path: Path, target: Path) -> Path:
    """Copy `path` to `target` atomically (a partial copy is never seen under the final name)."""
    if target.exists() and target.resolve() == path.resolve():
        return target  # the mirror is where this file was fetched from
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=".embedzoo-partial-")
    os.close(handle)
    try:
        shutil.copyfile(path, partial)
        follow_umask(Path(partial))
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target
