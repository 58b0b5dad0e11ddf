"""`embedzoo embed-task`: the hear-eval-kit layout, proven with heareval's own code (2021.1.3).

heareval's embedding writer (`heareval.embeddings.task_embeddings`, run on embedzoo's HEAR API)
writes the same files, byte for byte; heareval's predictor trains and scores on what embed-task
wrote; heareval's reader puts every event row at its events. heareval asks for numpy 1.19 and
numba 0.48, so scripts/test.sh installs it with --no-deps (its predictor's imports are in the test
extra); each heareval run is a subprocess, its imports (tensorflow, pytorch-lightning) kept out of
the test process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from embedzoo.eval.tasks import make_task
from embedzoo.hearkit import DONE_FILE, MANIFEST, labels_at, module_name
from embedzoo.spec import ModelSpec

MODEL = "crepe-tiny?weights=random"
# the folder embed-task names for MODEL with --hop-ms 50: the spec with the options on top
NAME = module_name(str(ModelSpec.parse(MODEL).with_knobs(hop_ms=50.0)))
OPTIONS = ["--hop-ms", "50", "--device", "cpu", "--workers", "0", "--quiet"]
RUNNER_FILES = {DONE_FILE, MANIFEST, "profile.embeddings.json"}  # what heareval's runner (not its writer) adds


def have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_heareval = pytest.mark.skipif(not have("heareval"), reason="heareval is installed by scripts/test.sh (pip install --no-deps heareval==2021.1.3)")


def run(*args: str):
    from click.testing import CliRunner

    from embedzoo.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter of this environment (heareval's imports stay out of ours)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", **env},
    )  # fmt: skip


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder of two HEAR tasks (scene and event) and embed-task's output for them."""
    root = tmp_path_factory.mktemp("hearkit")
    make_task("scene", root / "tasks" / "embedzoo_synth_scene", size="tiny")
    make_task("event", root / "tasks" / "embedzoo_synth_event", size="tiny")
    done = run("embed-task", MODEL, str(root / "tasks"), "-o", str(root / "embeddings"), *OPTIONS)
    assert done.exit_code == 0, done.output
    assert "heareval.predictions.runner" in done.stdout
    return root


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@needs_heareval
@pytest.mark.skipif(not have("tensorflow", "intervaltree"), reason="heareval's embedding writer imports tensorflow and intervaltree")
def test_embed_task_writes_exactly_what_heareval_writes(work):
    # heareval's own writer, on embedzoo's HEAR API with the same model and knobs
    official = python(
        f"""
        from pathlib import Path
        from heareval.embeddings.task_embeddings import Embedding, task_embeddings
        embedding = Embedding("embedzoo.hear", model_options={{"model_file_path": "{MODEL}&hop_ms=50", "device": "cpu"}})
        for task in ("embedzoo_synth_scene", "embedzoo_synth_event"):
            task_embeddings(embedding, Path("tasks") / task, Path("official") / task)
        """,
        work,
    )
    assert official.returncode == 0, official.stderr[-3000:]
    for task in ("embedzoo_synth_scene", "embedzoo_synth_event"):
        theirs, ours = work / "official" / task, work / "embeddings" / NAME / task
        assert files(ours) - RUNNER_FILES == files(theirs)
        for name in sorted(files(theirs)):
            a, b = theirs / name, ours / name
            if name.endswith(".embedding.npy"):
                x, y = np.load(a), np.load(b)
                assert x.dtype == y.dtype == np.float32 and x.shape == y.shape, name
                np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6, err_msg=name)
            elif name.endswith(".embeddings.npy"):  # raw float32 rows, in heareval's shuffled order
                np.testing.assert_allclose(np.fromfile(b, np.float32), np.fromfile(a, np.float32), rtol=1e-5, atol=1e-6, err_msg=name)
            elif name.endswith(".filename-timestamps.json"):  # [file path, timestamp]: the folders differ, the files not
                x, y = json.loads(a.read_text()), json.loads(b.read_text())
                assert [(Path(f).name, Path(f).parent.name, t) for f, t in y] == [(Path(f).name, Path(f).parent.name, t) for f, t in x]
                assert all(Path(f).parent.parent == ours for f, _ in y)
            elif name.endswith(".json"):
                assert json.loads(b.read_text()) == json.loads(a.read_text()), name
            elif name.endswith(".pkl"):
                assert pickle.loads(b.read_bytes()) == pickle.loads(a.read_bytes()), name
            else:
                assert b.read_bytes() == a.read_bytes(), name


@needs_heareval
@pytest.mark.skipif(not have("pytorch_lightning", "pandas", "torchinfo", "more_itertools", "sed_eval"), reason="heareval's predictor imports")
def test_heareval_predictor_trains_and_scores_on_embed_task_output(work):
    folder = work / "embeddings" / NAME / "embedzoo_synth_scene"
    # heareval saves a checkpoint and reads it back with torch.load, whose default is weights_only
    # since torch 2.6: its own file, in this run, so the loader may trust it
    done = subprocess.run(
        [sys.executable, "-m", "heareval.predictions.runner", str(folder), "--grid-points", "1", "--grid", "faster"],
        cwd=work, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads((folder / "test.predicted-scores.json").read_text())["test"]
    assert 0.0 <= scores["test_top1_acc"] <= 1.0 and 0.0 <= scores["test_mAP"] <= 1.0
    assert (folder / "prediction-done.json").is_file()


@needs_heareval
@pytest.mark.skipif(not have("pytorch_lightning", "pandas", "torchinfo", "more_itertools", "sed_eval"), reason="heareval's predictor imports")
def test_heareval_reads_every_event_row_at_its_events(work):
    """heareval's reader and scorer on the event task: frame targets turned back into events by
    heareval's postprocessing match the reference events (a row at the wrong file or time would not)."""
    folder = work / "embeddings" / NAME / "embedzoo_synth_event"
    check = python(
        f"""
        import json
        from pathlib import Path
        from heareval.predictions.task_predictions import SplitMemmapDataset, get_events_for_all_files, label_vocab_nlabels
        from heareval.score import available_scores, label_vocab_as_dict
        path = Path({str(folder)!r})
        vocab, nlabels = label_vocab_nlabels(path)
        label_to_idx = label_vocab_as_dict(vocab, key="label", value="idx")
        idx_to_label = label_vocab_as_dict(vocab, key="idx", value="label")
        out = {{}}
        for split in ("train", "valid", "test"):
            data = SplitMemmapDataset(path, label_to_idx, nlabels, split, "event", in_memory=True, metadata=True)
            files = [m["filename"] for m in data.metadata]
            stamps = [m["timestamp"] for m in data.metadata]
            events = get_events_for_all_files(data.y, files, stamps, idx_to_label, {{}}, (("median_filter_ms", 0), ("min_duration", 0)))
            (predicted,) = events.values()
            targets = json.loads((path / f"{{split}}.json").read_text())
            score = available_scores["event_onset_200ms_fms"](label_to_idx=label_to_idx)(predicted, targets)
            out[split] = {{"rows": len(data), "dim": data.dim[1], "files": sorted(predicted), "targets": sorted(targets), "f": dict(score)["f_measure"]}}
        print(json.dumps(out))
        """,
        work,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    result = json.loads(check.stdout.strip().splitlines()[-1])
    for split, seen in result.items():
        dims = json.loads((folder / f"{split}.embedding-dimensions.json").read_text())
        assert [seen["rows"], seen["dim"]] == dims and seen["files"] == seen["targets"], split
        # every event is found again within 200 ms of its onset from 50 ms frames
        assert seen["f"] > 0.95, (split, seen["f"])


def test_labels_follow_heareval_interval_rule():
    """A label is on at t when start <= t < end + 0.0001 -- heareval's interval tree, checked here
    against intervaltree itself on random events, boundaries hit exactly."""
    intervaltree = pytest.importorskip("intervaltree")
    rng = np.random.default_rng(0)
    for _ in range(50):
        starts = rng.integers(0, 40, 6) * 25.0
        events = [{"label": f"l{i}", "start": float(s), "end": float(s + rng.integers(0, 8) * 25.0)} for i, s in enumerate(starts)]
        stamps = [float(t) for t in np.arange(0, 1300, 25.0)]
        tree = intervaltree.IntervalTree()
        for e in events:
            tree.addi(e["start"], e["end"] + 0.0001, e["label"])
        assert [sorted(labels) for labels in labels_at(events, stamps)] == [sorted(i.data for i in tree[t]) for t in stamps]


def test_models_and_settings_never_overwrite_each_other(tmp_path, work):
    out = tmp_path / "embeddings"
    task = work / "tasks" / "embedzoo_synth_scene"
    for extra in ([], ["--layers", "conv4"]):  # another spec or other options: another folder
        assert run("embed-task", MODEL, str(task), "-o", str(out), *OPTIONS, *extra).exit_code == 0
    seeded = run("embed-task", MODEL, str(task), "-o", str(out), *OPTIONS, "--seed", "1")  # the same spec, other weights
    assert seeded.exit_code == 1 and "(weights differ)" in seeded.stderr
    assert run("embed-task", MODEL, str(task), "-o", str(out), *OPTIONS, "--seed", "1", "--name", "random-seed1").exit_code == 0
    folders = sorted(p.name for p in out.iterdir())
    assert len(folders) == 3 and "random-seed1" in folders and not [f for f in folders if f.startswith(".")]
    first = out / NAME / "embedzoo_synth_scene"
    manifest = json.loads((first / MANIFEST).read_text())
    assert manifest["weights"].startswith("random:seed=0") and manifest["knobs"]["layers"] == ["conv5"] and manifest["task_fingerprint"]
    assert "hop_ms" not in manifest["knobs"]  # a scene task: its embeddings do not depend on the hop
    stamp = (first / "train.embeddings.npy").stat().st_mtime_ns

    again = run("embed-task", MODEL, str(task), "-o", str(out), *OPTIONS)
    assert again.exit_code == 0 and "done already" in again.stdout
    assert (first / "train.embeddings.npy").stat().st_mtime_ns == stamp

    # other settings into the same folder: refused, nothing touched; --overwrite replaces it whole
    clash = run("embed-task", MODEL, str(task), "-o", str(out), *OPTIONS, "--name", NAME, "--layers", "conv3")
    assert clash.exit_code == 1 and "holds embeddings of other settings (knobs differ)" in clash.stderr and "--name" in clash.stderr
    assert (first / "train.embeddings.npy").stat().st_mtime_ns == stamp
    replaced = run("embed-task", MODEL, str(task), "-o", str(out), *OPTIONS, "--name", NAME, "--layers", "conv3", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((first / MANIFEST).read_text())["knobs"]["layers"] == ["conv3"]
    assert not [p for p in (out / NAME).iterdir() if p.name.startswith(".")]  # no partial or old folder left

    # a folder embedzoo did not write is never replaced without --overwrite
    (out / "mine" / "embedzoo_synth_scene").mkdir(parents=True)
    (out / "mine" / "embedzoo_synth_scene" / "notes.txt").write_text("keep")
    foreign = run("embed-task", MODEL, str(task), "-o", str(out), *OPTIONS, "--name", "mine")
    assert foreign.exit_code == 1 and "files embedzoo did not write" in foreign.stderr
    assert (out / "mine" / "embedzoo_synth_scene" / "notes.txt").read_text() == "keep"


def test_a_killed_run_leaves_no_task_folder_and_its_remains_are_cleared(tmp_path, work):
    out = tmp_path / "embeddings"
    task = work / "tasks" / "embedzoo_synth_scene"
    # what a run killed while writing leaves: a partial folder of a process that is gone
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    partial = out / NAME / f".embedzoo-partial-embedzoo_synth_scene-{dead}-0badc0de"
    (partial / "train").mkdir(parents=True)
    (partial / "train.embeddings.npy").write_bytes(b"\0" * 12)
    assert not (out / NAME / "embedzoo_synth_scene").exists()  # heareval's `embeddings/*/*` sees no task yet
    assert run("embed-task", MODEL, str(task), "-o", str(out), *OPTIONS).exit_code == 0
    assert not partial.exists() and (out / NAME / "embedzoo_synth_scene" / DONE_FILE).is_file()


def test_embed_task_errors_are_readable(tmp_path, work):
    missing = run("embed-task", MODEL, str(tmp_path), "-o", str(tmp_path / "e"), *OPTIONS)
    assert missing.exit_code == 1 and "no task_metadata.json" in missing.stderr
    twice = run("embed-task", MODEL, str(work / "tasks" / "embedzoo_synth_scene"), str(work / "tasks" / "embedzoo_synth_scene"), "-o", str(tmp_path / "e"), *OPTIONS)
    assert twice.exit_code == 1 and "folder name embedzoo_synth_scene" in twice.stderr
