"""CI's smoke run of bench/gpu.py: the smallest settings on the CPU, two families; the printed
tables have their columns and every figure is a positive number (speed itself lives in the bench)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
FAMILIES = ("panns", "ast")
NEEDS = {"panns": ("panns_hear", "embedzoo_panns"), "ast": ("transformers", "embedzoo_ast")}


def _rows(text: str, header: str) -> list[list[str]]:
    """The cells of a markdown table's body, the one whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    assert set(lines[start + 1].replace("|", "")) == {"-"}
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _positive(cell: str) -> float:
    value = float(cell.rstrip("x"))
    assert value > 0, cell
    return value


def test_gpu_bench_runs_on_the_cpu_with_its_smallest_settings(tmp_path):
    missing = [module for family in FAMILIES for module in NEEDS[family] if importlib.util.find_spec(module) is None]
    if missing:
        pytest.skip(f"the references are not installed: {missing}")
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--families", ",".join(FAMILIES), "--clips", "1", "--files", "2",
               "--seconds", "2", "--repeat", "1", "--threads", "1"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("device cpu: CPU")
    rows = _rows(done.stdout, "family")
    assert [row[0] for row in rows] == list(FAMILIES)
    for family, card, *figures in rows:
        assert len(figures) == 7, (family, figures)
        reference, ours, ratio, error, gflop, achieved, share = figures
        for cell in (reference, ours, ratio, gflop, achieved, share):
            _positive(cell)
        assert float(error) < 1e-3  # the same weights on both sides: the same embeddings
        assert abs(_positive(ratio) - _positive(reference) ** -1 * _positive(ours)) < 0.02 * _positive(ratio) + 0.01
    stages = _rows(done.stdout, "stage")
    assert [row[0].split(" (")[0] for row in stages] == ["decode + resample", "decode + resample", "device only", "end to end from files"]
    for _, rate in stages:
        _positive(rate)
