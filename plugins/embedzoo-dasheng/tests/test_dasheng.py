"""embedzoo-dasheng against the `dasheng` package (0.0.9, the reference).

- parity: the reference's Dasheng with random weights (every parameter and the BatchNorm statistics
  randomised), saved in the authors' Zenodo layout ({'model': state_dict, 'config': {...}}) and
  converted by `checkpoint_filter_fn` through `embedzoo.load(..., weights=FILE)`, gives every layer
  (the blocks' input, every block, the final norm) within 1e-5 relative error (float32), on a small
  twin whose reference chunk is 10 tokens (so clips of one, several and a partial chunk exercise the
  reference's internal chunking), scene and timestamp embeddings in window mode, frame mode, and one
  full-size check (dasheng-base's architecture, 12 s: two reference chunks);
- conversion: Zenodo and Hub (encoder. prefix, no front-end buffers) files convert to the same
  tensors; stray, missing and mis-shaped keys named; a config or front end that disagrees refused;
- check_repo_files; registration torch-free; the geometry; silence and short clips.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from dasheng_small import (  # noqa: F401  (dasheng_catalog is a fixture; one_thread is conftest.py's)
    CARDS,
    SIZES,
    SMALL,
    SR,
    TOLERANCE,
    TWIN,
    dasheng_catalog,
    hub_state,
    noise,
    reference,
    reference_layers,
    zenodo_file,
)
from safetensors.torch import save_file

import embedzoo
from embedzoo.errors import ConfigError, WeightsError
from embedzoo.knobs import resolve_knobs
from embedzoo.registry import get_registry
from embedzoo.testing import assert_registers, assert_torch_free_import, check_family, rel_err
from embedzoo_dasheng.model import check_repo_files, checkpoint_filter_fn, create_model

pytestmark = [pytest.mark.usefixtures("dasheng_catalog", "one_thread")]
SMALL_KWARGS = {"embed_dim": SMALL["embed_dim"], "depth": SMALL["depth"], "num_heads": SMALL["num_heads"], "target_length": SMALL["target_length"]}
CHUNK = SMALL["target_length"] * 160  # samples of one reference chunk of the twin (0.4 s)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """(reference model, its Zenodo-layout file) for the twin."""
    model = reference(**SMALL_KWARGS, seed=1)
    path = zenodo_file(model, SMALL_KWARGS, tmp_path_factory.mktemp("zenodo") / "dasheng_small.pt")
    return model, path


def load(repo, **knobs: Any) -> embedzoo.Extractor:
    return embedzoo.load(TWIN, weights=str(repo[1]), device="cpu", **knobs)


def ours(model, clips: np.ndarray, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    names = layers or [spec.name for spec in model.card.layers]
    with torch.inference_mode():
        outputs = model.forward_layers(torch.from_numpy(clips), names)
    return dict(zip(names, outputs))


# ---- every layer --------------------------------------------------------------------------------


@pytest.mark.parametrize("samples", [480, 3000, CHUNK, CHUNK + 700, 2 * CHUNK + 1000, "max"])
def test_every_layer_matches_the_reference(repo, samples) -> None:
    """One token up to max_window (3 reference chunks): the reference's chunking, whole and partial chunks."""
    reference_model, _ = repo
    model = load(repo)
    samples = model.card.max_window if samples == "max" else samples
    clips = noise(samples, rows=2, seed=3)
    expected = reference_layers(reference_model, clips)
    got = ours(model, clips)
    assert list(got) == ["patch", "block1", "block2", "norm"] == list(model.card.hidden_states) + ["norm"]
    for name, value in got.items():
        assert value.shape == (2, (1 + samples // 160) // 4, SMALL["embed_dim"]), name
        assert rel_err(value, expected[name]) < TOLERANCE, name
    assert rel_err(ours(model, clips, ["block1"])["block1"], expected["block1"]) < TOLERANCE  # early stop


def test_chunks_attend_within_themselves(repo) -> None:
    """The reference's chunking, seen from outside: a clip of two whole chunks gives the second
    chunk's tokens as the second chunk alone gives them, up to its front end (the dB floor and
    the reflect padding at its edges), so only the mel of the seam differs."""
    model = load(repo)
    clip = noise(2 * CHUNK, seed=5)
    both = ours(model, clip, ["block2"])["block2"]
    assert both.shape[1] == 2 * (SMALL["target_length"] // 4)  # 1 + 80 mel frames -> 20 tokens
    first = ours(model, clip[:, :CHUNK], ["block2"])["block2"]
    assert rel_err(both[:, :9], first[:, :9]) < 1e-3  # same chunk, the last token's mel differs at the seam


# ---- scene, timestamps, frame mode -------------------------------------------------------------


def windows_of(clip: np.ndarray, window: int, hop: int) -> np.ndarray:
    padded = np.pad(clip, (window // 2, window // 2))
    count = (len(padded) - window) // hop + 1
    return np.stack([padded[k * hop : k * hop + window] for k in range(count)])


@pytest.mark.parametrize("seconds", [0.3, 1.1])  # within one reference chunk; three chunks (one forward)
def test_scene_and_window_timestamps(repo, seconds: float) -> None:
    """Scene: the mean of the reference's output over the whole clip (its own chunking); timestamps
    (preset window, 0.25 s windows every 100 ms here): the mean of the reference's output per window."""
    reference_model, _ = repo
    model = load(repo, preset="window", window_ms=250, hop_ms=100)
    clip = noise(int(seconds * SR), seed=7)[0]
    expected_scene = reference_layers(reference_model, clip[None])["norm"][0].mean(0)
    windows = windows_of(clip, SR // 4, SR // 10)
    expected_ts = reference_layers(reference_model, windows)["norm"].mean(1)  # equal-length windows: one batch
    (result,) = model.embed([clip], SR)
    assert rel_err(result.scene, expected_scene) < TOLERANCE
    assert result.timestamp.shape == expected_ts.shape
    # the reference floors dB at the batch's maximum, embedzoo at each window's: compare window by window
    per_window = torch.stack([reference_layers(reference_model, w[None])["norm"][0].mean(0) for w in windows])
    assert rel_err(result.timestamp, per_window) < TOLERANCE


def test_frame_mode_reads_the_token_grid(repo) -> None:
    """Default knobs (frame mode, 40 ms): frame j of a clip is token j, read from chunks of
    max_window (3 reference chunks) that start at the clip's start, each as the reference computes it."""
    reference_model, _ = repo
    card = get_registry().get(TWIN)
    assert (card.frame_hop, card.frame_field, card.layer("norm").frame_offset) == (640, 480, 240)
    model = load(repo)
    clip = noise(int(2.9 * SR), seed=8)[0]
    frames = 1 + (len(clip) - 240) // 640
    per_chunk = (card.max_window - 480) // 640 + 1
    padded = np.pad(clip, (0, card.max_window))
    expected = []
    for start in range(0, frames, per_chunk):
        count = min(per_chunk, frames - start)
        chunk = padded[start * 640 : start * 640 + (count - 1) * 640 + 480]
        expected.append(reference_layers(reference_model, chunk[None])["norm"][0, :count])
    expected = torch.cat(expected)
    (result,) = model.embed([clip], SR, scene=False)
    assert result.timestamp.shape == expected.shape
    assert rel_err(result.timestamp, expected) < TOLERANCE
    # the core stamps frame j at j * 40 ms (token j's four mel frames are centred on 640 j .. 640 j + 480)
    assert torch.allclose(result.timestamps.double(), 40 * torch.arange(frames, dtype=torch.float64))


def test_frame_mode_of_whole_tokens_is_the_reference_output(repo) -> None:
    """A clip of (n - 1) * 640 + 480 samples (whole tokens), up to max_window: frame mode forwards it
    as it is, so its frames are the reference's output on the clip -- its internal chunking included
    (25 tokens: two whole 10-token chunks and a partial one) -- and the scene their mean."""
    reference_model, _ = repo
    model = load(repo)
    clip = noise(24 * 640 + 480, seed=9)[0]
    expected = reference_layers(reference_model, clip[None])["norm"][0]
    (result,) = model.embed([clip], SR)
    assert expected.shape[0] == 25 and rel_err(result.timestamp, expected) < TOLERANCE
    assert rel_err(result.scene, expected.mean(0)) < TOLERANCE


def test_batches_equal_each_clip_alone(repo) -> None:
    model = load(repo, preset="window", window_ms=250, hop_ms=100)
    clips = [noise(n, seed=n)[0] for n in (5000, 12000, 20000)]
    together = model.embed(clips, SR)
    for clip, result in zip(clips, together):
        (alone,) = model.embed([clip], SR)
        assert rel_err(result.scene, alone.scene) < TOLERANCE and rel_err(result.timestamp, alone.timestamp) < TOLERANCE


# ---- the one full-size check --------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_every_layer(tmp_path: Path) -> None:
    """The one full-size check: dasheng-base's architecture (768 x 12, 252-token chunks), random
    weights in the Zenodo layout, a 12 s clip (a whole reference chunk and a partial one)."""
    embed_dim, depth, heads = SIZES["dasheng-base"]
    reference_model = reference(embed_dim, depth, heads, seed=11)
    path = zenodo_file(reference_model, {"embed_dim": embed_dim, "depth": depth, "num_heads": heads}, tmp_path / "dasheng_base.pt")
    model = embedzoo.load(CARDS[0], weights=str(path), device="cpu")
    clips = noise(12 * SR, seed=12)
    expected = reference_layers(reference_model, clips)
    del reference_model
    got = ours(model, clips)
    assert got["norm"].shape == (1, 300, 768)
    for name, value in got.items():
        assert rel_err(value, expected[name]) < TOLERANCE, name


# ---- conversion ---------------------------------------------------------------------------------


def test_zenodo_and_hub_convert_to_the_same_tensors(repo, tmp_path: Path) -> None:
    reference_model, path = repo
    model = create_model(get_registry().get(TWIN))
    zenodo = checkpoint_filter_fn(torch.load(path, weights_only=True), model)
    hub = checkpoint_filter_fn(hub_state(reference_model), model)
    assert set(zenodo) == set(hub) == set(model.state_dict())
    assert all(torch.equal(zenodo[k], hub[k]) for k in zenodo)
    # lossless: every reference tensor but the two recomputed front-end buffers lands unchanged
    state = reference_model.state_dict()
    assert len(state) - 2 == len(zenodo)
    assert torch.equal(zenodo["patch_embed.weight"], state["patch_embed.proj.weight"])
    assert torch.equal(zenodo["init_bn.running_var"], state["init_bn.1.running_var"])
    # a Hub safetensors file through embedzoo.load gives the Zenodo file's numbers
    save_file(hub_state(reference_model), str(tmp_path / "model.safetensors"))
    clip = noise(9000, seed=2)
    a = ours(embedzoo.load(TWIN, weights=str(tmp_path / "model.safetensors"), device="cpu"), clip, ["norm"])["norm"]
    b = ours(load(repo), clip, ["norm"])["norm"]
    assert torch.equal(a, b)
    # CED-style Hub names (init_bn.1. -> init_bn.) are accepted too
    renamed = {k.replace("init_bn.1.", "init_bn."): v for k, v in hub_state(reference_model).items()}
    assert all(torch.equal(checkpoint_filter_fn(renamed, model)[k], hub[k]) for k in hub)


def test_conversion_names_what_does_not_fit(repo) -> None:
    reference_model, path = repo
    model = create_model(get_registry().get(TWIN))
    hub = hub_state(reference_model)
    with pytest.raises(WeightsError, match="surprise"):
        checkpoint_filter_fn({**hub, "encoder.surprise": torch.zeros(1)}, model)
    with pytest.raises(WeightsError, match=re.escape("blocks.1.attn.qkv.bias")):
        checkpoint_filter_fn({k: v for k, v in hub.items() if k != "encoder.blocks.1.attn.qkv.bias"}, model)
    with pytest.raises(WeightsError, match="init_bn.1.running_mean"):
        checkpoint_filter_fn({k: v for k, v in hub.items() if "running_mean" not in k}, model)
    with pytest.raises(WeightsError, match="time_pos_embed.*shape"):
        checkpoint_filter_fn({**hub, "encoder.time_pos_embed": torch.zeros(1, 32, 1, 252)}, model)
    dump = torch.load(path, weights_only=True)
    with pytest.raises(WeightsError, match="depth = 12"):
        checkpoint_filter_fn({**dump, "config": {**dump["config"], "depth": 12}}, model)
    with pytest.raises(WeightsError, match="n_mels = 128"):
        checkpoint_filter_fn({**dump, "config": {**dump["config"], "n_mels": 128}}, model)
    bad = dict(dump["model"])
    bad["front_end.0.mel_scale.fb"] = bad["front_end.0.mel_scale.fb"] * 1.01
    with pytest.raises(WeightsError, match="front_end.0.mel_scale.fb"):
        checkpoint_filter_fn({"model": bad, "config": dump["config"]}, model)


def test_repo_files_that_disagree_are_refused() -> None:
    card = get_registry().get(TWIN)
    check_repo_files(card, {"config.json": {"embed_dim": 32, "depth": 2, "architectures": ["DashengModel"]}})
    check_repo_files(card, {})
    with pytest.raises(WeightsError, match="config.json .* says depth = 12"):
        check_repo_files(card, {"config.json": {"embed_dim": 32, "depth": 12}})
    with pytest.raises(WeightsError, match="config.json .* says n_mels = 128"):
        check_repo_files(card, {"config.json": {"n_mels": 128}})


# ---- registration, geometry, odd input --------------------------------------------------------------


def test_plugin_registers_the_family_torch_free() -> None:
    assert_torch_free_import("embedzoo_dasheng", "embedzoo_dasheng.geometry")
    assert_registers("dasheng", ["dasheng"])


def test_twin_matches_its_geometry() -> None:
    check_family(get_registry().get(TWIN))


def test_real_cards_geometry() -> None:
    for card_id, (dim, depth, heads) in SIZES.items():
        card = get_registry().get(card_id)
        assert card.layer("norm").width == dim and len(card.hidden_states) == depth + 1
        assert card.max_window == 6 * 1008 * 160 and card.min_window == 480 and card.frame_hop == 640
        assert dict(card.config)["num_heads"] == heads
    assert get_registry().get("dasheng").id == "dasheng-base"


def test_silence_and_short_clips(repo) -> None:
    model = load(repo)
    for name, value in ours(model, np.zeros((1, 5000), np.float32)).items():
        assert torch.isfinite(value).all(), name
    (result,) = model.embed([noise(200)[0]], SR)  # 12.5 ms: padded to min_window by the core
    assert torch.isfinite(result.scene).all() and torch.isfinite(result.timestamp).all()
    with pytest.raises(ValueError, match="no token"):
        model.forward_layers(torch.zeros(1, 300), ["norm"])
    with pytest.raises(ConfigError, match="at most"):
        model.forward_layers(torch.zeros(1, model.card.max_window + 640), ["norm"])
    with pytest.raises(ConfigError, match="exceeds the longest input"):
        resolve_knobs(model.card, {"mode": "window", "window_ms": 2000})
