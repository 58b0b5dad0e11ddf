"""embedzoo-panns against panns_hear.models.Cnn14 and Cnn14_DecisionLevelMax (the references) with
random weights.

- parity: the reference's {'model': state_dict} checkpoint, converted through the core, gives the
  frontend (log-mel), every conv block, the embedding and the clipwise output within 1e-5 relative
  error in float32 (forward hooks on the reference), for short clips and a 10 s clip; the
  decision-level head's segment embeddings, segment and clip probabilities likewise;
- frame mode: a long clip cut into chunks gives the reference's own frames over the whole clip
  (every block, the `sed` presets: panns_hear's sed_embedding and the framewise output), wherever
  a frame's field lies inside the clip;
- conversion: lossless (every learnt tensor used once, frontend tensors checked then dropped);
  bad checkpoints are refused naming the key;
- the plugin registers its family and its top-level module and geometry are torch-free.

Shapes, widths, bands and frame counts against geometry.py: the core's tests/test_models.py
(`embedzoo.testing.check_family`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import pickle

import pytest
import torch
from panns_testutil import cnn14_32k, cnn14_dlm, converted_model, get_card, randomised_reference  # noqa: F401 (fixture)
from safetensors.torch import load_file, save_file

from embedzoo import hub
from embedzoo.errors import CardError, ConfigError, WeightsError
from embedzoo.extractor import as_sequence
from embedzoo.testing import assert_registers, assert_torch_free_import, rel_err
from embedzoo_panns.geometry import spans
from embedzoo_panns.model import Cnn14, checkpoint_filter_fn, create_model, onednn_inference

TOLERANCE = 1e-5
BLOCKS = tuple(f"block{i}" for i in range(1, 7))
LAYERS = ("logmel",) + BLOCKS + ("embedding", "logits")
DLM_LAYERS = ("logmel",) + BLOCKS + ("segment_embedding", "segment_logits", "logits")


def make_audio(rows: int, samples: int, sr: int, seed: int) -> torch.Tensor:
    """Noise plus a chirp; row 0 has a stretch of exact silence (log-mel floor at -100 dB)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / sr
    audio = 0.1 * torch.randn(rows, samples, generator=g) + 0.3 * torch.sin(2 * math.pi * (200 + 800 * t) * t)
    audio[0, samples // 4 : samples // 4 + sr // 5] = 0.0
    return audio


def reference_layers(ref, audio: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every layer of the reference, taken with forward hooks, in our (batch, frames, width) layout;
    plus its `sed_embedding` (Cnn14) or `framewise_output` (Cnn14_DecisionLevelMax)."""
    taken: dict[str, torch.Tensor] = {}
    hooks = [ref.logmel_extractor.register_forward_hook(lambda m, i, o: taken.__setitem__("logmel", o[:, 0]))]
    for k in range(1, 7):
        def hook(m, i, o, name=f"block{k}"):
            taken[name] = o.permute(0, 2, 1, 3).reshape(o.shape[0], o.shape[2], -1)
        hooks.append(getattr(ref, f"conv_block{k}").register_forward_hook(hook))
    # fc1's output is rectified in place right after: keep a copy
    hooks.append(ref.fc1.register_forward_hook(lambda m, i, o: taken.__setitem__("fc1", o.clone())))
    try:
        with torch.no_grad():
            out = ref(audio)
    finally:
        for h in hooks:
            h.remove()
    taken["logits"] = out["clipwise_output"][:, None]
    if "embedding" in out:
        taken["embedding"] = out["embedding"][:, None]
        taken["sed"] = out["sed_embedding"]
    else:  # decision level: fc1 and the sigmoid head run on every block-6 frame
        taken["segment_embedding"] = torch.relu(taken["fc1"])
        with torch.no_grad():
            taken["segment_logits"] = torch.sigmoid(ref.fc_audioset(taken["segment_embedding"]))
        taken["framewise"] = out["framewise_output"]
    return taken


def our_layers(model: Cnn14, audio: torch.Tensor, names=None) -> dict[str, torch.Tensor]:
    """Our layers (all when None) as (batch, frames, width) sequences: conv maps flattened
    channel-major by the core's `as_sequence`, pooled vectors as one frame (the reference's layout)."""
    names = list(model.layer_names) if names is None else list(names)
    with torch.no_grad():
        outputs = model.forward_layers(audio, names)
    return {name: as_sequence(out, model.card.layer(name), model.card.id) for name, out in zip(names, outputs)}


@contextlib.contextmanager
def knobs(model, **values):
    """The model configured with `values` for the block, then as it was."""
    saved = dict(getattr(model, "_overrides", {})), model.knobs
    model.configure(**values)
    try:
        yield model
    finally:
        model._overrides, model.knobs = saved


def inside(model, name: str, index: int, samples: int) -> bool:
    """Whether output frame `index` of a layer is computed from the clip's own samples only."""
    span, hop, half = spans(model.cfg.head)[name], model.cfg.hop, model.cfg.n_fft // 2
    return (span.first + span.jump * index) * hop >= half and (span.last + span.jump * index) * hop + half <= samples


@pytest.fixture(scope="module")
def model_32k(cnn14_32k) -> Cnn14:
    return converted_model("panns-cnn14", cnn14_32k[1])


# ---- the plugin ---------------------------------------------------------------------------------


def test_registration_and_geometry_are_torch_free():
    assert_torch_free_import("embedzoo_panns", "embedzoo_panns.geometry")


def test_plugin_registers_the_family():
    from embedzoo.plugins import family_module

    assert_registers("panns", ["panns"])
    module = family_module("panns")
    assert module.create_model is create_model and module.checkpoint_filter_fn is checkpoint_filter_fn


@pytest.mark.parametrize("card_id", ["panns-cnn14", "panns-cnn14-16k", "panns-cnn14-dlm"])
def test_architecture_matches_card(card_id):
    """The card's layers are the network's, in forward order; the parameter count is the card's."""
    card = get_card(card_id)
    model = create_model(card)
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == card.params
    assert model.layer_names == (DLM_LAYERS if card_id.endswith("dlm") else LAYERS) == tuple(s.name for s in card.layers)
    assert model.state_dict().keys().isdisjoint({"frontend.dft_real", "frontend.dft_imag", "frontend.mel"})


# ---- parity with panns_hear ---------------------------------------------------------------------


@pytest.mark.parametrize("samples", [32000, 45123])
def test_every_layer_matches_reference_32k(cnn14_32k, model_32k, samples):
    ref, _ = cnn14_32k
    audio = make_audio(2, samples, 32000, seed=samples)
    expected = reference_layers(ref, audio)
    assert expected["logits"].std() > 1e-2, "reference output saturated: the test would be weak"
    ours = our_layers(model_32k, audio)
    assert ours["logmel"].shape == (2, 1 + samples // 320, 64)
    for name in LAYERS:
        assert ours[name].abs().max() > 0, name
        assert rel_err(ours[name], expected[name]) < TOLERANCE, name


def test_ten_seconds_matches_reference(cnn14_32k, model_32k):
    ref, _ = cnn14_32k
    audio = make_audio(1, 320000, 32000, seed=7)
    expected = reference_layers(ref, audio)
    ours = our_layers(model_32k, audio, ["logmel", "block6", "embedding", "logits"])
    assert ours["block6"].shape == (1, 31, 4096)
    for name in ("logmel", "block6", "embedding", "logits"):
        assert rel_err(ours[name], expected[name]) < TOLERANCE, name


def test_every_layer_matches_reference_16k(tmp_path):
    ref = randomised_reference("panns-cnn14-16k", seed=3)
    path = tmp_path / "Cnn14_16k_random.pth"
    torch.save({"model": ref.state_dict()}, path)
    card = get_card("panns-cnn14-16k")
    model = create_model(card)
    model.load_state_dict(hub.convert_checkpoint(card, path), strict=True)
    audio = make_audio(2, 20000, 16000, seed=4)
    expected = reference_layers(ref, audio)
    ours = our_layers(model, audio)
    assert ours["logmel"].shape == (2, 1 + 20000 // 160, 64)
    for name in LAYERS:
        assert rel_err(ours[name], expected[name]) < TOLERANCE, name


def test_scene_embedding_equals_reference_embedding(cnn14_32k, model_32k):
    """Window-mode scene embedding of a 3 s clip (forwarded whole) is the reference's embedding."""
    ref, _ = cnn14_32k
    audio = make_audio(2, 96000, 32000, seed=9)
    with torch.no_grad():
        expected = ref(audio)["embedding"]
    scene = model_32k.scene_embeddings(audio, 32000)
    assert scene.shape == (2, 2048)
    assert rel_err(scene, expected) < TOLERANCE


def test_layer_subsets_and_stop_early(model_32k):
    audio = make_audio(1, 32000, 32000, seed=2)
    calls = []
    hook = model_32k.blocks[3].register_forward_hook(lambda *_: calls.append("block4"))
    try:
        with torch.no_grad():
            full = dict(zip(LAYERS, model_32k.forward_layers(audio)))
            calls.clear()
            (block3,) = model_32k.forward_layers(audio, ["block3"])
            assert calls == []
            logits, logmel = model_32k.forward_layers(audio, ["logits", "logmel"])
    finally:
        hook.remove()
    assert torch.equal(block3, full["block3"]) and torch.equal(logits, full["logits"]) and torch.equal(logmel, full["logmel"])
    with pytest.raises(ConfigError, match="block7"):
        model_32k.forward_layers(audio, ["block7"])
    with pytest.raises(ConfigError, match="samples"):
        model_32k.forward_layers(audio[:, :5000], ["embedding"])


# ---- conversion -----------------------------------------------------------------------------------


def reference_to_ours(key: str) -> str:
    if key.startswith("conv_block"):
        return f"blocks.{int(key[10]) - 1}.{key.split('.', 1)[1]}"
    return key.replace("fc_audioset.", "head.")


def test_conversion_is_lossless(cnn14_32k, model_32k, tmp_path):
    ref, path = cnn14_32k
    source = torch.load(path, map_location="cpu", weights_only=True)["model"]
    converted = checkpoint_filter_fn({"model": source}, model_32k)
    frontend = {k for k in source if "extractor" in k}
    assert frontend == {"spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight", "logmel_extractor.melW"}
    assert len(converted) == len(source) - 3 == len(model_32k.state_dict())
    for key, tensor in source.items():
        if key in frontend:
            continue
        assert torch.equal(converted[reference_to_ours(key)], tensor), key
    out = tmp_path / "converted.safetensors"
    save_file(converted, str(out))
    again = create_model(model_32k.card)
    again.load_state_dict(load_file(str(out)), strict=True)
    assert all(torch.equal(v, converted[k]) for k, v in checkpoint_filter_fn(converted, again).items())


def test_conversion_errors_name_the_key(cnn14_32k, model_32k):
    ref, _ = cnn14_32k
    good = ref.state_dict()
    with pytest.raises(WeightsError, match=r"conv_block3\.bn2\.running_var"):
        checkpoint_filter_fn({k: v for k, v in good.items() if k != "conv_block3.bn2.running_var"}, model_32k)
    with pytest.raises(WeightsError, match=r"fc1\.weight"):
        checkpoint_filter_fn(dict(good, **{"fc1.weight": torch.zeros(2048, 2047)}), model_32k)
    with pytest.raises(WeightsError, match="stray"):
        checkpoint_filter_fn(dict(good, stray=torch.zeros(1)), model_32k)
    bad_mel = good["logmel_extractor.melW"].clone()
    bad_mel[3, 0] += 1e-3
    with pytest.raises(WeightsError, match="melW"):
        checkpoint_filter_fn(dict(good, **{"logmel_extractor.melW": bad_mel}), model_32k)


def test_16k_checkpoint_does_not_fit_32k(model_32k):
    other = randomised_reference("panns-cnn14-16k", seed=5).state_dict()
    with pytest.raises(WeightsError, match="frontend"):
        checkpoint_filter_fn({"model": other}, model_32k)


# ---- frame mode ---------------------------------------------------------------------------------


def test_frame_mode_refuses_the_pooled_layers(model_32k):
    with pytest.raises(ConfigError, match="frame mode"):
        model_32k.configure(mode="frame")  # the default layer, `embedding`, is one vector per window
    with pytest.raises(ConfigError, match="frame mode"):
        model_32k.configure(mode="frame", layers="block6,logits")


def test_frame_mode_gives_the_references_frames_of_the_whole_clip(cnn14_32k, model_32k):
    """A 6.5 s clip in 4 s chunks: every layer's frames, read at the layer's own hop, and the `sed`
    preset (block 6 averaged over frequency, every 10 ms) are the reference's frames over the whole
    clip -- its `sed_embedding` for the preset -- wherever the field lies inside the clip."""
    ref, _ = cnn14_32k
    samples = 208000
    audio = make_audio(1, samples, 32000, seed=40)
    expected = reference_layers(ref, audio)
    for name in ("logmel",) + BLOCKS:
        hop, field, offset = model_32k.card.frame_grid(model_32k.card.layer(name))
        with knobs(model_32k, mode="frame", layers=name, hop_ms=hop / 32, batch_seconds=4):
            assert model_32k.chunk_samples(field) < samples
            frames, times = model_32k.timestamp_embeddings(audio, 32000)
        assert frames.shape == (1, 1 + samples // hop, model_32k.card.layer(name).width)
        assert torch.allclose(times[0], torch.arange(frames.shape[1]) * hop / 32)
        # timestamp k (sample k hop) is nearest to frame k, centred on offset + k hop (offset < hop / 2)
        compared = [k for k in range(min(frames.shape[1], expected[name].shape[1])) if inside(model_32k, name, k, samples)]
        assert len(compared) >= 10, name
        assert rel_err(frames[0, compared], expected[name][0, compared]) < TOLERANCE, name
    with knobs(model_32k, preset="sed", batch_seconds=4):
        sed, times = model_32k.timestamp_embeddings(audio, 32000)
        scene = model_32k.scene_embeddings(audio, 32000)
    assert sed.shape == expected["sed"].shape == (1, 1 + samples // 320, 2048)
    compared = [k for k in range(sed.shape[1]) if inside(model_32k, "block6", k // 32, samples)]
    assert len(compared) >= 300
    assert rel_err(sed[0, compared], expected["sed"][0, compared]) < TOLERANCE
    block6 = expected["block6"][0].unflatten(-1, (2048, 2)).mean(dim=-1)
    assert rel_err(sed[0, compared], block6[[k // 32 for k in compared]]) < TOLERANCE
    assert scene.shape == (1, 2048) and torch.isfinite(scene).all()


# ---- the decision-level head (Cnn14_DecisionLevelMax) ----------------------------------------------


@pytest.fixture(scope="module")
def model_dlm(cnn14_dlm) -> Cnn14:
    return converted_model("panns-cnn14-dlm", cnn14_dlm[1])


@pytest.mark.parametrize("samples", [32000, 70500])
def test_decision_level_head_matches_reference(cnn14_dlm, model_dlm, samples):
    ref, _ = cnn14_dlm
    audio = make_audio(2, samples, 32000, seed=samples + 1)
    expected = reference_layers(ref, audio)
    assert expected["logits"].std() > 1e-2, "reference output saturated: the test would be weak"
    ours = our_layers(model_dlm, audio)
    assert ours["segment_logits"].shape == (2, expected["block6"].shape[1], 527)
    for name in DLM_LAYERS:
        assert ours[name].abs().max() > 0, name
        assert rel_err(ours[name], expected[name]) < TOLERANCE, name
    # window mode: the clip's probabilities are the max readout of its segments'
    with knobs(model_dlm, layers="segment_logits", readout="max", window_ms=samples / 32):
        assert rel_err(model_dlm.embed_segments(audio), expected["logits"][:, 0]) < TOLERANCE


def test_decision_level_sed_preset_is_the_references_framewise_output(cnn14_dlm, model_dlm):
    """Preset `sed`: segment probabilities every 10 ms in frame mode = the reference's
    `framewise_output` (segments repeated 32 times) where the segment's field is inside the clip."""
    ref, _ = cnn14_dlm
    samples = 230000
    audio = make_audio(1, samples, 32000, seed=41)
    expected = reference_layers(ref, audio)
    with knobs(model_dlm, preset="sed", batch_seconds=5):
        assert model_dlm.chunk_samples(model_dlm.card.frame_grid(model_dlm.card.layer("segment_logits"))[1]) < samples
        framewise, _ = model_dlm.timestamp_embeddings(audio, 32000)
    assert framewise.shape == expected["framewise"].shape == (1, 1 + samples // 320, 527)
    compared = [k for k in range(framewise.shape[1]) if inside(model_dlm, "segment_logits", k // 32, samples)]
    assert len(compared) >= 250
    assert rel_err(framewise[0, compared], expected["framewise"][0, compared]) < TOLERANCE


def test_freq_pool_reads_block_maps_over_frequency(cnn14_32k, model_32k):
    """`freq_pool` on a block = the reference's conv map pooled over its frequency bins."""
    ref, _ = cnn14_32k
    audio = make_audio(2, 32000, 32000, seed=3)
    maps = {}
    hook = ref.conv_block3.register_forward_hook(lambda m, i, o: maps.__setitem__("b3", o))  # (B, C, T, F)
    with torch.no_grad():
        ref(audio)
    hook.remove()
    b3 = maps["b3"]
    freq = torch.cat([b3.mean(dim=-1), b3.amax(dim=-1)], dim=1)  # (B, 2C, T)
    model_32k.configure(layers="block3", freq_pool="mean+max", readout="mean+max", window_ms=1000)
    try:
        assert model_32k.scene_embedding_size == 4 * 256
        ours = model_32k.embed_segments(audio)
    finally:
        model_32k.configure(layers="embedding", freq_pool="flat", readout="mean")
    assert rel_err(ours, torch.cat([freq.mean(dim=-1), freq.amax(dim=-1)], dim=1)) < TOLERANCE


def test_timestamp_embeddings_window_mode(cnn14_32k, model_32k):
    """Window mode: each timestamp's embedding is the reference's embedding of the 1 s window
    centred on it (zero padding at the clip's ends)."""
    ref, _ = cnn14_32k
    audio = make_audio(1, 48000, 32000, seed=12)
    model_32k.configure(hop_ms=500, window_ms=1000)
    try:
        embeddings, timestamps = model_32k.timestamp_embeddings(audio, 32000)
    finally:
        model_32k.configure(hop_ms=250)
    assert torch.equal(timestamps[0], torch.tensor([0.0, 500.0, 1000.0, 1500.0]))
    padded = torch.nn.functional.pad(audio, (16000, 16000))
    windows = torch.stack([padded[0, c : c + 32000] for c in range(0, 48001, 16000)])
    with torch.no_grad():
        expected = ref(windows)["embedding"]
    assert embeddings.shape == (1, 4, 2048)
    assert rel_err(embeddings[0], expected) < TOLERANCE


def test_cpu_paths_and_layouts_match_the_reference(cnn14_32k, model_32k):
    """Float32 inference on the CPU runs the conv blocks on oneDNN tensors (BatchNorm folded into
    weights packed once, `ConvBlock.forward_onednn`: what the parity tests above check); with
    autograd on (and on CUDA, under autocast, or with oneDNN off) they run as strided tensors in the
    `config.channels_last` layout. Both layouts of that path match the reference on every layer."""
    ref, _ = cnn14_32k
    probe = torch.zeros(1, 1, 4, 4)
    with torch.no_grad():
        assert onednn_inference(probe, model_32k)
    assert not onednn_inference(probe, model_32k)  # autograd on: the strided path
    audio = make_audio(2, 32000, 32000, seed=21)
    expected = reference_layers(ref, audio)
    for channels_last in (False, True):
        card = dataclasses.replace(model_32k.card, config={**model_32k.card.config, "channels_last": channels_last})
        model = create_model(card)
        model.load_state_dict(model_32k.state_dict(), strict=True)
        with torch.enable_grad():
            raw = model.forward_intermediates(audio, ["block3"])["block3"]
            outputs = model.forward_layers(audio, list(LAYERS))
        assert raw.requires_grad and raw.is_contiguous(memory_format=torch.channels_last) == channels_last
        for name, output in zip(LAYERS, outputs):
            ours = as_sequence(output.detach(), model.card.layer(name), model.card.id)
            assert rel_err(ours, expected[name]) < TOLERANCE, (channels_last, name)


def test_packed_weights_follow_a_new_checkpoint(cnn14_32k, model_32k):
    """The oneDNN path's folded, packed weights are made on the first forward and remade when a
    weight or BatchNorm statistic changes (a checkpoint loaded after a forward must be used)."""
    ref, _ = cnn14_32k
    audio = make_audio(1, 32000, 32000, seed=22)
    model = create_model(model_32k.card)  # random weights
    with torch.no_grad():
        before = model.forward_layers(audio, ["embedding"])[0]
        model.load_state_dict(model_32k.state_dict(), strict=True)
        after = model.forward_layers(audio, ["embedding"])[0]
        model.blocks[5].bn2.running_mean.add_(0.5)  # one statistic, in place
        moved = model.forward_layers(audio, ["embedding"])[0]
    expected = reference_layers(ref, audio)["embedding"][:, 0]
    assert rel_err(before, expected) > 1e-2
    assert rel_err(after, expected) < TOLERANCE
    assert rel_err(moved, after) > 1e-4
    for copied in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):  # the packed weights stay behind
        with torch.no_grad():
            assert torch.equal(copied.forward_layers(audio, ["embedding"])[0], moved)
    card = model_32k.card
    with pytest.raises(CardError, match="strides"):
        create_model(dataclasses.replace(card, config={**card.config, "strides": 2}))
