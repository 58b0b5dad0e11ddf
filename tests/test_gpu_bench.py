"""CI's smoke run of bench/gpu.py: the smallest settings on the CPU, two families; the printed
tables have their columns and every figure is a positive number (speed itself lives in the bench).
Cheaper checks of the rest: its pairs are the packaged catalog's families, one each, and
`--families` refuses a name it has no pair for."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path


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
    assert not missing, f"the references are not installed: {missing} (bash scripts/test.sh installs them: the plugins' test extras)"
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


def _pair_names() -> list[str]:
    """The keys of bench/gpu.py's PAIRS, read from its source (importing it would put bench/ on
    sys.path, whose scripts shadow packages such as `whisper` for the rest of the session)."""
    tree = ast.parse(SCRIPT.read_text())
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["PAIRS"]]
    assert isinstance(value, ast.Dict)
    return [key.value for key in value.keys]


def test_gpu_bench_has_one_pair_per_family_of_the_catalog():
    from embedzoo.registry import default_registry_path, read_catalog

    names = _pair_names()
    families = {entry["family"] for entry in read_catalog(default_registry_path()).models}
    assert len(names) == len(set(names))
    assert set(names) <= families, f"pairs for no family of the catalog: {sorted(set(names) - families)}"
    assert families <= set(names), f"families without a pair in bench/gpu.py: {sorted(families - set(names))}"


def test_gpu_bench_refuses_an_unknown_family(tmp_path):
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--families", "panns,nosuch"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert "nosuch" in done.stderr and "choose from" in done.stderr and "passt" in done.stderr
    assert "| family |" not in done.stdout  # refused before any pair was built
