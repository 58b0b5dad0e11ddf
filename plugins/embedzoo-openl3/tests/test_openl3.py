"""embedzoo-openl3 against torchopenl3 (the reference) with random weights.

- all twelve variants build, match their cards, and convert losslessly from torchopenl3's
  `.pth.tar` layout (every learnt tensor used once, STFT kernels checked then dropped, the mel
  basis checked and kept); bad checkpoints are refused naming the key;
- parity on one variant per input representation and per embedding size (mel128/512,
  mel256/6144, linear/512): the frontend spectrogram, every conv block and the embedding within
  1e-5 relative error in float32, from the reference's own forward;
- the core's window path: `timestamp_embeddings` equals `torchopenl3.get_audio_embedding`
  (center=True, hop 0.1 s and 0.25 s), timestamps included; scene embeddings; freq_pool on blocks;
- frame mode is refused for every layer (the core's refusal, from `frame_mode=False`); the plugin
  registers its family, torch-free;
- an hour of audio streams through a Session in bounded memory.
(Shapes, widths, bands and pooling against `geometry.py`: the core's tests/test_models.py.)
"""

from __future__ import annotations

import copy
import pickle
import warnings

import librosa
import numpy as np
import pytest
import torch
from openl3_testutil import (
    SR,
    TOLERANCE,
    VARIANTS,
    card_id,
    converted,
    get_card,
    make_audio,
    randomised_reference,
    reference_layers,
    rel_err,
    save_original,
)
from safetensors.torch import load_file, save_file

import torchopenl3
from embedzoo.errors import ConfigError, WeightsError
from embedzoo.extractor import as_sequence
from embedzoo.testing import assert_registers, assert_torch_free_import, stream_one_clip
from embedzoo_openl3.geometry import LAYERS
from embedzoo_openl3.model import OpenL3, checkpoint_filter_fn, create_model, htk_mel_filterbank, mel_norm_of, onednn_inference

PARITY = [("mel128", "env", 512), ("mel256", "music", 6144), ("linear", "music", 512)]


def reference_to_ours(key: str) -> str:
    """torchopenl3's key -> ours, written out independently of the plugin's mapping."""
    module, leaf = key.rsplit(".", 1)
    if module == "speclayer":
        return "frontend.mel"
    if module == "audio_embedding_layer":
        return f"blocks.3.conv2.{leaf}"
    kind, number = module.rsplit("_", 1)
    n = int(number)
    if kind == "conv2d":
        return f"blocks.{(n - 1) // 2}.conv{2 - n % 2}.{leaf}"
    if n == 1:
        return f"bn0.{leaf}"
    return f"blocks.{(n - 2) // 2}.bn{1 + n % 2}.{leaf}"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, tuple]:
    """(reference, original .pth.tar path, converted model) for the parity variants."""
    out = {}
    folder = tmp_path_factory.mktemp("openl3")
    for seed, variant in enumerate(PARITY):
        ident = card_id(*variant)
        ref = randomised_reference(*variant, seed=seed)
        path = save_original(ref, folder / f"torchopenl3_{variant[0]}_{variant[1]}_{variant[2]}.pth.tar")
        out[ident] = (ref, path, converted(get_card(ident), path))
    return out


# ---- the plugin ---------------------------------------------------------------------------------


def test_plugin_registers_the_family_and_all_cards():
    from embedzoo.plugins import family_module
    from embedzoo.registry import get_registry

    assert_registers("openl3", ["openl3"])
    assert_torch_free_import("embedzoo_openl3", "embedzoo_openl3.geometry")
    assert family_module("openl3").create_model is create_model
    ids = sorted(card.id for card in get_registry().find("openl3-*"))
    assert ids == sorted(card_id(*v) for v in VARIANTS)
    assert get_registry().get("openl3").id == "openl3-mel256-music-6144"


@pytest.mark.parametrize(("input_repr", "size"), [(r, s) for r in ("mel128", "mel256", "linear") for s in (512, 6144)])
def test_every_variant_builds_matches_its_card_and_converts(input_repr, size):
    """Both content types of a (representation, size) share the file layout: one reference each."""
    ref = randomised_reference(input_repr, "music", size, seed=len(input_repr) + size)
    source = ref.state_dict()
    frontend = {k for k in source if k.startswith("speclayer.")}
    kept = {"speclayer.mel_basis"} & frontend
    for content_type in ("music", "env"):
        card = get_card(card_id(input_repr, content_type, size))
        assert card.sources[0].url.endswith(f"/torchopenl3_{input_repr}_{content_type}_{size}.pth.tar")
        model = create_model(card)
        assert isinstance(model, OpenL3) and not model.training
        assert sum(p.numel() for p in model.parameters()) == card.params
        assert tuple(s.name for s in card.layers) == LAYERS
        assert card.layer("embedding").pooled and card.layer("embedding").width == size
        assert card.layer("spectrogram").width == {"mel128": 128, "mel256": 256, "linear": 257}[input_repr]
        state = checkpoint_filter_fn(source, model)
        model.load_state_dict(state, strict=True)
        assert len(state) == len(source) - len(frontend) + len(kept) == len(model.state_dict())
        for key, tensor in source.items():  # each learnt tensor arrives unchanged under its new name
            if key not in frontend or key in kept:
                assert torch.equal(state[reference_to_ours(key)], tensor), key


# ---- parity with torchopenl3 ----------------------------------------------------------------------


@pytest.mark.parametrize("variant", PARITY, ids=[card_id(*v) for v in PARITY])
def test_every_layer_matches_reference(pairs, variant):
    ident = card_id(*variant)
    ref, _, model = pairs[ident]
    rows = 2 if variant[0] == "mel128" else 1
    audio = make_audio(rows, SR, seed=len(ident))
    expected = reference_layers(ref, audio)
    assert expected["embedding"].std() > 0.1, "reference output degenerate: the test would be weak"
    with torch.no_grad():
        ours = dict(zip(LAYERS, model.forward_layers(audio)))
    frames = 197 if variant[0] == "linear" else 199
    assert ours["spectrogram"].shape == (rows, frames, get_card(ident).layer("spectrogram").width)
    assert float(ours["spectrogram"].amin()) == -80.0 and float(ours["spectrogram"].amax()) == 0.0
    for name in LAYERS:
        spec = get_card(ident).layer(name)
        assert as_sequence(ours[name], spec).shape[-1] == spec.width, name  # the natural shape fits the card
        assert rel_err(ours[name], expected[name]) < TOLERANCE, name


def test_cpu_paths_match_the_reference_and_follow_new_weights(pairs):
    """Float32 inference on the CPU runs the conv blocks on oneDNN tensors (BatchNorm folded into
    weights packed once: what the tests above check); with autograd on (and on CUDA, under
    autocast, or with oneDNN off) they run as strided tensors. Both match the reference on every
    layer, and the packed weights are remade when a weight or statistic changes after a forward."""
    ref, _, model = pairs["openl3-mel256-music-6144"]
    audio = make_audio(1, SR, seed=11)
    expected = reference_layers(ref, audio)
    probe = torch.zeros(1, 1, 4, 4)
    with torch.no_grad():
        assert onednn_inference(probe, model)
    assert not onednn_inference(probe, model)
    with torch.enable_grad():
        strided = model.forward_layers(audio)
    for name, output in zip(LAYERS, strided):
        assert output.requires_grad == (name != "spectrogram"), name
        assert rel_err(output.detach(), expected[name]) < TOLERANCE, name
    fresh = create_model(model.card)  # random weights
    with torch.no_grad():
        (before,) = fresh.forward_layers(audio, ["embedding"])
        fresh.load_state_dict(model.state_dict(), strict=True)
        (after,) = fresh.forward_layers(audio, ["embedding"])
        fresh.blocks[1].bn2.running_mean.add_(0.5)  # one statistic, in place
        (moved,) = fresh.forward_layers(audio, ["embedding"])
    assert rel_err(before, expected["embedding"]) > 1e-2
    assert rel_err(after, expected["embedding"]) < TOLERANCE
    assert rel_err(moved, after) > 1e-4
    for copied in (copy.deepcopy(fresh), pickle.loads(pickle.dumps(fresh))):  # the packed weights stay behind
        with torch.no_grad():
            assert torch.equal(copied.forward_layers(audio, ["embedding"])[0], moved)


def test_scene_embedding_of_one_second_is_the_reference_embedding(pairs):
    ref, _, model = pairs["openl3-mel128-env-512"]
    audio = make_audio(2, SR, seed=5)
    with torch.no_grad():
        expected = ref(audio[:, None])
    scene = model.scene_embeddings(audio, SR)
    assert scene.shape == (2, 512)
    assert rel_err(scene, expected) < TOLERANCE


@pytest.mark.parametrize(("ident", "hop_s", "samples"), [("openl3-mel128-env-512", 0.1, 33600), ("openl3-mel256-music-6144", 0.25, 36000)])
def test_timestamp_embeddings_match_get_audio_embedding(pairs, ident, hop_s, samples):
    """torchopenl3 frames the clip like HEAR (centre=True: window k centred on k*hop, zero padding)
    but stops once a window reaches the clip's end; embedzoo continues to the last centre inside
    the clip. The shared windows are equal, and so are their timestamps (s there, ms here)."""
    ref, _, model = pairs[ident]
    audio = make_audio(1, samples, seed=11)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        expected, expected_ts = torchopenl3.get_audio_embedding(audio, SR, model=ref, center=True, hop_size=hop_s, batch_size=32, verbose=False)
    hop = int(hop_s * SR)
    assert expected.shape[1] == 1 + -(-(samples - SR // 2) // hop)  # ceil: torchopenl3's count
    model.configure(hop_ms=hop_s * 1000)
    try:
        ours, ours_ts = model.timestamp_embeddings(audio, SR)
    finally:
        model.configure(hop_ms=100)
    n = expected.shape[1]
    assert ours.shape == (1, 1 + samples // hop, expected.shape[-1])
    assert torch.allclose(ours_ts[:, :n], expected_ts.float() * 1000, atol=1e-3)
    assert torch.equal(ours_ts[0], torch.arange(ours.shape[1]) * hop_s * 1000)
    assert rel_err(ours[:, :n], expected) < TOLERANCE


def test_freq_pool_and_readouts_on_blocks(pairs):
    """block4 pooled over its 16 mel bands by the core (freq_pool), then read out over frames."""
    _, _, model = pairs["openl3-mel128-env-512"]
    audio = make_audio(1, SR, seed=3)
    with torch.no_grad():
        (block4,) = model.forward_layers(audio, ["block4"])
    maps = block4.permute(0, 3, 1, 2)  # (1, 512, 16, steps) -> (1, steps, 512 channels, 16 bands)
    model.configure(layers=["block4"], freq_pool="mean+max", readout="mean")
    try:
        assert model.scene_embedding_size == 1024
        pooled = model.embed_segments(audio.numpy())
    finally:
        model.configure(layers=["embedding"], freq_pool="flat")
    expected = torch.cat([maps.mean(-1), maps.amax(-1)], dim=-1).mean(dim=1)
    assert rel_err(pooled, expected) < 1e-6


def test_layer_subsets_stop_early(pairs):
    _, _, model = pairs["openl3-mel128-env-512"]
    audio = make_audio(1, SR, seed=2)
    calls = []
    hook = model.blocks[2].register_forward_hook(lambda *_: calls.append("block3"))
    try:
        with torch.no_grad():
            block2, spectrogram = model.forward_layers(audio, ["block2", "spectrogram"])
        assert calls == []
    finally:
        hook.remove()
    assert block2.shape == (1, 128, 32, 49) and spectrogram.shape == (1, 199, 128)
    with pytest.raises(ConfigError, match="block5"):
        model.forward_layers(audio, ["block5"])
    with pytest.raises(ConfigError, match="48000"):
        model.forward_layers(torch.zeros(1, 40000), ["embedding"])


def test_frontend_stays_float32_under_autocast(pairs):
    """-80 "dB" of amplitude is a ratio of 1e-8: the spectrogram must not be computed in bfloat16."""
    _, _, model = pairs["openl3-mel256-music-6144"]
    audio = make_audio(1, SR, seed=6)
    with torch.no_grad():
        (exact,) = model.forward_layers(audio, ["spectrogram"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            (mixed,) = model.forward_layers(audio, ["spectrogram"])
    assert mixed.dtype == torch.float32 and torch.equal(mixed, exact)


def test_frame_mode_is_refused_with_the_reason(pairs):
    """The frontend normalises each 1 s window by its own maximum: no layer's frames are a function
    of their own receptive field, so every layer declares frame_mode=False and the core refuses."""
    _, _, model = pairs["openl3-mel128-env-512"]
    for name in LAYERS:
        reason = "one vector per window" if name == "embedding" else "depend on the whole window"
        with pytest.raises(ConfigError, match="frame mode") as caught:
            model.configure(mode="frame", layers=[name])
        assert reason in caught.value.message, (name, caught.value.message)
    assert model.knobs.mode == "window" and model.knobs.layers == ("embedding",)


# ---- conversion -----------------------------------------------------------------------------------


def test_conversion_round_trip_through_safetensors(pairs, tmp_path):
    _, path, model = pairs["openl3-mel128-env-512"]
    source = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint_filter_fn(source, model)
    assert torch.equal(state["frontend.mel"], source["speclayer.mel_basis"])
    assert torch.equal(state["blocks.3.conv2.weight"], source["audio_embedding_layer.weight"])
    assert torch.equal(state["blocks.0.bn1.num_batches_tracked"], source["batch_normalization_2.num_batches_tracked"])
    assert torch.equal(state["bn0.running_var"], source["batch_normalization_1.running_var"])
    out = tmp_path / "converted.safetensors"
    save_file(state, str(out))
    again = create_model(model.card)
    again.load_state_dict(load_file(str(out)), strict=True)
    assert all(torch.equal(v, state[k]) for k, v in checkpoint_filter_fn(load_file(str(out)), again).items())


def test_both_known_mel_normalisations_load_and_match_reference(pairs, tmp_path):
    """A file whose mel basis is Slaney-area normalised (librosa < 0.8's norm=1) converts too, and
    the model then computes the reference's spectrogram with that basis."""
    ref, _, model = pairs["openl3-mel128-env-512"]
    assert mel_norm_of(ref.speclayer.mel_basis, model.cfg) == "l1"
    area = htk_mel_filterbank(2048, 128, "area")
    assert mel_norm_of(area, model.cfg) == "area"
    state = dict(ref.state_dict(), **{"speclayer.mel_basis": area})
    other = create_model(model.card)
    other.load_state_dict(checkpoint_filter_fn(state, other), strict=True)
    audio = make_audio(1, SR, seed=4)
    saved = ref.speclayer.mel_basis
    ref.speclayer.mel_basis = area  # the reference frontend, with the area basis loaded as torchopenl3 would
    try:
        with torch.no_grad():
            expected = ref.speclayer(audio[:, None])[..., 0].transpose(1, 2)
            (ours,) = other.forward_layers(audio, ["spectrogram"])
    finally:
        ref.speclayer.mel_basis = saved
    assert rel_err(ours, expected) < TOLERANCE
    assert rel_err(ours, model.forward_layers(audio, ["spectrogram"])[0]) > 1e-3  # the basis matters


def test_conversion_errors_name_the_key(pairs):
    ref, _, model = pairs["openl3-mel128-env-512"]
    good = ref.state_dict()
    with pytest.raises(WeightsError, match=r"batch_normalization_5\.running_var"):
        checkpoint_filter_fn({k: v for k, v in good.items() if k != "batch_normalization_5.running_var"}, model)
    with pytest.raises(WeightsError, match=r"conv2d_3\.weight"):
        checkpoint_filter_fn(dict(good, **{"conv2d_3.weight": torch.zeros(128, 64, 3, 2)}), model)
    with pytest.raises(WeightsError, match="stray"):
        checkpoint_filter_fn(dict(good, stray=torch.zeros(1)), model)
    slaney = torch.tensor(librosa.filters.mel(sr=SR, n_fft=2048, n_mels=128, fmin=0, fmax=SR // 2, htk=False, norm=1))
    with pytest.raises(WeightsError, match=r"speclayer\.mel_basis"):
        checkpoint_filter_fn(dict(good, **{"speclayer.mel_basis": slaney}), model)
    kernels = good["speclayer.dft_real_kernels"].clone()
    kernels[5, 0, 100] += 1e-3
    with pytest.raises(WeightsError, match="dft_real_kernels"):
        checkpoint_filter_fn(dict(good, **{"speclayer.dft_real_kernels": kernels}), model)


def test_a_file_of_another_representation_is_refused(pairs):
    _, _, model = pairs["openl3-mel128-env-512"]
    for variant in [("mel256", "env", 512), ("linear", "env", 512)]:
        other = randomised_reference(*variant, seed=9).state_dict()
        with pytest.raises(WeightsError, match="speclayer"):
            checkpoint_filter_fn(other, model)


def test_pull_from_a_mirror_converts_once_and_loads(pairs, tmp_path):
    """The card's url source, served from a local mirror (release files at DIR/<file name>):
    fetched, its hash recorded (unpinned source), converted to safetensors, loaded offline."""
    import embedzoo

    ref, path, model = pairs["openl3-mel128-env-512"]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / path.name).write_bytes(path.read_bytes())
    loaded = embedzoo.load("openl3-mel128-env-512", device="cpu", mirror=mirror, cache_dir=tmp_path / "cache", offline=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert list((tmp_path / "cache").rglob("*.safetensors"))


def test_an_hour_streams_through_a_session_in_bounded_memory():
    """An hour at 48 kHz pushed in 10 s chunks (never held whole), through the frontend and block 1
    (the whole extraction path at a fraction of the network's cost), a window every minute; the
    scene's windows are the timestamps' (1 s every minute) and are computed once. Traced numpy
    memory stays a fraction of one decoded copy of the hour."""
    torch.manual_seed(0)
    model = create_model(get_card("openl3-mel128-music-512")).eval()
    model.configure(layers="block1", freq_pool="mean", hop_ms=60000, scene_hop_ms=60000)
    rng = np.random.default_rng(3)
    chunk = (0.3 * rng.standard_normal(480000)).astype(np.float32)  # the same 10 s, over and over
    hour_bytes = 3600 * 48000 * 4
    result, peak = stream_one_clip(model, (chunk for _ in range(360)))
    assert result.timestamp.shape == (61, 64) and result.scene.shape == (64,)  # 64 channels
    assert torch.isfinite(result.timestamp).all() and result.timestamp.std() > 0
    inside = result.timestamp[1:-1]  # windows centred on whole minutes see the same 10 s period
    assert float((inside - inside[:1]).abs().max()) <= 1e-5 * float(inside.abs().max())
    assert torch.allclose(result.scene, result.timestamp.mean(dim=0), rtol=1e-5, atol=1e-6)
    assert peak < hour_bytes / 8, f"peak {peak / 1e6:.0f} MB for {hour_bytes / 1e6:.0f} MB of audio"
