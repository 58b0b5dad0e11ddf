"""`embedzoo eval` / `embedzoo sweep`: the embedding cache, the HEAR-style downstream model, the
results files and plots -- and the evidence that the scores mean something: CREPE's real weights
score far above chance on the synthetic pitch task, the same architecture with random weights
near chance."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import subprocess
import sys
import time
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


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small models, one torch thread


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


# ---- no stale scores: every setting that changes a result keys the sweep's cached points ----------


@pytest.fixture(scope="module")
def event_task(tmp_path_factory):
    return make_task("event", tmp_path_factory.mktemp("tasks") / "event", size="tiny")


def _statuses(task, out, settings, cache, grid=None):
    seen = []
    rows = sweep([toy()], task, out, grid=grid or {"hop_ms": [50.0]}, settings=settings, workers=0, cache_dir=cache, on_point=lambda i, n, p, s: seen.append(s))
    return [s for s in seen if s != "running"], rows


def _relabel(task_dir: Path) -> None:
    targets = json.loads((task_dir / "test.json").read_text())
    name = next(iter(targets))
    labels = [line.split(",", 1)[1] for line in (task_dir / "labelvocabulary.csv").read_text().splitlines()[1:]]
    targets[name] = [next(label for label in labels if label not in targets[name])]
    (task_dir / "test.json").write_text(json.dumps(targets))


def _other_audio(task_dir: Path) -> None:
    """The same file names with other audio (another seed's), the metadata and version unchanged."""
    other = make_task("scene", task_dir.parent / "other-audio", size="tiny", seed=7)
    for path in (other.path / "16000").rglob("*.wav"):
        shutil.copy(path, task_dir / path.relative_to(other.path))


def _other_postprocessing(task_dir: Path) -> None:
    meta = json.loads((task_dir / "task_metadata.json").read_text())
    meta["evaluation_params"]["event_postprocessing_grid"] = {"median_filter_ms": [0], "min_duration": [0]}
    (task_dir / "task_metadata.json").write_text(json.dumps(meta))


SETTING_CHANGES = {
    "max_epochs": dataclasses.replace(QUICK, max_epochs=13),
    "patience": dataclasses.replace(QUICK, patience=3),
    "hidden_dim": dataclasses.replace(QUICK, hidden_dim=32),
    "grid_points": dataclasses.replace(QUICK, grid_points=3),
    "seed": dataclasses.replace(QUICK, seed=1),
    "standardize": dataclasses.replace(QUICK, standardize=True),
    "scene_from": dataclasses.replace(QUICK, scene_from="timestamp"),
}


@pytest.mark.parametrize("setting", list(SETTING_CHANGES))
def test_changing_a_downstream_setting_computes_the_point_again(tmp_path, scene_task, setting):
    out, cache = tmp_path / "sweep", tmp_path / "cache"
    assert _statuses(scene_task, out, QUICK, cache)[0] == ["done"]
    assert _statuses(scene_task, out, QUICK, cache)[0] == ["cached"]  # the same settings: the saved point
    statuses, rows = _statuses(scene_task, out, SETTING_CHANGES[setting], cache)
    assert statuses == ["done"], setting
    saved = json.loads(Path(rows[0]["result_file"]).read_text())
    assert saved[setting] == getattr(SETTING_CHANGES[setting], setting)
    assert len(list((out / "runs").glob("*.json"))) == 2  # both results kept, under names of their own


@pytest.mark.parametrize("edit", ["targets", "audio", "postprocessing grid"])
def test_an_edited_task_is_evaluated_again_not_answered_from_the_cache(tmp_path, scene_task, event_task, edit):
    """Same folder, same task name and version, other content: the results depend on it."""
    source = event_task if edit == "postprocessing grid" else scene_task
    task_dir = tmp_path / "task"
    shutil.copytree(source.path, task_dir)
    settings = dataclasses.replace(QUICK, grid_points=1)
    out, cache = tmp_path / "sweep", tmp_path / "cache"
    assert _statuses(task_dir, out, settings, cache)[0] == ["done"]
    {"targets": _relabel, "audio": _other_audio, "postprocessing grid": _other_postprocessing}[edit](task_dir)
    statuses, rows = _statuses(task_dir, out, settings, cache)
    assert statuses == ["done"], edit
    if edit == "postprocessing grid":
        assert json.loads(Path(rows[0]["result_file"]).read_text())["postprocessing"] == {"median_filter_ms": 0, "min_duration": 0}


def test_a_saved_point_of_another_identity_is_not_trusted(tmp_path, scene_task):
    """A results file under a point's name that does not record that point's identity (an older
    embedzoo's, or one cut short) is computed again."""
    out, cache = tmp_path / "sweep", tmp_path / "cache"
    _, rows = _statuses(scene_task, out, QUICK, cache)
    path = Path(rows[0]["result_file"])
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "identity": "0" * 16, "scores": {"top1_acc": 1.0}}))
    statuses, rows = _statuses(scene_task, out, QUICK, cache)
    assert statuses == ["done"] and json.loads(path.read_text())["identity"] == saved["identity"]
    path.write_text(path.read_text()[:100])  # cut short
    assert _statuses(scene_task, out, QUICK, cache)[0] == ["done"]


def test_embedding_key_follows_the_card(scene_task):
    """An edited card (other geometry or defaults, the plugin's version unchanged) is another key."""
    handle = toy()
    edited = ModelHandle(handle.label, handle.extractor.with_knobs({}), handle.weights_id)
    edited.extractor.card = dataclasses.replace(handle.extractor.card, description="edited")
    assert embedding_key(edited, "scene") != embedding_key(handle, "scene")


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


@pytest.mark.parametrize("command", ["make-task", "eval", "sweep", "embed-task", "validate"])
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
        "--layers", "frames", "--layers", "energy", "--hop-ms", "5,10", "--scene-from", "timestamp", *quick, "-o", str(tmp_path / "sweep"),
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


def test_eval_results_of_other_settings_never_overwrite_each_other(tmp_path, toy_plugin, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_task("scene", tmp_path / "task", size="tiny")
    quick = ["--grid-points", "1", "--patience", "2", "--hidden-dim", "32", "--workers", "0", "--batch-size", "4096", "--quiet"]
    for epochs in ("6", "7", "6"):
        assert run("eval", "toy-model?weights=random", str(tmp_path / "task"), *quick, "--max-epochs", epochs).exit_code == 0
    saved = sorted((tmp_path / "embedzoo-results" / "embedzoo_synth_scene").glob("*.json"))
    assert len(saved) == 2  # one per setting; the same setting again rewrites its own file
    assert sorted(json.loads(p.read_text())["max_epochs"] for p in saved) == [6, 7]


# ---- progress on stderr --------------------------------------------------------------------------


def test_progress_without_a_terminal_is_plain_lines_with_a_heartbeat():
    from embedzoo.progress import Reporter

    now = [0.0]
    stream = io.StringIO()
    reporter = Reporter("eval m", stream=stream, interval=5.0, clock=lambda: now[0])  # not entered: no heartbeat thread
    for done in range(0, 101):  # a stage's items: its start, its end, and a line every 5 s between
        now[0] = done * 0.1
        reporter.update("embedding", done, 100)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("eval m: embedding 0/100 (0%)") and lines[-1].startswith("eval m: embedding 100/100 (100%)")
    assert len(lines) == 3, lines  # at 0, 5 and 10 s (the end)
    reporter.line("[1/2] point: done")
    assert stream.getvalue().splitlines()[-1] == "[1/2] point: done"

    # one long step (a grid point's training): the heartbeat says it is still running
    stream = io.StringIO()
    with Reporter("sweep", stream=stream, interval=0.05) as live:
        assert not live.live  # a StringIO is no terminal
        live.update("training", 1, 8)
        for _ in range(400):
            if "..." in stream.getvalue():
                break
            time.sleep(0.025)
    assert "sweep: training 1/8 (12%)" in stream.getvalue() and "..." in stream.getvalue()
    quiet = io.StringIO()
    with Reporter("x", stream=quiet, quiet=True) as silent:
        silent.update("embedding", 0, 3)
        silent.line("hidden")
        silent.line("shown", always=True)
    assert quiet.getvalue() == "shown\n"


def test_eval_and_sweep_report_each_stage_and_point_on_stderr(tmp_path, toy_plugin):
    make_task("scene", tmp_path / "task", size="tiny")
    quick = ["--grid-points", "2", "--max-epochs", "6", "--patience", "2", "--hidden-dim", "32", "--workers", "0", "--batch-size", "4096"]
    evaluated = run("eval", "toy-model?weights=random", str(tmp_path / "task"), *quick, "-o", str(tmp_path / "r.json"))
    assert evaluated.exit_code == 0, evaluated.output
    err = evaluated.stderr.splitlines()
    title = "eval toy-model?weights=random: "
    for line in ("embedding 0/42 (0%)", "embedding 42/42 (100%)", "training 0/2 (0%)", "training 2/2 (100%)"):
        assert any(e.startswith(title + line) for e in err), (line, err)
    assert "top1_acc" in evaluated.stdout and "top1_acc" not in evaluated.stderr
    swept = run("sweep", "toy-model?weights=random", str(tmp_path / "task"), "--hop-ms", "5,10", "--scene-from", "timestamp", *quick, "-o", str(tmp_path / "s"))
    assert swept.exit_code == 0, swept.output
    err = swept.stderr.splitlines()
    assert "[1/2] toy-model?weights=random hop_ms=5.0: done" in err and "[2/2] toy-model?weights=random hop_ms=10.0: done" in err
    assert any(e.startswith("sweep: [2/2] toy-model?weights=random hop_ms=10.0: training 2/2 (100%)") for e in err), err
    again = run("sweep", "toy-model?weights=random", str(tmp_path / "task"), "--hop-ms", "5,10", "--scene-from", "timestamp", *quick, "-o", str(tmp_path / "s"))
    assert "[1/2] toy-model?weights=random hop_ms=5.0: cached" in again.stderr.splitlines()
    assert run("eval", "toy-model?weights=random", str(tmp_path / "task"), *quick, "--quiet").stderr == ""


def test_validate_reports_each_check_on_stderr():
    done = run("validate", "crepe-tiny?weights=random", "--no-hear-validator", "--device", "cpu")
    assert done.exit_code == 0, done.output
    err = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert err[0].startswith("[1/8] ok   load the model: crepe-tiny on cpu")
    assert [line.split(": ")[0] for line in err[1:]] == [
        "[2/8] ok   HEAR load_model attributes", "[3/8] ok   HEAR get_timestamp_embeddings", "[4/8] ok   HEAR get_scene_embeddings",
        "[5/8] ok   timestamps inside the audio", "[6/8] ok   clips shorter than one window", "[7/8] ok   odd lengths", "[8/8] ok   deterministic",
    ]  # fmt: skip
    assert "valid" in done.stdout.splitlines()[-1]
