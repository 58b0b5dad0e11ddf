"""Knob metadata on the `Knobs` fields (one field makes a knob: its option, its place in manifests
and cache keys), and running the engine with other knobs for one job without touching the model."""

from __future__ import annotations

import dataclasses
import json

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from embedzoo.cli import knob_options, knobs_from, main
from embedzoo.errors import ConfigError
from embedzoo.eval.embeddings import ModelHandle
from embedzoo.eval.evaluate import EvalSettings, evaluate
from embedzoo.eval.tasks import make_task
from embedzoo.knobs import KNOBS, LEVEL_KNOBS, SWEEP_KNOBS, Knobs, knob, knob_record, resolve_knobs, scene_knobs
from embedzoo.pipeline import embed_files
from toymodel import TOY_CARD, ToyExtractor


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.mark.parametrize("command", ["embed", "eval", "validate", "sweep"])
def test_every_knob_is_an_option_of_every_command(command):
    text = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
    for name, info in KNOBS.items():
        assert (flag(name) in text) == info.option, (command, name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GainKnobs(Knobs):
    """A new knob is one field: the options, the manifest and the cache keys follow from it."""

    gain_db: float = knob(0.0, help="Gain before the model, dB.", kind=float, timestamp_only=True)
    prefetch: int = knob(2, help="Batches decoded ahead.", kind=int, results=False)


def test_a_new_knob_field_appears_in_the_cli_and_the_records():
    @click.command()
    @knob_options(knobs=GainKnobs)
    def command(**kwargs):
        click.echo(json.dumps(knobs_from(kwargs, knobs=GainKnobs)))

    runner = CliRunner()
    help_text = runner.invoke(command, ["--help"]).output
    assert "--gain-db FLOAT" in help_text and "Gain before the model, dB." in help_text and "--prefetch INTEGER" in help_text
    given = runner.invoke(command, ["--gain-db", "3", "--hop-ms", "5", "--mode", "frame"])
    assert given.exit_code == 0, given.output
    assert json.loads(given.output) == {"gain_db": 3.0, "hop_ms": 5.0, "mode": "frame"}
    assert runner.invoke(command, ["--mode", "sideways"]).exit_code == 2  # choices come from the metadata too
    knobs = GainKnobs(layers=("frames",), gain_db=3.0)
    record = knob_record(knobs)
    assert record["gain_db"] == 3.0 and "prefetch" not in record and "batch_size" not in record
    assert "gain_db" not in knob_record(knobs, "scene")


def test_records_and_scene_knobs_follow_the_metadata():
    knobs = resolve_knobs(TOY_CARD, {"hop_ms": 1.0, "window_ms": 4.0, "batch_size": 7, "layers": "frames,energy"})
    record = knob_record(knobs)
    assert record["layers"] == ["frames", "energy"] and record["dtype"] == "float32"
    assert not {"batch_size", "batch_seconds"} & set(record)
    assert not {"hop_ms", "window_ms", "levels"} & set(knob_record(knobs, "scene"))
    scene = scene_knobs(TOY_CARD, knobs)
    default = resolve_knobs(TOY_CARD)
    assert (scene.hop_ms, scene.window_ms, scene.levels) == (default.hop_ms, default.window_ms, ())
    assert scene.layers == knobs.layers and scene.batch_size == 7
    assert LEVEL_KNOBS == ("layers", "readout", "freq_pool", "window_ms", "pad_mode", "padding")
    assert SWEEP_KNOBS == ("layers", "hop_ms", "window_ms", "mode")
    with pytest.raises(ConfigError, match="must be a number"):
        resolve_knobs(TOY_CARD, {"hop_ms": "fast"})


# ---- other knobs for one job ---------------------------------------------------------------------


def test_with_knobs_shares_the_weights_and_leaves_the_model_alone():
    model = ToyExtractor().eval().configure(hop_ms=1.0)
    before = model.knobs
    view = model.with_knobs({"window_ms": 4.0})
    assert view.knobs.window_ms == 4.0 and view.knobs.hop_ms == 1.0 and model.knobs is before
    assert view.proj.weight is model.proj.weight and not view.training
    clip = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    once = model.embed([clip], 16000, knobs={"window_ms": 4.0})[0]
    assert model.knobs is before
    configured = ToyExtractor().eval().configure(hop_ms=1.0, window_ms=4.0).embed([clip], 16000)[0]
    assert torch.equal(once.timestamp, configured.timestamp) and torch.equal(once.scene, configured.scene)
    assert model.with_knobs(dataclasses.replace(before, hop_ms=2.0)).knobs.hop_ms == 2.0
    with pytest.raises(ConfigError, match="exceeds the longest input"):
        model.with_knobs(dataclasses.replace(before, window_ms=1e6))  # a Knobs is checked against the card


def test_pipeline_and_eval_pass_knobs_instead_of_reconfiguring(tmp_path):
    import soundfile as sf

    from embedzoo.inputs import collect_inputs

    model = ToyExtractor().eval()
    before = model.knobs
    sf.write(tmp_path / "a.wav", np.random.default_rng(1).standard_normal(800).astype(np.float32) * 0.1, 16000)
    embed_files(model, collect_inputs([tmp_path / "a.wav"]), tmp_path / "out", workers=0, knobs={"hop_ms": 2.0})
    assert model.knobs is before
    assert json.loads((tmp_path / "out" / "embedzoo.json").read_text())["knobs"]["hop_ms"] == 2.0
    task = make_task("scene", tmp_path / "task", size="tiny")
    handle = ModelHandle("toy", model.configure(batch_size=4096), "toy-weights")
    configured = model.knobs
    quick = EvalSettings(grid_points=1, max_epochs=2, patience=1, hidden_dim=16)
    result = evaluate(handle, task, knobs={"layers": ["energy"]}, settings=quick, workers=0, cache_dir=tmp_path / "cache")
    assert result["knobs"]["layers"] == ["energy"] and handle.extractor.knobs is configured
