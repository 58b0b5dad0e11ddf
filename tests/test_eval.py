"""`embedzoo eval` / `embedzoo sweep`: the embedding cache, the HEAR-style downstream model, the
results files and plots -- and the evidence that the scores mean something: CREPE's real weights
score far above chance on the synthetic pitch task, the same architecture with random weights
near chance."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from embedzoo.errors import ConfigError
from embedzoo.eval.embeddings import ModelHandle, embedding_key
from embedzoo.eval.evaluate import EvalSettings, evaluate
from embedzoo.eval.sweep import sweep
from embedzoo.eval.tasks import make_task
from embedzoo.weights.cache import cache_root, sha256_file
from fakedist import TOY_PLUGIN, make_dist
from toymodel import ToyExtractor

QUICK = EvalSettings(grid_points=2, max_epochs=12, patience=2, hidden_dim=64)


@pytest.fixture(autouse=True)
def one_thread():
    """The MLPs here are small: one thread is faster than two fighting over a busy CI core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scene_task(tmp_path_factory):
    return make_task("scene", tmp_path_factory.mktemp("tasks") / "scene", size="tiny")


def toy(seed: int = 0) -> ModelHandle:
    """The core tests' toy extractor (known, tiny), with weights of its own seed, in big batches."""
    torch.manual_seed(seed)
    model = ToyExtractor().eval()
    with torch.no_grad():
        model.proj.weight.normal_()
    return ModelHandle(f"toy{seed}", model.configure(batch_size=4096), f"toy-weights-{seed}")


def computed(result: dict) -> int:
    return result["timings"]["files_computed"]


# ---- the evidence --------------------------------------------------------------------------------


def test_crepe_real_weights_far_above_chance_random_weights_near_chance(tmp_path):
    task = make_task("pitch", tmp_path / "pitch", size="small")
    chance_pitch, chance_chroma = 1 / len(task.labels), 1 / 12
    settings = EvalSettings(grid_points=3, max_epochs=60)
    real = evaluate("crepe-tiny", task, settings=settings, workers=0, device="cpu", out=tmp_path / "real.json")
    random_weights = evaluate("crepe-tiny?weights=random", task, settings=settings, workers=0, device="cpu")
    assert real["scores"]["pitch_acc"] > 10 * chance_pitch, real["scores"]
    assert real["scores"]["chroma_acc"] > 0.5, real["scores"]
    assert random_weights["scores"]["pitch_acc"] < chance_pitch + 0.1, random_weights["scores"]
    assert random_weights["scores"]["chroma_acc"] < chance_chroma + 0.15, random_weights["scores"]
    # not an artefact of the random features' small scale: z-scored, they stay near chance too
    standardized = evaluate("crepe-tiny?weights=random", task, settings=EvalSettings(grid_points=3, max_epochs=60, standardize=True), workers=0, device="cpu")
    assert computed(standardized) == 0
    assert standardized["scores"]["pitch_acc"] < chance_pitch + 0.1, standardized["scores"]
    # the results file says what was evaluated, how, and how long it took
    saved = json.loads((tmp_path / "real.json").read_text())
    assert saved["model"] == "crepe-tiny" and saved["model_id"] == "crepe-tiny"
    assert "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432" in saved["weights"]  # the card's pinned original
    assert random_weights["weights"].startswith("random:seed=0")
    assert saved["knobs"]["layers"] == ["conv5"] and saved["embedding_size"] == 256
    assert saved["task"]["name"] == "embedzoo_synth_pitch" and saved["primary_metric"] == "pitch_acc"
    assert saved["splits"][0]["test"] == ["test"] and set(saved["splits"][0]) >= {"validation_score", "epoch", "scores"}
    assert saved["hparams"]["hidden_dim"] == 1024 and saved["hparams"]["dropout"] == 0.1 and len(saved["grid"]) == 3
    assert saved["timings"]["files_computed"] == sum(len(task.targets(s)) for s in task.splits)


def test_event_task_end_to_end_with_crepe(tmp_path):
    task = make_task("event", tmp_path / "event", size="small")
    result = evaluate("crepe-tiny", task, knobs={"hop_ms": 50}, settings=EvalSettings(grid_points=2, max_epochs=45, hidden_dim=256), workers=0, device="cpu")
    scores = result["scores"]
    assert set(scores) == {
        f"{name}{suffix}"
        for name in ("event_onset_200ms_fms", "event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms")
        for suffix in ("", "_precision", "_recall")
    }
    assert scores["event_onset_200ms_fms"] > 0.5, scores
    assert scores["event_onset_200ms_fms"] >= scores["event_onset_50ms_fms"] >= scores["event_onset_offset_50ms_20perc_fms"]
    grid = task.postprocessing_grid
    assert result["postprocessing"]["median_filter_ms"] in grid["median_filter_ms"] and result["postprocessing"]["min_duration"] in grid["min_duration"]
    assert result["knobs"]["hop_ms"] == 50.0


# ---- the embedding cache -------------------------------------------------------------------------


def test_embeddings_are_cached_per_model_weights_knobs_and_file(tmp_path, scene_task):
    cache = tmp_path / "cache"
    handle = toy()
    files = sum(len(scene_task.targets(s)) for s in scene_task.splits)
    first = evaluate(handle, scene_task, settings=QUICK, workers=0, cache_dir=cache)
    assert computed(first) == files and first["timings"]["files_cached"] == 0
    again = evaluate(handle, scene_task, settings=QUICK, workers=0, cache_dir=cache)
    assert computed(again) == 0 and again["scores"] == first["scores"]
    # scene embeddings do not depend on the hop or the timestamp window: a sweep over them reuses them
    handle.extractor.configure(hop_ms=1.0, window_ms=4.0)
    assert computed(evaluate(handle, scene_task, settings=QUICK, workers=0, cache_dir=cache)) == 0
    assert handle.extractor.knobs.hop_ms == 1.0  # and the knobs are the caller's again afterwards
    # ... but on other layers, from timestamps, or with other weights they are computed anew
    handle.extractor.configure(layers=["energy"])
    assert computed(evaluate(handle, scene_task, settings=QUICK, workers=0, cache_dir=cache)) == files
    timestamps = evaluate(handle, scene_task, settings=EvalSettings(**{**QUICK.__dict__, "scene_from": "timestamp"}), workers=0, cache_dir=cache)
    assert computed(timestamps) == files and timestamps["scene_from"] == "timestamp"
    other = toy(1)
    other.extractor.configure(layers=["energy"])
    assert embedding_key(other, "scene") != embedding_key(handle, "scene")
    # the cached vectors are the model's: equal to embedding the file directly
    name, _ = next(iter(scene_task.targets("test").items()))
    path = scene_task.audio_path(16000, "test", name)
    stored = np.load(cache_root(cache) / "embeddings" / "toy" / embedding_key(handle, "scene") / "scene" / f"{sha256_file(path)}.embedding.npy")
    audio, rate = sf.read(path, dtype="float32")
    np.testing.assert_allclose(stored, handle.extractor.embed([audio], rate, timestamp=False)[0].scene.numpy(), rtol=1e-6, atol=1e-7)


def test_cache_follows_the_audio_not_the_file_name(tmp_path):
    cache = tmp_path / "cache"
    handle = toy()
    make_task("scene", tmp_path / "task", size="tiny", seed=1)
    assert computed(evaluate(handle, tmp_path / "task", settings=QUICK, workers=0, cache_dir=cache)) > 0
    make_task("scene", tmp_path / "copy", size="tiny", seed=1)  # same audio elsewhere: reused
    assert computed(evaluate(handle, tmp_path / "copy", settings=QUICK, workers=0, cache_dir=cache)) == 0
    make_task("scene", tmp_path / "task", size="tiny", seed=2, overwrite=True)  # same names, new audio
    assert computed(evaluate(handle, tmp_path / "task", settings=QUICK, workers=0, cache_dir=cache)) > 0


# ---- the downstream model ------------------------------------------------------------------------


def test_runs_are_deterministic_given_a_seed(tmp_path, scene_task):
    handle = toy()
    a = evaluate(handle, scene_task, settings=QUICK, workers=0, cache_dir=tmp_path)
    b = evaluate(handle, scene_task, settings=QUICK, workers=0, cache_dir=tmp_path)
    for key in ("scores", "hparams", "grid"):
        assert a[key] == b[key], key
    untimed = [[{k: v for k, v in s.items() if k != "train_seconds"} for s in r["splits"]] for r in (a, b)]
    assert untimed[0] == untimed[1]
    c = evaluate(handle, scene_task, settings=EvalSettings(**{**QUICK.__dict__, "seed": 5, "grid_points": 4}), workers=0, cache_dir=tmp_path)
    assert [g["hparams"] for g in c["grid"][:2]] != [g["hparams"] for g in a["grid"]]
    # the chosen grid point is the best on validation, and the grid is HEAR's
    best = max(c["grid"], key=lambda g: g["validation_score"])
    assert c["hparams"] == best["hparams"] and c["splits"][0]["validation_score"] == best["validation_score"]
    for point in c["grid"]:
        hp = point["hparams"]
        assert hp["hidden_layers"] in (0, 1, 2) and hp["lr"] in (3.2e-3, 1e-3, 3.2e-4, 1e-4)
        assert hp["initialization"] in ("xavier_uniform", "xavier_normal") and hp["dropout"] == 0.1


def test_kfold_multilabel_task_reuses_hyperparameters_across_folds(tmp_path):
    task = make_task("scene-multilabel", tmp_path / "folds", size="tiny", folds=3)
    result = evaluate(toy(), task, settings=QUICK, workers=0, cache_dir=tmp_path / "cache")
    assert [s["test"] for s in result["splits"]] == [["fold00"], ["fold01"], ["fold02"]]
    assert [s["valid"] for s in result["splits"]] == [["fold01"], ["fold02"], ["fold00"]]
    assert len(result["grid"]) == QUICK.grid_points  # the search ran once, on the first split
    assert set(result["scores"]) == {"mAP", "d_prime", "aucroc"} and set(result["scores_std"]) == set(result["scores"])
    for name in ("mAP", "aucroc"):
        per_fold = [s["scores"][name] for s in result["splits"]]
        assert result["scores"][name] == pytest.approx(np.mean(per_fold)) and all(0 <= v <= 1 for v in per_fold)


# ---- the sweep -----------------------------------------------------------------------------------


def test_sweep_writes_csv_and_plots_and_resumes(tmp_path, scene_task):
    out = tmp_path / "sweep"
    grid = {"layers": ["frames", "frames,energy"], "hop_ms": [5.0, 10.0], "window_ms": [2.0, 8.0], "mode": ["window", "frame"]}
    settings = EvalSettings(**{**QUICK.__dict__, "scene_from": "timestamp", "grid_points": 1})
    seen = []

    class Interrupted(Exception):
        pass

    def stop_after_five(index, total, point, status):
        seen.append(status)
        if status == "done" and seen.count("done") == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        sweep([toy()], scene_task, out, grid=grid, settings=settings, workers=0, cache_dir=tmp_path / "cache", on_point=stop_after_five)
    assert len(list((out / "runs").glob("*.json"))) == 5
    statuses = []
    rows = sweep([toy()], scene_task, out, grid=grid, settings=settings, workers=0, cache_dir=tmp_path / "cache", on_point=lambda i, n, p, s: statuses.append(s))
    total = 2 * 2 * 2 * 2
    assert len(rows) == total and statuses.count("cached") == 5 and statuses.count("done") == total - 5

    with open(out / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == total and {r["model"] for r in table} == {"toy0"}
    assert {r["layers"] for r in table} == {"frames", "frames,energy"} and {r["mode"] for r in table} == {"window", "frame"}
    assert {float(r["hop_ms"]) for r in table} == {5.0, 10.0} and {float(r["window_ms"]) for r in table} == {2.0, 8.0}
    for row in table:
        assert row["primary_metric"] == "top1_acc" and 0 <= float(row["primary_score"]) <= 1
        saved = json.loads(Path(row["result_file"]).read_text())
        assert saved["scores"]["top1_acc"] == pytest.approx(float(row["top1_acc"]))
        assert ",".join(saved["knobs"]["layers"]) == row["layers"] and saved["knobs"]["window_ms"] == float(row["window_ms"])
        assert saved["knobs"]["mode"] == row["mode"] and saved["knobs"]["hop_ms"] == float(row["hop_ms"])
    # concatenated layers are wider than either
    sizes = {r["layers"]: int(r["embedding_size"]) for r in table}
    assert sizes["frames,energy"] == sizes["frames"] + 1
    for knob in ("layers", "hop_ms", "window_ms", "mode"):
        png = out / f"score_vs_{knob}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_sweep_records_points_a_model_cannot_do_and_plots_any_metric(tmp_path, scene_task):
    rows = sweep([toy()], scene_task, tmp_path / "s", grid={"window_ms": [2.0, 1000.0]}, settings=QUICK, workers=0, cache_dir=tmp_path / "c", plot_metric="mAP")
    assert not rows[0]["error"] and "exceeds the longest input" in rows[1]["error"]
    assert (tmp_path / "s" / "score_vs_window_ms.png").is_file()
    with pytest.raises(ConfigError, match="no metric 'event_onset_50ms_fms'"):
        sweep([toy()], scene_task, tmp_path / "t", grid={"window_ms": [2.0, 4.0]}, settings=QUICK, plot_metric="event_onset_50ms_fms")
    assert not (tmp_path / "t").exists()


def test_sweep_without_matplotlib_says_what_to_install_before_working(tmp_path, scene_task, monkeypatch):
    from embedzoo.errors import EmbedzooError

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # an import of it now fails
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(EmbedzooError) as caught:
        sweep([toy()], scene_task, tmp_path / "s", grid={"hop_ms": [5.0, 10.0]}, settings=QUICK, workers=0, cache_dir=tmp_path / "c")
    assert "embedzoo[eval]" in caught.value.hint and not (tmp_path / "s").exists()


# ---- the command line ----------------------------------------------------------------------------


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """The core tests' toy plugin (tests/fakedist.py), installed in this process: `toy-model`."""
    from embedzoo import plugins
    from embedzoo.registry import get_registry

    site = make_dist(tmp_path / "site", "embedzoo-toyplug", TOY_PLUGIN, {"toyplug": "toyplug"})
    monkeypatch.syspath_prepend(str(site))
    plugins.load_plugins(refresh=True)
    get_registry.cache_clear()
    yield
    monkeypatch.undo()
    for name in [m for m in sys.modules if m.startswith("toyplug")]:
        del sys.modules[name]
    plugins.load_plugins(refresh=True)
    get_registry.cache_clear()


def run(*args: str):
    from click.testing import CliRunner

    from embedzoo.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("command", ["make-task", "eval", "sweep"])
def test_help_never_imports_torch(command):
    code = (
        "import sys\nfrom embedzoo.cli import main\n"
        "try:\n    main([sys.argv[1], '--help'], prog_name='embedzoo')\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, 'heavy import'\n"
    )
    result = subprocess.run([sys.executable, "-c", code, command], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_cli_make_task_eval_and_sweep(tmp_path, toy_plugin, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = run("make-task", "scene", str(tmp_path / "task"), "--size", "tiny", "--sample-rate", "16000", "--sample-rate", "32000")
    assert made.exit_code == 0, made.output
    assert "embedzoo_synth_scene" in made.stdout and sorted(p.name for p in (tmp_path / "task").iterdir() if p.is_dir()) == ["16000", "32000"]
    quick = ["--grid-points", "1", "--max-epochs", "6", "--patience", "2", "--hidden-dim", "32", "--workers", "0", "--batch-size", "4096"]
    evaluated = run("eval", "toy-model?weights=random", str(tmp_path / "task"), *quick, "-o", str(tmp_path / "res.json"), "--json")
    assert evaluated.exit_code == 0, evaluated.output
    printed = json.loads(evaluated.stdout)
    assert printed == json.loads((tmp_path / "res.json").read_text())
    assert printed["model"] == "toy-model?weights=random" and printed["task"]["labels"] == 7 and "batch_size" not in printed["knobs"]
    table = run("eval", "toy-model?weights=random", str(tmp_path / "task"), *quick, "--quiet")
    assert table.exit_code == 0, table.output
    assert "top1_acc *" in table.stdout and "0 computed" in table.stdout
    assert len(list((tmp_path / "embedzoo-results" / "embedzoo_synth_scene").glob("toy-model_weights_random-*.json"))) == 1
    swept = run(
        "sweep", "toy-model?weights=random", "toy-model?weights=random&readout=max", str(tmp_path / "task"),
        "--layers", "frames energy", "--hop-ms", "5,10", "--scene-from", "timestamp", *quick, "-o", str(tmp_path / "sweep"),
    )  # fmt: skip
    assert swept.exit_code == 0, swept.output
    with open(tmp_path / "sweep" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and {r["readout"] for r in rows} == {"mean", "max"} and {r["layers"] for r in rows} == {"frames", "energy"}
    assert (tmp_path / "sweep" / "score_vs_layers.png").is_file() and (tmp_path / "sweep" / "score_vs_hop_ms.png").is_file()
    assert not (tmp_path / "sweep" / "score_vs_window_ms.png").exists()
    assert "results:" in swept.stdout


def test_eval_errors_are_readable(tmp_path):
    missing = run("eval", "crepe-tiny?weights=random", str(tmp_path))
    assert missing.exit_code == 1 and "no task_metadata.json" in missing.stderr and "make-task" in missing.stderr
    make_task("scene", tmp_path / "t", size="tiny")
    next((tmp_path / "t" / "16000" / "valid").iterdir()).unlink()
    broken = run("eval", "crepe-tiny?weights=random", str(tmp_path / "t"), "--workers", "0", "--quiet")
    assert broken.exit_code == 1 and "is missing" in broken.stderr
