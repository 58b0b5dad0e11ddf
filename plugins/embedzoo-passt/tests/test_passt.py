"""embedzoo-passt against hear21passt 0.0.26 (the reference implementation).

- parity: hear21passt's PaSST with random weights (every parameter randomised, heads included),
  saved with torch.save in its own key layout, converted by `checkpoint_filter_fn` through
  `embedzoo.load(..., weights=path)`, gives hear21passt's scene and timestamp embeddings of the
  `base` and `base2level` modules, and every exposed layer, within 1e-5 relative error (float32);
- conversion: lossless; training checkpoints (`net.` / `net_swa.` prefixes) accepted; stray,
  missing and mis-shaped keys named;
- registration: the plugin registers the family torch-free, and the core refuses what its geometry
  declares unsupported (frame mode of the pooled heads and of `mel`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

import embedzoo
from embedzoo.errors import ConfigError, WeightsError
from embedzoo.knobs import resolve_knobs
from embedzoo.registry import get_registry
from embedzoo.testing import assert_registers, assert_torch_free_import, rel_err
from embedzoo_passt.model import checkpoint_filter_fn, create_model

passt_ref = pytest.importorskip("hear21passt.models.passt")
from hear21passt import base as ref_base  # noqa: E402
from hear21passt import base2level as ref_2level  # noqa: E402
from hear21passt import base2levelmel as ref_2levelmel  # noqa: E402
from hear21passt.models.preprocess import AugmentMelSTFT  # noqa: E402
from hear21passt.models.passt import PaSST as RefPaSST  # noqa: E402
from hear21passt.wrapper import PasstBasicWrapper  # noqa: E402
from passt_small import SMALL, small_catalog  # noqa: E402,F401  (the cards' small twins)

SR = 32000
TOLERANCE = 1e-5
CARD = "passt-s-ap476"


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random and O(1)-scaled (the reference zero-inits its heads and biases)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim == 1 and ("norm" in name or name.startswith("head.0")) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.05 * noise)


def reference_wrapper(arch: str = "passt_s_swa_p16_128_ap476", seed: int = 0, **net_kwargs) -> PasstBasicWrapper:
    """hear21passt.base.get_basic_model, without its download (pretrained=False), random weights."""
    mel = AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=net_kwargs.pop("hopsize", 320), n_fft=1024,
                         freqm=48, timem=192, htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10,
                         fmax_aug_range=2000)
    net = passt_ref.get_model(arch=arch, pretrained=False, **net_kwargs)
    randomise(net, seed)
    return PasstBasicWrapper(mel=mel, net=net, mode="all").eval()


def small_reference(seed: int, hopsize: int = 320, input_tdim: int = 998) -> PasstBasicWrapper:
    """hear21passt's wrapper around a small random PaSST (test_passt_recipes.SMALL) of the given
    geometry: the recipes' window loops stay cheap, and the card's `-small` twin matches it."""
    mel = AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=hopsize, n_fft=1024, freqm=48, timem=192,
                         htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000)
    net = RefPaSST(img_size=(128, input_tdim), patch_size=16, stride=(10, 10), in_chans=1, num_classes=527,
                   distilled=True, **SMALL)
    randomise(net, seed)
    return PasstBasicWrapper(mel=mel, net=net, mode="all").eval()


def small_weights(reference: PasstBasicWrapper, folder: Path) -> Path:
    path = folder / "original.pt"
    torch.save(reference.net.state_dict(), path)
    return path


SMALL_BASE = 527 + SMALL["embed_dim"]  # logits + features of the small network


@pytest.fixture(scope="module")
def reference() -> PasstBasicWrapper:
    return reference_wrapper()


@pytest.fixture(scope="module")
def checkpoint(reference: PasstBasicWrapper, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference's weights in the released layout (a plain PaSST state dict), via torch.save."""
    path = tmp_path_factory.mktemp("passt") / "passt-s-f128-p16-s10-ap.476-swa.pt"
    torch.save(reference.net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def clips() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {
        "short": 0.3 * torch.randn(2, int(1.07 * SR), generator=generator),
        "long": 0.3 * torch.randn(1, int(3.74 * SR), generator=generator),
    }


def test_every_layer_matches_reference_intermediates(reference: PasstBasicWrapper, checkpoint: Path) -> None:
    model = embedzoo.load(CARD, weights=checkpoint, device="cpu")
    audio = 0.3 * torch.randn(2, int(1.37 * SR), generator=torch.Generator().manual_seed(3))
    seen: dict[str, torch.Tensor] = {}
    net = reference.net
    hooks = [net.patch_embed.register_forward_hook(lambda m, i, o: seen.__setitem__("patch", o))]
    for index, block in enumerate(net.blocks):
        hooks.append(block.register_forward_hook(lambda m, i, o, n=f"block{index + 1}": seen.__setitem__(n, o)))
    hooks.append(net.norm.register_forward_hook(lambda m, i, o: seen.__setitem__("norm", o)))
    with torch.no_grad():
        mel = reference.mel(audio)
        logits, features = net(mel.unsqueeze(1))
    for hook in hooks:
        hook.remove()
    batch, dim, grid_f, grid_t = seen["patch"].shape
    assert (grid_f, grid_t) == (12, 13)

    def columns(seq: torch.Tensor) -> torch.Tensor:
        frames = seq[:, 2:].reshape(batch, grid_f, grid_t, dim).mean(dim=1)
        return torch.cat((seq[:, :2], frames), dim=1)

    expected = {
        "mel": mel.transpose(1, 2),
        "patch": seen["patch"].mean(dim=2).transpose(1, 2),
        **{name: columns(seen[name]) for name in [f"block{i}" for i in range(1, 13)] + ["norm"]},
        "features": features,  # pooled: one vector per forward, (batch, width)
        "logits": logits,
    }
    with torch.inference_mode():
        outputs = model.forward_layers(audio, list(expected))
    for (name, ref), ours in zip(expected.items(), outputs):
        assert rel_err(ours, ref) < TOLERANCE, name
    # early stop: asking for block3 alone gives the same block3, without the rest
    with torch.inference_mode():
        (block3,) = model.forward_layers(audio, ["block3"])
    assert rel_err(block3, expected["block3"]) < TOLERANCE


@pytest.mark.parametrize("clip", ["short", "long"])
def test_base_scene_and_timestamp_embeddings(reference, checkpoint, clips, clip: str, small_catalog, tmp_path) -> None:
    """Full size on the short clips; the 3.74 s clip's 75 windows on the small network."""
    audio = clips[clip]
    if clip == "long":
        reference = small_reference(seed=2)
        checkpoint, width = small_weights(reference, tmp_path), SMALL_BASE
        model = embedzoo.load(f"{CARD}-small", weights=checkpoint, device="cpu", preset="base")
    else:
        width = 1295
        model = embedzoo.load(CARD, weights=checkpoint, device="cpu", preset="base")
    with torch.no_grad():
        ref_scene = ref_base.get_scene_embeddings(audio, reference)
        ref_ts, ref_times = ref_base.get_timestamp_embeddings(audio, reference)
    scene = model.scene_embeddings(audio, SR)
    ts, times = model.timestamp_embeddings(audio, SR)
    assert scene.shape == (len(audio), width)
    assert rel_err(scene, ref_scene) < TOLERANCE
    assert rel_err(ts, ref_ts) < TOLERANCE
    assert torch.allclose(times.double(), ref_times.double())


@pytest.mark.parametrize("module,preset", [(ref_2level, "2level"), (ref_2levelmel, "2levelmel")])
@pytest.mark.parametrize("seconds", [0.12, 1.07])
def test_two_level_recipes(module, preset: str, seconds: float, small_catalog, tmp_path) -> None:
    """hear21passt.base2level(mel) as one preset: timestamps = cat(160 ms windows, 800/640 ms
    windows[, the 6 mel frames of a 60 ms window, flattened]); scenes are base's. (Small network:
    the recipe is the windows, not the width; test_hear runs the full-size 2levelmel.)"""
    reference = small_reference(seed=3)
    model = embedzoo.load(f"{CARD}-small", weights=small_weights(reference, tmp_path), device="cpu", preset=preset)
    audio = 0.3 * torch.randn(2, int(seconds * SR), generator=torch.Generator().manual_seed(9))
    ts, times = model.timestamp_embeddings(audio, SR)
    assert model.timestamp_embedding_size == ts.shape[-1] == {"2level": 2, "2levelmel": 2}[preset] * SMALL_BASE + (768 if preset == "2levelmel" else 0)
    assert torch.isfinite(ts).all()
    scene = model.scene_embeddings(audio, SR)
    assert model.scene_embedding_size == scene.shape[-1] == SMALL_BASE and torch.isfinite(scene).all()
    with torch.no_grad():
        if seconds * 1000 > 400:
            assert rel_err(scene, module.get_scene_embeddings(audio, reference)) < TOLERANCE
            ref_ts, ref_times = module.get_timestamp_embeddings(audio, reference)
        else:  # shorter than one patch: the reference's scene crashes, ours pads to 4801 samples
            with pytest.raises(RuntimeError, match="Kernel size"):
                module.get_scene_embeddings(audio, reference)
            # and its timestamps fail to reflect-pad a clip shorter than half the wide window
            with pytest.raises(RuntimeError, match="Padding size"):
                module.get_timestamp_embeddings(audio, reference)
            ref_ts, ref_times = ref_base.get_timestamp_embeddings(audio, reference)
            if preset == "2levelmel":  # the levels it can compute: base and the mel frames
                mels, _ = reference.get_timestamp_mels(audio, window_size=1920)
                assert rel_err(ts[..., -768:], mels) < TOLERANCE
            ts = ts[..., :SMALL_BASE]
    assert rel_err(ts, ref_ts) < TOLERANCE
    assert torch.allclose(times.double(), ref_times.double())


@pytest.mark.parametrize(
    "card_id,kwargs",
    [
        ("passt-s-hop100-ap473", {"input_tdim": 3200, "hopsize": 100}),
        ("passt-s-hop160-ap473", {"input_tdim": 2000, "hopsize": 160}),
    ],
)
def test_stft_hop_two_level_recipes(card_id: str, kwargs: dict, tmp_path: Path, small_catalog) -> None:
    """The hop100/hop160 2lvl and 2lvlmel modules: 800 ms second level, mel windows of 6 STFT hops."""
    reference = small_reference(seed=4, **kwargs)
    path = small_weights(reference, tmp_path)
    audio = 0.3 * torch.randn(1, int(0.9 * SR), generator=torch.Generator().manual_seed(5))
    prefix = card_id.split("-")[2]  # hop100 / hop160
    for module, preset in ((f"{prefix}base2lvl", "2level"), (f"{prefix}base2lvlmel", "2levelmel")):
        recipe = importlib.import_module(f"hear21passt.{module}")
        with torch.no_grad():
            ref_ts, ref_times = recipe.get_timestamp_embeddings(audio, reference)
        model = embedzoo.load(f"{card_id}-small", weights=path, device="cpu", preset=preset)
        ts, times = model.timestamp_embeddings(audio, SR)
        assert rel_err(ts, ref_ts) < TOLERANCE, module
        assert torch.allclose(times.double(), ref_times.double())


def test_levels_are_checked() -> None:
    with pytest.raises(ConfigError, match="not a preset"):
        resolve_knobs(get_registry().get(CARD), {"levels": "nosuch"})
    with pytest.raises(ConfigError, match="mode 'window'"):
        resolve_knobs(get_registry().get(CARD), {"preset": "2level", "mode": "frame"})
    with pytest.raises(ConfigError, match="has levels of its own"):
        resolve_knobs(get_registry().get(CARD), {"levels": "2level"})


def test_ten_second_scene(reference, checkpoint) -> None:
    """A full 10 s clip: all 99 time positional embeddings, one forward on each side."""
    audio = 0.3 * torch.randn(1, 10 * SR, generator=torch.Generator().manual_seed(11))
    model = embedzoo.load(CARD, weights=checkpoint, device="cpu", preset="base")
    with torch.no_grad():
        ref_scene = ref_base.get_scene_embeddings(audio, reference)
    assert rel_err(model.scene_embeddings(audio, SR), ref_scene) < TOLERANCE


def test_frame_mode_reads_patch_columns(checkpoint) -> None:
    """Frame mode: patch column j of block12 is the timestamp embedding at j*100 ms (hop = frame_hop)."""
    model = embedzoo.load(CARD, weights=checkpoint, device="cpu", preset="frames", hop_ms=100)
    audio = 0.3 * torch.randn(1, int(2.0 * SR), generator=torch.Generator().manual_seed(5))
    ts, times = model.timestamp_embeddings(audio, SR)
    assert ts.shape == (1, 21, 768)
    assert float(times[0, 1]) == pytest.approx(100.0)
    card = model.card
    padded = torch.nn.functional.pad(audio[None], (card.frame_field // 2, card.frame_field), mode="reflect")[0]
    chunk = padded[:, : 20 * card.frame_hop + card.frame_field]
    with torch.inference_mode():
        (block12,) = model.forward_layers(chunk, ["block12"])
    assert rel_err(ts, block12[:, 2:]) < TOLERANCE


def test_long_clip_scene_is_mean_of_windows(reference, checkpoint) -> None:
    """Clips longer than the scene window: mean of windows every scene hop (1 s / 0.5 s here, to stay fast)."""
    short_ref = PasstBasicWrapper(mel=reference.mel, net=reference.net, max_model_window=1000, scene_hop=500).eval()
    model = embedzoo.load(CARD, weights=checkpoint, device="cpu", preset="base", scene_window_ms=1000, scene_hop_ms=500)
    audio = 0.3 * torch.randn(1, int(2.3 * SR), generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        ref_scene = ref_base.get_scene_embeddings(audio, short_ref)
    assert rel_err(model.scene_embeddings(audio, SR), ref_scene) < TOLERANCE


# ---- other variants' architecture ----------------------------------------------------------


@pytest.mark.parametrize(
    "card_id,arch,kwargs",
    [
        ("passt-s-n-ap468", "passt_s_p16_s16_128_ap468", {"fstride": 16, "tstride": 16}),
        ("passt-s-hop160-ap473", "stfthop160", {"input_tdim": 2000, "hopsize": 160}),
        ("passt-l-kd-ap47", "passt_l_kd_p16_128_ap47", {}),
        ("passt-s-openmic-ap85", "openmic", {"n_classes": 20}),
        ("passt-s-fsd50k-ap655", "fsd50k", {"n_classes": 200, "input_tdim": 2000}),
        ("passt-s-n-fsd50k-ap642", "fsd50k-n", {"n_classes": 200, "input_tdim": 2000, "fstride": 16, "tstride": 16}),
    ],
)
def test_variant_layers(card_id: str, arch: str, kwargs: dict, tmp_path: Path) -> None:
    reference = reference_wrapper(arch, seed=1, **kwargs)
    path = tmp_path / "original.pt"
    torch.save(reference.net.state_dict(), path)
    model = embedzoo.load(card_id, weights=path, device="cpu")
    audio = 0.3 * torch.randn(1, int(0.8 * SR), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference(audio)
    with torch.inference_mode():
        logits, features = model.forward_layers(audio, ["logits", "features"])
    assert rel_err(torch.cat([logits, features], dim=1), expected) < TOLERANCE


# ---- conversion -----------------------------------------------------------------------------


def test_conversion_is_lossless(reference) -> None:
    model = create_model(get_registry().get(CARD))
    original = reference.net.state_dict()
    state = checkpoint_filter_fn(original, model)
    assert set(state) == set(original) == set(model.state_dict())
    assert all(torch.equal(state[k], original[k]) for k in original)


def test_training_checkpoint_prefixes(reference) -> None:
    model = create_model(get_registry().get(CARD))
    net = reference.net.state_dict()
    other = {k: v + 1 for k, v in net.items()}
    training = {
        "state_dict": {
            **{f"net.{k}": v for k, v in other.items()},
            **{f"net_swa.{k}": v for k, v in net.items()},
            "device_proxy": torch.zeros(1),
        }
    }
    state = checkpoint_filter_fn(training, model)
    assert all(torch.equal(state[k], net[k]) for k in net)  # the SWA copy wins
    plain = checkpoint_filter_fn({f"net.{k}": v for k, v in net.items()}, model)
    assert all(torch.equal(plain[k], net[k]) for k in net)
    old = dict(net)
    old["patch_embed.proj.weight"] = net["patch_embed.proj.weight"].reshape(768, -1)  # linear patchify
    assert torch.equal(checkpoint_filter_fn(old, model)["patch_embed.proj.weight"], net["patch_embed.proj.weight"])


def test_conversion_names_what_does_not_fit(reference) -> None:
    model = create_model(get_registry().get(CARD))
    net = reference.net.state_dict()
    with pytest.raises(WeightsError, match="surprise"):
        checkpoint_filter_fn({**net, "surprise": torch.zeros(1)}, model)
    with pytest.raises(WeightsError, match="head_dist.bias"):
        checkpoint_filter_fn({k: v for k, v in net.items() if k != "head_dist.bias"}, model)
    bad = {**net, "time_new_pos_embed": torch.zeros(1, 768, 1, 62)}
    with pytest.raises(WeightsError, match="time_new_pos_embed"):
        checkpoint_filter_fn(bad, model)


def test_plugin_registers_the_family_torch_free() -> None:
    assert_torch_free_import("embedzoo_passt", "embedzoo_passt.geometry")
    assert_registers("passt", ["passt"])


def test_frame_mode_is_refused_where_the_geometry_says() -> None:
    """The pooled heads have no frames, and `mel`'s centred STFT frames cannot tile chunks: the core
    refuses both from the declared specs; the patch columns run in frame mode."""
    card = get_registry().get(CARD)
    for layer in ("features", "logits"):
        with pytest.raises(ConfigError, match="one vector per window"):
            resolve_knobs(card, {"layers": [layer], "mode": "frame"})
    with pytest.raises(ConfigError, match="cannot run in frame mode"):
        resolve_knobs(card, {"layers": ["mel"], "mode": "frame"})
    assert resolve_knobs(card, {"layers": ["patch", "norm"], "mode": "frame"}).mode == "frame"


def test_bad_input_through_the_pipeline(checkpoint, tmp_path: Path) -> None:
    """Stereo 44.1 kHz, a 50 ms clip, a NaN and an empty file in one job: the good ones are embedded
    (down-mixed, resampled, padded), the bad ones are named in errors.jsonl, nothing else is lost."""
    import json

    import numpy as np
    import soundfile as sf

    from embedzoo.audio import collect_inputs, load_audio
    from embedzoo.pipeline import embed_files

    clips = tmp_path / "clips"
    clips.mkdir()
    t = np.arange(int(0.6 * 44100)) / 44100
    sf.write(clips / "stereo.wav", np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 660 * t)], 1), 44100)
    sf.write(clips / "short.wav", 0.3 * np.random.default_rng(0).standard_normal(1600), 32000)
    nan = np.zeros(32000, np.float32)
    nan[16000] = np.nan
    sf.write(clips / "nan.wav", nan, 32000, subtype="FLOAT")
    sf.write(clips / "empty.wav", np.zeros(0, np.float32), 32000)
    model = embedzoo.load(CARD, weights=checkpoint, device="cpu", preset="base", hop_ms=250)
    summary = embed_files(model, collect_inputs([clips]), tmp_path / "out", workers=0)
    assert summary.done == 2 and {f.name for f in summary.failed} == {"nan.wav", "empty.wav"}
    errors = {e["name"]: e["error"] for e in map(json.loads, (tmp_path / "out" / "errors.jsonl").read_text().splitlines())}
    assert "NaN" in errors["nan.wav"] and "0.500 s" in errors["nan.wav"] and "empty" in errors["empty.wav"]
    for name in ("stereo.wav", "short.wav"):
        audio, _ = load_audio(clips / name, SR)
        want = model.embed([audio], SR)[0]
        got = np.load(tmp_path / "out" / "timestamp" / f"{name}.embedding.npy")
        assert got.shape == (1 + len(audio) // 8000, 1295)
        assert rel_err(torch.from_numpy(got), want.timestamp) < TOLERANCE  # batched with other files
