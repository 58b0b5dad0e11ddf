"""embedzoo-vggish against torchvggish (the reference implementation).

- frontend: our torch log-mel equals `torchvggish.vggish_input.waveform_to_examples` (numpy, float64);
- parity: random weights in torchvggish's own VGG, saved with torch.save in its original layout,
  converted by the core (`embedzoo.load(..., weights=path)`), give every layer (forward hooks on the
  reference), the embedding and the PCA postprocessing within 1e-5 relative error in float32;
- the core's window path (timestamp embeddings) equals the reference on a 10 s clip;
- `freq_pool` pools a block over its mel bands (`flat` keeps the whole map);
- frame mode reads the log-mel and every block at its own rate, equal to the reference run once
  over the whole clip, although embedzoo computes it in chunks of at most one example;
- conversion is lossless and names bad keys; the plugin registers both families, torch-free.
(Shapes, widths, bands and frame counts against `geometry.py`: the core's tests/test_models.py.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torchvggish import mel_features, vggish_input, vggish_params
from torchvggish import torchvggish as tv

import embedzoo
from embedzoo import hub
from embedzoo.errors import ConfigError, WeightsError
from embedzoo.registry import get_card, get_registry
from embedzoo.testing import assert_registers, assert_torch_free_import, rel_err
from embedzoo_vggish.geometry import EXAMPLE_HOP, EXAMPLE_SAMPLES, VGGISH_LAYERS, vggish_blocks
from embedzoo_vggish.model import VGGish, checkpoint_filter_fn, create_model

SR = 16000
TOLERANCE = 1e-5
LAYERS = VGGISH_LAYERS


def randomised_reference(seed: int) -> tv.VGG:
    """torchvggish's VGG (no postprocessor: it would download) with random weights scaled so that
    activations stay O(1) through the stack (PyTorch's default init shrinks them ~100x)."""
    torch.manual_seed(seed)
    ref = tv._vgg(postprocess=False)
    with torch.no_grad():
        for module in ref.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
                module.bias.uniform_(-0.1, 0.1)
    return ref.eval()


def random_pca(seed: int) -> dict[str, torch.Tensor]:
    """A PCA parameter file in torchvggish's layout: eigenvectors (128, 128), means (128, 1)."""
    generator = torch.Generator().manual_seed(seed)
    return {"pca_eigen_vectors": torch.randn(128, 128, generator=generator) * 0.3,
            "pca_means": torch.rand(128, 1, generator=generator)}  # fmt: skip


def reference_postprocess(embedding: torch.Tensor, pca: dict[str, torch.Tensor]) -> torch.Tensor:
    """torchvggish.Postprocessor.postprocess, with its parameters set directly (no download)."""
    post = tv.Postprocessor.__new__(tv.Postprocessor)
    post._pca_matrix = pca["pca_eigen_vectors"].float()
    post._pca_means = pca["pca_means"].reshape(-1, 1).float()
    return post.postprocess(embedding)


def make_audio(samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SR
    return (0.2 * rng.standard_normal(samples) + 0.5 * np.sin(2 * np.pi * (300 + 900 * t) * t)).astype(np.float32)


def reference_log_mel(audio: np.ndarray) -> np.ndarray:
    """The reference's log-mel of a whole clip (float64): what waveform_to_examples frames into examples."""
    return mel_features.log_mel_spectrogram(
        audio.astype(np.float64), audio_sample_rate=SR, log_offset=vggish_params.LOG_OFFSET,
        window_length_secs=vggish_params.STFT_WINDOW_LENGTH_SECONDS, hop_length_secs=vggish_params.STFT_HOP_LENGTH_SECONDS,
        num_mel_bins=vggish_params.NUM_MEL_BINS, lower_edge_hertz=vggish_params.MEL_MIN_HZ, upper_edge_hertz=vggish_params.MEL_MAX_HZ,
    )  # fmt: skip


def reference_layers(ref: tv.VGG, examples: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every layer of the reference through forward hooks on its own modules, in our natural shapes:
    the log-mel (N, frames, 64), block maps (N, C, F, T), the embedding (N, 1, 128)."""
    pools = [m for m in ref.features if isinstance(m, torch.nn.MaxPool2d)]
    caught: dict[str, torch.Tensor] = {}
    hooks = [pool.register_forward_hook(lambda _m, _i, o, n=n: caught.__setitem__(f"block{n + 1}", o.clone()))
             for n, pool in enumerate(pools)]  # fmt: skip
    try:
        with torch.no_grad():
            embedding = ref(examples)
    finally:
        for hook in hooks:
            hook.remove()
    out = {"logmel": examples[:, 0]}
    for name, x in caught.items():
        out[name] = x.transpose(2, 3)  # the reference's (N, C, T, F) -> (N, C, F, T)
    out["embedding"] = embedding[:, None]
    return out


def reference_maps(ref: tv.VGG, log_mel: np.ndarray) -> dict[str, torch.Tensor]:
    """The reference's VGG stack (fully convolutional) over a whole clip's log-mel: each block's
    (C, T, F) map, read by hooks on its max-pools."""
    pools = [m for m in ref.features if isinstance(m, torch.nn.MaxPool2d)]
    caught: dict[str, torch.Tensor] = {}
    hooks = [pool.register_forward_hook(lambda _m, _i, o, n=n: caught.__setitem__(f"block{n + 1}", o[0].clone()))
             for n, pool in enumerate(pools)]  # fmt: skip
    try:
        with torch.no_grad():
            ref.features(torch.from_numpy(log_mel).float()[None, None])
    finally:
        for hook in hooks:
            hook.remove()
    return caught


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[tv.VGG, dict[str, torch.Tensor], VGGish, Path, Path]:
    """The original layout saved with torch.save, converted by the core; and a merged VGG+PCA file."""
    tmp = tmp_path_factory.mktemp("vggish")
    ref = randomised_reference(seed=0)
    pca = random_pca(seed=1)
    original = tmp / "vggish-random.pth"
    torch.save(ref.state_dict(), original)
    merged = tmp / "vggish-random-with-pca.pth"
    torch.save({**ref.state_dict(), **pca}, merged)
    model = embedzoo.load("vggish", weights=merged, device="cpu")
    assert isinstance(model, VGGish) and not model.training
    return ref, pca, model, original, merged


# ---- the plugin ---------------------------------------------------------------------------------


def test_plugin_registers_both_families_torch_free():
    from embedzoo.plugins import family_module

    assert_registers("vggish", ["vggish", "yamnet"])
    assert_torch_free_import("embedzoo_vggish", "embedzoo_vggish.geometry")
    assert family_module("vggish").create_model is create_model
    card = get_registry().get("vggish")
    assert sum(p.numel() for p in create_model(card).parameters()) == card.params


# ---- parity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("samples", [EXAMPLE_SAMPLES, EXAMPLE_SAMPLES + 4321])
def test_frontend_matches_waveform_to_examples(samples):
    audio = make_audio(samples, seed=samples)
    expected = vggish_input.waveform_to_examples(audio.astype(np.float64), SR).detach()[0, 0]
    model = create_model(get_registry().get("vggish"))
    with torch.no_grad():
        (ours,) = model.forward_layers(torch.from_numpy(audio[:EXAMPLE_SAMPLES])[None], ["logmel"])
    assert rel_err(ours[0], expected) < TOLERANCE
    # silence: log(0.01) everywhere
    with torch.no_grad():
        (quiet,) = model.forward_layers(torch.zeros(1, EXAMPLE_SAMPLES), ["logmel"])
    assert torch.allclose(quiet, torch.full_like(quiet, float(np.log(0.01))))


def test_every_layer_matches_torchvggish(converted):
    ref, pca, model, _, _ = converted
    clips = np.stack([make_audio(EXAMPLE_SAMPLES, seed=s) for s in (3, 4, 5)])
    examples = torch.cat([vggish_input.waveform_to_examples(c.astype(np.float64), SR).detach() for c in clips])
    expected = reference_layers(ref, examples)
    expected["postprocessed"] = reference_postprocess(expected["embedding"][:, 0], pca)[:, None]
    assert expected["embedding"].std() > 1e-2, "reference embedding is degenerate: the test would be weak"
    with torch.no_grad():
        ours = dict(zip(LAYERS, model.forward_layers(torch.from_numpy(clips))))
    shapes = {"logmel": (96, 64), "block1": (64, 32, 48), "block2": (128, 16, 24), "block3": (256, 8, 12), "block4": (512, 4, 6),
              "embedding": (1, 128), "postprocessed": (1, 128)}  # fmt: skip
    for name in LAYERS:
        assert ours[name].shape == (3, *shapes[name]), name
        if name != "postprocessed":
            assert rel_err(ours[name], expected[name]) < TOLERANCE, name
    # quantised to 0..255: equal except (rarely) one step where a value sits on a rounding edge
    diff = (ours["postprocessed"] - expected["postprocessed"]).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01
    assert len(set(ours["postprocessed"].flatten().tolist())) > 10


def test_ten_seconds_through_the_core_equal_the_reference(converted):
    """The core's windows are centred on k * 960 ms: the reference on the clip with 7800 leading
    zeros (and trailing zeros to the last window's end) produces the same examples."""
    ref, _, model, _, _ = converted
    audio = make_audio(10 * SR, seed=6)
    embeddings, timestamps = model.timestamp_embeddings(torch.from_numpy(audio)[None], SR)
    count = timestamps.shape[1]
    assert torch.allclose(timestamps[0], torch.arange(count) * 960.0)
    padded = np.zeros(EXAMPLE_SAMPLES // 2 + (count - 1) * EXAMPLE_HOP + EXAMPLE_SAMPLES, np.float64)
    padded[EXAMPLE_SAMPLES // 2 : EXAMPLE_SAMPLES // 2 + len(audio)] = audio
    examples = vggish_input.waveform_to_examples(padded, SR).detach()[:count]
    with torch.no_grad():
        expected = ref(examples)
    assert embeddings.shape == (1, count, 128)
    assert rel_err(embeddings[0], expected) < TOLERANCE
    scene = model.scene_embeddings(torch.from_numpy(audio)[None], SR)
    assert scene.shape == (1, 128) and torch.isfinite(scene).all()


def test_layer_subsets_stop_early_and_errors(converted):
    _, _, model, _, _ = converted
    audio = torch.from_numpy(make_audio(EXAMPLE_SAMPLES, seed=7))[None]
    calls: list[str] = []
    hook = model.embeddings.register_forward_hook(lambda *_: calls.append("fc"))
    try:
        with torch.no_grad():
            full = dict(zip(LAYERS, model.forward_layers(audio)))
            calls.clear()
            b4, lm = model.forward_layers(audio, ["block4", "logmel"])
    finally:
        hook.remove()
    assert calls == []
    assert torch.equal(b4, full["block4"]) and torch.equal(lm, full["logmel"])
    with pytest.raises(ConfigError, match="block5"):
        model.forward_layers(audio, ["block5"])
    with pytest.raises(ConfigError, match="15600"):
        model.forward_layers(audio[:, :15000], ["embedding"])


def test_freq_pool_mean_pools_a_block_over_its_mel_bands(converted):
    """`freq_pool=mean` makes a block's frames channels wide: the mean over the frequency axis of
    torchvggish's block map; `flat` keeps the whole map, channel-major (what it always was)."""
    ref, _, model, _, _ = converted
    clips = np.stack([make_audio(EXAMPLE_SAMPLES, seed=s) for s in (9, 10)])
    examples = torch.cat([vggish_input.waveform_to_examples(c.astype(np.float64), SR).detach() for c in clips])
    maps = reference_layers(ref, examples)  # (N, C, F, T)
    try:
        for name, channels in (("block2", 128), ("block4", 512)):
            model.configure(layers=name, freq_pool="mean", readout="mean")
            assert model.scene_embedding_size == channels
            assert rel_err(model.embed_segments(clips), maps[name].mean(dim=2).mean(dim=-1)) < TOLERANCE, name
            # each frame alone: channels wide, the frequency mean of the map's time step
            spec = model.card.layer(name)
            frames = model.embed_segments(clips, frames=True)
            count = (EXAMPLE_SAMPLES - spec.frame_field) // spec.frame_hop + 1
            expected = maps[name].mean(dim=2).transpose(1, 2)[:, spec.frame_skip : spec.frame_skip + count]
            assert frames.shape == (2, count, channels) and rel_err(frames, expected) < TOLERANCE, name
            model.configure(freq_pool="flat")
            assert model.scene_embedding_size == 2048
            assert rel_err(model.embed_segments(clips), maps[name].permute(0, 3, 1, 2).flatten(2).mean(dim=1)) < TOLERANCE, name
    finally:
        model.configure(layers="embedding", freq_pool="flat", readout="mean")


def test_frame_mode_reads_the_log_mel_and_blocks_of_the_whole_clip(converted):
    """Frame mode reads each layer at its own rate: frame j must be the reference's output centred
    on clip sample j x frame_hop, with the reference run once over the whole clip (no chunk edges),
    although embedzoo computes it in chunks of at most one example (several per layer here)."""
    ref, _, model, _, _ = converted
    clip = make_audio(4 * SR + 1234, seed=12)
    audio = torch.from_numpy(clip)[None]
    try:
        # the log-mel: frame j covers [160 j - 200, 160 j + 200), the clip delayed by 200 zeros
        model.configure(mode="frame", layers="logmel", hop_ms=10, pad_mode="constant")
        logmel, timestamps = model.timestamp_embeddings(audio, SR)
        count = logmel.shape[1]
        assert count == len(clip) // 160 + 1 and torch.allclose(timestamps[0], torch.arange(count) * 10.0)
        delayed = np.concatenate([np.zeros(200), clip, np.zeros(400)])
        assert rel_err(logmel[0], torch.from_numpy(reference_log_mel(delayed)[:count])) < TOLERANCE
        for k, grid in enumerate(vggish_blocks(), 1):
            # the reference's output i over the clip delayed by frame_field // 2 zeros is centred on
            # clip sample (i - skip) x hop: our frame j is its output j + skip
            hop, field, skip = grid.frame_hop, grid.frame_field, grid.skip
            model.configure(layers=f"block{k}", hop_ms=hop * 1000 / SR)
            frames, timestamps = model.timestamp_embeddings(audio, SR)
            count = frames.shape[1]
            assert count == len(clip) // hop + 1 and torch.allclose(timestamps[0], torch.arange(count) * hop * 1000.0 / SR)
            delayed = np.concatenate([np.zeros(field // 2), clip, np.zeros(field + hop)])
            block = reference_maps(ref, reference_log_mel(delayed))[f"block{k}"]  # (C, T, F)
            expected = block.permute(1, 0, 2).flatten(1)[skip : skip + count]  # channel-major frames
            assert rel_err(frames[0], expected) < TOLERANCE, k
    finally:
        model.configure(mode="window", layers="embedding", hop_ms=960, pad_mode="constant")


# ---- conversion ---------------------------------------------------------------------------------


def test_conversion_is_lossless_and_pca_optional(converted, tmp_path):
    ref, pca, model, original, _ = converted
    source = torch.load(original, map_location="cpu", weights_only=True)
    state = checkpoint_filter_fn(source, model)
    for key, tensor in source.items():
        assert torch.equal(state[key], tensor), key
    assert set(state) == set(source) | {"pca.eigen_vectors", "pca.means"}
    assert torch.isnan(state["pca.eigen_vectors"]).all() and torch.isnan(state["pca.means"]).all()  # not provided: not invented
    merged = checkpoint_filter_fn({**source, **pca}, model)
    assert torch.equal(merged["pca.means"], pca["pca_means"][:, 0])
    assert torch.equal(merged["pca.eigen_vectors"], pca["pca_eigen_vectors"])
    path = tmp_path / "vggish.safetensors"
    save_file(state, str(path))
    plain = embedzoo.load("vggish", weights=original, device="cpu")
    assert all(torch.equal(v, load_file(str(path))[k]) for k, v in plain.state_dict().items() if not k.startswith("pca."))
    audio = torch.from_numpy(make_audio(EXAMPLE_SAMPLES, seed=8))[None]
    with torch.no_grad():
        assert torch.equal(plain.forward_layers(audio, ["embedding"])[0], model.forward_layers(audio, ["embedding"])[0])
        with pytest.raises(ConfigError, match="PCA"):
            plain.forward_layers(audio, ["postprocessed"])


def test_conversion_errors_name_the_key(converted):
    ref, pca, model, _, _ = converted
    good = ref.state_dict()
    with pytest.raises(WeightsError, match=r"features\.3\.bias"):
        checkpoint_filter_fn({k: v for k, v in good.items() if k != "features.3.bias"}, model)
    with pytest.raises(WeightsError, match=r"embeddings\.4\.weight.*\(64, 4096\)"):
        checkpoint_filter_fn(dict(good, **{"embeddings.4.weight": torch.zeros(64, 4096)}), model)
    with pytest.raises(WeightsError, match="pproc"):
        checkpoint_filter_fn(dict(good, pproc=torch.zeros(1)), model)
    with pytest.raises(WeightsError, match="pca"):
        checkpoint_filter_fn(dict(good, pca_means=pca["pca_means"]), model)


def test_pull_fetches_the_pca_file_beside_the_weights(converted, tmp_path, monkeypatch):
    """The card's source has the PCA parameters as an extra file: `pull` fetches both (here from a
    mirror folder laid out as the release), verifies and records both, and merges them into one
    conversion, so `postprocessed` works from a plain pull."""
    ref, pca, _, original, _ = converted
    card = get_card("vggish")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "vggish-10086976.pth").write_bytes(original.read_bytes())
    torch.save(pca, mirror / "vggish_pca_params-970ea276.pth")
    monkeypatch.setenv("EMBEDZOO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match="vggish_pca_params"):  # the extra file is required
        (mirror / "vggish_pca_params-970ea276.pth").rename(tmp_path / "pca.pth")
        try:
            hub.pull(card, mirror=mirror, offline=True)
        finally:
            (tmp_path / "pca.pth").rename(mirror / "vggish_pca_params-970ea276.pth")
    path = hub.pull(card, mirror=mirror, offline=True)
    meta = json.loads((path.parent / "meta.json").read_text())
    assert [Path(extra["path"]).name for extra in meta["extras"]] == ["vggish_pca_params-970ea276.pth"]
    assert meta["extras"][0]["sha256"] == hashlib.sha256((mirror / "vggish_pca_params-970ea276.pth").read_bytes()).hexdigest()
    model = embedzoo.load("vggish", device="cpu", layers="postprocessed")
    audio = make_audio(EXAMPLE_SAMPLES, seed=8)
    with torch.no_grad():
        embedding = ref(vggish_input.waveform_to_examples(audio.astype(np.float64), SR).detach())
    expected = reference_postprocess(embedding, pca)
    diff = (model.scene_embeddings(torch.from_numpy(audio)[None], SR) - expected).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.05  # quantised: rounding edges aside
