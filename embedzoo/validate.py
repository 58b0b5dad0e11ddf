"""`embedzoo validate`: the HEAR 2021 API checks, plus embedzoo's own, for one model.

HEAR's checks (as hear-validator makes them): a torch Module with an accepted sample rate and int
embedding sizes; float32 outputs of the right shapes for 16 clips of 2 s and 8 clips of 3.74 s;
regular timestamps. embedzoo adds: timestamps inside the audio, clips shorter than one window,
odd lengths, finite and deterministic outputs. When hearvalidator is installed, the official
`hear-validator embedzoo.hear -m MODEL` runs too, in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from embedzoo.hear import HEAR_SAMPLE_RATES
from embedzoo.spec import ModelSpec


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    model: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def _check(report: Report, name: str, run: Callable[[], str]) -> None:
    try:
        report.checks.append(Check(name, True, run()))
    except Exception as exc:  # a failed check is reported, and the others still run
        report.checks.append(Check(name, False, f"{type(exc).__name__}: {exc}"))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


OnCheck = Callable[[int, int, str, "Check | None"], None]  # (index, total, name, None when it starts | the result)


def validate_model(spec: str, device: str = "auto", run_hear_validator: bool = True, on_check: OnCheck | None = None, **knobs: Any) -> Report:
    """Run every check on the model `spec` names (a model spec, as `embedzoo.hear.load_model` takes),
    with `knobs` on top; the official validator gets the same model as one spec string.
    `on_check(index, total, name, check)` is called as each check starts (check None) and ends."""
    from embedzoo import hear

    report = Report(spec)
    chosen = ModelSpec.parse(spec).with_knobs(**knobs)
    total = len(_CHECKS) + 1 + bool(run_hear_validator)  # loading the model is the first step

    def notify(index: int, name: str, check: Check | None) -> None:
        if on_check is not None:
            on_check(index, total, name, check)

    notify(0, "load the model", None)
    model = hear.load_model(str(chosen), device=device)
    notify(0, "load the model", Check("load the model", True, f"{model.card.id} on {model.device}"))
    dev = model.device
    rate = model.sample_rate
    generator = torch.Generator().manual_seed(0)

    def noise(n: int, seconds: float) -> torch.Tensor:
        return (torch.rand(n, int(seconds * rate), generator=generator) * 2 - 1).to(dev)

    def api() -> str:
        _require(isinstance(model, torch.nn.Module), "load_model must return a torch.nn.Module")
        _require(rate in HEAR_SAMPLE_RATES, f"sample_rate {rate} is not one of {HEAR_SAMPLE_RATES}")
        _require(isinstance(model.scene_embedding_size, int), "scene_embedding_size must be an int")
        _require(isinstance(model.timestamp_embedding_size, int), "timestamp_embedding_size must be an int")
        return f"sample_rate {rate}, sizes {model.scene_embedding_size}/{model.timestamp_embedding_size}"

    def timestamp() -> str:
        audio = noise(16, 2.0)
        emb, ts = hear.get_timestamp_embeddings(audio, model)
        _require(emb.dtype == torch.float32, f"embeddings are {emb.dtype}, not float32")
        _require(emb.shape[0] == 16 and emb.shape[2] == model.timestamp_embedding_size, f"shape {tuple(emb.shape)}")
        _require(tuple(ts.shape) == tuple(emb.shape[:2]), f"timestamps {tuple(ts.shape)} vs embeddings {tuple(emb.shape)}")
        diff = torch.diff(ts.double())
        _require(bool(torch.all((diff - diff.mean()).abs() < 1e-3)), "timestamps are not evenly spaced")
        _require(bool(torch.isfinite(emb).all()), "non-finite embeddings")
        return f"{tuple(emb.shape)}, hop {float(diff.mean()):.3f} ms"

    def scene() -> str:
        audio = noise(8, 3.74)
        emb = hear.get_scene_embeddings(audio, model)
        _require(emb.dtype == torch.float32, f"embeddings are {emb.dtype}, not float32")
        _require(tuple(emb.shape) == (8, model.scene_embedding_size), f"shape {tuple(emb.shape)}")
        _require(bool(torch.isfinite(emb).all()), "non-finite embeddings")
        return f"{tuple(emb.shape)}"

    def inside() -> str:
        audio = noise(2, 1.37)
        _, ts = hear.get_timestamp_embeddings(audio, model)
        duration = 1000.0 * audio.shape[1] / rate
        _require(float(ts.min()) >= 0 and float(ts.max()) <= duration, f"timestamps {float(ts.min())}..{float(ts.max())} ms outside 0..{duration:.1f} ms")
        return f"{float(ts.min()):.1f}..{float(ts.max()):.1f} ms within {duration:.1f} ms"

    def short() -> str:
        samples = max(1, min(model.window_samples, model.card.min_window) // 3)
        audio = noise(3, samples / rate)
        emb, ts = hear.get_timestamp_embeddings(audio, model)
        scene = hear.get_scene_embeddings(audio, model)
        _require(emb.shape[1] >= 1 and bool(torch.isfinite(emb).all()) and bool(torch.isfinite(scene).all()), "no finite embedding")
        return f"{samples} samples -> {emb.shape[1]} timestamp(s)"

    def odd() -> str:
        for samples in (rate + 1, int(rate * 0.7331), 3 * rate - 7):
            audio = noise(1, samples / rate)
            emb, ts = hear.get_timestamp_embeddings(audio, model)
            _require(emb.shape[1] == ts.shape[1] >= 1, f"{samples} samples gave {tuple(emb.shape)}")
        return "1 s + 1, 0.7331 s, 3 s - 7 samples"

    def deterministic() -> str:
        audio = noise(2, 1.0)
        a = hear.get_scene_embeddings(audio, model)
        b = hear.get_scene_embeddings(audio, model)
        _require(torch.equal(a, b), "two runs on the same audio differ")
        return "same input, same output"

    runs = {"api": api, "timestamp": timestamp, "scene": scene, "inside": inside, "short": short, "odd": odd, "deterministic": deterministic}
    for index, (name, key) in enumerate(_CHECKS, start=1):
        notify(index, name, None)
        _check(report, name, runs[key])
        notify(index, name, report.checks[-1])

    if run_hear_validator:
        notify(total - 1, "hear-validator", None)
        report.checks.append(_official_validator(str(chosen), device))
        notify(total - 1, "hear-validator", report.checks[-1])
    return report


# the checks, in order: (name in the report, function in validate_model)
_CHECKS = (
    ("HEAR load_model attributes", "api"), ("HEAR get_timestamp_embeddings", "timestamp"), ("HEAR get_scene_embeddings", "scene"),
    ("timestamps inside the audio", "inside"), ("clips shorter than one window", "short"), ("odd lengths", "odd"), ("deterministic", "deterministic"),
)  # fmt: skip


def _official_validator(spec: str, device: str) -> Check:
    """Run `hear-validator embedzoo.hear -m SPEC` when hearvalidator is installed."""
    try:
        import hearvalidator  # noqa: F401
    except ImportError:
        return Check("hear-validator", True, "skipped: hearvalidator is not installed (pip install hearvalidator tensorflow-cpu)")
    command = [sys.executable, "-m", "hearvalidator.validate", "embedzoo.hear", "-m", spec]
    if device != "auto":
        command += ["-d", device]
    proc = subprocess.run(command, capture_output=True, text=True)
    ok = proc.returncode == 0 and "Looks good!" in proc.stdout
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return Check("hear-validator", ok, "Looks good!" if ok else " | ".join(tail))
