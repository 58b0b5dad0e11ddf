"""embedzoo-clap against transformers 5.24 (ClapFeatureExtractor + ClapModel, the reference).

- parity: a random ClapModel (every parameter randomised, relative position tables and BatchNorm
  statistics included) with a tiny text tower, saved with save_pretrained next to the feature
  extractor's preprocessor_config.json and loaded by `embedzoo.load(..., weights=<folder>)`,
  gives the reference's every layer -- hidden_states (before downsampling), last_hidden_state,
  pooler_output, get_audio_features -- within 1e-5 (float32) for each padding, unfused and fused,
  and its scene and timestamp embeddings; the log-mel equals the feature extractor's;
- conversion: the text side is dropped by name, nothing else; stray, missing and mis-shaped keys named;
- check_repo_files: a disagreeing config.json / preprocessor_config.json is refused, naming the key;
- registration torch-free; frame mode refused; silence and one-sample clips finite.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import ClapAudioModelWithProjection

import embedzoo
from embedzoo.errors import ConfigError, WeightsError
from embedzoo.knobs import resolve_knobs
from embedzoo.registry import get_registry
from embedzoo.testing import assert_registers, assert_torch_free_import, rel_err
from embedzoo_clap.model import check_repo_files, checkpoint_filter_fn, create_model
from clap_small import (  # noqa: F401  (small_catalog is a fixture)
    SMALL_CARDS,
    SR,
    TOLERANCE,
    feature_extractor,
    make_audio,
    reference_features,
    reference_model,
    save_hub_layout,
    small_catalog,
    time_ordered,
)

pytestmark = pytest.mark.usefixtures("one_thread", "small_catalog")
UNFUSED, FUSED = "clap-htsat-unfused-small", "clap-htsat-fused-small"


@pytest.fixture(scope="module")
def saved(small_catalog, tmp_path_factory) -> dict[str, tuple[torch.nn.Module, Path]]:
    """Each small twin's random reference and its hub-layout folder."""
    out = {}
    for seed, (ident, config) in enumerate(SMALL_CARDS.items()):
        reference = reference_model(config, seed=seed + 1)
        out[ident] = reference, save_hub_layout(reference, tmp_path_factory.mktemp(ident), config)
    return out


def load(ident: str, folder: Path, **knobs):
    """The small twin with the reference's weights, from its save_pretrained folder (repo files checked)."""
    return embedzoo.load(ident, weights=str(folder), device="cpu", **knobs)


def reference_layers(reference, features: torch.Tensor, is_longer: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every layer as transformers computes it (hidden states before each stage's patch merging)."""
    with torch.no_grad():
        out = reference.audio_model(features, is_longer=is_longer, output_hidden_states=True, output_hidden_states_before_downsampling=True)
        projection = reference.get_audio_features(features, is_longer=is_longer).pooler_output
    names = ["patch", *(f"stage{i}" for i in range(1, len(out.hidden_states)))]
    layers = {name: time_ordered(hidden) for name, hidden in zip(names, out.hidden_states)}
    return {**layers, "norm": out.last_hidden_state, "features": out.pooler_output, "projection": projection}


@pytest.mark.parametrize(
    "ident,padding",
    [(UNFUSED, p) for p in ("repeatpad", "repeat", "pad")] + [(FUSED, p) for p in ("repeatpad", "pad", "repeatpad+fusion", "repeat+fusion")],
)
def test_every_layer_matches_transformers(saved, ident: str, padding: str) -> None:
    reference, folder = saved[ident]
    model = load(ident, folder)
    audio = make_audio(2, int(3.3 * SR) + 7, seed=2)  # shorter than 10 s: filled by `padding`
    fe = feature_extractor(SMALL_CARDS[ident])
    features, is_longer = reference_features(fe, list(audio.numpy()), padding.removesuffix("+fusion"), padding.endswith("+fusion"))
    expected = reference_layers(reference, features, is_longer)
    assert list(expected) == [spec.name for spec in model.card.layers]
    with torch.inference_mode():
        ours = model.forward_layers(audio, None, padding=padding)
        assert rel_err(model.input_features(audio, padding), features) < TOLERANCE
    for (name, ref), got in zip(expected.items(), ours):
        assert rel_err(got, ref) < TOLERANCE, name
    # early stop: stage2 alone is the same stage2, computed without the later stages
    with torch.inference_mode():
        (stage2,) = model.forward_layers(audio, ["stage2"], padding=padding)
    assert rel_err(stage2, expected["stage2"]) < TOLERANCE


def test_projection_is_the_normalised_audio_embedding(saved) -> None:
    """ClapAudioModelWithProjection (loaded from the same ClapModel folder) gives the un-normalised
    audio_embeds of `projection`; `features` is its pooler output."""
    reference, folder = saved[UNFUSED]
    tower = ClapAudioModelWithProjection.from_pretrained(folder).eval()
    model = load(UNFUSED, folder)
    audio = make_audio(1, 10 * SR, seed=4)  # a whole window: no padding at all
    features, _ = reference_features(feature_extractor(SMALL_CARDS[UNFUSED]), list(audio.numpy()), "repeatpad", None)
    with torch.no_grad():
        embeds = tower(features).audio_embeds
    with torch.inference_mode():
        projection, pooled = model.forward_layers(audio, ["projection", "features"])
    assert rel_err(projection, F.normalize(embeds, dim=-1)) < TOLERANCE
    assert torch.allclose(projection.norm(dim=-1), torch.ones(1))
    with torch.no_grad():
        assert rel_err(pooled, tower.audio_model(features).pooler_output) < TOLERANCE


def test_fusion_padding_is_the_reference_for_one_clip(saved) -> None:
    """The feature extractor marks one random clip of a batch "longer" when none is: for a single
    clip, always that one. "+fusion" is that pipeline, unmodified; the default runs is_longer=False."""
    reference, folder = saved[FUSED]
    model = load(FUSED, folder)
    clip = make_audio(1, int(2.5 * SR), seed=5)
    inputs = feature_extractor(SMALL_CARDS[FUSED])(clip[0].numpy(), sampling_rate=SR, return_tensors="pt")
    assert inputs["is_longer"].tolist() == [[True]]
    with torch.no_grad():
        fused = reference.get_audio_features(inputs["input_features"].float(), is_longer=inputs["is_longer"]).pooler_output
        unfused = reference.get_audio_features(inputs["input_features"].float(), is_longer=torch.tensor([[False]])).pooler_output
    with torch.inference_mode():
        (with_fusion,) = model.forward_layers(clip, ["projection"], padding="repeatpad+fusion")
        (default,) = model.forward_layers(clip, ["projection"])
    assert model.card.paddings[0] == "repeatpad"
    assert rel_err(with_fusion, fused) < TOLERANCE and rel_err(default, unfused) < TOLERANCE
    assert rel_err(default, fused) > 1e-3  # the fusion branch does change the embedding


@pytest.mark.parametrize("ident", [UNFUSED, FUSED])
def test_log_mel_equals_the_feature_extractor(saved, ident: str) -> None:
    """Slaney filters for rand_trunc repos, HTK ones for the fused repo; every filling; a clip of
    one sample, one hop, an odd length and exactly 10 s."""
    model = load(ident, saved[ident][1])
    fe = feature_extractor(SMALL_CARDS[ident])
    for samples in (1, 480, 123457, 10 * SR):
        audio = make_audio(1, samples, seed=samples)
        for padding in ("repeatpad", "repeat", "pad"):
            features, _ = reference_features(fe, list(audio.numpy()), padding, None)
            with torch.inference_mode():
                assert rel_err(model.input_features(audio, padding), features) < TOLERANCE, (samples, padding)


def reference_embedding(reference, fe, window: np.ndarray, layer: str = "projection") -> torch.Tensor:
    features, is_longer = reference_features(fe, [window], "repeatpad", False)
    return reference_layers(reference, features, is_longer)[layer][0]


def test_scene_and_timestamp_embeddings(saved) -> None:
    """Defaults (projection, 1-s windows; hop 250 ms here to stay cheap): a clip <= 10 s is one
    forward; a longer one the mean of 10-s windows every 5 s, zero-padded by 5 s at both ends;
    timestamps are 1-s windows centred every hop, each filled to 10 s by repeatpad."""
    reference, folder = saved[UNFUSED]
    fe = feature_extractor(SMALL_CARDS[UNFUSED])
    model = load(UNFUSED, folder, hop_ms=250)
    short = make_audio(2, int(2.2 * SR), seed=6)
    scene = model.scene_embeddings(short, SR)
    assert rel_err(scene, torch.stack([reference_embedding(reference, fe, clip) for clip in short.numpy()])) < TOLERANCE
    ts, times = model.timestamp_embeddings(short, SR)
    hop, window = SR // 4, SR
    padded = np.pad(short.numpy(), ((0, 0), (window // 2, window // 2)))
    count = (padded.shape[1] - window) // hop + 1
    expected = torch.stack([torch.stack([reference_embedding(reference, fe, row[k * hop : k * hop + window]) for k in range(count)]) for row in padded])
    assert ts.shape == (2, count, SMALL_CARDS[UNFUSED]["projection_dim"]) == expected.shape
    assert rel_err(ts, expected) < TOLERANCE
    assert torch.allclose(times[0].double(), torch.arange(count, dtype=torch.float64) * 250)
    long = make_audio(1, int(12.5 * SR), seed=7)
    padded = np.pad(long[0].numpy(), (5 * SR, 5 * SR))
    windows = [padded[k * 5 * SR : k * 5 * SR + 10 * SR] for k in range((len(padded) - 10 * SR) // (5 * SR) + 1)]
    expected = torch.stack([reference_embedding(reference, fe, w) for w in windows]).mean(dim=0)
    assert len(windows) == 3 and rel_err(model.scene_embeddings(long, SR)[0], expected) < TOLERANCE


def test_fused_scene_and_stage_recipes(saved) -> None:
    """A fused model's scene (is_longer=False), and the `stages` preset (every hidden state, mean over
    frequency bands then time, concatenated) on the same clip."""
    reference, folder = saved[FUSED]
    fe = feature_extractor(SMALL_CARDS[FUSED])
    clip = make_audio(1, int(4.1 * SR), seed=8)
    features, is_longer = reference_features(fe, list(clip.numpy()), "repeatpad", False)
    layers = reference_layers(reference, features, is_longer)
    model = load(FUSED, folder)
    assert rel_err(model.scene_embeddings(clip, SR)[0], layers["projection"][0]) < TOLERANCE
    stages = load(FUSED, folder, preset="stages")
    assert stages.knobs.layers == stages.card.all_layers == ("patch", "stage1", "stage2", "stage3", "stage4")
    expected = torch.cat([layers[name][0].mean(dim=(1, 2)) for name in stages.knobs.layers])
    assert stages.scene_embedding_size == 8 + 8 + 16 + 32 + 64
    assert rel_err(stages.scene_embeddings(clip, SR)[0], expected) < TOLERANCE


# ---- conversion -----------------------------------------------------------------------------


def test_conversion_keeps_the_audio_tower_and_drops_the_text_side(saved) -> None:
    from safetensors.torch import load_file

    reference, folder = saved[FUSED]
    model = create_model(get_registry().get(FUSED))
    original = load_file(folder / "model.safetensors")
    state = checkpoint_filter_fn(original, model)
    assert set(state) == set(model.state_dict())
    audio = {k for k in original if k.startswith(("audio_model.", "audio_projection."))}
    dropped = set(original) - audio
    assert dropped and all(k.startswith(("text_model.", "text_projection.", "logit_scale_")) for k in dropped)
    assert all(torch.equal(state[f"model.{k}"], original[k]) for k in audio)
    # ClapAudioModelWithProjection's own save_pretrained layout (no text side at all) converts too
    tower = {k: v for k, v in original.items() if k in audio}
    assert all(torch.equal(checkpoint_filter_fn(tower, model)[f"model.{k}"], v) for k, v in tower.items())
    # buffers older files may lack: the relative position index (recomputed) and BatchNorm counters
    lean = {k: v for k, v in tower.items() if not k.endswith(("relative_position_index", "num_batches_tracked"))}
    filled = checkpoint_filter_fn(lean, model)
    key = "model.audio_model.audio_encoder.layers.0.blocks.0.attention.self.relative_position_index"
    assert torch.equal(filled[key], original[key.removeprefix("model.")])


def test_a_pytorch_model_bin_repo_loads(saved, tmp_path) -> None:
    """Older hub repos hold only pytorch_model.bin (the card's second source): a folder with it,
    config.json and preprocessor_config.json loads, converted, to the same layers."""
    reference, folder = saved[UNFUSED]
    for name in ("config.json", "preprocessor_config.json"):
        (tmp_path / name).write_text((folder / name).read_text())
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    audio = make_audio(1, SR, seed=13)
    with torch.inference_mode():
        (ours,) = load(UNFUSED, tmp_path).forward_layers(audio, ["projection"])
        (theirs,) = load(UNFUSED, folder).forward_layers(audio, ["projection"])
    assert torch.equal(ours, theirs)


def test_conversion_names_what_does_not_fit(saved) -> None:
    from safetensors.torch import load_file

    model = create_model(get_registry().get(UNFUSED))
    original = load_file(saved[UNFUSED][1] / "model.safetensors")
    with pytest.raises(WeightsError, match="surprise"):
        checkpoint_filter_fn({**original, "audio_model.surprise": torch.zeros(1)}, model)
    with pytest.raises(WeightsError, match="audio_projection.linear2.bias"):
        checkpoint_filter_fn({k: v for k, v in original.items() if k != "audio_projection.linear2.bias"}, model)
    bad = {**original, "audio_model.audio_encoder.norm.weight": torch.ones(768)}
    with pytest.raises(WeightsError, match="audio_encoder.norm.weight"):
        checkpoint_filter_fn(bad, model)
    fused = load_file(saved[FUSED][1] / "model.safetensors")  # the fusion modules have no place in an unfused model
    with pytest.raises(WeightsError, match="fusion_model|mel_conv2d"):
        checkpoint_filter_fn(fused, model)


# ---- the repo's config files ---------------------------------------------------------------------


def repo_files(folder: Path) -> dict[str, dict]:
    return {name: json.loads((folder / name).read_text()) for name in ("config.json", "preprocessor_config.json")}


@pytest.mark.parametrize(
    "file,key,value",
    [
        ("config.json", "hidden_size", 32),
        ("config.json", "depths", [2, 2, 6, 2]),
        ("config.json", "enable_fusion", True),
        ("preprocessor_config.json", "truncation", "fusion"),
        ("preprocessor_config.json", "frequency_min", 0),
        ("preprocessor_config.json", "hop_length", 320),
    ],
)
def test_check_repo_files_names_the_disagreeing_key(saved, file: str, key: str, value) -> None:
    card = get_registry().get(UNFUSED)
    files = repo_files(saved[UNFUSED][1])
    check_repo_files(card, files)  # the folder save_pretrained wrote agrees
    bad = json.loads(json.dumps(files))
    (bad[file]["audio_config"] if file == "config.json" else bad[file])[key] = value
    with pytest.raises(WeightsError, match=rf"{file} {key}="):
        check_repo_files(card, bad)


def test_check_repo_files_reads_defaults_and_projection(saved) -> None:
    card = get_registry().get(UNFUSED)
    files = repo_files(saved[UNFUSED][1])
    missing = json.loads(json.dumps(files))
    del missing["preprocessor_config.json"]["frequency_min"]  # the class default is 0 Hz, the repos' 50
    with pytest.raises(WeightsError, match="frequency_min=0"):
        check_repo_files(card, missing)
    wider = json.loads(json.dumps(files))
    wider["config.json"]["projection_dim"] = 512  # ClapConfig hands its projection_dim to the audio tower
    with pytest.raises(WeightsError, match="projection_dim=512"):
        check_repo_files(card, wider)
    with pytest.raises(WeightsError, match="config.json enable_fusion=False"):
        check_repo_files(get_registry().get(FUSED), files)
    fused = repo_files(saved[FUSED][1])
    check_repo_files(get_registry().get(FUSED), fused)
    fused["config.json"]["audio_config"]["fusion_type"] = "aff_2d"  # the same network as unset
    check_repo_files(get_registry().get(FUSED), fused)
    fused["config.json"]["audio_config"]["fusion_type"] = "channel_map"
    with pytest.raises(WeightsError, match="fusion_type='channel_map'"):
        check_repo_files(get_registry().get(FUSED), fused)


def test_a_disagreeing_repo_folder_is_refused_at_load(saved, tmp_path) -> None:
    reference, folder = saved[UNFUSED]
    save_hub_layout(reference, tmp_path, SMALL_CARDS[UNFUSED])
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**config, "padding": "pad"}))
    with pytest.raises(WeightsError, match="preprocessor_config.json padding='pad'"):
        load(UNFUSED, tmp_path)


# ---- registration, knobs, odd input ----------------------------------------------------------------


def test_plugin_registers_the_family_torch_free() -> None:
    assert_torch_free_import("embedzoo_clap", "embedzoo_clap.geometry")
    assert_registers("clap", ["clap"])


def test_geometry_of_the_real_cards() -> None:
    tiny, base = get_registry().get("clap-htsat-unfused"), get_registry().get("larger-clap-general")
    assert [(s.name, s.channels, s.bands) for s in tiny.layers] == [
        ("patch", 96, 16), ("stage1", 96, 16), ("stage2", 192, 8), ("stage3", 384, 4), ("stage4", 768, 2),
        ("norm", 768, 2), ("features", 768, 1), ("projection", 512, 1),
    ]  # fmt: skip
    assert [s.channels for s in base.layers][-4:] == [1024, 1024, 1024, 512]
    assert tiny.max_window == 480000 and tiny.sample_rate == SR and tiny.paddings == ("repeatpad", "repeat", "pad")
    assert get_registry().get("clap-htsat-fused").paddings[3:] == ("repeatpad+fusion", "repeat+fusion", "pad+fusion")


def test_frame_mode_and_bad_knobs_are_refused() -> None:
    card = get_registry().get("clap-htsat-unfused")
    for layer in ("features", "projection"):
        with pytest.raises(ConfigError, match="one vector per window"):
            resolve_knobs(card, {"layers": [layer], "mode": "frame"})
    for layer in ("patch", "stage3", "norm"):
        with pytest.raises(ConfigError, match="cannot run in frame mode"):
            resolve_knobs(card, {"layers": [layer], "mode": "frame"})
    with pytest.raises(ConfigError, match="no padding 'repeatpad\\+fusion'"):
        resolve_knobs(card, {"padding": "repeatpad+fusion"})
    with pytest.raises(ConfigError, match="stack needs layers of one width"):
        resolve_knobs(card, {"layers": "all", "stack": True})  # bands pooled: 96 ... 768
    assert resolve_knobs(card, {"layers": "all", "stack": True, "freq_pool": "flat"}).stack  # 1536 each, flat


def test_silence_and_tiny_clips_are_finite(saved) -> None:
    model = load(FUSED, saved[FUSED][1], hop_ms=500)
    for audio in (torch.zeros(1, 3 * SR), make_audio(1, 1, seed=9), make_audio(1, 700, seed=10)):
        result = model.embed(audio, SR)[0]
        assert torch.isfinite(result.scene).all() and torch.isfinite(result.timestamp).all()
    with torch.inference_mode():
        outputs = model.forward_layers(torch.zeros(2, 100), padding="pad+fusion")
    assert all(torch.isfinite(o).all() for o in outputs)
    with pytest.raises(ConfigError, match="at most 480000"):
        model.forward_layers(torch.zeros(1, 480001))


# ---- the one full-size check ----------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_unfused_tower_every_layer(tmp_path) -> None:
    """The one full-size check: clap-htsat-unfused's own card (HTSAT-tiny, 512-d projection) against
    a random ClapModel of that audio config (tiny text tower), one forward of a 4-s clip."""
    card = get_registry().get("clap-htsat-unfused")
    reference = reference_model({}, seed=11)  # ClapAudioConfig's defaults are this card's
    save_hub_layout(reference, tmp_path, {})
    model = embedzoo.load(card.id, weights=str(tmp_path), device="cpu")
    audio = make_audio(1, 4 * SR, seed=12)
    features, is_longer = reference_features(feature_extractor({}), list(audio.numpy()), "repeatpad", False)
    expected = reference_layers(reference, features, is_longer)
    with torch.inference_mode():
        ours = model.forward_layers(audio, None)
    assert [tuple(o.shape) for o in ours][-3:] == [(1, 768, 2, 32), (1, 768), (1, 512)]
    for (name, ref), got in zip(expected.items(), ours):
        assert rel_err(got, ref) < TOLERANCE, name
