"""embedzoo-ced against dasheng 0.0.9's encoder configured as CED (the runnable reference; see ced_small.py).

- parity: the reference with random weights (every parameter and the BatchNorm statistics),
  saved in the authors' Zenodo format ({'model': state_dict} with the front end's buffers) and in
  the Hub's (model.safetensors with `encoder.` keys + config.json), converted by
  `checkpoint_filter_fn` through `embedzoo.load(..., weights=...)`, gives every layer -- patch,
  each block, the final norm, the mean-pooled features and the head's logits -- within 1e-5
  relative error (float32) on small twins, for clips of one patch column up to a full chunk;
  scene and timestamp embeddings (window mode, including a clip longer than a chunk, which the
  core windows) and frame mode against the same windows and chunks run through the reference;
  one full-size check (ced-mini);
- conversion: lossless from both layouts and wrapped files; stray, missing and mis-shaped keys named;
- check_repo_files: a config.json that disagrees with the card is refused, naming the key;
- registration torch-free; silence and out-of-range inputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ced_small import (  # noqa: F401  (ced_catalog is a fixture; one_thread is conftest.py's)
    SR,
    TOLERANCE,
    ced_catalog,
    noise,
    reference,
    reference_layers,
    save_hub,
    save_original,
    small_id,
)

import embedzoo
from embedzoo.errors import ConfigError, WeightsError
from embedzoo.knobs import resolve_knobs
from embedzoo.registry import get_registry
from embedzoo.testing import assert_registers, assert_torch_free_import, check_family, rel_err
from embedzoo_ced.geometry import settings
from embedzoo_ced.model import check_repo_files, checkpoint_filter_fn, create_model

pytestmark = [pytest.mark.usefixtures("ced_catalog", "one_thread")]

TWIN = small_id("ced-mini")


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The small twin's reference, saved in both published layouts."""
    card = get_registry().get(TWIN)
    model = reference(TWIN, seed=1)
    folder = tmp_path_factory.mktemp("ced")
    return {
        "model": model,
        "original": save_original(model, folder / "audiotransformer_mini_mAP_4896.pt"),
        "hub": save_hub(model, folder / "hub", settings(card.config)),
    }


def load(ref, layout: str = "original", **knobs: Any) -> embedzoo.Extractor:
    return embedzoo.load(TWIN, weights=str(ref[layout]), device="cpu", **knobs)


def ours(model, clips: np.ndarray, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    names = layers or [spec.name for spec in model.card.layers]
    with torch.inference_mode():
        outputs = model.forward_layers(torch.from_numpy(clips), names)
    return dict(zip(names, outputs))


# ---- every layer --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["original", "hub"])
@pytest.mark.parametrize("samples", ["min", 8000, "max"])  # one patch column, 0.5 s, one full chunk
def test_every_layer_matches_the_reference(ref, layout: str, samples) -> None:
    model = load(ref, layout)
    card = model.card
    samples = {"min": card.min_window, "max": card.max_window}.get(samples, samples)
    clips = noise(samples, rows=2, seed=3)
    expected = reference_layers(ref["model"], clips)
    got = ours(model, clips)
    assert list(got) == list(expected)
    for name, value in got.items():
        assert rel_err(value, expected[name]) < TOLERANCE, name
    assert card.hidden_states == ("patch", "block1", "block2")
    assert rel_err(ours(model, clips, ["block1"])["block1"], expected["block1"]) < TOLERANCE  # early stop


# ---- scene and timestamp embeddings -------------------------------------------------------------


def windows_of(clip: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Windows centred every `hop`, over the clip zero-padded by window // 2 at both ends (HEAR's cut)."""
    padded = np.pad(clip, (window // 2, window // 2))
    count = (len(padded) - window) // hop + 1
    return np.stack([padded[k * hop : k * hop + window] for k in range(count)])


@pytest.mark.parametrize("seconds", [0.9, 3.3])  # within one chunk; longer than a chunk (1.59 s): the core's windows
def test_scene_and_timestamp_embeddings(ref, seconds: float) -> None:
    model = load(ref, hop_ms=250)  # the defaults (features; 480 ms windows), fewer windows
    card = model.card
    clip = noise(int(seconds * SR), seed=7)[0]
    if len(clip) <= card.max_window:  # forwarded whole
        expected_scene = reference_layers(ref["model"], clip[None])["features"][0]
    else:  # windows of max_window every half of it, the mean
        expected_scene = reference_layers(ref["model"], windows_of(clip, card.max_window, card.max_window // 2))["features"].mean(0)
    expected_ts = reference_layers(ref["model"], windows_of(clip, 480 * SR // 1000, SR // 4))["features"]
    (result,) = model.embed([clip], SR)
    assert rel_err(result.scene, expected_scene) < TOLERANCE
    assert result.timestamp.shape == expected_ts.shape
    assert rel_err(result.timestamp, expected_ts) < TOLERANCE
    assert torch.allclose(result.timestamps.double(), torch.arange(len(expected_ts), dtype=torch.float64) * 250)


def test_frame_mode_reads_patch_columns(ref) -> None:
    """Preset `frames` (the last block, frame mode) at the column hop: the clip padded by half a
    field, cut in chunks of whole columns, each chunk's columns as the reference computes them."""
    card = get_registry().get(TWIN)
    hop, field = card.frame_hop, card.frame_field
    assert (hop, field) == (2560, 2400)
    model = load(ref, preset="frames", hop_ms=card.samples_to_ms(hop))
    clip = noise(int(3.5 * SR), seed=8)[0]
    padded = np.pad(clip, (field // 2, field))
    frames = 1 + len(clip) // hop
    per_chunk = (card.max_window - field) // hop + 1
    expected = []
    for start in range(0, frames, per_chunk):
        count = min(per_chunk, frames - start)
        chunk = padded[start * hop : start * hop + (count - 1) * hop + field]
        expected.append(reference_layers(ref["model"], chunk[None])["block2"][0, :count])
    expected = torch.cat(expected)
    (result,) = model.embed([clip], SR, scene=False)
    assert result.timestamp.shape == expected.shape
    assert rel_err(result.timestamp, expected) < TOLERANCE


def authors_long_input(ref_model, clip: np.ndarray, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' `AudioTransformer.forward_spectrogram` for a clip longer than a chunk, written
    from RicherMans/CED models/audiotransformer.py (pad_last True; eval_avg "mean" for the tags,
    HEAR_CED's eval_avg "cat" + mean for the features) on dasheng's modules (the same maths per
    chunk): split after init_bn, zero-pad a short last chunk, drop a full-length last one."""
    encoder = ref_model.encoder
    with torch.inference_mode():
        x = encoder.forward_to_spec(torch.from_numpy(clip)[None])  # (1, 1, F, T) after init_bn
        if x.shape[-1] > length:
            splits = list(x.split(length, -1))
            if splits[-1].shape[-1] < length:
                pad = torch.zeros(*x.shape[:-1], length)
                pad[..., : splits[-1].shape[-1]] = splits[-1]
                splits[-1] = pad
            else:
                splits = splits[:-1]
        else:
            splits = [x]
        outputs = [encoder.forward_features(encoder.patch_embed(split)) for split in splits]  # (1, N, D) each
        tags = torch.stack([ref_model.outputlayer(out.mean(1)).sigmoid() for out in outputs]).mean(0)
        features = torch.cat(outputs, dim=1).mean(1)
    return features[0], tags[0]


@pytest.mark.parametrize("frames", [100, 320, 357])  # one chunk; exactly two (the second dropped); two and a bit (padded)
def test_chunked_reproduces_the_authors_long_input(ref, frames: int) -> None:
    model = load(ref)
    length = model.cfg["target_length"]
    clips = noise((frames - 1) * 160, rows=2, seed=13)
    got = model.chunked(torch.from_numpy(clips))
    for row, clip in enumerate(clips):
        features, tags = authors_long_input(ref["model"], clip, length)
        assert rel_err(got["features"][row], features) < TOLERANCE
        assert rel_err(got["tags"][row], tags) < TOLERANCE
    if frames <= length:  # one chunk: the window-mode layers
        layers = ours(model, clips, ["features", "logits"])
        assert rel_err(got["features"], layers["features"]) < TOLERANCE
        assert rel_err(got["tags"], torch.sigmoid(layers["logits"])) < TOLERANCE


# ---- the one full-size check ----------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_every_layer(tmp_path: Path) -> None:
    """The one full-size check: ced-mini's architecture (256 x 12, 4 x 63 positions), random weights
    in the Zenodo format, a 3 s clip, every layer against the reference."""
    model_ref = reference("ced-mini", seed=11)
    path = save_original(model_ref, tmp_path / "audiotransformer_mini_mAP_4896.pt")
    model = embedzoo.load("ced-mini", weights=str(path), device="cpu")
    clips = noise(3 * SR, seed=12)
    expected = reference_layers(model_ref, clips)
    got = ours(model, clips)
    assert got["block12"].shape == (1, 18, 256) and got["logits"].shape == (1, 527)
    for name, value in got.items():
        assert rel_err(value, expected[name]) < TOLERANCE, name


# ---- conversion ---------------------------------------------------------------------------------


def test_conversion_is_lossless(ref) -> None:
    """Both layouts give the same state, every tensor used unchanged; wrapped files too."""
    model = create_model(get_registry().get(TWIN))
    original = ref["model"].original_state()
    state = checkpoint_filter_fn({"model": original}, model)
    assert set(state) == set(model.state_dict())
    front_end = [key for key in original if key.startswith("front_end.")]
    assert sorted(front_end) == ["front_end.0.mel_scale.fb", "front_end.0.spectrogram.window"]
    assert len(state) == len(original) - len(front_end)  # num_batches_tracked included
    for key, value in original.items():
        if key not in front_end:
            assert torch.equal(state[key.replace("init_bn.1.", "init_bn.")], value), key
    hub = ref["model"].hub_state()
    for variant in (hub, {"state_dict": hub}, {"model": {f"module.{k}": v for k, v in original.items()}}):
        converted = checkpoint_filter_fn(variant, model)
        assert all(torch.equal(converted[k], state[k]) for k in state)


def test_conversion_names_what_does_not_fit(ref) -> None:
    model = create_model(get_registry().get(TWIN))
    original = ref["model"].original_state()
    with pytest.raises(WeightsError, match="surprise"):
        checkpoint_filter_fn({**original, "surprise": torch.zeros(1)}, model)
    with pytest.raises(WeightsError, match=re.escape("blocks.1.attn.qkv.bias")):
        checkpoint_filter_fn({k: v for k, v in original.items() if k != "blocks.1.attn.qkv.bias"}, model)
    with pytest.raises(WeightsError, match=re.escape("init_bn.1.running_var")):
        checkpoint_filter_fn({k: v for k, v in original.items() if k != "init_bn.1.running_var"}, model)
    with pytest.raises(WeightsError, match="time_pos_embed.*shape"):
        checkpoint_filter_fn({**original, "time_pos_embed": torch.zeros(1, 32, 1, 63)}, model)
    # the MAE-pretrained files have no head: named
    with pytest.raises(WeightsError, match="outputlayer"):
        checkpoint_filter_fn({k: v for k, v in original.items() if not k.startswith("outputlayer.")}, model)
    # a front end that is not this card's (another mel bank)
    with pytest.raises(WeightsError, match="mel_scale.fb"):
        checkpoint_filter_fn({**original, "front_end.0.mel_scale.fb": original["front_end.0.mel_scale.fb"] * 2}, model)


# ---- the repo's config file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,value",
    [("depth", 3), ("embed_dim", 64), ("target_length", 1012), ("outputdim", 527), ("n_mels", 128), ("hop_size", 320), ("pooling", "token")],
)
def test_repo_config_that_disagrees_is_refused(ref, key: str, value) -> None:
    card = get_registry().get(TWIN)
    files = {"config.json": json.loads((ref["hub"] / "config.json").read_text())}
    check_repo_files(card, files)  # the reference's own file agrees
    files["config.json"][key] = value
    with pytest.raises(WeightsError, match=rf"config.json .* says {key} = "):
        check_repo_files(card, files)


def test_repo_config_name_sets_the_width() -> None:
    """CedConfig(name='ced-base') sets embed_dim 768 and 12 heads whatever the file says."""
    card = get_registry().get("ced-mini")
    check_repo_files(card, {"config.json": {"name": "ced-mini", "embed_dim": 768}})
    with pytest.raises(WeightsError, match="embed_dim"):
        check_repo_files(card, {"config.json": {"name": "ced-base"}})
    check_repo_files(card, {"preprocessor_config.json": {"feature_size": 64, "f_max": None, "sampling_rate": 16000}})
    with pytest.raises(WeightsError, match="feature_size"):
        check_repo_files(card, {"preprocessor_config.json": {"feature_size": 128}})


def test_a_repo_folder_with_another_config_does_not_load(ref, tmp_path: Path) -> None:
    import shutil

    folder = shutil.copytree(ref["hub"], tmp_path / "repo")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "depth": 4}))
    with pytest.raises(WeightsError, match="depth"):
        embedzoo.load(TWIN, weights=str(folder), device="cpu")


# ---- registration, geometry, odd input --------------------------------------------------------------


def test_plugin_registers_the_family_torch_free() -> None:
    assert_torch_free_import("embedzoo_ced", "embedzoo_ced.geometry")
    assert_registers("ced", ["ced"])


def test_twin_matches_its_geometry() -> None:
    check_family(get_registry().get(TWIN))


def test_real_cards_geometry() -> None:
    widths = {"ced-tiny": 192, "ced-mini": 256, "ced-small": 384, "ced-base": 768}
    for card_id, width in widths.items():
        card = get_registry().get(card_id)
        assert card.max_window == 1011 * 160 and card.min_window == 2400
        assert (card.frame_hop, card.frame_field) == (2560, 2400)
        assert [spec.name for spec in card.layers][-3:] == ["norm", "features", "logits"]
        assert card.layer("block12").width == width and card.layer("logits").width == 527
        assert card.hidden_states == ("patch", *(f"block{i}" for i in range(1, 13)))
    for layer in ("features", "logits"):
        with pytest.raises(ConfigError, match="one vector per window"):
            resolve_knobs(get_registry().get("ced-mini"), {"layers": [layer], "mode": "frame"})


def test_silence_and_bad_lengths(ref) -> None:
    model = load(ref, hop_ms=500)
    for name, value in ours(model, np.zeros((1, 5000), np.float32)).items():
        assert torch.isfinite(value).all(), name
    (result,) = model.embed([noise(300)[0]], SR)  # shorter than one column: the core pads it
    assert torch.isfinite(result.scene).all() and torch.isfinite(result.timestamp).all()
    with pytest.raises(ConfigError, match="less than one"):
        model.forward_layers(torch.zeros(1, 1000), ["features"])
    with pytest.raises(ConfigError, match="at most"):
        model.forward_layers(torch.zeros(1, model.card.max_window + 160), ["features"])
