"""(Not bench/ray.py: a script named ray.py would shadow the ray package it imports.)

`--engine ray` against `--engine local` on this machine: Ray's overhead as a ratio, and what the
driver's own cost per file says about scaling past one machine.

    python bench/ray_engine.py                                   # crepe-tiny (real weights), 48 files x 10 s
    python bench/ray_engine.py --model 'panns-cnn14?weights=random' --files 32

Both engines run the same shard plan on the same files with all of this machine's cores: local
with torch's threads over `--cpus` and one decoding worker, Ray with `--actors` actors of
`--cpus / --actors` CPUs (threads) each. Ray's start-up (`ray.init`, a few seconds) is timed apart:
it is paid once per cluster, and `--engine local` never pays it (it does not import Ray). The job
times include Ray Data starting its actors and sending them the model, which every job pays.
The projection multiplies one actor's measured files/s by the actor count, capped by the
driver's measured cost per file (planning: headers, names; booking each result): it assumes
compute-bound actors and a file system that keeps up, and says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import load, make_files  # noqa: E402

from embedzoo import load as load_model  # noqa: E402
from embedzoo.inputs import collect_inputs  # noqa: E402
from embedzoo.pipeline import embed_files  # noqa: E402


def outputs(out: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(out).as_posix(): np.load(p) for p in sorted(out.rglob("*.embedding.npy"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crepe-tiny?hop_ms=50")
    parser.add_argument("--files", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="cores both engines use")
    parser.add_argument("--actors", type=int, default=0, help="Ray actors (default: one per core)")
    parser.add_argument("--shard-files", type=int, default=8, help="files per shard (both engines)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each engine; the best counts")
    args = parser.parse_args()
    actors = args.actors or args.cpus
    import ray

    from embedzoo.ray import RayOptions

    model = load_model(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_files(root / "clips", args.files, args.seconds, model.card.sample_rate)
        files = collect_inputs(paths)
        print(f"{args.model}: {args.files} files x {args.seconds:g} s, shards of {args.shard_files} files; {args.cpus} cores; {load()}")

        torch.set_num_threads(args.cpus)
        local_times = []
        for run in range(args.repeat):
            start = time.perf_counter()
            summary = embed_files(model, files, root / f"local{run}", workers=1, shard_rows=args.shard_files)
            local_times.append(time.perf_counter() - start)
        assert summary.ok and summary.done == args.files

        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        startup = time.perf_counter() - start
        options = RayOptions(actors=actors, cpus_per_actor=args.cpus / actors)
        ray_times, booking = [], []
        for run in range(args.repeat):
            start = time.perf_counter()
            summary = embed_files(model, files, root / f"ray{run}", shard_rows=args.shard_files, engine="ray", ray=options)
            ray_times.append(time.perf_counter() - start)
        assert summary.ok and summary.done == args.files
        one = RayOptions(actors=1, cpus_per_actor=args.cpus / actors)  # one actor: its own rate
        start = time.perf_counter()
        embed_files(model, files, root / "ray-one", shard_rows=args.shard_files, engine="ray", ray=one)
        single = time.perf_counter() - start
        ray.shutdown()

        # the driver alone: plan + book every file of a finished job (nothing left to compute)
        from embedzoo.shards import durations, plan_shards

        start = time.perf_counter()
        plan_shards([str(p) for p in paths], durations(paths), args.shard_files)
        again = embed_files(model, files, root / "ray0", shard_rows=args.shard_files)
        booking.append((time.perf_counter() - start) / args.files)
        assert again.skipped == args.files
        ours, theirs = outputs(root / "local0"), outputs(root / "ray0")
        worst = max(float(np.abs(ours[k] - theirs[k]).max() / (np.abs(ours[k]).max() + 1e-12)) for k in ours)

    local, remote = min(local_times), min(ray_times)
    print(f"{'engine':34s} {'wall':>8s} {'files/s':>8s}")
    print(f"{'local (1 decoding worker)':34s} {local:8.1f} {args.files / local:8.2f}")
    print(f"{f'ray ({actors} actors x {args.cpus / actors:g} CPU)':34s} {remote:8.1f} {args.files / remote:8.2f}")
    print(f"{'ray, 1 actor':34s} {single:8.1f} {args.files / single:8.2f}")
    print(f"ray.init (once per cluster): {startup:.1f} s")
    print(f"Ray's overhead: local / ray = {local / remote:.2f}x ({(remote / local - 1) * 100:+.0f} % wall); outputs agree to {worst:.1e} "
          f"(bytes equal when both run the same threads: tests/test_ray.py)")
    per_actor = args.files / single
    ceiling = 1.0 / booking[0]
    print(f"driver cost per file (plan + book): {booking[0] * 1e3:.2f} ms -> at most {ceiling:,.0f} files/s through one driver")
    print("projection (compute-bound actors like this one, a file system that keeps up):")
    for count in (1, 2, 8, 32, 128, 512):
        print(f"  {count:4d} actors: {min(count * per_actor, ceiling):10,.1f} files/s")


if __name__ == "__main__":
    main()
