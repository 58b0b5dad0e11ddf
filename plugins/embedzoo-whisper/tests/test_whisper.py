"""embedzoo-whisper against transformers 5 (WhisperFeatureExtractor + WhisperForConditionalGeneration's
encoder, output_hidden_states=True: the reference pipeline).

- parity: a whole WhisperForConditionalGeneration with random weights (LayerNorms and biases too),
  saved with save_pretrained as a Hub repo (model.safetensors, config.json, preprocessor_config.json)
  and loaded with `embedzoo.load(id, weights=folder)` -- the conversion drops the decoder -- gives
  every layer (embed, block1..blockN, norm) within 1e-5 in float32, with both paddings, at 80 and
  128 mel bins; scene and timestamp embeddings in window mode (each window one 30 s reference
  forward, `trim` and `reference`), frame mode over one and several chunks, long clips windowed;
- the frontend equals WhisperFeatureExtractor; short, silent and too-long inputs;
- conversion: lossless from WhisperForConditionalGeneration / WhisperModel / WhisperEncoder keys
  and from a pickled repo; stray, missing and mis-shaped keys named; check_repo_files refuses a
  disagreeing config.json / preprocessor_config.json naming the key;
- registration torch-free, the twins' conformance (check_family), and one full-size check
  (the whisper-tiny encoder, one 30 s forward on each side).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from whisper_testutil import (  # noqa: F401  (whisper_catalog is a fixture)
    HOP,
    SR,
    TINY,
    TOLERANCE,
    TWINS,
    feature_extractor,
    reference_embedding,
    reference_frames,
    reference_hidden,
    reference_model,
    reference_windows,
    save_repo,
    whisper_catalog,
)

import embedzoo
from embedzoo.errors import ConfigError, WeightsError
from embedzoo.frontends import WhisperLogMel
from embedzoo.knobs import resolve_knobs
from embedzoo.registry import get_registry
from embedzoo.testing import assert_registers, assert_torch_free_import, check_family, rel_err
from embedzoo_whisper.model import check_repo_files, checkpoint_filter_fn, create_model

pytestmark = pytest.mark.usefixtures("whisper_catalog")
TWIN = "whisper-test-80"


@pytest.fixture(scope="module")
def repos(whisper_catalog, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """card id -> (reference model, its Hub-layout folder), one random model per twin."""
    out = {}
    for seed, (card_id, config) in enumerate(TWINS.items()):
        reference = reference_model(config, seed=seed)
        out[card_id] = reference, save_repo(reference, tmp_path_factory.mktemp(card_id))
    return out


def noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def layer_names(card_id: str) -> list[str]:
    return [spec.name for spec in get_registry().get(card_id).layers]


# ---- every layer ------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["trim", "reference"])
@pytest.mark.parametrize("card_id,samples", [("whisper-test-80", 14450), ("whisper-test-128", 22000)])
def test_every_layer_matches_transformers(repos, card_id: str, samples: int, padding: str) -> None:
    """14450 = 45 x 320 + 50 samples: trim keeps 46 tokens (centred on 0 .. 14400); 22000: 69."""
    reference, folder = repos[card_id]
    model = embedzoo.load(card_id, weights=folder, device="cpu")
    audio = noise(2, samples, seed=samples)
    hidden, last = reference_hidden(reference, list(audio.numpy()))
    assert len(hidden) == 3 and torch.equal(hidden[-1], last)  # transformers: hidden_states[N] is after the final LayerNorm
    keep = 1500 if padding == "reference" else math.ceil(samples / HOP)
    expected = {"embed": hidden[0], "block1": hidden[1], "block2": hidden[2], "norm": last}
    assert list(expected) == layer_names(card_id)
    with torch.inference_mode():
        outputs = model.forward_layers(audio, list(expected), padding=padding)
        (block1,) = model.forward_layers(audio, ["block1"], padding=padding)  # stops after block1
    for (name, ref), ours in zip(expected.items(), outputs):
        assert rel_err(ours, ref[:, :keep]) < TOLERANCE, name
    assert rel_err(block1, outputs[1]) < TOLERANCE  # block1 last: on the kept rows only
    assert model.card.hidden_states == ("embed", "block1", "block2")



def test_the_last_block_runs_on_the_kept_tokens_only(repos) -> None:
    """Trimmed, the last block computed spends its query and output projections and its MLP on the
    kept tokens only (the reference computes all 1500 and cuts): its linear layers' FLOPs (torch's
    counter: aten.mm / addmm) fall by exactly those rows' share against `reference` padding."""
    from torch.utils.flop_counter import FlopCounterMode

    reference, folder = repos["whisper-test-80"]
    model = embedzoo.load("whisper-test-80", weights=folder, device="cpu")
    audio = noise(1, 14450, seed=1)

    def linear_flops(padding: str, layers: list[str]) -> int:
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            model.forward_layers(audio, layers, padding=padding)
        counts = counter.get_flop_counts()["Global"]
        return sum(flops for op, flops in counts.items() if op in (torch.ops.aten.mm, torch.ops.aten.addmm))

    d, ffn = (model.encoder.config.d_model, model.encoder.config.encoder_ffn_dim)
    dropped = 1500 - math.ceil(14450 / HOP)
    saved = 2 * dropped * (2 * d * d + 2 * d * ffn)  # q and out projections, fc1 and fc2: 2 flops a MAC
    for layers in (["norm"], ["block1"], ["block1", "block2"]):
        assert linear_flops("reference", layers) - linear_flops("trim", layers) == saved, layers


# ---- window mode ------------------------------------------------------------------------------


def test_window_mode_scene_and_timestamps(repos) -> None:
    """Preset `window`: scene = one forward of the whole clip (<= 30 s), the mean of its trimmed
    last hidden state; timestamps = 1 s windows every 250 ms, each one 30 s reference forward."""
    reference, folder = repos[TWIN]
    model = embedzoo.load(TWIN, weights=folder, device="cpu", preset="window")
    clips = [noise(int(1.3 * SR), seed=1).numpy(), noise(int(0.45 * SR), seed=2).numpy()]
    results = model.embed(clips, SR)
    for clip, result in zip(clips, results):
        assert rel_err(result.scene, reference_embedding(reference, clip)) < TOLERANCE
        expected = reference_windows(reference, clip, window=SR, hop=SR // 4)
        assert rel_err(result.timestamp, expected) < TOLERANCE
        assert torch.allclose(result.timestamps.double(), torch.arange(len(expected), dtype=torch.float64) * 250.0)


def test_reference_padding_reads_all_1500_frames(repos) -> None:
    reference, folder = repos["whisper-test-128"]
    model = embedzoo.load("whisper-test-128", weights=folder, device="cpu", preset="reference")
    clip = noise(int(0.7 * SR), seed=3)
    scene = model.scene_embeddings(clip[None], SR)
    assert rel_err(scene[0], reference_embedding(reference, clip.numpy(), padding="reference")) < TOLERANCE
    trimmed = model.with_knobs({"padding": "trim"}).scene_embeddings(clip[None], SR)
    assert rel_err(trimmed[0], reference_embedding(reference, clip.numpy())) < TOLERANCE
    assert rel_err(trimmed, scene) > 1e-3  # the padding's frames do count


def test_long_clip_scene_is_the_mean_of_30s_windows(repos) -> None:
    """31 s: scene windows of 30 s every 15 s over the zero-padded clip (the core's), each a full input."""
    reference, folder = repos[TWIN]
    model = embedzoo.load(TWIN, weights=folder, device="cpu", preset="window")
    clip = noise(31 * SR, seed=4).numpy()
    (result,) = model.embed([clip], SR, timestamp=False)
    window, hop = 30 * SR, 15 * SR
    padded = np.pad(clip, (window // 2, window // 2))
    starts = range(0, len(padded) - window + 1, hop)
    expected = torch.stack([reference_embedding(reference, padded[s : s + window]) for s in starts]).mean(dim=0)
    assert len(starts) == 3 and rel_err(result.scene, expected) < TOLERANCE


# ---- frame mode -------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_seconds", [32.0, 1.0])
def test_frame_mode_every_layer(repos, batch_seconds: float) -> None:
    """The defaults (frame mode, every 20 ms), all layers: chunks of 30 s (the geometry's
    frame_chunk) whatever batch_seconds -- each padded to 30 s by the model, tokens 2.. kept."""
    reference, folder = repos[TWIN]
    names = layer_names(TWIN)
    model = embedzoo.load(TWIN, weights=folder, device="cpu", layers=names, batch_seconds=batch_seconds)
    clip = noise(int(2.1 * SR), seed=5).numpy()
    (result,) = model.embed([clip], SR)
    chunk_frames = 1497  # batch_seconds changes batching only, never the chunks
    expected = torch.cat(reference_frames(reference, clip, chunk_frames), dim=-1)  # embed, block1, block2 (= norm), norm
    assert result.timestamp.shape == (1 + len(clip) // HOP, 4 * 64)
    assert rel_err(result.timestamp, expected) < TOLERANCE
    assert rel_err(result.scene, expected.mean(dim=0)) < TOLERANCE
    assert torch.allclose(result.timestamps.double(), torch.arange(len(expected), dtype=torch.float64) * 20.0)
    if batch_seconds < 30:  # the untrimmed output holds the same frames: frame mode reads them alike
        (untrimmed,) = model.with_knobs({"padding": "reference"}).embed([clip], SR)
        assert torch.equal(untrimmed.timestamp, result.timestamp)


def test_hear_preset_reads_the_nearest_frame(repos) -> None:
    _, folder = repos[TWIN]
    clip = noise(int(1.0 * SR), seed=6)
    frames = embedzoo.load(TWIN, weights=folder, device="cpu").timestamp_embeddings(clip[None], SR)[0][0]
    ts, times = embedzoo.load(TWIN, weights=folder, device="cpu", preset="hear").timestamp_embeddings(clip[None], SR)
    assert ts.shape == (1, 21, 64) and float(times[0, 1]) == pytest.approx(50.0)
    nearest = np.rint(np.arange(21) * 50 / 20).astype(int)
    assert torch.equal(ts[0], frames[nearest])


# ---- frontend and bad input -------------------------------------------------------------------


@pytest.mark.parametrize("n_mels", [80, 128])
def test_frontend_is_the_feature_extractor(n_mels: int) -> None:
    """WhisperLogMel(pad_to=480000) = WhisperFeatureExtractor per clip: noise, a loud tone, silence, 1 sample."""
    ours = WhisperLogMel(n_mels, pad_to=480000)
    t = np.arange(SR) / SR
    clips = [noise(23456, seed=7).numpy(), np.sin(2 * np.pi * 440 * t).astype(np.float32), np.zeros(8000, np.float32), np.ones(1, np.float32)]
    theirs = feature_extractor(n_mels)(clips, sampling_rate=SR, return_tensors="pt").input_features
    for clip, ref in zip(clips, theirs):
        with torch.no_grad():
            mel = ours(torch.from_numpy(clip)[None])[0]
        assert mel.shape == (n_mels, 3000) and rel_err(mel, ref) < TOLERANCE


def test_short_and_silent_clips(repos) -> None:
    """Any length >= 1 sample is padded to 30 s by the model itself (no core padding: min_window 1),
    as the reference pads it: one frame for up to 320 samples; silence gives finite embeddings."""
    reference, folder = repos[TWIN]
    model = embedzoo.load(TWIN, weights=folder, device="cpu", preset="window")
    assert model.card.min_window == 1
    for clip in (noise(1, seed=8).numpy(), noise(100, seed=9).numpy(), np.zeros(5000, np.float32)):
        (result,) = model.embed([clip], SR)
        assert torch.isfinite(result.scene).all() and torch.isfinite(result.timestamp).all()
        assert rel_err(result.scene, reference_embedding(reference, clip)) < TOLERANCE
    with torch.inference_mode():
        (norm,) = model.forward_layers(torch.zeros(1, 100), ["norm"])
    assert norm.shape == (1, 1, 64)


def test_more_than_30s_per_forward_is_refused(repos) -> None:
    model = create_model(get_registry().get(TWIN)).eval()
    with pytest.raises(ConfigError, match="at most 480000 samples"), torch.inference_mode():
        model.forward_layers(torch.zeros(1, 480001), ["embed"])
    with pytest.raises(ConfigError, match="no padding"), torch.inference_mode():
        model.forward_layers(torch.zeros(1, 1000), ["embed"], padding="crop")
    with pytest.raises(ConfigError, match="no padding"):
        resolve_knobs(get_registry().get(TWIN), {"padding": "crop"})
    assert resolve_knobs(get_registry().get(TWIN)).padding == "trim"


# ---- conversion -------------------------------------------------------------------------------


def _encoder_state(reference) -> dict[str, torch.Tensor]:
    return {f"encoder.{k}": v for k, v in reference.model.encoder.state_dict().items()}


def test_conversion_is_lossless(repos) -> None:
    """WhisperForConditionalGeneration (proj_out included, as pickled repos hold it), WhisperModel
    and a bare WhisperEncoder's keys: the encoder's tensors, all of them, unchanged."""
    reference, _ = repos[TWIN]
    model = create_model(get_registry().get(TWIN))
    full = reference.state_dict()
    assert "proj_out.weight" in full and any(k.startswith("model.decoder.") for k in full)
    want = _encoder_state(reference)
    assert set(want) == set(model.state_dict())
    for original in (full, reference.model.state_dict(), reference.model.encoder.state_dict()):
        state = checkpoint_filter_fn(original, model)
        assert set(state) == set(want) and all(torch.equal(state[k], want[k]) for k in want)


def test_pickled_repo_converts_alike(repos, tmp_path: Path) -> None:
    """The older repos' pytorch_model.bin (the card's second source) gives the same model."""
    reference, folder = repos[TWIN]
    pickled = save_repo(reference, tmp_path / "repo", safe=False)
    assert not (pickled / "model.safetensors").exists()
    audio = noise(1, 5000, seed=10)
    with torch.inference_mode():
        a = embedzoo.load(TWIN, weights=pickled, device="cpu").forward_layers(audio, ["norm"])[0]
        b = embedzoo.load(TWIN, weights=folder, device="cpu").forward_layers(audio, ["norm"])[0]
    assert torch.equal(a, b)


def test_conversion_names_what_does_not_fit(repos) -> None:
    reference, _ = repos[TWIN]
    model = create_model(get_registry().get(TWIN))
    full = reference.state_dict()
    with pytest.raises(WeightsError, match="model.encoder.surprise"):
        checkpoint_filter_fn({**full, "model.encoder.surprise": torch.zeros(1)}, model)
    with pytest.raises(WeightsError, match="classifier.weight"):  # e.g. WhisperForAudioClassification's head
        checkpoint_filter_fn({**full, "classifier.weight": torch.zeros(2, 64)}, model)
    with pytest.raises(WeightsError, match="model.encoder.layer_norm.bias"):
        checkpoint_filter_fn({k: v for k, v in full.items() if k != "model.encoder.layer_norm.bias"}, model)
    other, _ = repos["whisper-test-128"]  # 128 mel bins into an 80-bin card
    with pytest.raises(WeightsError, match="conv1.weight"):
        checkpoint_filter_fn(other.state_dict(), model)


def test_check_repo_files_refuses_a_disagreeing_repo(repos, tmp_path: Path) -> None:
    _, folder = repos[TWIN]
    card = get_registry().get(TWIN)
    files = {name: json.loads((folder / name).read_text()) for name in ("config.json", "preprocessor_config.json")}
    check_repo_files(card, files)  # save_pretrained's own files agree
    cases = [
        ("config.json", "encoder_layers", 3),
        ("config.json", "d_model", 128),
        ("config.json", "num_mel_bins", 128),
        ("config.json", "model_type", "wav2vec2"),
        ("config.json", "activation_function", "relu"),
        ("preprocessor_config.json", "feature_size", 128),
        ("preprocessor_config.json", "hop_length", 320),
        ("preprocessor_config.json", "do_normalize", True),
    ]
    for name, key, value in cases:
        bad = {**files, name: {**files[name], key: value}}
        with pytest.raises(WeightsError, match=f"{name} .*{key}="):
            check_repo_files(card, bad)
    # through embedzoo.load of a Hub-layout folder, as a pull would check it
    copy = tmp_path / "repo"
    shutil.copytree(folder, copy)
    (copy / "config.json").write_text(json.dumps({**files["config.json"], "encoder_layers": 3}))
    with pytest.raises(WeightsError, match="encoder_layers"):
        embedzoo.load(TWIN, weights=copy, device="cpu")


# ---- registration, conformance ----------------------------------------------------------------


def test_plugin_registers_the_family_torch_free() -> None:
    assert_torch_free_import("embedzoo_whisper", "embedzoo_whisper.geometry")
    assert_registers("whisper", ["whisper"])
    registry = get_registry()
    ids = [f"whisper-{s}{e}" for s in ("tiny", "base", "small", "medium") for e in ("", ".en")] + ["whisper-large-v2", "whisper-large-v3"]
    for card_id in ids:
        card = registry.get(card_id)
        assert card.complete and card.max_window == 480000 and card.frame_hop == 320 and card.paddings == ("trim", "reference")
        assert [s.repo for s in card.sources] == [f"openai/{card_id}"] * 2
        assert [s.filename for s in card.sources] == ["model.safetensors", "pytorch_model.bin"]
    assert registry.get("whisper-large-v3").config["num_mel_bins"] == 128
    assert registry.get("whisper-large-v2").config["num_mel_bins"] == 80
    assert registry.get("whisper-tiny").config == TINY


@pytest.mark.parametrize("card_id", list(TWINS))
def test_twins_conform_to_their_geometry(card_id: str) -> None:
    check_family(get_registry().get(card_id))


# ---- the one full-size check ------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_whisper_tiny(tmp_path: Path) -> None:
    """whisper-tiny's encoder (4 x 384, its card) against transformers: every layer, one 30 s
    forward on each side (a 30 s clip: trim keeps all 1500 frames)."""
    reference = reference_model(TINY, seed=3)
    folder = save_repo(reference, tmp_path / "whisper-tiny")
    model = embedzoo.load("whisper-tiny", weights=folder, device="cpu")
    audio = noise(1, 30 * SR, seed=11)
    hidden, last = reference_hidden(reference, list(audio.numpy()))
    with torch.inference_mode():
        outputs = model.forward_layers(audio, layer_names("whisper-tiny"))
    for name, ours, ref in zip(layer_names("whisper-tiny"), outputs, [*hidden, last]):
        assert ours.shape == (1, 1500, 384) and rel_err(ours, ref) < TOLERANCE, name
