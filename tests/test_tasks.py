"""embedzoo.eval.tasks: the HEAR task layout (read, checked) and the synthetic tasks `make-task` writes."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from embedzoo.errors import ConfigError
from embedzoo.eval.tasks import EVENT_LABELS, HELD_OUT_FORMANTS, KINDS, SCENE_SOURCES, TRAIN_FORMANTS, TaskError, harmonic_tone, load_task, make_task


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("kind", KINDS)
def test_synthetic_tasks_follow_the_hear_layout(tmp_path, kind):
    task = make_task(kind, tmp_path / kind, size="tiny", sample_rates=(16000, 22050))
    root = tmp_path / kind
    meta = json.loads((root / "task_metadata.json").read_text())
    # the fields hear-eval-kit reads
    for key in ("task_name", "embedding_type", "prediction_type", "split_mode", "splits", "sample_duration", "evaluation"):
        assert key in meta, key
    assert meta["split_mode"] == "trainvaltest" and meta["splits"] == ["train", "valid", "test"]
    with open(root / "labelvocabulary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["idx"]) for r in rows] == list(range(len(rows))) and tuple(r["label"] for r in rows) == task.labels
    for split in task.splits:
        targets = json.loads((root / f"{split}.json").read_text())
        assert targets and targets == task.targets(split)
        for name, target in targets.items():
            for rate in (16000, 22050):
                info = sf.info(root / str(rate) / split / name)
                assert info.samplerate == rate and info.channels == 1
                assert info.duration == pytest.approx(meta["sample_duration"], abs=2 / rate)
            if task.embedding_type == "scene":
                assert target and set(target) <= set(task.labels)
                assert len(target) == 1 or task.prediction_type == "multilabel"
            else:
                for event in target:
                    assert event["label"] in task.labels and 0 <= event["start"] < event["end"] <= meta["sample_duration"] * 1000
    # every label occurs in the training data
    train_labels = {label for t in task.targets("train").values() for label in ([e["label"] for e in t] if task.embedding_type == "event" else t)}
    assert train_labels == set(task.labels)
    assert task.audio_rate(16000) == 16000 and task.audio_rate(20000) == 22050 and task.audio_rate(48000) == 22050


def test_task_kinds_and_labels():
    from embedzoo.cli import TASK_KINDS

    assert TASK_KINDS == KINDS
    assert set(EVENT_LABELS) == {"tone", "burst", "chirp"} and len(SCENE_SOURCES) == 7


def test_pitch_task_labels_are_midi_notes_over_octaves_with_held_out_timbres(tmp_path):
    task = make_task("pitch", tmp_path / "p", size="small")
    notes = [int(label) for label in task.labels]
    assert notes == list(range(notes[0], notes[-1] + 1)) and notes[-1] - notes[0] + 1 >= 36  # three octaves
    assert task.evaluation == ["pitch_acc", "chroma_acc"] and task.prediction_type == "multiclass"
    # every note equally often in every split
    for split in task.splits:
        counts = {label: 0 for label in task.labels}
        for labels in task.targets(split).values():
            counts[labels[0]] += 1
        assert len(set(counts.values())) == 1


@pytest.mark.parametrize("f0", [100.0, 125.0, 200.0, 250.0, 400.0])
@pytest.mark.parametrize("formants", [TRAIN_FORMANTS, HELD_OUT_FORMANTS])
def test_tones_repeat_with_their_fundamental_period(f0, formants):
    # a harmonic tone at f0 repeats every 1/f0 seconds (autocorrelation near 1 at that lag, an
    # integer number of samples for these f0, and highest there among lags within +-25%),
    # whatever the timbre
    rate = 16000
    tone = harmonic_tone(f0, rate, rate, np.random.default_rng(int(f0)), formants)
    body = tone[2000:12000]

    def correlation(lag: int) -> float:
        a, b = body[:-lag], body[lag:]
        return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))

    period = int(rate / f0)
    assert correlation(period) > 0.97
    nearby = range(int(0.75 * period), int(1.25 * period) + 1)
    assert max(nearby, key=correlation) == period


def test_same_seed_same_bytes_other_seed_other_audio(tmp_path):
    a = make_task("event", tmp_path / "a", size="tiny", seed=3)
    b = make_task("event", tmp_path / "b", size="tiny", seed=3)
    c = make_task("event", tmp_path / "c", size="tiny", seed=4)
    assert digest(a.path) == digest(b.path) != digest(c.path)


def test_event_targets_mark_where_the_sound_is(tmp_path):
    task = make_task("event", tmp_path / "e", size="tiny")
    louder = 0
    total = 0
    for name, events in task.targets("train").items():
        audio, rate = sf.read(task.audio_path(16000, "train", name))
        inside = np.zeros(len(audio), dtype=bool)
        for e in events:
            inside[int(e["start"] * rate / 1000) : int(e["end"] * rate / 1000)] = True
        assert events and inside.any() and (~inside).any()
        total += 1
        louder += np.sqrt(np.mean(audio[inside] ** 2)) > 10 * np.sqrt(np.mean(audio[~inside] ** 2))
    assert louder == total


def test_kfold_tasks_rotate_folds_as_hear_does(tmp_path):
    task = make_task("scene", tmp_path / "k", size="tiny", folds=4)
    assert task.split_mode == "new_split_kfold" and task.splits == ["fold00", "fold01", "fold02", "fold03"]
    splits = task.data_splits()
    assert splits[0] == {"train": ["fold02", "fold03"], "valid": ["fold01"], "test": ["fold00"]}
    assert splits[3] == {"train": ["fold01", "fold02"], "valid": ["fold00"], "test": ["fold03"]}
    assert sorted(s["test"][0] for s in splits) == task.splits
    assert not (tmp_path / "k" / "train.json").exists()


def test_multilabel_scene_task_mixes_sources(tmp_path):
    task = make_task("scene-multilabel", tmp_path / "m", size="tiny")
    sizes = [len(labels) for labels in task.targets("train").values()]
    assert task.prediction_type == "multilabel" and min(sizes) >= 1 and max(sizes) >= 2
    assert task.evaluation[0] == "mAP"


def test_make_task_refuses_to_clobber(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not empty"):
        make_task("pitch", tmp_path / "busy", size="tiny")
    with pytest.raises(ConfigError, match="not a task folder"):
        make_task("pitch", tmp_path / "busy", size="tiny", overwrite=True)
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "precious"
    make_task("pitch", tmp_path / "t", size="tiny")
    make_task("scene", tmp_path / "t", size="tiny", overwrite=True)
    assert load_task(tmp_path / "t").embedding_type == "scene" and not list((tmp_path / "t" / "16000" / "train").glob("pitch-*"))
    with pytest.raises(ConfigError, match="unknown task kind"):
        make_task("speech", tmp_path / "x")


def test_malformed_tasks_are_named(tmp_path):
    with pytest.raises(TaskError, match="no task_metadata.json"):
        load_task(tmp_path)
    make_task("scene", tmp_path / "t", size="tiny")
    root = tmp_path / "t"
    meta = json.loads((root / "task_metadata.json").read_text())

    (root / "task_metadata.json").write_text(json.dumps({**meta, "prediction_type": "regression"}))
    with pytest.raises(TaskError, match="prediction_type"):
        load_task(root)
    (root / "task_metadata.json").write_text(json.dumps(meta))

    vocabulary = (root / "labelvocabulary.csv").read_text()
    (root / "labelvocabulary.csv").write_text("idx,label\n0,a\n2,b\n")
    with pytest.raises(TaskError, match="without gaps"):
        load_task(root)
    (root / "labelvocabulary.csv").write_text(vocabulary)

    targets = json.loads((root / "train.json").read_text())
    first = next(iter(targets))
    (root / "train.json").write_text(json.dumps({**targets, first: ["unicorn"]}))
    with pytest.raises(TaskError, match="unicorn"):
        load_task(root).targets("train")
    (root / "train.json").write_text(json.dumps({**targets, first: ["white_noise", "pink_noise"]}))
    with pytest.raises(TaskError, match="multiclass"):
        load_task(root).targets("train")
    (root / "train.json").unlink()
    with pytest.raises(TaskError, match="train.json is missing"):
        load_task(root).targets("valid")


def test_fingerprint_follows_the_content_not_the_folder(tmp_path):
    """What eval's results are keyed by: a copy keeps it; new targets, metadata or audio change it."""
    import shutil

    make_task("scene", tmp_path / "t", size="tiny", sample_rates=(16000, 32000))
    shutil.copytree(tmp_path / "t", tmp_path / "copy")
    first = load_task(tmp_path / "t").fingerprint(16000)
    assert load_task(tmp_path / "copy").fingerprint(16000) == first
    assert load_task(tmp_path / "t").fingerprint(32000) != first  # a 32 kHz model reads other audio
    root = tmp_path / "copy"
    targets = json.loads((root / "test.json").read_text())
    name = next(iter(targets))
    (root / "test.json").write_text(json.dumps({**targets, name: ["pink_noise" if targets[name] != ["pink_noise"] else "white_noise"]}))
    assert load_task(root).fingerprint(16000) != first
    (root / "test.json").write_text(json.dumps(targets, indent=3))  # the same targets, other whitespace
    assert load_task(root).fingerprint(16000) == first
    audio = root / "16000" / "test" / name
    data, rate = sf.read(audio)
    sf.write(audio, data[::-1], rate, subtype="PCM_16")
    assert load_task(root).fingerprint(16000) != first
    audio.unlink()
    with pytest.raises(TaskError, match="is missing"):
        load_task(root).fingerprint(16000)
