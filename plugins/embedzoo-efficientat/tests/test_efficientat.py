"""embedzoo-efficientat against the reference EfficientAT network (ssondo's copy of EfficientAT's
`models/mn`, same `features.*` keys) and front end (hear21passt's AugmentMelSTFT, EfficientAT's
arguments), with random weights saved in EfficientAT's release format and converted by the core.

- parity: the front end, every block, every squeeze-excitation bottleneck, the pooled features, the
  head's hidden layer and the logits within 1e-5 relative error in float32 (mn04 and mn05 at several
  lengths, mn40 full size); window-mode timestamp embeddings (the authors' HEAR recipe) and scene
  embeddings against the reference run window by window;
- conversion: lossless, errors name the key, a checkpoint of another width is refused;
- cards: every card's parameter count and layer order are the model's; the plugin registers its
  family, torch-free (shapes, widths, bands and frame counts against geometry.py: the core's
  tests/test_models.py, `embedzoo.testing.check_family`);
- frame mode: frames of a long clip equal the same network's frames over a window around them,
  and `freq_pool` pools the bands; bad input (too short, an hour long) through the Session.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from efficientat_testutil import (
    TOLERANCE,
    WIDTHS,
    assert_layers_match,
    converted_model,
    get_card,
    make_audio,
    our_layers,
    randomised_reference,
    reference_layers,
    reference_mel,
    rel_err,
    release_state_dict,
    save_release,
)
from safetensors.torch import load_file, save_file

from embedzoo.errors import ConfigError, WeightsError
from embedzoo.extractor import as_sequence
from embedzoo.testing import assert_registers, assert_torch_free_import, stream_one_clip
from embedzoo_efficientat.model import EfficientAT, checkpoint_filter_fn, create_model, release_key_map

SMALL = "efficientat-mn04-as"


@pytest.fixture(scope="module")
def mn04(tmp_path_factory):
    """(reference, release .pt path, converted model) for mn04."""
    ref = randomised_reference(0.4, seed=0)
    path = save_release(ref, tmp_path_factory.mktemp("efficientat") / "mn04_as_mAP_432.pt")
    return ref, path, converted_model(SMALL, path)


def fresh(mn04, **knobs) -> EfficientAT:
    """Another converted mn04 (same weights) with knobs of its own, for tests that configure."""
    return converted_model(SMALL, mn04[1]).configure(**knobs)


# ---- the plugin ---------------------------------------------------------------------------------


def test_registration_and_geometry_are_torch_free():
    assert_torch_free_import("embedzoo_efficientat", "embedzoo_efficientat.geometry")


def test_plugin_registers_the_family():
    from embedzoo.plugins import family_module

    assert_registers("efficientat", ["efficientat"])
    module = family_module("efficientat")
    assert module.create_model is create_model and module.checkpoint_filter_fn is checkpoint_filter_fn


@pytest.mark.parametrize("card_id", sorted(WIDTHS))
def test_card_is_the_architecture(card_id):
    """The card's layers are the model's, in order; the parameter count is EfficientAT's table
    (0.98 M for mn04 ... 68.43 M for mn40)."""
    card = get_card(card_id)
    assert card.config["width_mult"] == WIDTHS[card_id]
    model = create_model(card)
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == card.params
    assert tuple(s.name for s in card.layers) == model.layer_names
    assert card.sources[0].url.startswith("https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/mn")
    assert not card.pinned  # unpinned: the hash is recorded at first download


@pytest.mark.parametrize("card_id", ["efficientat-mn04-as", "efficientat-mn05-as", "efficientat-mn10-as"])
def test_release_keys_are_the_references(card_id):
    """Our map covers exactly the keys of an EfficientAT checkpoint of this width, no more, no less."""
    ref_keys = set(release_state_dict(randomised_reference(WIDTHS[card_id], seed=1)))
    assert set(release_key_map(create_model(get_card(card_id)))) == ref_keys


# ---- parity with the reference --------------------------------------------------------------------


@pytest.mark.parametrize("samples", [32000, 47123])
def test_every_layer_matches_reference(mn04, samples):
    ref, _, model = mn04
    audio = make_audio(2, samples, seed=samples)
    assert set(reference_layers(ref, audio)) == set(model.layer_names)
    ours = assert_layers_match(model, ref, audio)
    assert ours["mel"].shape == (2, 1 + (samples - 2) // 320, 128)
    assert ours["logits"].std() > 0.1, "logits nearly constant: the test would be weak"


def test_mn05_at_hear_window_length(tmp_path):
    """A 160 ms window (the authors' HEAR timestamp window): one frame left after the time strides."""
    ref = randomised_reference(0.5, seed=3)
    model = converted_model("efficientat-mn05-as", save_release(ref, tmp_path / "mn05_as_mAP_443.pt"))
    ours = assert_layers_match(model, ref, make_audio(3, 5120, seed=4))
    assert ours["block16"].shape == (3, 1, model.card.layer("block16").width)


def test_full_size_mn10_matches_reference(tmp_path):
    """The full-size check: mn10 (4.9 M parameters, 960-d features) on a whole 10 s clip, every layer."""
    ref = randomised_reference(1.0, seed=5)
    model = converted_model("efficientat-mn10-as", save_release(ref, tmp_path / "mn10_as_mAP_471.pt"))
    ours = assert_layers_match(model, ref, make_audio(1, 320000, seed=6))
    assert ours["features"].shape == (1, 1, 960) and ours["block16"].shape == (1, 32, 3840) and ours["se15"].shape == (1, 1, 240)


def test_hear_preset_timestamps_match_reference_windows(mn04):
    """Preset `hear` (the authors' MNHearWrapper recipe): 160 ms windows every 50 ms, reflect
    padding, each embedding = [logits, features] of its window."""
    ref = mn04[0]
    model = fresh(mn04, preset="hear")
    audio = make_audio(2, 16000 + 77, seed=8)
    embeddings, timestamps = model.timestamp_embeddings(audio, 32000)
    pad = 5120 // 2
    padded = torch.nn.functional.pad(audio[:, None], (pad, pad), mode="reflect")[:, 0]
    windows = padded.unfold(-1, 5120, 1600)  # (2, T, 5120), as the wrapper's F.unfold
    assert embeddings.shape == (2, windows.shape[1], 527 + model.embed_dim)
    assert torch.allclose(timestamps[0], torch.arange(windows.shape[1]) * 50.0)
    with torch.no_grad():
        logits, features = ref(reference_mel()(windows.reshape(-1, 5120))[:, None])
    expected = torch.cat([logits.reshape(-1, 527), features.reshape(-1, model.embed_dim)], dim=1).reshape(2, -1, 527 + model.embed_dim)
    assert rel_err(embeddings, expected) < TOLERANCE


def test_scene_embedding_is_reference_features(mn04):
    """A clip up to 10 s is one forward: its scene embedding is the reference's pooled features."""
    ref, _, model = mn04
    audio = make_audio(2, 96000, seed=9)
    with torch.no_grad():
        _, features = ref(reference_mel()(audio)[:, None])
    scene = model.scene_embeddings(audio, 32000)
    assert scene.shape == (2, model.embed_dim)
    assert rel_err(scene, features[:, 0]) < TOLERANCE


def test_hear_all_se_preset_is_the_authors_8423_d_recipe(mn04):
    """Preset `hear-all-se` (EfficientAT_HEAR's mn40_as_ext_e1_l_all_se, 8423-d at width 4): logits,
    pooled features and every squeeze-excitation bottleneck, concatenated in that order."""
    ref = mn04[0]
    model = fresh(mn04, preset="hear-all-se")
    audio = make_audio(2, 40000, seed=10)
    expected = reference_layers(ref, audio)
    names = ["logits", "features", "se4", "se5", "se6", "se11", "se12", "se13", "se14", "se15"]
    scene = model.scene_embeddings(audio, 32000)
    assert scene.shape == (2, 527 + 384 + sum(model.card.layer(n).width for n in names[2:]))
    assert rel_err(scene, torch.cat([expected[n][:, 0] for n in names], dim=1)) < TOLERANCE


def test_channels_last_setting_changes_speed_not_results(mn04):
    """`channels_last` (the default, faster on CPU) against plain NCHW convolutions, same weights."""
    ref, path, model = mn04
    card = dataclasses.replace(model.card, config={**model.card.config, "channels_last": False})
    plain = create_model(card)
    plain.load_state_dict(model.state_dict(), strict=True)
    audio = make_audio(2, 20000, seed=16)
    with torch.no_grad():
        nhwc, nchw = model.forward_intermediates(audio, ["block5"])["block5"], plain.forward_intermediates(audio, ["block5"])["block5"]
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and not nhwc.is_contiguous()
    assert nchw.is_contiguous() and not nchw.is_contiguous(memory_format=torch.channels_last)
    ours = assert_layers_match(plain, ref, audio, ["block5", "se13", "features", "logits"])
    fast = our_layers(model, audio, list(ours))
    for name in ours:
        assert rel_err(fast[name], ours[name]) < TOLERANCE, name


def test_layer_subsets_stop_early(mn04):
    _, _, model = mn04
    audio = make_audio(1, 32000, seed=2)
    calls = []
    hook = model.features[8].register_forward_hook(lambda *_: calls.append("block8"))
    try:
        with torch.no_grad():
            full = dict(zip(model.layer_names, model.forward_layers(audio)))
            calls.clear()
            block5, se6, mel = model.forward_layers(audio, ["block5", "se6", "mel"])
            assert calls == []
            (logits,) = model.forward_layers(audio, ["logits"])
    finally:
        hook.remove()
    assert torch.equal(block5, full["block5"]) and torch.equal(se6, full["se6"]) and torch.equal(mel, full["mel"])
    assert torch.equal(logits, full["logits"])
    with pytest.raises(ConfigError, match="block17"):
        model.forward_layers(audio, ["block17"])


# ---- conversion -------------------------------------------------------------------------------------


def test_conversion_is_lossless(mn04, tmp_path):
    ref, path, model = mn04
    source = torch.load(path, map_location="cpu", weights_only=True)
    converted = checkpoint_filter_fn(source, model)
    mapping = release_key_map(model)
    assert set(mapping) == set(source) and len(converted) == len(source) == len(model.state_dict())
    for key, tensor in source.items():
        assert torch.equal(converted[mapping[key]].reshape(tensor.shape), tensor), key
    out = tmp_path / "converted.safetensors"
    save_file(converted, str(out))
    again = create_model(model.card)
    again.load_state_dict(load_file(str(out)), strict=True)
    assert all(torch.equal(v, converted[k]) for k, v in checkpoint_filter_fn(converted, again).items())


def test_conversion_errors_name_the_key(mn04):
    ref, _, model = mn04
    good = release_state_dict(ref)
    key = "features.12.block.2.conc_se_layers.0.fc1.weight"
    assert key in good
    with pytest.raises(WeightsError, match=r"features\.12\.block\.2\.conc_se_layers\.0\.fc1\.weight"):
        checkpoint_filter_fn({k: v for k, v in good.items() if k != key}, model)
    with pytest.raises(WeightsError, match=r"classifier\.5\.weight"):
        checkpoint_filter_fn(dict(good, **{"classifier.5.weight": torch.zeros(527, 3)}), model)
    with pytest.raises(WeightsError, match="stray"):
        checkpoint_filter_fn(dict(good, stray=torch.zeros(1)), model)
    with pytest.raises(WeightsError, match=r"classifier\.0\.weight"):  # ssondo's own head keys are not EfficientAT's
        checkpoint_filter_fn(randomised_reference(0.4, seed=0).state_dict(), model)
    # files without BatchNorm's training counters still load (the counters are unused in eval)
    lean = {k: v for k, v in good.items() if not k.endswith("num_batches_tracked")}
    assert set(checkpoint_filter_fn(lean, model)) == set(model.state_dict())


def test_checkpoint_of_another_width_is_refused(mn04):
    _, _, model = mn04
    other = release_state_dict(randomised_reference(0.5, seed=2))
    with pytest.raises(WeightsError, match="width"):
        checkpoint_filter_fn(other, model)


# ---- frame mode, freq_pool, bad input -------------------------------------------------------------


def test_frame_mode_frames_are_the_networks_frames(mn04):
    """Frame mode cuts a clip into chunks whose frames tile it; every chunk frame is the frame the
    network computes for that time from the same chunk of audio (receptive field inside it).
    Blocks 0-3 (before any squeeze-excitation) make it exact against one forward of a window."""
    card = mn04[2].card
    clip = make_audio(1, 3 * 32000 + 555, seed=11)[0]
    hop, field = card.frame_geometry(card.layer("block3"))
    model = fresh(mn04, mode="frame", layers=["block3"], hop_ms=hop / 32)
    frames, timestamps = model.timestamp_embeddings(clip[None], 32000)
    spec = card.layer("block3")
    assert frames.shape == (1, 1 + clip.numel() // hop, spec.width)
    assert torch.allclose(timestamps[0], torch.arange(frames.shape[1]) * hop / 32)
    # frame j sees samples [j hop - field/2, j hop + field/2) of the zero-padded clip: the network's
    # output frame field/(2 hop) of exactly that window
    padded = torch.nn.functional.pad(clip, (field // 2, field))
    for j in (0, 5, frames.shape[1] - 1):
        window = padded[j * hop : j * hop + field][None]
        with torch.no_grad():
            (every,) = mn04[2].forward_layers(window, ["block3"])  # every output frame the network computes
        every = as_sequence(every, spec)
        valid = model.embed_segments(window, frames=True)  # frame mode: the core keeps the one whose field fits
        assert valid.shape[1] == 1 and torch.equal(valid[0, 0], every[0, field // (2 * hop)])
        assert rel_err(frames[0, j], every[0, field // (2 * hop)]) < TOLERANCE, j


def test_frames_preset_mixes_frame_rates(mn04):
    """Preset `frames` (block12, 160 ms frames, mean+max over its 8 bands) and a mix with the mel
    frames (10 ms): each layer is read at its nearest frame to every timestamp."""
    clip = make_audio(1, 2 * 32000 + 100, seed=15)
    model = fresh(mn04, preset="frames")
    frames, timestamps = model.timestamp_embeddings(clip, 32000)
    assert frames.shape == (1, 1 + clip.shape[1] // 5120, 2 * 48) and torch.allclose(timestamps[0, 1], torch.tensor(160.0))
    mixed = fresh(mn04, preset="frames", layers=["mel", "block12"], hop_ms=40)
    both, _ = mixed.timestamp_embeddings(clip, 32000)
    assert both.shape == (1, 1 + clip.shape[1] // 1280, 128 + 2 * 48)
    assert torch.equal(both[0, ::4, 128:], frames[0, : both[0, ::4].shape[0]])  # 40 ms steps, every 4th on a block12 frame
    # the mel frame nearest each 40 ms timestamp is every 4th; at the clip's two ends frame mode pads
    # with zeros (pad_mode constant) where the reference's STFT reflects
    mel = reference_mel()(clip)[0].T[::4][: both.shape[1]]
    assert rel_err(both[0, 1:-1, :128], mel[1:-1]) < TOLERANCE


def test_frame_mode_refuses_pooled_layers_and_freq_pool_pools_bands(mn04):
    with pytest.raises(ConfigError, match="frame"):
        fresh(mn04, mode="frame", layers=["features"])
    model = fresh(mn04, layers=["block11"], freq_pool="mean+max", readout="mean")
    audio = make_audio(1, 32000, seed=12)
    pooled = model.scene_embeddings(audio, 32000)
    with torch.no_grad():
        (block,) = model.forward_layers(audio, ["block11"])  # (1, C, F, T)
    spec = model.card.layer("block11")
    maps = block.permute(0, 3, 1, 2)  # (1, T, C, F)
    assert maps.shape[2:] == (spec.channels, spec.bands)
    expected = torch.cat([maps.mean(dim=-1), maps.amax(dim=-1)], dim=-1).mean(dim=1)
    assert pooled.shape == (1, 2 * spec.channels) and spec.bands == 8
    assert rel_err(pooled, expected) < TOLERANCE


def test_short_clips_and_short_inputs(mn04):
    _, _, model = mn04
    tiny = make_audio(1, 200, seed=13)  # shorter than one STFT frame: zero-padded to min_window
    scene = model.scene_embeddings(tiny, 32000)
    emb, ts = model.timestamp_embeddings(tiny, 32000)
    assert scene.shape == (1, model.embed_dim) and torch.isfinite(scene).all()
    assert emb.shape == (1, 1, model.embed_dim) and ts.tolist() == [[0.0]]
    with pytest.raises(ConfigError, match="samples"):
        model.forward_layers(tiny, ["features"])  # the network itself needs 514 samples for its STFT
    with pytest.raises(ConfigError, match="samples"):
        model.forward_layers(tiny[0], ["features"])


def test_an_hour_streams_through_a_session_in_bounded_memory(mn04):
    """An hour of audio pushed in 10 s chunks (never held whole): timestamps every minute from 160 ms
    windows, scene from 160 ms windows every minute; numpy memory stays a fraction of the hour."""
    model = fresh(mn04, window_ms=160, hop_ms=60000, scene_window_ms=160, scene_hop_ms=60000)
    chunk = make_audio(1, 320000, seed=14)[0].numpy()
    hour_bytes = 3600 * 32000 * 4
    result, peak = stream_one_clip(model, (chunk for _ in range(360)))
    assert result.timestamp.shape == (61, model.embed_dim) and result.scene.shape == (model.embed_dim,)
    assert np.isfinite(result.timestamp.numpy()).all()
    # the same 10 s of audio over and over: the windows at 1, 2, ... 59 minutes (inside the clip) agree
    assert rel_err(result.timestamp[1:-1], result.timestamp[1:2].expand(59, -1)) < TOLERANCE
    assert peak < hour_bytes / 8, f"peak {peak / 1e6:.0f} MB for {hour_bytes / 1e6:.0f} MB of audio"

