"""Benchmark: `embedzoo embed crepe-tiny` against a plain torchcrepe loop, measured in one run.

100 generated 10 s files at mixed sample rates (8, 16, 22.05, 44.1, 48 kHz; some stereo). The
reference reads each file with soundfile, down-mixes, and calls `torchcrepe.embed` (10 ms hop,
real tiny weights, all frames of a file in one batch); embedzoo runs the CLI command end to end
(process start, weight conversion cached beforehand, decoding in a worker process). Both produce
conv5 embeddings at 10 ms. Prints files/s of each and the ratio.

    python bench/crepe.py [--files 100] [--seconds 10] [--workers 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RATES = (8000, 16000, 22050, 44100, 48000)


def make_files(folder: Path, count: int, seconds: float) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rate = RATES[i % len(RATES)]
        t = np.arange(int(seconds * rate)) / rate
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        x = 0.4 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal(len(t))
        data = np.stack([x, 0.5 * x], axis=1) if i % 4 == 0 else x
        path = folder / f"clip{i:03d}.{'flac' if i % 3 == 0 else 'wav'}"
        sf.write(path, data.astype(np.float32), rate)
        paths.append(path)
    return paths


def reference(paths: list[Path], device: str) -> float:
    import torch
    import torchcrepe

    torchcrepe.load.model(device, "tiny")  # load once, as a careful user would
    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
            mono = torch.from_numpy(audio.mean(axis=1))[None]
            torchcrepe.embed(mono, rate, hop_length=rate // 100, model="tiny", device=device)
    return time.perf_counter() - start


def embedzoo_cli(folder: Path, out: Path, workers: int, device: str) -> tuple[float, dict]:
    command = [sys.executable, "-m", "embedzoo", "embed", "crepe-tiny", str(folder), "-o", str(out),
               "--workers", str(workers), "--device", device, "--timestamp", "--json", "--overwrite"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "EMBEDZOO_OFFLINE": "1"})
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"embedzoo embed failed:\n{result.stderr}")
    return elapsed, json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    subprocess.run([sys.executable, "-m", "embedzoo", "pull", "crepe-tiny", "--offline"], check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "audio"
        paths = make_files(folder, args.files, args.seconds)
        ours, summary = embedzoo_cli(folder, Path(tmp) / "out", args.workers, args.device)
        theirs = reference(paths, args.device)
    n = len(paths)
    print(f"files: {n} x {args.seconds:g} s, mixed rates {RATES}, device {args.device}, torch threads {os.cpu_count()} cores")
    print(f"torchcrepe loop:          {theirs:7.1f} s  {n / theirs:6.2f} files/s")
    print(f"embedzoo embed (CLI):     {ours:7.1f} s  {n / ours:6.2f} files/s  (pipeline alone {summary['wall_seconds']:.1f} s)")
    print(f"ratio embedzoo/torchcrepe: {theirs / ours:.2f}x faster end to end, {theirs / summary['wall_seconds']:.2f}x for the pipeline")


if __name__ == "__main__":
    main()
