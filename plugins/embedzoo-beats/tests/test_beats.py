"""embedzoo-beats against openbeats 0.1.1 (`BeatsEncoder(input_size=0, beats_config=cfg,
is_pretraining=False)`, the ESPnet port of Microsoft's BEATs with its parameter names: the reference).

- parity: the reference with random weights (every parameter randomised), saved as Microsoft's
  `{'cfg': {...}, 'model': state_dict}` pickle, converted by `checkpoint_filter_fn` through
  `embedzoo.load(..., weights=FILE)` (read with torch.load(weights_only=True), as the core reads
  it), gives every layer -- layer_results[0..N] read per patch column, and the fine-tuned head --
  within 1e-5 relative error (float32); window-mode scene and timestamp embeddings and frame mode
  against the same windows and chunks run through the reference; one full-size check;
- the reference's own (non-strict) load is checked: it skips only the padding convs, the shared
  copies of layer 0's position table and the predictor, and equals the checkpoint tensor for tensor;
- conversion: lossless from Microsoft's layout and openbeats' state_dict; stray, missing, mis-shaped
  keys and a cfg that disagrees with the card are named;
- registration torch-free; silence and short clips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from beats_small import (  # noqa: F401  (beats_catalog is a fixture; one_thread is conftest.py's)
    FINETUNED,
    OPENBEATS,
    PRETRAINED,
    SR,
    TOLERANCE,
    beats_catalog,
    noise,
    openbeats_checkpoint,
    reference,
    reference_layers,
    save_checkpoint,
    shared_table,
    small_id,
)

import embedzoo
from embedzoo.errors import ConfigError, WeightsError
from embedzoo.registry import get_registry
from embedzoo.testing import assert_registers, assert_torch_free_import, check_family, rel_err
from embedzoo_beats.model import checkpoint_filter_fn, create_model

pytestmark = [pytest.mark.usefixtures("beats_catalog", "one_thread")]
TWINS = (PRETRAINED, FINETUNED)


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, dict[str, Any], Path]]:
    """card id -> (reference, checkpoint, its .pt file), built on first use."""

    class Refs(dict):
        def __missing__(self, card_id: str):
            model, checkpoint = reference(small_id(card_id), seed=len(self) + 1)
            path = save_checkpoint(checkpoint, tmp_path_factory.mktemp(card_id) / "model.pt")
            self[card_id] = (model, checkpoint, path)
            return self[card_id]

    return Refs()


def load(refs, card_id: str, **knobs: Any) -> embedzoo.Extractor:
    return embedzoo.load(small_id(card_id), weights=str(refs[card_id][2]), device="cpu", **knobs)


def ours(model, clips: np.ndarray, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    names = layers or [spec.name for spec in model.card.layers]
    with torch.inference_mode():
        outputs = model.forward_layers(torch.from_numpy(clips), names)
    return dict(zip(names, outputs))


# ---- every layer --------------------------------------------------------------------------------


@pytest.mark.parametrize("card_id", TWINS)
@pytest.mark.parametrize("samples", [3200, 40000, 160000])  # 0.2 s (one column), 2.5 s, 10 s (62 columns)
def test_every_layer_matches_the_reference(refs, card_id: str, samples: int) -> None:
    reference_model, checkpoint, _ = refs[card_id]
    model = load(refs, card_id)
    clips = noise(samples, rows=2, seed=3)
    expected = reference_layers(reference_model, checkpoint, clips)
    got = ours(model, clips)
    assert list(got) == list(expected)
    for name, value in got.items():
        assert value.shape == expected[name].shape, name
        assert rel_err(value, expected[name]) < TOLERANCE, name
    assert model.card.hidden_states == ("patch", "block1", "block2")
    assert rel_err(ours(model, clips, ["block1"])["block1"], expected["block1"]) < TOLERANCE  # early stop


def test_the_reference_loads_the_whole_checkpoint(refs) -> None:
    """openbeats loads non-strictly: what it skipped is only the padding convs (frozen ones), the
    shared copies of layer 0's table (one module) and Microsoft's predictor; every tensor it holds
    equals the checkpoint's."""
    from openbeats.beats_encoder import BeatsEncoder

    for card_id in TWINS:
        reference_model, checkpoint, _ = refs[card_id]
        state = checkpoint["model"]
        fresh = BeatsEncoder(input_size=0, beats_config=checkpoint["cfg"], is_pretraining=False)
        info = fresh.load_state_dict(state, strict=False)
        assert all("_pad" in key or shared_table(key) for key in info.missing_keys), info.missing_keys
        assert all(key.startswith("predictor.") for key in info.unexpected_keys), info.unexpected_keys
        table = state["encoder.layers.0.self_attn.relative_attention_bias.weight"]
        for key, value in reference_model.state_dict().items():
            if "_pad" in key:
                continue
            assert torch.equal(value, table if shared_table(key) else state[key]), key


# ---- scene and timestamp embeddings -------------------------------------------------------------


def windows_of(clip: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Windows centred every `hop`, over the clip zero-padded by window // 2 at both ends (HEAR's cut)."""
    padded = np.pad(clip, (window // 2, window // 2))
    count = (len(padded) - window) // hop + 1
    return np.stack([padded[k * hop : k * hop + window] for k in range(count)])


def test_window_mode_scene_and_timestamps(refs) -> None:
    """Preset `window` (1 s windows, here every 250 ms): each timestamp is the mean over a window's
    patch columns of block2; the scene the same over the whole clip (one forward, <= 10 s)."""
    reference_model, checkpoint, _ = refs[PRETRAINED]
    model = load(refs, PRETRAINED, preset="window", layers=["block2"], hop_ms=250)
    clip = noise(int(2.2 * SR), seed=7)[0]
    windows = windows_of(clip, SR, SR // 4)
    expected_ts = reference_layers(reference_model, checkpoint, windows)["block2"].mean(dim=1)
    expected_scene = reference_layers(reference_model, checkpoint, clip[None])["block2"].mean(dim=1)[0]
    (result,) = model.embed([clip], SR)
    assert result.timestamp.shape == expected_ts.shape
    assert rel_err(result.timestamp, expected_ts) < TOLERANCE
    assert rel_err(result.scene, expected_scene) < TOLERANCE
    assert torch.allclose(result.timestamps.double(), torch.arange(len(expected_ts), dtype=torch.float64) * 250)


def test_logits_scene(refs) -> None:
    """The fine-tuned head as a scene embedding: the clip (<= 10 s) in one forward."""
    reference_model, checkpoint, _ = refs[FINETUNED]
    model = load(refs, FINETUNED, layers=["logits"], mode="window", window_ms=1000, hop_ms=500)
    clip = noise(int(1.5 * SR), seed=9)[0]
    (result,) = model.embed([clip], SR, timestamp=False)
    expected = reference_layers(reference_model, checkpoint, clip[None])["logits"][0]
    assert rel_err(result.scene, expected) < TOLERANCE


def test_frame_mode_reads_patch_columns(refs) -> None:
    """The family default (frame mode, the last block, one frame per 160 ms column): the clip padded
    by half a field, cut in chunks of whole columns up to 10 s, each chunk's columns as the reference
    computes them; the scene is their mean."""
    reference_model, checkpoint, _ = refs[PRETRAINED]
    card = get_registry().get(small_id(PRETRAINED))
    hop, field = card.frame_hop, card.frame_field
    assert (hop, field) == (2560, 2800)
    model = load(refs, PRETRAINED, preset="frames")
    clip = noise(int(2.5 * SR), seed=8)[0]
    padded = np.pad(clip, (field // 2, field))
    frames = 1 + len(clip) // hop
    chunk = padded[: (frames - 1) * hop + field]
    expected = reference_layers(reference_model, checkpoint, chunk[None])["block2"][0]
    (result,) = model.embed([clip], SR)
    assert result.timestamp.shape == expected.shape
    assert rel_err(result.timestamp, expected) < TOLERANCE
    assert rel_err(result.scene, expected.mean(dim=0)) < TOLERANCE


def test_mixed_lengths_equal_each_clip_alone(refs) -> None:
    model = load(refs, PRETRAINED, preset="window", layers=["block2"], hop_ms=500)
    clips = [noise(n, seed=n)[0] for n in (9000, 20000, 33000)]
    together = model.embed(clips, SR)
    for clip, result in zip(clips, together):
        (alone,) = model.embed([clip], SR)
        assert rel_err(result.timestamp, alone.timestamp) < TOLERANCE and rel_err(result.scene, alone.scene) < TOLERANCE


# ---- the one full-size check ----------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_every_layer(tmp_path: Path) -> None:
    """The one full-size check: BEATs_iter3_plus_AS2M_finetuned's architecture (12 x 768, 320
    buckets, 527 classes), random weights, a 3 s clip, every layer against the reference."""
    reference_model, checkpoint = reference(FINETUNED, seed=11)
    path = save_checkpoint(checkpoint, tmp_path / "model.pt")
    model = embedzoo.load(FINETUNED, weights=str(path), device="cpu")
    clips = noise(3 * SR, seed=12)
    expected = reference_layers(reference_model, checkpoint, clips)
    del reference_model
    got = ours(model, clips)
    assert got["block12"].shape == (1, 18, 768) and got["logits"].shape == (1, 527)
    for name, value in got.items():
        assert rel_err(value, expected[name]) < TOLERANCE, name


# ---- conversion ---------------------------------------------------------------------------------


def test_conversion_is_lossless(refs) -> None:
    """Microsoft's layout and openbeats' own state_dict (padding convs, repeated table, `encoder.`
    ESPnet prefix) convert to the same tensors, each one the file's."""
    for card_id in TWINS:
        reference_model, checkpoint, _ = refs[card_id]
        model = create_model(get_registry().get(small_id(card_id)))
        converted = checkpoint_filter_fn(checkpoint, model)
        assert set(converted) == set(model.state_dict())
        for key, value in checkpoint["model"].items():
            assert torch.equal(converted["model." + key], value), key
        espnet = {"encoder." + k: v for k, v in reference_model.state_dict().items()}
        espnet.update({"encoder." + k: v for k, v in checkpoint["model"].items() if k.startswith("predictor.")})
        again = checkpoint_filter_fn(espnet, model)
        assert all(torch.equal(again[k], converted[k]) for k in converted)


def test_openbeats_files_convert_and_match_openbeats_own_loader(tmp_path: Path) -> None:
    """An OpenBEATs SSL file (as `openbeats-convert` writes the shikhar7ssu/OpenBEATs-* checkpoints)
    on the Large card's twin: the core opens it with weights_only=True, its cfg (pretraining keys
    besides the architecture's) agrees with the card, and every layer equals the encoder openbeats'
    own `OpenBeats.from_pretrained(file)` builds from it, at 2.5 s."""
    from openbeats.model import OpenBeats

    checkpoint = openbeats_checkpoint(small_id(OPENBEATS), seed=21)
    path = save_checkpoint(checkpoint, tmp_path / "epoch_latest.pt")
    assert set(torch.load(path, weights_only=True)) == {"model", "cfg"}
    model = embedzoo.load(small_id(OPENBEATS), weights=str(path), device="cpu")
    reference_model = OpenBeats.from_pretrained(str(path)).encoder
    clips = noise(40000, rows=2, seed=22)
    expected = reference_layers(reference_model, checkpoint, clips)
    got = ours(model, clips)
    assert list(got) == ["patch", "block1", "block2"]
    for name, value in got.items():
        assert rel_err(value, expected[name]) < TOLERANCE, name
    converted = checkpoint_filter_fn(checkpoint, create_model(model.card))
    for key, value in converted.items():  # the file's tensors, nothing else (padding convs, table copies dropped)
        assert torch.equal(value, checkpoint["model"][key.removeprefix("model.")]), key
    with pytest.raises(WeightsError, match="encoder_attention_heads"):  # a Base file on the Large card's twin
        checkpoint_filter_fn({**checkpoint, "cfg": {**checkpoint["cfg"], "encoder_attention_heads": 4}}, create_model(model.card))
    # fbank statistics in the cfg (openbeats reads them there): the card's agree, or the file is refused
    same = {**checkpoint["cfg"], "fbank_mean": 15.41663, "fbank_std": 6.55582}
    assert set(checkpoint_filter_fn({**checkpoint, "cfg": same}, create_model(model.card))) == set(converted)
    with pytest.raises(WeightsError, match=r"fbank_mean = 15\.2913") as info:
        checkpoint_filter_fn({**checkpoint, "cfg": {**same, "fbank_mean": 15.2913}}, create_model(model.card))
    assert "config fbank_mean: 15.2913" in info.value.hint


def test_an_openbeats_repo_pulls_by_pattern(tmp_path: Path) -> None:
    """The cards name the files by pattern (ESPnet uploads keep the training machine's folders): in
    a folder laid out like the Hub repo (a mirror), the one .pt and the run config beside it are
    picked -- not another run's config -- and the pull equals the file loaded directly."""
    import dataclasses

    import yaml

    from embedzoo import weights

    twin = get_registry().get(small_id(OPENBEATS))
    card = dataclasses.replace(twin, sources=get_registry().get(OPENBEATS).sources)
    checkpoint = openbeats_checkpoint(twin.id, seed=23)
    repo = tmp_path / "mirror" / "shikhar7ssu" / "OpenBEATs-Large-i3"
    run = repo / "work" / "nvme" / "7Msounds" / "exp" / "beats_iter2_large"
    run.mkdir(parents=True)
    save_checkpoint(checkpoint, run / "epoch_latest.pt")
    (run / "config.yaml").write_text(yaml.safe_dump({"encoder_conf": {"beats_config": checkpoint["cfg"]}}))
    (repo / "work" / "tokenizer").mkdir(parents=True)
    (repo / "work" / "tokenizer" / "config.yaml").write_text("frontend: default\n")  # another run's: not read
    path = weights.pull(card, cache_dir=tmp_path / "cache", mirror=tmp_path / "mirror", offline=True, quiet=True)
    meta = yaml.safe_load((path.parent / "meta.json").read_text())
    assert list(meta["repo_files"]) == ["work/nvme/7Msounds/exp/beats_iter2_large/config.yaml"]
    direct = checkpoint_filter_fn(checkpoint, create_model(twin))
    pulled = weights.load_weights(path)
    assert set(pulled) == set(direct) and all(torch.equal(pulled[k], v) for k, v in direct.items())


def test_an_openbeats_run_config_is_checked_against_the_card(tmp_path: Path) -> None:
    """The ESPnet run config beside an OpenBEATs checkpoint (the cards' `files:`), read by the core
    as YAML and handed to the plugin: its beats_config and fbank statistics must be the card's; a
    repo without the file passes (the checkpoint's own cfg is still checked at conversion)."""
    import yaml

    from embedzoo.weights.store import check_repo_files as check

    card = get_registry().get(small_id(OPENBEATS))
    cfg = openbeats_checkpoint(small_id(OPENBEATS))["cfg"]
    run = {"encoder_conf": {"beats_config": cfg, "fbank_mean": 15.41663, "fbank_std": 6.55582}, "model_conf": {"ignore_id": -2}}
    path, name = tmp_path / "config.yaml", "exp/run/config.yaml"
    path.write_text(yaml.safe_dump(run))
    check(card, {name: path})
    check(card, {})
    path.write_text(yaml.safe_dump({**run, "encoder_conf": {**run["encoder_conf"], "fbank_std": 5.90532}}))
    with pytest.raises(WeightsError, match=r"fbank_std = 5\.90532"):
        check(card, {name: path})
    path.write_text(yaml.safe_dump({"encoder_conf": {"beats_config": {**cfg, "encoder_layers": 24}}}))
    with pytest.raises(WeightsError, match="encoder_layers = 24"):
        check(card, {name: path})
    path.write_text(yaml.safe_dump({"frontend": "default"}))
    with pytest.raises(WeightsError, match="no encoder_conf"):
        check(card, {name: path})
    path.write_text("encoder_conf: [unclosed")
    with pytest.raises(WeightsError, match="not readable YAML"):
        check(card, {name: path})


def test_openbeats_cards() -> None:
    """Base is BEATs' architecture, Large 24 x 1024 with 16 heads; their `params` are what the
    network has (counted on the meta device, no weights); Large reads its last block by default."""
    from embedzoo_beats.model import BEATsNet
    from embedzoo_beats.geometry import settings

    for size, depth, width in (("base", 12, 768), ("large", 24, 1024)):
        for iteration in (1, 2, 3):
            card = get_registry().get(f"openbeats-{size}-i{iteration}")
            source = card.sources[0]
            assert card.license == "CC-BY-4.0" and source.repo == f"shikhar7ssu/OpenBEATs-{size.capitalize()}-i{iteration}"
            assert (source.filename, source.files) == ("*.pt", ("*/config.yaml",))  # picked from the repo's list
            assert card.layers[-1].name == f"block{depth}" and card.layers[-1].width == width
            assert card.defaults["layers"] == [f"block{depth}"]
            with torch.device("meta"):
                net = BEATsNet(settings(card.config))
            assert sum(p.numel() for p in net.parameters()) == card.params


def test_the_core_reads_the_pickle_with_weights_only(refs, tmp_path: Path) -> None:
    """A plain-dict cfg (and a label_dict, as fine-tuned files have) passes torch.load(weights_only=True)."""
    _, checkpoint, _ = refs[FINETUNED]
    path = save_checkpoint({**checkpoint, "label_dict": {i: f"/m/{i:04d}" for i in range(10)}}, tmp_path / "ft.pt")
    assert torch.load(path, weights_only=True)["cfg"] == checkpoint["cfg"]
    model = embedzoo.load(small_id(FINETUNED), weights=str(path), device="cpu")
    assert model.card.layer("logits").width == 10


def test_conversion_names_what_does_not_fit(refs) -> None:
    _, checkpoint, _ = refs[PRETRAINED]
    model = create_model(get_registry().get(small_id(PRETRAINED)))
    state = dict(checkpoint["model"])
    with pytest.raises(WeightsError, match="stray"):
        checkpoint_filter_fn({**state, "stray.weight": torch.zeros(1)}, model)
    missing = {k: v for k, v in state.items() if k != "encoder.layers.1.fc2.bias"}
    with pytest.raises(WeightsError, match=r"encoder\.layers\.1\.fc2\.bias"):
        checkpoint_filter_fn(missing, model)
    with pytest.raises(WeightsError, match="layer_norm.weight"):
        checkpoint_filter_fn({**state, "layer_norm.weight": torch.zeros(5)}, model)
    with pytest.raises(WeightsError, match="encoder_layers"):
        checkpoint_filter_fn({**checkpoint, "cfg": {**checkpoint["cfg"], "encoder_layers": 3}}, model)
    with pytest.raises(WeightsError, match="deep_norm"):
        checkpoint_filter_fn({**checkpoint, "cfg": {k: v for k, v in checkpoint["cfg"].items() if k != "deep_norm"}}, model)
    with pytest.raises(WeightsError, match="predictor"):  # a fine-tuned file on a pre-trained card
        checkpoint_filter_fn({"model": {**state, "predictor.weight": torch.zeros(527, 48), "predictor.bias": torch.zeros(527)}}, model)
    bad_table = {**state, "encoder.layers.1.self_attn.relative_attention_bias.weight": torch.zeros(320, 4)}
    with pytest.raises(WeightsError, match="layer 0"):
        checkpoint_filter_fn(bad_table, model)


# ---- registration, geometry, bad input ----------------------------------------------------------


def test_plugin_registers_the_family_torch_free() -> None:
    assert_torch_free_import("embedzoo_beats", "embedzoo_beats.geometry")
    assert_registers("beats", ["beats"])


@pytest.mark.parametrize("card_id", [*TWINS, OPENBEATS])
def test_twins_match_their_geometry(card_id: str) -> None:
    check_family(get_registry().get(small_id(card_id)))


def test_real_cards_geometry() -> None:
    card = get_registry().get("beats")  # the alias
    assert card.id == PRETRAINED and card.max_window == 160000 and card.min_window == 2800
    assert (card.frame_hop, card.frame_field) == (2560, 2800)
    assert [spec.name for spec in card.layers] == ["patch", *(f"block{i}" for i in range(1, 13))]
    assert card.hidden_states == ("patch", *(f"block{i}" for i in range(1, 13)))
    fine = get_registry().get(FINETUNED)
    assert fine.layer("logits").width == 527 and fine.layer("logits").pooled


def test_silence_and_short_clips(refs) -> None:
    model = load(refs, FINETUNED)
    for name, value in ours(model, np.zeros((1, 8000), np.float32)).items():
        assert torch.isfinite(value).all(), name
    (result,) = model.embed([noise(1000)[0]], SR)  # shorter than a column: the core pads it
    assert torch.isfinite(result.scene).all() and torch.isfinite(result.timestamp).all()
    with pytest.raises(ConfigError, match="a patch needs"):
        model.forward_layers(torch.zeros(1, 2000), ["block1"])
