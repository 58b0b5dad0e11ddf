"""What the family benchmarks share: test files, the device (`--device`), a wall + CPU clock that
waits for CUDA, embedzoo's pipeline timed, the settings sweep (channels_last x batch_seconds),
relative error and the machine's load. Imported by the scripts in this folder (`python bench/X.py`
puts the folder on sys.path)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import soundfile as sf
import torch

from embedzoo.inputs import collect_inputs
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


Setting = tuple[bool, float]  # (channels_last, batch_seconds)
SWEEP_BATCH_SECONDS = (8.0, 32.0, 128.0)


def sweep_settings(
    build: Callable[[bool], Any],
    jobs: Mapping[str, Callable[[Any], Timing]],
    *,
    knobs: Mapping[str, Mapping[str, Any]] | None = None,
    repeat: int = 2,
    interleave: bool = False,
    metric: Callable[[Timing], float] = cost,
    line: Callable[[Setting, dict[str, Timing]], str] | None = None,
    batch_seconds: Sequence[float] = SWEEP_BATCH_SECONDS,
) -> tuple[Setting, dict[Setting, dict[str, Timing]]]:
    """The sweep that picks what a plugin ships: channels_last (a model setting, so `build(flag)`
    makes the model) x batch_seconds (a knob, set before each run). Every job (one timed run of the
    sweep's files) runs `repeat` times per setting and keeps its best wall and best CPU time; the
    fastest setting is the one whose jobs' `metric` sums lowest.

    `knobs[job]` are set once on that job's model (jobs with the same knobs share one). With
    `interleave`, each round runs every setting once, so a busy machine's load hits all alike;
    otherwise a setting's runs follow each other. `line(setting, best times)`, when given, is
    printed per setting (after the last round when interleaved). Returns the fastest setting and
    every setting's best times per job."""
    models: dict[tuple[bool, tuple[tuple[str, Any], ...]], Any] = {}

    def model_for(channels_last: bool, job: str) -> Any:
        own = tuple(sorted((knobs or {}).get(job, {}).items()))
        if (channels_last, own) not in models:
            models[(channels_last, own)] = build(channels_last).configure(**dict(own))
        return models[(channels_last, own)]

    settings = [(channels_last, float(seconds)) for channels_last in (False, True) for seconds in batch_seconds]
    best: dict[Setting, dict[str, Timing]] = {setting: {} for setting in settings}

    def measure(setting: Setting, job: str) -> None:
        timing = jobs[job](model_for(setting[0], job).configure(batch_seconds=setting[1]))
        old = best[setting].get(job)
        best[setting][job] = timing if old is None else Timing(min(old.wall, timing.wall), min(old.cpu, timing.cpu))

    if interleave:
        for _ in range(repeat):
            for setting in settings:
                for job in jobs:
                    measure(setting, job)
    for setting in settings:
        if not interleave:
            for job in jobs:
                for _ in range(repeat):
                    measure(setting, job)
        if line is not None:
            print(line(setting, best[setting]))
    fastest = min(settings, key=lambda setting: sum(metric(timing) for timing in best[setting].values()))
    return fastest, best


def shipped_setting(card: Any, channels_last: bool) -> Setting:
    """The (channels_last, batch_seconds) a card runs with when no sweep is asked (`--sweep-files 0`):
    its config's layout (else the plugin's default) and its default batch_seconds."""
    from embedzoo.knobs import resolve_knobs

    return bool(card.config.get("channels_last", channels_last)), float(resolve_knobs(card).batch_seconds)


def wall(timing: Timing) -> float:
    """The wall time: what a sweep minimises when it ignores CPU time."""
    return timing.wall


def rel(a, b) -> float:
    """max |a - b| / max |b| (numpy arrays or tensors on any device)."""
    a, b = (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x for x in (a, b))
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


def best_time(fn: Callable[[], Any], device: str, repeat: int) -> tuple[float, Any]:
    """Best wall seconds of `repeat` calls of `fn` (CUDA synchronised around each), and its last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def ratio_table(rows: Sequence[tuple[str, Timing, Timing]], theirs: str = "transformers") -> None:
    """Print (job, reference timing, embedzoo timing) rows with the reference / embedzoo ratio."""
    print(f"{'':34s} {theirs:>28s} {'embedzoo':>28s}   ratio ({theirs} / embedzoo)")
    for name, reference, ours in rows:
        print(f"{name:34s} {str(reference):>28s} {str(ours):>28s}   {reference.ratio(ours)}")


def load() -> str:
    return "load average %.1f %.1f %.1f" % os.getloadavg()
