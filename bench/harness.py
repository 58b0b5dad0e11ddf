"""What the family benchmarks share: test files, the device (`--device`), a wall + CPU clock that
waits for CUDA, embedzoo's pipeline timed, relative error and the machine's load. Imported by the scripts in this folder (`python bench/X.py`
puts the folder on sys.path)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch

from embedzoo.audio import collect_inputs
from embedzoo.pipeline import embed_files


DEVICE = torch.device("cpu")


def use_device(name: str) -> torch.device:
    """Run both sides on `name` ('cpu', 'cuda', 'cuda:1'); the clock then waits for the device."""
    global DEVICE
    DEVICE = torch.device(name)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device on this machine")
    return DEVICE


def describe(threads: int) -> str:
    """The device in words, for the header line."""
    if DEVICE.type == "cuda":
        return f"{torch.cuda.get_device_name(DEVICE)} ({DEVICE})"
    return f"CPU, {threads} torch threads"


def cost(timing: "Timing") -> float:
    """What a settings sweep minimises: CPU time on the CPU (steadier on a shared machine), wall
    time on a GPU (the CPU only waits there)."""
    return timing.wall if DEVICE.type == "cuda" else timing.cpu


def _wait() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def make_files(folder: Path, count: int, seconds: float, rate: int, subtype: str | None = None) -> list[Path]:
    """`count` wav files of a tone (a different pitch each) in a little noise."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    paths = []
    for i in range(count):
        x = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.05 * rng.standard_normal(len(t))
        paths.append(folder / f"clip{i:03d}.wav")
        sf.write(paths[-1], x.astype(np.float32), rate, subtype=subtype)
    return paths


@dataclasses.dataclass
class Timing:
    """Wall and CPU (this process, all threads) seconds: on a shared machine the CPU time is the
    steadier measure of the work, the wall time what a user waits."""

    wall: float = 0.0
    cpu: float = 0.0

    def __str__(self) -> str:
        return f"{self.wall:6.1f} s (CPU {self.cpu:6.1f} s)"

    def ratio(self, other: "Timing") -> str:
        """How many times faster `other` is than self."""
        return f"{self.wall / other.wall:.2f}x wall, {self.cpu / other.cpu:.2f}x CPU"


@contextlib.contextmanager
def clock() -> Iterator[Timing]:
    timing = Timing()
    _wait()
    wall, cpu = time.perf_counter(), time.process_time()
    yield timing
    _wait()
    timing.wall, timing.cpu = time.perf_counter() - wall, time.process_time() - cpu


def ours_pipeline(model, paths: list[Path], out: Path, scene: bool, timestamp: bool) -> tuple[Timing, np.ndarray]:
    """embedzoo's pipeline over the files; the first file's scene (else timestamp) embedding."""
    files = collect_inputs([paths[0].parent])[: len(paths)]
    with clock() as timing:
        embed_files(model, files, out, scene=scene, timestamp=timestamp, workers=0, overwrite=True)
    kind = "scene" if scene else "timestamp"
    return timing, np.load(out / kind / f"{files[0].name}.embedding.npy")


def rel(a, b) -> float:
    """max |a - b| / max |b| (numpy arrays or tensors on any device)."""
    a, b = (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x for x in (a, b))
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


def load() -> str:
    return "load average %.1f %.1f %.1f" % os.getloadavg()
