"""The shallow downstream model of the HEAR 2021 evaluation, in plain torch.

What hear-eval-kit does (re-implemented here, see its `task_predictions.py` for the original):
- a fully connected predictor: 0-2 hidden layers of 1024 units, each Linear -> BatchNorm ->
  Dropout(0.1) -> ReLU, then a Linear projection; weights initialised with Xavier (uniform or
  normal) and the gain of the activation before them; trained with Adam on softmax cross-entropy
  (multiclass) or sigmoid binary cross-entropy (multilabel), mini-batches of 1024;
- model selection: grid points (hidden layers x learning rate x initialisation) sampled from the
  grid with a seed; each trains with early stopping on the validation split's primary score
  (checked every 3 epochs, patience 20 checks, at most 500 epochs) and keeps its best epoch; the
  best grid point's hyper-parameters are reused for the other folds;
- event tasks: the predictor classifies each timestamp embedding (multilabel); a file's frame
  probabilities are median-filtered, thresholded at 0.5, runs of active frames become events
  (start and end at the first and last frame's timestamp) and events shorter than a minimum
  duration are dropped; the filter width and the minimum duration are chosen on the validation
  split from a grid, at every validation check.

Everything random (initialisation, shuffling, dropout) draws from generators seeded from
`seed`, so a run is reproducible.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from embedzoo.eval.metrics import Score

__all__ = [
    "PARAM_GRID", "HParams", "sample_grid", "Predictor", "probabilities", "SplitData",
    "median_filter", "frames_to_events", "postprocessing_grid", "predicted_events", "Scorer",
    "Trained", "predict", "train", "Outcome", "standardized", "run_downstream",
]  # fmt: skip

# hear-eval-kit's default grid, with 0 hidden layers added (a linear probe) as the issue asks
PARAM_GRID: dict[str, list[Any]] = {
    "hidden_layers": [0, 1, 2],
    "hidden_dim": [1024],
    "dropout": [0.1],
    "lr": [3.2e-3, 1e-3, 3.2e-4, 1e-4],
    "initialization": ["xavier_uniform", "xavier_normal"],
    "patience": [20],
    "max_epochs": [500],
    "check_val_every_n_epoch": [3],
    "batch_size": [1024],
}
_INIT = {"xavier_uniform": nn.init.xavier_uniform_, "xavier_normal": nn.init.xavier_normal_}


@dataclass(frozen=True)
class HParams:
    """One grid point."""

    hidden_layers: int = 1
    hidden_dim: int = 1024
    dropout: float = 0.1
    lr: float = 1e-3
    initialization: str = "xavier_uniform"
    patience: int = 20
    max_epochs: int = 500
    check_val_every_n_epoch: int = 3
    batch_size: int = 1024


def sample_grid(points: int, seed: int = 0, grid: Mapping[str, Sequence[Any]] | None = None, **fixed: Any) -> list[HParams]:
    """`points` distinct grid points in a seeded random order (all of them if the grid is smaller);
    `fixed` overrides a hyper-parameter for every point (e.g. max_epochs for quick runs)."""
    grid = dict(grid or PARAM_GRID)
    grid.update({k: [v] for k, v in fixed.items() if v is not None})
    names = sorted(grid)
    combos = [HParams(**dict(zip(names, values))) for values in itertools.product(*(grid[n] for n in names))]
    random.Random(seed).shuffle(combos)
    return combos[: max(1, points)]


class Predictor(nn.Module):
    """hear-eval-kit's FullyConnectedPrediction: [Linear, BatchNorm, Dropout, ReLU] x n, Linear."""

    def __init__(self, features: int, labels: int, hp: HParams):
        super().__init__()
        init = _INIT[hp.initialization]
        layers: list[nn.Module] = []
        width, activation = features, "linear"
        for _ in range(hp.hidden_layers):
            linear = nn.Linear(width, hp.hidden_dim)
            init(linear.weight, gain=nn.init.calculate_gain(activation))
            layers += [linear, nn.BatchNorm1d(hp.hidden_dim), nn.Dropout(hp.dropout), nn.ReLU()]
            width, activation = hp.hidden_dim, "relu"
        self.hidden = nn.Sequential(*layers)
        self.projection = nn.Linear(width, labels)
        init(self.projection.weight, gain=nn.init.calculate_gain(activation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.projection(self.hidden(x))


def probabilities(logits: torch.Tensor, prediction_type: str) -> torch.Tensor:
    return torch.softmax(logits, dim=-1) if prediction_type == "multiclass" else torch.sigmoid(logits)


# ----------------------------------------------------------------------------- data and scoring


@dataclass
class SplitData:
    """Rows to classify: embeddings (n, d), multi-hot targets (n, labels), and for event tasks the
    file and timestamp (ms) of each row plus the reference events of the split's files."""

    x: np.ndarray
    y: np.ndarray
    files: list[str] | None = None
    timestamps: np.ndarray | None = None
    events: dict[str, list[dict[str, Any]]] | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} embeddings but {len(self.y)} targets")


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Running median over axis 0 (window `width`, centred as scipy.ndimage.median_filter with
    size (width, 1) and its default 'reflect' edges: half-sample symmetric; equal to it for
    windows up to the signal's length, a file's frame count being far above any sane width)."""
    if width <= 1 or len(x) == 0:
        return x
    before, after = width // 2, width - 1 - width // 2
    padded = np.pad(x, [(before, after)] + [(0, 0)] * (x.ndim - 1), mode="symmetric")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=0)
    # scipy's rank filter takes the element of rank width // 2 (the upper median for even widths)
    return np.partition(windows, width // 2, axis=-1)[..., width // 2]


def frames_to_events(
    probs: np.ndarray, timestamps: np.ndarray, labels: Sequence[str], median_filter_ms: float, min_duration: float, threshold: float = 0.5
) -> list[dict[str, Any]]:
    """One file's frame probabilities (T, labels) at `timestamps` (ms) to events (see module doc)."""
    order = np.argsort(timestamps, kind="mergesort")
    timestamps, probs = timestamps[order], probs[order]
    if median_filter_ms and len(timestamps) > 1:
        width = int(round(median_filter_ms / float(np.mean(np.diff(timestamps)))))
        if width:
            probs = median_filter(probs, width)
    active = probs > threshold
    events = []
    for index, label in enumerate(labels):
        frames = np.nonzero(active[:, index])[0]
        if len(frames) == 0:
            continue
        breaks = np.nonzero(np.diff(frames) > 1)[0]
        for first, last in zip(np.r_[frames[0], frames[breaks + 1]], np.r_[frames[breaks], frames[-1]]):
            start, end = float(timestamps[first]), float(timestamps[last])
            if end - start >= min_duration:
                events.append({"label": label, "start": start, "end": end})
    events.sort(key=lambda e: e["start"])
    return events


def postprocessing_grid(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    names = sorted(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def predicted_events(data: SplitData, probs: np.ndarray, labels: Sequence[str], post: Mapping[str, float]) -> dict[str, list[dict[str, Any]]]:
    """Events of every file in the split (files without any event included, empty)."""
    assert data.files is not None and data.timestamps is not None
    files = np.asarray(data.files)
    out = {}
    for name in dict.fromkeys(data.files):
        rows = files == name
        out[name] = frames_to_events(probs[rows], data.timestamps[rows], labels, post["median_filter_ms"], post["min_duration"])
    return out


def _nan_to_zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value


@dataclass
class Scorer:
    """Scores a split's predictions with the task's scores (the first one selects models)."""

    scores: list[Score]
    labels: Sequence[str]
    prediction_type: str
    event_grid: list[dict[str, float]] = field(default_factory=list)

    @property
    def events(self) -> bool:
        return bool(self.scores) and self.scores[0].kind == "event"

    def primary(self, data: SplitData, probs: np.ndarray) -> tuple[float, dict[str, float] | None]:
        """(primary score, the event postprocessing that reached it) -- NaN counts as 0, as in HEAR."""
        first = self.scores[0]
        if not self.events:
            return _nan_to_zero(first(probs, data.y, self.labels)[first.name]), None
        best: tuple[float, dict[str, float] | None] = (-math.inf, None)
        for post in self.event_grid:
            value = _nan_to_zero(first(predicted_events(data, probs, self.labels, post), data.events)[first.name])
            if value > best[0]:
                best = (value, post)
        return best

    def all(self, data: SplitData, probs: np.ndarray, post: Mapping[str, float] | None) -> dict[str, float]:
        out: dict[str, float] = {}
        events = predicted_events(data, probs, self.labels, post) if self.events and post is not None else None
        for score in self.scores:
            out.update(score(events, data.events) if score.kind == "event" else score(probs, data.y, self.labels))
        return out


# ----------------------------------------------------------------------------------- training


@dataclass
class Trained:
    """A predictor at its best validation check."""

    hparams: HParams
    model: Predictor
    validation_score: float
    epoch: int
    postprocessing: dict[str, float] | None
    seconds: float


def _loss(prediction_type: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if prediction_type == "multiclass":
        ce = nn.CrossEntropyLoss()
        return lambda logits, y: ce(logits, y.argmax(dim=1))
    bce = nn.BCEWithLogitsLoss()
    return bce


@torch.no_grad()
def predict(model: Predictor, x: np.ndarray, prediction_type: str, device: torch.device, batch: int = 8192) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(x), batch):
        logits = model(torch.from_numpy(x[start : start + batch]).to(device))
        out.append(probabilities(logits, prediction_type).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.projection.out_features), np.float32)


def train(
    train_data: SplitData,
    valid_data: SplitData,
    hp: HParams,
    scorer: Scorer,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Trained:
    """Train one grid point with early stopping on the validation primary score; keep the best epoch."""
    device = torch.device(device)
    start = time.perf_counter()
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = Predictor(train_data.x.shape[1], train_data.y.shape[1], hp).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=hp.lr)
        loss_fn = _loss(scorer.prediction_type)
        x = torch.from_numpy(np.ascontiguousarray(train_data.x, dtype=np.float32)).to(device)
        y = torch.from_numpy(np.ascontiguousarray(train_data.y, dtype=np.float32)).to(device)
        best_score, best_epoch, best_post, best_state = -math.inf, -1, None, None
        checks_without_gain = 0
        for epoch in range(hp.max_epochs):
            model.train()
            order = torch.randperm(len(x), generator=generator).to(device)
            for begin in range(0, len(x), hp.batch_size):
                rows = order[begin : begin + hp.batch_size]
                if len(rows) < 2 and hp.hidden_layers:  # BatchNorm cannot train on a single row
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(x[rows]), y[rows]).backward()
                optimizer.step()
            if (epoch + 1) % hp.check_val_every_n_epoch and epoch + 1 != hp.max_epochs:
                continue
            score, post = scorer.primary(valid_data, predict(model, valid_data.x, scorer.prediction_type, device))
            if score > best_score:
                best_score, best_epoch, best_post = score, epoch, post
                best_state = copy.deepcopy(model.state_dict())
                checks_without_gain = 0
            else:
                checks_without_gain += 1
                if checks_without_gain >= hp.patience:
                    break
        assert best_state is not None
        model.load_state_dict(best_state)
    return Trained(hp, model.eval(), best_score, best_epoch, best_post, time.perf_counter() - start)


def _seed_for(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index * 7919) % (2**31)


@dataclass
class Outcome:
    """What `run_downstream` returns: the chosen grid point, every grid point's validation
    result, and per data split its validation and test scores."""

    hparams: HParams
    postprocessing: dict[str, float] | None
    grid: list[dict[str, Any]]
    splits: list[dict[str, Any]]
    seconds: float


def standardized(train_data: SplitData, *others: SplitData) -> list[SplitData]:
    """Every split z-scored with the training split's per-dimension mean and std (not HEAR's
    recipe, which feeds embeddings as they are; useful for embeddings of unusual scale)."""
    mean = train_data.x.mean(axis=0, dtype=np.float64)
    std = train_data.x.std(axis=0, dtype=np.float64)
    std[std < 1e-12] = 1.0
    return [dataclasses.replace(d, x=((d.x - mean) / std).astype(np.float32)) for d in (train_data, *others)]


def run_downstream(
    splits: Sequence[tuple[SplitData, SplitData, SplitData]],
    scorer: Scorer,
    *,
    grid_points: int = 8,
    seed: int = 0,
    device: str | torch.device = "cpu",
    standardize: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    **fixed: Any,
) -> Outcome:
    """Select hyper-parameters on the first (train, valid, test) split, reuse them on the others,
    and score every split's test data with its best-epoch predictor."""
    start = time.perf_counter()
    if standardize:
        splits = [tuple(standardized(*split)) for split in splits]  # type: ignore[misc]
    points = sample_grid(grid_points, seed, **fixed)
    steps = len(points) + len(splits) - 1  # trainings: the grid on the first split, then one per other split
    first_train, first_valid, _ = splits[0]
    if on_step:
        on_step(0, steps)
    trained = []
    for index, hp in enumerate(points):
        trained.append(train(first_train, first_valid, hp, scorer, seed=_seed_for(seed, index), device=device))
        if on_step:
            on_step(index + 1, steps)
    best = max(trained, key=lambda t: t.validation_score)  # first of equals: max keeps the earliest
    results = []
    for split_index, (train_data, valid_data, test_data) in enumerate(splits):
        model = best if split_index == 0 else train(train_data, valid_data, best.hparams, scorer, seed=_seed_for(seed, 1000 + split_index), device=device)
        if split_index and on_step:
            on_step(len(points) + split_index, steps)
        probs = predict(model.model, test_data.x, scorer.prediction_type, torch.device(device))
        results.append(
            {
                "validation_score": model.validation_score,
                "epoch": model.epoch,
                "postprocessing": model.postprocessing,
                "train_seconds": round(model.seconds, 3),
                "scores": scorer.all(test_data, probs, model.postprocessing),
            }
        )
    grid = [
        {"hparams": dataclasses.asdict(t.hparams), "validation_score": t.validation_score, "epoch": t.epoch, "postprocessing": t.postprocessing}
        for t in trained
    ]
    return Outcome(best.hparams, best.postprocessing, grid, results, time.perf_counter() - start)
