"""The HEAR 2021 scores, written out in numpy (no scikit-learn, no sed_eval at run time).

Scene scores take `predictions` (n, labels) -- probabilities or any monotone scores -- and
`targets` (n, labels), one-hot (multiclass) or multi-hot (multilabel):
- `top1_acc` / `pitch_acc`: argmax of the prediction equals the argmax of the target;
- `chroma_acc`: the same modulo 12 semitones (octave errors forgiven);
- `mAP`: average precision per label (scikit-learn's step-wise definition), macro mean;
- `aucroc`: area under the ROC curve per label (ties count one half), macro mean;
- `d_prime`: sqrt(2) * Phi^-1(AUC) per label, macro mean.
Labels whose column has no positive (AP) or no positive or no negative (AUC, d') carry no
information and are left out of the macro mean; with none left the score is NaN. (The HEAR kit
scores the whole task NaN as soon as one label is degenerate; on tasks where every label occurs
both ways -- all HEAR test sets -- the two agree.)

Event scores take {file: [{"label", "start", "end"}, ...]} (ms) for predictions and references and
count as sed_eval's `EventBasedMetrics` (optimal matching): a predicted event matches a reference
event of the same label in the same file whose onset is within the collar (and, for onset-offset,
whose offset is within max(collar, 20% of the reference's length)); matches are a maximum
bipartite matching; precision = matches / predicted, recall = matches / references, F = their
harmonic mean (NaN when nothing was predicted, as sed_eval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "average_precision", "roc_auc", "top1_accuracy", "chroma_accuracy", "mean_average_precision",
    "aucroc", "d_prime_from_auc", "d_prime", "event_scores", "Score", "SCORES", "get_scores",
]  # fmt: skip

Events = Mapping[str, Sequence[Mapping[str, Any]]]


# ----------------------------------------------------------------------------------- binary curves


def _check(predictions: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predictions, targets = np.asarray(predictions, dtype=np.float64), np.asarray(targets)
    if predictions.ndim != 2 or predictions.shape != targets.shape:
        raise ValueError(f"predictions {predictions.shape} and targets {targets.shape} must both be (examples, labels)")
    return predictions, targets.astype(bool)


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the step-wise precision-recall curve: sum over distinct thresholds of
    (recall gained) x (precision there). NaN without positives."""
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=bool)
    positives = truth.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, truth = scores[order], truth[order]
    # the last index of each run of equal scores: one threshold per distinct score
    last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    true_pos = np.cumsum(truth)[last]
    predicted = last + 1
    precision = true_pos / predicted
    recall_gain = np.diff(np.r_[0, true_pos]) / positives
    return float(np.sum(recall_gain * precision))


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """P(score of a random positive > that of a random negative), ties counting one half
    (the Mann-Whitney statistic, equal to the trapezoidal ROC area). NaN if a class is absent."""
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # average rank (1-based) within each run of ties
    starts = np.r_[0, np.nonzero(np.diff(sorted_scores))[0] + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[truth].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def _macro(values: list[float]) -> float:
    """Mean over the labels where the score is defined (d' may be +-inf: kept, as in HEAR)."""
    defined = [v for v in values if not math.isnan(v)]
    if not defined:
        return float("nan")
    with np.errstate(invalid="ignore"):  # inf and -inf together: undefined
        return float(np.mean(defined))


# ---------------------------------------------------------------------------------- scene scores


def top1_accuracy(predictions: np.ndarray, targets: np.ndarray) -> float:
    predictions, targets = _check(predictions, targets)
    return float(np.mean(predictions.argmax(axis=1) == targets.argmax(axis=1)))


def chroma_accuracy(predictions: np.ndarray, targets: np.ndarray, labels: Sequence[str] | None = None) -> float:
    """Pitch class accuracy. When every label is a MIDI note number (HEAR's NSynth pitch labels),
    classes are compared as note % 12; otherwise as vocabulary index % 12 (HEAR's definition)."""
    predictions, targets = _check(predictions, targets)
    notes = np.arange(predictions.shape[1])
    if labels is not None and all(str(label).lstrip("-").isdigit() for label in labels):
        notes = np.array([int(label) for label in labels])
    return float(np.mean(notes[predictions.argmax(axis=1)] % 12 == notes[targets.argmax(axis=1)] % 12))


def mean_average_precision(predictions: np.ndarray, targets: np.ndarray) -> float:
    predictions, targets = _check(predictions, targets)
    return _macro([average_precision(predictions[:, j], targets[:, j]) for j in range(targets.shape[1])])


def aucroc(predictions: np.ndarray, targets: np.ndarray) -> float:
    predictions, targets = _check(predictions, targets)
    return _macro([roc_auc(predictions[:, j], targets[:, j]) for j in range(targets.shape[1])])


def d_prime_from_auc(auc: float) -> float:
    """sqrt(2) * Phi^-1(AUC): the separation of two unit-variance normals with this AUC (inf at 1)."""
    if math.isnan(auc):
        return float("nan")
    if auc >= 1.0:
        return float("inf")
    if auc <= 0.0:
        return float("-inf")
    return math.sqrt(2.0) * NormalDist().inv_cdf(auc)


def d_prime(predictions: np.ndarray, targets: np.ndarray) -> float:
    predictions, targets = _check(predictions, targets)
    return _macro([d_prime_from_auc(roc_auc(predictions[:, j], targets[:, j])) for j in range(targets.shape[1])])


# ---------------------------------------------------------------------------------- event scores


def _max_matching(edges: list[list[int]], right: int) -> int:
    """Size of a maximum bipartite matching (augmenting paths; left i may take any of edges[i])."""
    owner = [-1] * right
    visited = [-1] * right  # the root whose search last visited each right node
    size = 0
    for root in range(len(edges)):
        if not edges[root]:
            continue
        free = next((other for other in edges[root] if owner[other] == -1), None)
        if free is not None:  # the common case, and it keeps augmenting paths short
            owner[free] = root
            size += 1
            continue
        # iterative depth-first search for an augmenting path (no recursion limit on long files)
        stack: list[tuple[int, int]] = [(root, 0)]
        path: list[tuple[int, int]] = []  # (left node, right node it takes)
        found = False
        while stack and not found:
            node, position = stack.pop()
            while position < len(edges[node]):
                other = edges[node][position]
                position += 1
                if visited[other] == root:
                    continue
                visited[other] = root
                del path[len(stack) :]
                path.append((node, other))
                if owner[other] == -1:
                    found = True
                else:
                    stack.append((node, position))
                    stack.append((owner[other], 0))
                break
            else:
                del path[len(stack) :]
        if found:
            for node, other in path:
                owner[other] = node
            size += 1
    return size


def _candidates(refs: Sequence[Mapping[str, Any]], ests: Sequence[Mapping[str, Any]], collar_s: float, offset: bool, percentage: float) -> list[list[int]]:
    """For each reference event, the predicted events it may match -- sed_eval's conditions,
    computed in seconds as it does, so boundary cases round alike. Candidates are found by
    onset through a sorted search (a widened window, then the exact test): no n x m loop."""
    by_label: dict[str, list[int]] = {}
    for index, est in enumerate(ests):
        by_label.setdefault(str(est["label"]), []).append(index)
    onsets = {label: np.array([float(ests[i]["start"]) / 1000.0 for i in members]) for label, members in by_label.items()}
    orders = {label: np.argsort(values, kind="mergesort") for label, values in onsets.items()}
    edges: list[list[int]] = []
    for ref in refs:
        label = str(ref["label"])
        ref_on, ref_off = float(ref["start"]) / 1000.0, float(ref["end"]) / 1000.0
        found: list[int] = []
        if label in by_label:
            sorted_onsets = onsets[label][orders[label]]
            margin = collar_s + 1e-9 * (1.0 + abs(ref_on))
            lo = int(np.searchsorted(sorted_onsets, ref_on - margin, side="left"))
            hi = int(np.searchsorted(sorted_onsets, ref_on + margin, side="right"))
            for position in orders[label][lo:hi]:
                est = ests[by_label[label][position]]
                est_on, est_off = float(est["start"]) / 1000.0, float(est["end"]) / 1000.0
                if math.fabs(ref_on - est_on) > collar_s:
                    continue
                if offset and math.fabs(ref_off - est_off) > max(collar_s, percentage * (ref_off - ref_on)):
                    continue
                found.append(by_label[label][position])
        edges.append(sorted(found))
    return edges


def event_scores(
    predictions: Events,
    references: Events,
    *,
    collar_ms: float,
    offset: bool = False,
    percentage_of_length: float = 0.2,
) -> dict[str, float]:
    """Event-based F-measure, precision and recall over all files (see the module doc)."""
    matched = predicted = referenced = 0
    collar_s = collar_ms / 1000.0
    for name in sorted(set(predictions) | set(references)):
        refs, ests = list(references.get(name, [])), list(predictions.get(name, []))
        predicted += len(ests)
        referenced += len(refs)
        matched += _max_matching(_candidates(refs, ests, collar_s, offset, percentage_of_length), len(ests))
    precision = matched / predicted if predicted else float("nan")
    recall = matched / referenced if referenced else float("nan")
    if math.isnan(precision) or math.isnan(recall):
        f_measure = float("nan")
    elif precision == 0 and recall == 0:
        f_measure = 0.0
    else:
        f_measure = 2 * precision * recall / (precision + recall)
    return {"f_measure": f_measure, "precision": precision, "recall": recall}


# ------------------------------------------------------------------------------------ the catalog


@dataclass(frozen=True)
class Score:
    """A named score: `kind` 'scene' takes (predictions, targets, labels), 'event' takes
    (predicted events, reference events). Event scores return a dict whose first entry is primary."""

    name: str
    kind: str
    compute: Callable[..., Any]
    maximize: bool = True

    def __call__(self, *args: Any) -> dict[str, float]:
        """{name: value}; event scores add {name_precision, name_recall} after their F-measure."""
        value = self.compute(*args)
        if isinstance(value, dict):
            (_, primary), *rest = value.items()
            return {self.name: primary, **{f"{self.name}_{k}": v for k, v in rest}}
        return {self.name: float(value)}


def _scene(func: Callable[[np.ndarray, np.ndarray], float]) -> Callable[..., float]:
    return lambda predictions, targets, labels=None: func(predictions, targets)


SCORES: dict[str, Score] = {
    "top1_acc": Score("top1_acc", "scene", _scene(top1_accuracy)),
    "pitch_acc": Score("pitch_acc", "scene", _scene(top1_accuracy)),
    "chroma_acc": Score("chroma_acc", "scene", chroma_accuracy),
    "mAP": Score("mAP", "scene", _scene(mean_average_precision)),
    "d_prime": Score("d_prime", "scene", _scene(d_prime)),
    "aucroc": Score("aucroc", "scene", _scene(aucroc)),
    "event_onset_200ms_fms": Score("event_onset_200ms_fms", "event", lambda p, r: event_scores(p, r, collar_ms=200.0)),
    "event_onset_50ms_fms": Score("event_onset_50ms_fms", "event", lambda p, r: event_scores(p, r, collar_ms=50.0)),
    "event_onset_offset_50ms_20perc_fms": Score(
        "event_onset_offset_50ms_20perc_fms", "event", lambda p, r: event_scores(p, r, collar_ms=50.0, offset=True, percentage_of_length=0.2)
    ),
}


def get_scores(names: Sequence[str]) -> tuple[list[Score], list[str]]:
    """The known scores among `names` (in order), and the names embedzoo does not compute."""
    known = [SCORES[n] for n in names if n in SCORES]
    return known, [n for n in names if n not in SCORES]
