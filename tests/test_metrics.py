"""embedzoo.eval.metrics and the event postprocessing against independent implementations:
scikit-learn (AP, ROC AUC, accuracy), scipy (normal quantile, median filter), sed_eval (event-based
F-measure) and cases worked out by hand."""

from __future__ import annotations

import math

import dcase_util
import numpy as np
import pytest
import sed_eval
from scipy import ndimage, stats
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from embedzoo.eval.downstream import frames_to_events, median_filter
from embedzoo.eval.metrics import (
    SCORES,
    aucroc,
    average_precision,
    chroma_accuracy,
    d_prime,
    event_scores,
    get_scores,
    mean_average_precision,
    roc_auc,
    top1_accuracy,
)

def scores_with_ties(rng: np.random.Generator, n: int, labels: int) -> np.ndarray:
    """Scores rounded to 1 decimal: plenty of ties, which is where AP/AUC definitions differ."""
    return np.round(rng.random((n, labels)), 1)


# ---- scene scores ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_and_auc_equal_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = scores_with_ties(rng, 60, 5)
    truth = rng.random((60, 5)) < 0.3
    truth[0], truth[1] = True, False  # every column has positives and negatives
    for j in range(5):
        assert average_precision(scores[:, j], truth[:, j]) == pytest.approx(average_precision_score(truth[:, j], scores[:, j]), abs=1e-12)
        assert roc_auc(scores[:, j], truth[:, j]) == pytest.approx(roc_auc_score(truth[:, j], scores[:, j]), abs=1e-12)
    assert mean_average_precision(scores, truth) == pytest.approx(average_precision_score(truth, scores, average="macro"), abs=1e-12)
    assert aucroc(scores, truth) == pytest.approx(roc_auc_score(truth, scores, average="macro"), abs=1e-12)
    expected_dprime = np.mean(stats.norm().ppf(roc_auc_score(truth, scores, average=None)) * np.sqrt(2.0))
    assert d_prime(scores, truth) == pytest.approx(expected_dprime, abs=1e-9)


def test_multiclass_accuracy_and_one_hot_scores_equal_sklearn():
    rng = np.random.default_rng(7)
    probs = rng.random((50, 6))
    probs /= probs.sum(axis=1, keepdims=True)
    classes = rng.integers(0, 6, 50)
    classes[:6] = np.arange(6)
    one_hot = np.eye(6)[classes]
    assert top1_accuracy(probs, one_hot) == pytest.approx(accuracy_score(classes, probs.argmax(axis=1)))
    assert mean_average_precision(probs, one_hot) == pytest.approx(average_precision_score(one_hot, probs, average="macro"))
    assert aucroc(probs, one_hot) == pytest.approx(roc_auc_score(one_hot, probs, average="macro"))


def test_hand_computed_cases():
    # AP of ranking [+, -, +]: precision 1 at recall 1/2, 2/3 at recall 1 -> (1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx(5 / 6)
    # AUC: positives {0.9, 0.5}, negatives {0.5, 0.1}: pairs (0.9>0.5), (0.9>0.1), (0.5=0.5 -> 1/2), (0.5>0.1)
    assert roc_auc(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(3.5 / 4)
    # perfect separation: AUC 1, d' infinite; chance: AUC 1/2, d' 0
    assert d_prime(np.array([[0.9], [0.1]]), np.array([[1], [0]])) == math.inf
    assert d_prime(np.array([[0.5], [0.5]]), np.array([[1], [0]])) == pytest.approx(0.0)
    # no positives at all: undefined, and left out of the macro mean
    assert math.isnan(average_precision(np.array([0.3, 0.2]), np.array([0, 0])))
    both = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.6]])
    truth = np.array([[1, 0], [0, 0], [1, 0]])
    assert mean_average_precision(both, truth) == pytest.approx(1.0)
    assert math.isnan(aucroc(np.array([[0.5]]), np.array([[1]])))


def test_chroma_accuracy_uses_midi_numbers_when_labels_are_notes():
    labels = ["60", "61", "72"]  # C4, C#4, C5: C4 and C5 share chroma though their indices differ by 2
    targets = np.eye(3)[[0, 2, 1, 1]]
    predictions = np.eye(3)[[2, 0, 1, 0]]  # octave error, octave error, right, wrong chroma
    assert chroma_accuracy(predictions, targets, labels) == pytest.approx(3 / 4)
    assert top1_accuracy(predictions, targets) == pytest.approx(1 / 4)
    # non-numeric labels: HEAR's definition, index modulo 12
    names = [f"c{i}" for i in range(13)]
    assert chroma_accuracy(np.eye(13)[[12]], np.eye(13)[[0]], names) == 1.0
    assert chroma_accuracy(np.eye(13)[[11]], np.eye(13)[[0]], names) == 0.0


def test_score_catalog_names_and_unknown_metrics():
    known, unknown = get_scores(["pitch_acc", "segment_1s_er", "chroma_acc"])
    assert [s.name for s in known] == ["pitch_acc", "chroma_acc"] and unknown == ["segment_1s_er"]
    assert set(SCORES) >= {"top1_acc", "pitch_acc", "chroma_acc", "mAP", "d_prime", "aucroc", "event_onset_200ms_fms", "event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"}


# ---- event scores ----------------------------------------------------------------------------------


def sed_eval_scores(predictions, references, labels, **params) -> dict[str, float]:
    """sed_eval, driven as hear-eval-kit drives it (seconds, one evaluate() call per file)."""

    def container(events):
        rows = [
            {"event_label": e["label"], "event_onset": e["start"] / 1000.0, "event_offset": e["end"] / 1000.0, "file": name}
            for name, items in events.items()
            for e in items
        ]
        return dcase_util.containers.MetaDataContainer(rows)

    refs, ests = container(references), container(predictions)
    metrics = sed_eval.sound_event.EventBasedMetrics(event_label_list=list(labels), **params)
    for name in predictions:
        metrics.evaluate(reference_event_list=refs.filter(filename=name), estimated_event_list=ests.filter(filename=name))
    return metrics.results_overall_metrics()["f_measure"]


def random_events(rng: np.random.Generator, labels: list[str], count: int, jitter_of: list | None = None) -> list[dict]:
    """Events on a 10 ms grid (so some onsets land exactly on a collar); with `jitter_of`, noisy
    copies of those events (shifted onsets/offsets, some relabelled) plus a few strays."""
    events = []
    if jitter_of is None:
        for _ in range(count):
            start = float(rng.integers(0, 500) * 10)
            events.append({"label": str(rng.choice(labels)), "start": start, "end": start + float(rng.integers(5, 80) * 10)})
    else:
        for e in jitter_of:
            if rng.random() < 0.15:
                continue
            start = e["start"] + float(rng.integers(-25, 26) * 10)
            end = max(start + 10.0, e["end"] + float(rng.integers(-40, 41) * 10))
            label = e["label"] if rng.random() < 0.85 else str(rng.choice(labels))
            events.append({"label": label, "start": start, "end": end})
        events += random_events(rng, labels, count)
    return events


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "name, params",
    [
        ("event_onset_200ms_fms", {"evaluate_onset": True, "evaluate_offset": False, "t_collar": 0.2}),
        ("event_onset_50ms_fms", {"evaluate_onset": True, "evaluate_offset": False, "t_collar": 0.05}),
        ("event_onset_offset_50ms_20perc_fms", {"evaluate_onset": True, "evaluate_offset": True, "t_collar": 0.05, "percentage_of_length": 0.2}),
    ],
)
def test_event_scores_equal_sed_eval(seed, name, params):
    rng = np.random.default_rng(seed)
    labels = ["dog", "bell", "speech"]
    references = {f"f{i}.wav": random_events(rng, labels, int(rng.integers(0, 12))) for i in range(6)}
    predictions = {f: random_events(rng, labels, int(rng.integers(0, 4)), jitter_of=events) for f, events in references.items()}
    ours = SCORES[name](predictions, references)
    theirs = sed_eval_scores(predictions, references, labels, **params)
    for key in ("f_measure", "precision", "recall"):
        mine = ours[name] if key == "f_measure" else ours[f"{name}_{key}"]
        assert mine == pytest.approx(theirs[key], abs=1e-12), (key, mine, theirs[key])
    assert 0 < ours[name] < 1  # the cases are neither trivial nor hopeless


def test_event_matching_is_optimal_not_greedy():
    # ref A (onset 0) can take est 1 or 2 (both within 200 ms), ref B (onset 250) only est 2:
    # a greedy pass giving A est 2 would match one pair; the optimum matches two
    references = {"a.wav": [{"label": "x", "start": 0.0, "end": 500.0}, {"label": "x", "start": 250.0, "end": 600.0}]}
    predictions = {"a.wav": [{"label": "x", "start": 190.0, "end": 400.0}, {"label": "x", "start": -150.0, "end": 300.0}]}
    result = event_scores(predictions, references, collar_ms=200.0)
    assert result == {"f_measure": 1.0, "precision": 1.0, "recall": 1.0}
    # a wrong label never matches; nothing predicted: precision and F undefined (sed_eval's NaN)
    relabelled = {"a.wav": [dict(e, label="y") for e in predictions["a.wav"]]}
    assert event_scores(relabelled, references, collar_ms=200.0)["f_measure"] == 0.0
    empty = event_scores({"a.wav": []}, references, collar_ms=200.0)
    assert math.isnan(empty["f_measure"]) and math.isnan(empty["precision"]) and empty["recall"] == 0.0


def test_event_matching_handles_long_files():
    # 3000 events in one file: the matching must not recurse per event
    references = {"long.wav": [{"label": "x", "start": 100.0 * i, "end": 100.0 * i + 50} for i in range(3000)]}
    predictions = {"long.wav": [{"label": "x", "start": 100.0 * i + 20, "end": 100.0 * i + 60} for i in range(3000)]}
    assert event_scores(predictions, references, collar_ms=200.0)["f_measure"] == 1.0


# ---- event postprocessing ------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 8, 13])
def test_median_filter_equals_scipy(width):
    x = np.random.default_rng(width).random((40, 3))
    np.testing.assert_array_equal(median_filter(x, width), ndimage.median_filter(x, size=(width, 1)))


def test_frames_to_events_by_hand():
    timestamps = np.arange(10) * 50.0  # 0, 50, ..., 450 ms
    probs = np.zeros((10, 2))
    probs[[1, 2, 3], 0] = 0.9  # an event 50..150 ms
    probs[5, 0] = 0.8  # a one-frame blip: duration 0
    probs[[6, 7, 8, 9], 1] = 0.7  # 300..450 ms
    labels = ["a", "b"]
    assert frames_to_events(probs, timestamps, labels, median_filter_ms=0, min_duration=0) == [
        {"label": "a", "start": 50.0, "end": 150.0},
        {"label": "a", "start": 250.0, "end": 250.0},
        {"label": "b", "start": 300.0, "end": 450.0},
    ]
    # minimum duration drops the blip and keeps 100 ms; a 150 ms median filter (3 frames) removes it too
    assert [e["start"] for e in frames_to_events(probs, timestamps, labels, 0, 100)] == [50.0, 300.0]
    assert [e["start"] for e in frames_to_events(probs, timestamps, labels, 150, 0)] == [50.0, 300.0]
    # frames given out of order are sorted by time first
    order = np.random.default_rng(0).permutation(10)
    assert frames_to_events(probs[order], timestamps[order], labels, 0, 0) == frames_to_events(probs, timestamps, labels, 0, 0)
