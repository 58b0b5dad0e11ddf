"""The shard plan of a job: fixed chunks of its sorted input files, shared by every engine.

A shard is the unit that is scheduled, retried and committed, and the unit of batching: one
Session packs the windows of one shard's files, in the shard's order, into batches. Because a
batch's composition changes the float bits of its rows (a Linear layer's row in a batch of 7 and
in a batch of 257 differs in the last bits), two runs give byte-identical files exactly when they
cut the same shards: `--engine local` runs this plan in order, `--engine ray` maps the same shards
over an actor pool, and a resumed job plans its whole input again and recomputes a shard in full
when any of its files is missing (writing only the missing ones).

The plan depends on the input files alone: sorted by absolute path, cut before a shard would pass
`max_files` files or `max_seconds` of audio (each file's duration from its header); a file longer
than `max_seconds` (an hour-long recording) is a shard of its own. This module imports no torch.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["MAX_SHARD_FILES", "MAX_SHARD_SECONDS", "Shard", "durations", "plan_shards"]

MAX_SHARD_FILES = 256
"""Files per shard at most (also the rows of one parquet part)."""
MAX_SHARD_SECONDS = 1800.0
"""Seconds of audio per shard at most: small enough that a few workers or actors share a
job of a few thousand clips, large enough that a shard's last, partial batch costs little."""


@dataclass(frozen=True)
class Shard:
    """One shard: the indices of its files in the job's input list (in plan order) and its audio
    seconds (from the headers; 0 for a file whose header cannot be read, which decoding reports)."""

    number: int
    members: tuple[int, ...]
    seconds: float


def durations(paths: Sequence[str | Path], threads: int = 8) -> list[float]:
    """Each file's duration in seconds from its header (0.0 where it cannot be read): header reads
    only, in threads, since on a network file system they wait on I/O rather than on the CPU."""
    from embedzoo.audio import audio_info

    def one(path: str | Path) -> float:
        try:
            return float(audio_info(path).duration)
        except Exception:  # unreadable, missing, not audio: decoding reports it with the reason
            return 0.0

    if len(paths) < 64:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(one, paths))


def plan_shards(
    paths: Sequence[str | Path],
    seconds: Sequence[float],
    max_files: int = MAX_SHARD_FILES,
    max_seconds: float = MAX_SHARD_SECONDS,
) -> list[Shard]:
    """Cut the files, sorted by absolute path, into shards of at most `max_files` files and
    `max_seconds` of audio; a file of more than `max_seconds` is a shard alone. The result
    depends only on the paths and durations, never on the order they were given in."""
    if max_files < 1:
        raise ValueError(f"max_files must be at least 1, not {max_files}")
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, not {max_seconds}")
    order = sorted(range(len(paths)), key=lambda i: os.fsencode(os.path.abspath(paths[i])))
    shards: list[Shard] = []
    members: list[int] = []
    total = 0.0

    def cut() -> None:
        nonlocal members, total
        if members:
            shards.append(Shard(len(shards), tuple(members), total))
        members, total = [], 0.0

    for index in order:
        length = max(0.0, float(seconds[index]))
        if members and (len(members) >= max_files or total + length > max_seconds):
            cut()
        members.append(index)
        total += length
        if length > max_seconds:
            cut()
    cut()
    return shards
