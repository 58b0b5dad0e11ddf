"""embedzoo-ast against transformers 5.24 (ASTFeatureExtractor + ASTForAudioClassification, the reference).

- parity: transformers' AST with random weights (every parameter randomised: tokens, positional
  table, LayerNorms, biases), written with save_pretrained as a Hub repo folder, converted by
  `checkpoint_filter_fn` through `embedzoo.load(..., weights=FOLDER)` (config.json and
  preprocessor_config.json checked against the card), gives every layer -- the fbank, hidden_states[0..N],
  last_hidden_state, pooler_output, logits -- within 1e-5 relative error (float32), on small twins of
  every stride and of the Speech Commands card, for clips shorter than one patch up to max_window;
  scene and timestamp embeddings (window mode) and frame mode against the same windows and chunks
  run through the reference; padding "crop" against transformers' own model with the positional
  table cut as the original AST code cuts it; one full-size check;
- conversion: lossless from the Hub layout, transformers 5's module names, wrapped files and the
  authors' original checkpoints; stray, missing and mis-shaped keys named;
- check_repo_files: a config.json or preprocessor_config.json that disagrees with the card is refused,
  naming the key;
- registration torch-free; the geometry refuses what it cannot do; silence and very short clips.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ast_small import (  # noqa: F401  (ast_catalog is a fixture)
    CARDS,
    SR,
    TOKENS,
    TOLERANCE,
    ast_catalog,
    noise,
    one_thread,
    reference,
    reference_layers,
    save_repo,
    small_id,
)
from safetensors.torch import load_file

import embedzoo
from embedzoo.errors import ConfigError, WeightsError
from embedzoo.knobs import resolve_knobs
from embedzoo.registry import get_registry
from embedzoo.testing import assert_registers, assert_torch_free_import, check_family, rel_err
from embedzoo_ast.model import check_repo_files, checkpoint_filter_fn, create_model

pytestmark = [pytest.mark.usefixtures("ast_catalog", "one_thread")]

# one twin per stride, and the Speech Commands card (its own mean and std)
TWINS = ("ast-audioset-10-10-0.4593", "ast-audioset-12-12-0.447", "ast-audioset-16-16-0.442", "ast-speech-commands-v2")


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Any, Path]]:
    """card id -> (feature extractor, reference model, its save_pretrained folder), built on first use."""
    cache: dict[str, tuple[Any, Any, Path]] = {}

    class Repos(dict):
        def __missing__(self, card_id: str) -> tuple[Any, Any, Path]:
            extractor, model = reference(card_id, seed=len(cache) + 1)
            folder = save_repo(extractor, model, tmp_path_factory.mktemp(card_id))
            cache[card_id] = self[card_id] = (extractor, model, folder)
            return self[card_id]

    return Repos()


def load(repos, card_id: str, **knobs: Any) -> embedzoo.Extractor:
    """The card's small twin with the reference's weights, through weights=FOLDER (a Hub repo layout)."""
    folder = repos[small_id(card_id)][2]
    return embedzoo.load(small_id(card_id), weights=str(folder), device="cpu", **knobs)


def ours(model, clips: np.ndarray, layers: list[str] | None = None, padding: str = "reference") -> dict[str, torch.Tensor]:
    names = layers or [spec.name for spec in model.card.layers]
    with torch.inference_mode():
        outputs = model.forward_layers(torch.from_numpy(clips), names, padding=padding)
    return dict(zip(names, outputs))


# ---- every layer --------------------------------------------------------------------------------


@pytest.mark.parametrize("card_id", TWINS)
@pytest.mark.parametrize("samples", [1000, 8000, "max"])  # under one patch (4 frames), 0.5 s, max_length frames
def test_every_layer_matches_transformers(repos, card_id: str, samples) -> None:
    extractor, reference_model, _ = repos[small_id(card_id)]
    model = load(repos, card_id)
    samples = model.card.max_window if samples == "max" else samples
    clips = noise(samples, rows=2, seed=3)
    expected = reference_layers(extractor, reference_model, clips)
    got = ours(model, clips)
    assert list(got) == list(expected)
    for name, value in got.items():
        assert rel_err(value, expected[name]) < TOLERANCE, name
    # hidden_states as transformers orders them: `layers="all"`
    assert model.card.hidden_states == ("patch", "block1", "block2")
    # early stop: one block alone is the same block; each layer alone, its last block on the rows read
    for name in ("block1", "block2", "norm", "features", "logits"):
        assert rel_err(ours(model, clips, [name])[name], expected[name]) < TOLERANCE, name


def test_the_last_block_runs_on_the_rows_read(repos) -> None:
    """With "reference" padding a 0.5 s input reads 2 tokens + its columns of the 1024-frame
    sequence, and a scene's `features` the 2 tokens: the last block's query and output projections
    and MLP (aten.mm / addmm FLOPs, the fbank's mel matmul taken out) run on those rows only, where
    a full-length input's map (or `norm` beside the heads) needs all of them."""
    from torch.utils.flop_counter import FlopCounterMode

    model = load(repos, TWINS[0])
    cfg = model.model.config
    d, ffn = cfg.hidden_size, cfg.intermediate_size
    bands, positions = model.grid
    clips = noise(8000, rows=1, seed=5)

    def linear_flops(layers: list[str], clip: np.ndarray) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            ours(model, clip, layers)
        counts = counter.get_flop_counts()["Global"]
        return sum(flops for op, flops in counts.items() if op in (torch.ops.aten.mm, torch.ops.aten.addmm))

    full = noise(model.card.max_window, rows=1, seed=5)  # every column read: all rows for a map
    cols = ours(model, clips, ["block2"])["block2"].shape[1] - TOKENS
    dropped = TOKENS + bands * positions - (TOKENS + bands * cols)
    network = {clip.shape[1]: linear_flops(["block2"], clip) - linear_flops(["fbank"], clip) for clip in (full, clips)}
    assert network[full.shape[1]] - network[clips.shape[1]] == 2 * dropped * (2 * d * d + 2 * d * ffn)  # 2 flops a MAC
    for head in ("features", "logits"):  # the tokens only, where no map of the last block is read
        dropped = bands * positions
        assert linear_flops([head, "norm"], full) - linear_flops([head], full) == 2 * dropped * (2 * d * d + 2 * d * ffn), head


def test_last_block_is_before_the_final_norm(repos) -> None:
    """hidden_states[-1] is the last layer's output, not last_hidden_state (capture_outputs with
    tie_last_hidden_states=False): `block2` and `norm` differ by the final LayerNorm."""
    model = load(repos, TWINS[0])
    got = ours(model, noise(6000, seed=4), ["block2", "norm"])
    normed = model.model.audio_spectrogram_transformer.layernorm
    assert not torch.allclose(got["block2"], got["norm"])
    with torch.inference_mode():
        assert rel_err(got["norm"][:, :TOKENS], normed(got["block2"][:, :TOKENS])) < TOLERANCE


# ---- padding "crop" ------------------------------------------------------------------------------


def cropped_reference(extractor: Any, model: Any, frames: int) -> tuple[Any, Any]:
    """transformers' own AST for inputs of `frames` fbank frames: max_length = frames and the time
    positions cut from the middle of the table, start T // 2 - columns // 2 (the original
    ast_models.py: `50 - int(t_dim / 2)` for the 101-column AudioSet table); the same weights."""
    from transformers import ASTFeatureExtractor, ASTForAudioClassification

    config = model.config.__class__(**{**model.config.to_dict(), "max_length": frames})
    cropped = ASTForAudioClassification(config).eval()
    state = model.state_dict()
    table = state["audio_spectrogram_transformer.embeddings.position_embeddings"]
    bands = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    positions = (table.shape[1] - TOKENS) // bands
    columns = (frames - config.patch_size) // config.time_stride + 1
    start = positions // 2 - columns // 2
    grid = table[:, TOKENS:].reshape(1, bands, positions, -1)[:, :, start : start + columns]
    state["audio_spectrogram_transformer.embeddings.position_embeddings"] = torch.cat((table[:, :TOKENS], grid.flatten(1, 2)), dim=1)
    cropped.load_state_dict(state)
    features = ASTFeatureExtractor(num_mel_bins=extractor.num_mel_bins, max_length=frames, mean=extractor.mean, std=extractor.std)
    return features, cropped


@pytest.mark.parametrize("card_id", TWINS[:3])
@pytest.mark.parametrize("samples", [1000, 6000, 11111])
def test_crop_padding_matches_a_cropped_reference(repos, card_id: str, samples: int) -> None:
    extractor, reference_model, _ = repos[small_id(card_id)]
    model = load(repos, card_id, padding="crop")
    config = reference_model.config
    frames = 1 + (samples - 400) // 160
    columns = max(1, (frames - config.patch_size) // config.time_stride + 1)
    used = (columns - 1) * config.time_stride + config.patch_size  # whole patches only (under one: padded to one)
    clips = noise(samples, rows=2, seed=5)
    expected = reference_layers(*cropped_reference(extractor, reference_model, used), clips)
    expected["fbank"] = reference_layers(extractor, reference_model, clips)["fbank"]  # the clip's own frames
    got = ours(model, clips, padding="crop")
    for name, value in got.items():
        assert rel_err(value, expected[name]) < TOLERANCE, name


def test_crop_equals_reference_on_full_inputs(repos) -> None:
    """At max_window both paddings run the same network on the same frames."""
    model = load(repos, TWINS[0])
    clips = noise(model.card.max_window, seed=6)
    full, cropped = ours(model, clips), ours(model, clips, padding="crop")
    for name in full:
        assert rel_err(cropped[name], full[name]) < TOLERANCE, name
    short = noise(5000, seed=6)
    assert not torch.allclose(ours(model, short, ["features"])["features"], ours(model, short, ["features"], "crop")["features"])


# ---- scene and timestamp embeddings -------------------------------------------------------------


def reference_features(extractor: Any, model: Any, windows: np.ndarray) -> torch.Tensor:
    return reference_layers(extractor, model, windows)["features"]


def windows_of(clip: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Windows centred every `hop`, over the clip zero-padded by window // 2 at both ends (HEAR's cut)."""
    padded = np.pad(clip, (window // 2, window // 2))
    count = (len(padded) - window) // hop + 1
    return np.stack([padded[k * hop : k * hop + window] for k in range(count)])


@pytest.mark.parametrize("seconds", [0.8, 2.2])  # within one scene window; longer (windows of max_window)
def test_scene_and_timestamp_embeddings(repos, seconds: float) -> None:
    extractor, reference_model, _ = repos[small_id(TWINS[0])]
    model = load(repos, TWINS[0], hop_ms=250)  # the defaults (features, 1 s windows), fewer windows
    clip = noise(int(seconds * SR), seed=7)[0]
    card = model.card
    if len(clip) <= card.max_window:  # forwarded whole: transformers' pooler_output of the clip
        expected_scene = reference_features(extractor, reference_model, clip[None])[0]
    else:  # windows of max_window every half of it, the mean
        expected_scene = reference_features(extractor, reference_model, windows_of(clip, card.max_window, card.max_window // 2)).mean(0)
    expected_ts = reference_features(extractor, reference_model, windows_of(clip, SR, SR // 4))
    (result,) = model.embed([clip], SR)
    assert rel_err(result.scene, expected_scene) < TOLERANCE
    assert result.timestamp.shape == expected_ts.shape
    assert rel_err(result.timestamp, expected_ts) < TOLERANCE
    assert torch.allclose(result.timestamps.double(), torch.arange(len(expected_ts), dtype=torch.float64) * 250)


@pytest.mark.parametrize("card_id", [TWINS[0], TWINS[2]])
def test_frame_mode_reads_patch_columns(repos, card_id: str) -> None:
    """Preset `frames` (the last block, frame mode) at the column hop: the clip padded by half a
    field, cut in chunks of whole columns (each padded to max_length frames by the reference), each
    chunk's columns as transformers computes them."""
    extractor, reference_model, _ = repos[small_id(card_id)]
    card = get_registry().get(small_id(card_id))
    hop, field = card.frame_hop, card.frame_field
    model = load(repos, card_id, preset="frames", hop_ms=card.samples_to_ms(hop))
    clip = noise(int(2.5 * SR), seed=8)[0]
    padded = np.pad(clip, (field // 2, field))
    frames = 1 + len(clip) // hop
    per_chunk = (card.max_window - field) // hop + 1  # batch_seconds 16 > max_window: chunks of max_window
    expected = []
    for start in range(0, frames, per_chunk):
        count = min(per_chunk, frames - start)
        chunk = padded[start * hop : start * hop + (count - 1) * hop + field]
        expected.append(reference_layers(extractor, reference_model, chunk[None])["block2"][0, TOKENS : TOKENS + count])
    expected = torch.cat(expected)
    (result,) = model.embed([clip], SR, scene=False)
    assert result.timestamp.shape == expected.shape
    assert rel_err(result.timestamp, expected) < TOLERANCE


def test_padding_is_a_knob(repos) -> None:
    card = get_registry().get(small_id(TWINS[0]))
    assert card.paddings == ("reference", "crop")
    assert resolve_knobs(card).padding == "reference"
    assert resolve_knobs(card, {"preset": "crop"}).padding == "crop"
    with pytest.raises(ConfigError, match="no padding 'zeros'"):
        resolve_knobs(card, {"padding": "zeros"})
    model = create_model(card)
    with pytest.raises(ConfigError, match="no padding"):
        model.forward_layers(torch.zeros(1, 4000), ["features"], padding="zeros")


# ---- the one full-size check ----------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_every_layer(tmp_path: Path) -> None:
    """The one full-size check: MIT/ast-finetuned-audioset-10-10-0.4593's architecture (12 x 768,
    1024 frames, 1214 tokens), random weights, a 3 s clip, every layer against transformers."""
    extractor, reference_model = reference(CARDS[0], seed=11)
    folder = save_repo(extractor, reference_model, tmp_path / "repo")
    model = embedzoo.load(CARDS[0], weights=str(folder), device="cpu")
    clips = noise(3 * SR, seed=12)
    expected = reference_layers(extractor, reference_model, clips)
    del reference_model
    got = ours(model, clips)
    assert got["block12"].shape == (1, TOKENS + 29, 768) and got["logits"].shape == (1, 527)
    for name, value in got.items():
        assert rel_err(value, expected[name]) < TOLERANCE, name


# ---- conversion ---------------------------------------------------------------------------------


def hub_state(repos, card_id: str = TWINS[0]) -> dict[str, torch.Tensor]:
    """The tensors of the reference's model.safetensors, in the Hub layout save_pretrained writes."""
    return load_file(str(repos[small_id(card_id)][2] / "model.safetensors"))


def original_state(hub: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights in the authors' layout (YuanGongND/ast's DataParallel checkpoints), with timm's
    unused ImageNet heads: the inverse of transformers' conversion script."""
    base = "audio_spectrogram_transformer."
    out = {
        "module.v.cls_token": hub[base + "embeddings.cls_token"],
        "module.v.dist_token": hub[base + "embeddings.distillation_token"],
        "module.v.pos_embed": hub[base + "embeddings.position_embeddings"],
        "module.v.norm.weight": hub[base + "layernorm.weight"],
        "module.v.norm.bias": hub[base + "layernorm.bias"],
        "module.v.head.weight": torch.randn(1000, 64),
        "module.v.head.bias": torch.randn(1000),
        "module.v.head_dist.weight": torch.randn(1000, 64),
        "module.v.head_dist.bias": torch.randn(1000),
    }
    for part in ("weight", "bias"):
        out[f"module.v.patch_embed.proj.{part}"] = hub[f"{base}embeddings.patch_embeddings.projection.{part}"]
        out[f"module.mlp_head.0.{part}"] = hub[f"classifier.layernorm.{part}"]
        out[f"module.mlp_head.1.{part}"] = hub[f"classifier.dense.{part}"]
        for n in range(2):
            layer, block = f"{base}encoder.layer.{n}.", f"module.v.blocks.{n}."
            qkv = [hub[f"{layer}attention.attention.{name}.{part}"] for name in ("query", "key", "value")]
            out[f"{block}attn.qkv.{part}"] = torch.cat(qkv)
            out[f"{block}attn.proj.{part}"] = hub[f"{layer}attention.output.dense.{part}"]
            out[f"{block}norm1.{part}"] = hub[f"{layer}layernorm_before.{part}"]
            out[f"{block}norm2.{part}"] = hub[f"{layer}layernorm_after.{part}"]
            out[f"{block}mlp.fc1.{part}"] = hub[f"{layer}intermediate.dense.{part}"]
            out[f"{block}mlp.fc2.{part}"] = hub[f"{layer}output.dense.{part}"]
    return out


def test_conversion_is_lossless(repos) -> None:
    """Every Hub tensor lands, unchanged, on the transformers module it came from."""
    _, reference_model, _ = repos[small_id(TWINS[0])]
    model = create_model(get_registry().get(small_id(TWINS[0])))
    hub = hub_state(repos)
    state = checkpoint_filter_fn(hub, model)
    assert set(state) == set(model.state_dict()) and len(state) == len(hub)
    own = reference_model.state_dict()  # transformers 5's module names
    assert all(torch.equal(state[f"model.{key}"], value) for key, value in own.items())
    # transformers 5's names (a state_dict() saved with torch.save), wrapped and DataParallel-prefixed
    for wrapped in (own, {"state_dict": own}, {"model": {f"module.{k}": v for k, v in own.items()}}):
        converted = checkpoint_filter_fn(wrapped, model)
        assert all(torch.equal(converted[k], state[k]) for k in state)


def test_original_checkpoints_convert(repos) -> None:
    """The authors' .pth layout: qkv split in timm's order, the ImageNet heads dropped by name."""
    model = create_model(get_registry().get(small_id(TWINS[0])))
    expected = checkpoint_filter_fn(hub_state(repos), model)
    state = checkpoint_filter_fn(original_state(hub_state(repos)), model)
    assert set(state) == set(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    with pytest.raises(WeightsError, match=r"'v\.blocks\.0\.attn\.qkv\.bias'"):
        checkpoint_filter_fn({k: v for k, v in original_state(hub_state(repos)).items() if "blocks.0.attn.qkv.bias" not in k}, model)


def test_conversion_names_what_does_not_fit(repos) -> None:
    model = create_model(get_registry().get(small_id(TWINS[0])))
    hub = hub_state(repos)
    with pytest.raises(WeightsError, match="surprise"):
        checkpoint_filter_fn({**hub, "surprise": torch.zeros(1)}, model)
    missing = "audio_spectrogram_transformer.encoder.layer.1.attention.attention.value.bias"
    with pytest.raises(WeightsError, match=re.escape(missing)):
        checkpoint_filter_fn({k: v for k, v in hub.items() if k != missing}, model)
    table = "audio_spectrogram_transformer.embeddings.position_embeddings"
    with pytest.raises(WeightsError, match=f"{re.escape(table)}.*shape"):
        checkpoint_filter_fn({**hub, table: torch.zeros(1, 1214, 64)}, model)
    # an ASTModel's file (no `audio_spectrogram_transformer.` prefix, no classifier): the head is named
    base = {k.removeprefix("audio_spectrogram_transformer."): v for k, v in hub.items() if not k.startswith("classifier.")}
    with pytest.raises(WeightsError, match="classifier"):
        checkpoint_filter_fn(base, model)


# ---- the repo's config files ------------------------------------------------------------------------


def repo_files(repos, card_id: str = TWINS[0]) -> dict[str, dict]:
    folder = repos[small_id(card_id)][2]
    return {name: json.loads((folder / name).read_text()) for name in ("config.json", "preprocessor_config.json")}


@pytest.mark.parametrize(
    "name,key,value",
    [
        ("config.json", "num_hidden_layers", 3),
        ("config.json", "time_stride", 12),
        ("config.json", "max_length", 1024),
        ("config.json", "layer_norm_eps", 1e-6),
        ("config.json", "model_type", "vit"),
        ("preprocessor_config.json", "mean", -6.845978),
        ("preprocessor_config.json", "max_length", 1024),
        ("preprocessor_config.json", "do_normalize", False),
        ("preprocessor_config.json", "sampling_rate", 32000),
    ],
)
def test_repo_files_that_disagree_are_refused(repos, name: str, key: str, value) -> None:
    files = repo_files(repos)
    card = get_registry().get(small_id(TWINS[0]))
    check_repo_files(card, files)  # the reference's own files agree
    files[name][key] = value
    with pytest.raises(WeightsError, match=rf"{name} .* says {key} = "):
        check_repo_files(card, files)


def test_repo_files_labels_and_defaults(repos) -> None:
    card = get_registry().get(small_id(TWINS[0]))
    files = repo_files(repos)
    files["config.json"]["id2label"] = {"0": "a", "1": "b"}
    with pytest.raises(WeightsError, match="num_labels"):
        check_repo_files(card, files)
    # a key the file omits is transformers' default: the card's patch_size 16 agrees with it
    files = repo_files(repos)
    del files["config.json"]["patch_size"], files["preprocessor_config.json"]["std"]
    check_repo_files(card, files)


def test_a_repo_folder_with_another_config_does_not_load(repos, tmp_path: Path) -> None:
    """Through embedzoo.load(weights=FOLDER): the core hands the folder's JSON files to the plugin."""
    import shutil

    folder = shutil.copytree(repos[small_id(TWINS[0])][2], tmp_path / "repo")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 128}))
    with pytest.raises(WeightsError, match="hidden_size"):
        embedzoo.load(small_id(TWINS[0]), weights=str(folder), device="cpu")


# ---- registration, geometry, odd input --------------------------------------------------------------


def test_plugin_registers_the_family_torch_free() -> None:
    assert_torch_free_import("embedzoo_ast", "embedzoo_ast.geometry")
    assert_registers("ast", ["ast"])


@pytest.mark.parametrize("card_id", CARDS)
def test_twins_match_their_geometry(card_id: str) -> None:
    """The core's conformance suite on the small twins of every card (tests/test_models.py runs it on
    the full-size cards)."""
    check_family(get_registry().get(small_id(card_id)))


def test_real_cards_geometry() -> None:
    """What the catalog says about the real checkpoints, from geometry.py alone."""
    card = get_registry().get("ast")  # the alias
    assert card.id == CARDS[0] and card.max_window == 164080 and card.min_window == 400
    assert (card.frame_hop, card.frame_field) == (1600, 2800)
    assert [spec.name for spec in card.layers][-3:] == ["norm", "features", "logits"]
    assert card.hidden_states == ("patch", *(f"block{i}" for i in range(1, 13)))
    assert get_registry().get("ast-audioset-16-16-0.442").frame_hop == 2560
    speech = get_registry().get("ast-speech-commands-v2")
    assert speech.max_window == 127 * 160 + 400 and speech.layer("logits").width == 35


def test_frame_mode_is_refused_where_the_geometry_says() -> None:
    card = get_registry().get(CARDS[0])
    for layer in ("features", "logits"):
        with pytest.raises(ConfigError, match="one vector per window"):
            resolve_knobs(card, {"layers": [layer], "mode": "frame"})
    knobs = resolve_knobs(card, {"layers": ["fbank", "patch", "norm"], "mode": "frame"})
    assert knobs.mode == "frame"
    with pytest.raises(ConfigError, match="exceeds the longest input"):
        resolve_knobs(card, {"window_ms": 11000})


def test_silence_and_short_clips(repos) -> None:
    """All zeros: the fbank's log floor, no NaN, in both paddings; a clip shorter than one fbank frame
    is padded to one by the core (transformers would see no frame at all: documented departure)."""
    model = load(repos, TWINS[0], hop_ms=500)
    silence = np.zeros((1, 5000), np.float32)
    for padding in ("reference", "crop"):
        for name, value in ours(model, silence, padding=padding).items():
            assert torch.isfinite(value).all(), (padding, name)
    (result,) = model.embed([noise(200)[0]], SR)  # 12.5 ms
    assert torch.isfinite(result.scene).all() and torch.isfinite(result.timestamp).all()
    with pytest.raises(ValueError, match="at least one frame"):
        model.forward_layers(torch.zeros(1, 300), ["features"])
    with pytest.raises(ConfigError, match="at most"):
        model.forward_layers(torch.zeros(1, model.card.max_window + 160), ["features"])
