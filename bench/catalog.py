"""How long `embedzoo list` takes with a catalog of N cards (default 150): the packaged catalog
plus generated checkpoints of the installed families in an EMBEDZOO_REGISTRY file, each a short
`models:` entry completed by its family's geometry, as a real new checkpoint would be.

    python bench/catalog.py [--cards 150] [--runs 15]

Prints the median and best wall time of `embedzoo list` (and `list --json`) in fresh processes,
the same with the packaged catalog alone, and the ratio of the two. Torch is never imported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from embedzoo.registry import build_registry, default_registry_path, read_catalog


def generated_catalog(total: int, path: Path) -> int:
    """Write enough extra entries (copies of the packaged ones under new ids) to reach `total` cards."""
    models = read_catalog(default_registry_path()).models
    extra = []
    for index in range(max(0, total - len(models))):
        entry = dict(models[index % len(models)])
        entry.update(id=f"bench-{index:04d}-{entry['id']}", aliases=[])
        extra.append(entry)
    path.write_text(yaml.safe_dump({"models": extra}, sort_keys=False))
    return len(models) + len(extra)


def time_command(args: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for run in range(runs + 1):  # the first run warms the file cache and is not counted
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "embedzoo", *args], capture_output=True, text=True, env=env)
        if run:
            times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"embedzoo {' '.join(args)} failed:\n{result.stderr}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cards", type=int, default=150)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    base_env = {k: v for k, v in os.environ.items() if k != "EMBEDZOO_REGISTRY"}
    with tempfile.TemporaryDirectory() as folder:
        extra = Path(folder) / "bench-catalog.yaml"
        total = generated_catalog(args.cards, extra)
        env = {**base_env, "EMBEDZOO_REGISTRY": str(extra)}
        os.environ["EMBEDZOO_REGISTRY"] = str(extra)
        registry = build_registry()
        complete = sum(card.complete for card in registry)
        print(f"catalog: {total} cards ({complete} completed by installed plugins), load {os.getloadavg()[0]:.2f}")
        rows = [
            ("list, packaged catalog", time_command(["list"], base_env, args.runs)),
            (f"list, {total} cards", time_command(["list"], env, args.runs)),
            (f"list --json, {total} cards", time_command(["list", "--json"], env, args.runs)),
        ]
    print(f"{'command':<28} {'median s':>9} {'best s':>8}")
    for name, times in rows:
        print(f"{name:<28} {statistics.median(times):>9.3f} {min(times):>8.3f}")
    print(f"ratio {total} cards / packaged: {statistics.median(rows[1][1]) / statistics.median(rows[0][1]):.2f}x")


if __name__ == "__main__":
    main()
