"""embedzoo-ssl against transformers 5.24 (the reference: Wav2Vec2FeatureExtractor + the model with
output_hidden_states=True), on random weights saved with save_pretrained.

- parity, per model type and norm style (the small twins of ssl_testutil: wav2vec2, HuBERT and
  WavLM with the group-norm conv encoder + post-LN layers and with the layer-norm encoder + pre-LN
  "stable" layers, data2vec-audio): every layer, scene and timestamp embeddings in window and
  frame mode, within 1e-5 relative error (float32); one full-size check (wav2vec2-base, 3 s);
- conversion: lossless from the bare model and the ForPreTraining / ForCTC wrappers, old
  `weight_g`/`weight_v` pytorch_model.bin files, stray / missing / misshapen keys named;
- check_repo_files: a config.json or preprocessor_config.json that disagrees is refused, naming the key;
- geometry: frame counts equal transformers' own, the defaults equal transformers' config defaults;
- bad input: shorter than one frame, silence; registration torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import embedzoo
from embedzoo.errors import ConfigError, WeightsError
from embedzoo.knobs import resolve_knobs
from embedzoo.registry import get_registry
from embedzoo.testing import assert_registers, assert_torch_free_import, check_family, rel_err
from embedzoo_ssl import geometry as geo
from embedzoo_ssl.model import check_repo_files, checkpoint_filter_fn, create_model
from ssl_testutil import (  # noqa: F401  (one_thread, ssl_catalog: fixtures)
    SR, TOLERANCE, TWINS, bare, expected_layers, feature_extractor, one_thread, reference, reference_outputs, save, ssl_catalog,
)

pytestmark = [pytest.mark.usefixtures("ssl_catalog", "one_thread")]

HOP, FIELD, OFFSET = 320, 400, 200


def noise(batch: int, samples: int, seed: int) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((batch, samples))).astype(np.float32)


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.nn.Module, Path]]:
    """Each twin's reference (in its wrapper's layout) and its model.safetensors."""
    out = {}
    for index, twin in enumerate(TWINS):
        ref = reference(twin, seed=index)
        out[twin] = (ref, save(ref, tmp_path_factory.mktemp(twin)))
    return out


def load(twin: str, twins, **knobs) -> embedzoo.Extractor:
    return embedzoo.load(twin, weights=str(twins[twin][1]), device="cpu", **knobs)


def is_stable(twin: str) -> bool:
    return bool(TWINS[twin][0].get("do_stable_layer_norm"))


def layer_of(ref: torch.nn.Module, clips: np.ndarray, twin: str, layer: str) -> torch.Tensor:
    """The reference's frames of one layer for equal-length clips: (batch, frames, width)."""
    out = reference_outputs(ref, clips, TWINS[twin][0]["do_normalize"])
    return expected_layers(out, is_stable(twin))[layer]


# ---- parity: every layer ----------------------------------------------------------------------


@pytest.mark.parametrize("twin", list(TWINS))
def test_every_layer_matches_transformers(twin: str, twins) -> None:
    ref, path = twins[twin]
    model = load(twin, twins)
    clips = noise(2, int(1.3 * SR), seed=1)
    out = reference_outputs(ref, clips, TWINS[twin][0]["do_normalize"])
    expected = expected_layers(out, is_stable(twin))
    assert [spec.name for spec in model.card.layers] == list(expected)
    assert model.card.hidden_states == ("embed", "block1", "block2")
    with torch.inference_mode():
        ours = model.forward_layers(torch.from_numpy(clips))
    for (name, want), got in zip(expected.items(), ours):
        assert got.shape == want.shape == (2, geo.frame_count(clips.shape[1], geo.settings(TWINS[twin][0])), want.shape[-1]), name
        assert rel_err(got, want) < TOLERANCE, name
    # transformers 5 returns each layer's own output in hidden_states (tie_last_hidden_states=False):
    # for pre-LN models last_hidden_state is the final LayerNorm of it, our `norm`
    assert torch.equal(out["hidden_states"][-1], out["last"]) is not is_stable(twin)
    if "extract_features" in out["outputs"]:  # wav2vec2, WavLM, data2vec: the projection's LayerNorm of `features`
        layer_norm = bare(ref).feature_projection.layer_norm
        with torch.no_grad():
            assert rel_err(layer_norm(ours[0]), out["outputs"].extract_features) < TOLERANCE
    with torch.inference_mode():  # asked alone, block1 stops early and is the same
        (block1,) = model.forward_layers(torch.from_numpy(clips), ["block1"])
    assert rel_err(block1, expected["block1"]) < TOLERANCE


# ---- parity: the recipes ------------------------------------------------------------------------


@pytest.mark.parametrize("twin", ["ssl-wav2vec2-group-small", "ssl-hubert-group-small", "ssl-wavlm-stable-small", "ssl-data2vec-audio-small"])
def test_window_mode_scene_and_timestamps(twin: str, twins) -> None:
    """Window mode: a scene is the clip forwarded whole (normalised as a whole: equal to the
    reference on the clip); timestamp k is the mean of the frames of the window centred on
    k * hop, zero-padded at the clip's ends and normalised on its own."""
    ref, _ = twins[twin]
    layer = "block2"
    model = load(twin, twins, mode="window", window_ms=250, hop_ms=100, layers=[layer], readout="mean")
    clip = noise(1, int(0.93 * SR), seed=2)
    scene = model.scene_embeddings(clip, SR)
    assert rel_err(scene, layer_of(ref, clip, twin, layer).mean(dim=1)) < TOLERANCE
    ts, times = model.timestamp_embeddings(clip, SR)
    window, hop = 4000, 1600
    padded = np.pad(clip[0], (window // 2, window // 2))
    starts = range(0, len(padded) - window + 1, hop)
    windows = np.stack([padded[s : s + window] for s in starts])
    want = layer_of(ref, windows, twin, layer).mean(dim=1)
    assert ts.shape == (1, len(windows), 32)
    assert rel_err(ts[0], want) < TOLERANCE
    assert torch.allclose(times[0].double(), torch.arange(len(windows)).double() * 100.0)


@pytest.mark.parametrize("twin", ["ssl-wav2vec2-group-small", "ssl-wav2vec2-stable-small", "ssl-wavlm-group-small", "ssl-data2vec-audio-small"])
def test_frame_mode_is_the_reference_on_the_clip(twin: str, twins) -> None:
    """Frame mode reads the clip from its first sample (frame j centred on 200 + 320 j): for a clip
    of 320 q + 400 samples the one chunk is the clip itself, so the frames are transformers' own on
    it; timestamps take the nearest frame every hop, the scene is the mean of the frames."""
    ref, _ = twins[twin]
    model = load(twin, twins, layers=["features", "block2"] + (["norm"] if is_stable(twin) else []), hop_ms=50)
    assert model.knobs.mode == "frame"
    clip = noise(1, 320 * 40 + 400, seed=3)
    out = expected_layers(reference_outputs(ref, clip, TWINS[twin][0]["do_normalize"]), is_stable(twin))
    frames = torch.cat([out[name][0] for name in model.knobs.layers], dim=-1)
    assert frames.shape[0] == 41
    ts, times = model.timestamp_embeddings(clip, SR)
    centres = np.arange(1 + clip.shape[1] // 800) * 800
    nearest = np.clip(np.rint((centres - OFFSET) / HOP).astype(int), 0, len(frames) - 1)
    assert rel_err(ts[0], frames[nearest]) < TOLERANCE
    assert torch.allclose(times[0].double(), torch.from_numpy(centres / 16.0))
    assert rel_err(model.scene_embeddings(clip, SR)[0], frames.mean(dim=0)) < TOLERANCE


def test_frame_mode_chunks_long_clips(twins) -> None:
    """A clip longer than the family's frame chunk (30 s, whatever batch_seconds says) is read chunk
    by chunk: each chunk's frames are the reference on that chunk (normalised on its own), the
    chunks' frames continue each other, and the last chunk's field is completed with zeros."""
    twin = "ssl-wav2vec2-group-small"
    ref, _ = twins[twin]
    model = load(twin, twins, layers=["block2"], batch_seconds=0.5, hop_ms=20)
    assert model.card.frame_chunk == 30 * SR
    clip = noise(1, int(31.7 * SR), seed=4)
    count = 1 + (clip.shape[1] - OFFSET) // HOP
    per_chunk = (30 * SR - FIELD) // HOP + 1  # 1499 frames in a chunk of 479_760 samples
    padded = np.pad(clip[0], (0, FIELD))
    frames = []
    for start in range(0, count, per_chunk):
        n = min(per_chunk, count - start)
        segment = padded[start * HOP : start * HOP + (n - 1) * HOP + FIELD]
        frames.append(layer_of(ref, segment[None], twin, "block2")[0])
    assert [len(f) for f in frames] == [1499, 86]
    frames = torch.cat(frames)
    assert len(frames) == count
    ts, _ = model.timestamp_embeddings(clip, SR)
    centres = np.arange(1 + clip.shape[1] // HOP) * HOP
    nearest = np.clip(np.rint((centres - OFFSET) / HOP).astype(int), 0, count - 1)
    assert rel_err(ts[0], frames[nearest]) < TOLERANCE
    assert rel_err(model.scene_embeddings(clip, SR)[0], frames.mean(dim=0)) < TOLERANCE


def test_all_layers_are_the_hidden_states(twins) -> None:
    twin = "ssl-hubert-stable-small"
    ref, _ = twins[twin]
    model = load(twin, twins, layers="all")
    assert model.knobs.layers == ("embed", "block1", "block2")  # norm is not a hidden state
    clip = noise(1, 320 * 20 + 400, seed=5)
    out = reference_outputs(ref, clip, True)["hidden_states"]
    scene = model.scene_embeddings(clip, SR)[0]
    assert rel_err(scene, torch.cat([h[0].mean(dim=0) for h in out])) < TOLERANCE


@pytest.mark.slow
def test_full_size_wav2vec2_base(tmp_path: Path) -> None:
    """The one full-size check: wav2vec2-base's card against transformers' Wav2Vec2Config() (the
    wav2vec2-base architecture), saved as the Hub repo's Wav2Vec2ForPreTraining, one 3 s forward."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    torch.manual_seed(0)
    ref = Wav2Vec2ForPreTraining(Wav2Vec2Config())
    from ssl_testutil import randomise

    randomise(ref, seed=0)
    model = embedzoo.load("wav2vec2-base", weights=str(save(ref, tmp_path)), device="cpu")
    check_repo_files(model.card, {"config.json": json.loads((tmp_path / "config.json").read_text())})
    clip = noise(1, 3 * SR, seed=6)
    out = reference_outputs(ref, clip, True)
    expected = expected_layers(out, stable=False)
    with torch.inference_mode():
        ours = model.forward_layers(torch.from_numpy(clip))
    assert [spec.name for spec in model.card.layers] == list(expected) and len(expected) == 14
    for (name, want), got in zip(expected.items(), ours):
        assert rel_err(got, want) < TOLERANCE, name


# ---- conversion ---------------------------------------------------------------------------------


def saved_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_conversion_is_lossless(twins) -> None:
    """ForPreTraining's file: every encoder tensor lands once, unchanged; the quantizer,
    project_q, project_hid and masked_spec_embed are the only tensors left out."""
    twin = "ssl-wav2vec2-group-small"
    ref, path = twins[twin]
    model = create_model(get_registry().get(twin))
    original = saved_tensors(path)
    state = checkpoint_filter_fn(original, model)
    assert set(state) == set(model.state_dict())
    encoder = bare(ref).state_dict()
    assert all(torch.equal(state[f"model.{k}"], v) for k, v in encoder.items() if k != "masked_spec_embed")
    left = sorted(k for k in original if k.removeprefix("wav2vec2.") not in encoder)
    assert {k.split(".")[0] for k in left} == {"quantizer", "project_q", "project_hid"}
    assert "wav2vec2.masked_spec_embed" in original and "model.masked_spec_embed" not in state


@pytest.mark.parametrize("twin", ["ssl-hubert-group-small", "ssl-wavlm-stable-small"])
def test_old_weight_norm_files_convert(twin: str, twins, tmp_path: Path) -> None:
    """pytorch_model.bin of older transformers: the positional conv's weight norm as weight_g /
    weight_v (prefixed or bare) gives the same model as the parametrizations' original0/1."""
    ref, path = twins[twin]
    old = {}
    for key, value in saved_tensors(path).items():
        key = key.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        old[key] = value
    assert any(k.endswith("pos_conv_embed.conv.weight_g") for k in old)
    torch.save(old, tmp_path / "pytorch_model.bin")
    new, legacy = load(twin, twins), embedzoo.load(twin, weights=str(tmp_path / "pytorch_model.bin"), device="cpu")
    for a, b in zip(new.state_dict().values(), legacy.state_dict().values()):
        assert torch.equal(a, b)


def test_conversion_names_what_does_not_fit(twins) -> None:
    twin = "ssl-wav2vec2-stable-small"
    _, path = twins[twin]
    model = create_model(get_registry().get(twin))
    state = saved_tensors(path)  # Wav2Vec2ForCTC: wav2vec2.* + lm_head
    assert checkpoint_filter_fn(state, model)
    with pytest.raises(WeightsError, match="wav2vec2.surprise"):
        checkpoint_filter_fn({**state, "wav2vec2.surprise": torch.zeros(1)}, model)
    gone = "wav2vec2.encoder.layers.1.final_layer_norm.bias"
    with pytest.raises(WeightsError, match=gone.replace(".", r"\.")):
        checkpoint_filter_fn({k: v for k, v in state.items() if k != gone}, model)
    with pytest.raises(WeightsError, match="projection.weight"):
        checkpoint_filter_fn({**state, "wav2vec2.feature_projection.projection.weight": torch.zeros(64, 16)}, model)
    hubert = {k.replace("wav2vec2.", "hubert."): v for k, v in state.items()}  # another model type's wrapper
    with pytest.raises(WeightsError, match="is this a wav2vec2 checkpoint"):
        checkpoint_filter_fn(hubert, model)


# ---- the repo's config files -------------------------------------------------------------------

# facebook/wav2vec2-base's config.json (the architecture keys, as the Hub file states them)
WAV2VEC2_BASE_CONFIG = {
    "architectures": ["Wav2Vec2ForPreTraining"], "model_type": "wav2vec2", "hidden_size": 768, "num_hidden_layers": 12,
    "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-05,
    "feat_extract_norm": "group", "feat_extract_activation": "gelu", "do_stable_layer_norm": False, "conv_bias": False,
    "conv_dim": [512, 512, 512, 512, 512, 512, 512], "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "num_feat_extract_layers": 7, "mask_time_prob": 0.05,
}  # fmt: skip
PREPROCESSOR = {"do_normalize": True, "feature_size": 1, "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False, "sampling_rate": 16000}


def test_check_repo_files_refuses_what_disagrees(twins, tmp_path: Path) -> None:
    card = get_registry().get("wav2vec2-base")
    check_repo_files(card, {"config.json": WAV2VEC2_BASE_CONFIG, "preprocessor_config.json": PREPROCESSOR})
    check_repo_files(card, {"config.json": WAV2VEC2_BASE_CONFIG})  # a repo without preprocessor_config.json
    for key, value in [("hidden_size", 1024), ("do_stable_layer_norm", True), ("conv_bias", True), ("feat_extract_norm", "layer"), ("num_conv_pos_embeddings", 64)]:
        with pytest.raises(WeightsError, match=f"{key}={value!r}"):
            check_repo_files(card, {"config.json": {**WAV2VEC2_BASE_CONFIG, key: value}})
    with pytest.raises(WeightsError, match="model_type='hubert'"):
        check_repo_files(card, {"config.json": {**WAV2VEC2_BASE_CONFIG, "model_type": "hubert"}})
    with pytest.raises(WeightsError, match="adapters"):
        check_repo_files(card, {"config.json": {**WAV2VEC2_BASE_CONFIG, "add_adapter": True}})
    with pytest.raises(WeightsError, match="do_normalize=False"):
        check_repo_files(card, {"preprocessor_config.json": {**PREPROCESSOR, "do_normalize": False}})
    with pytest.raises(WeightsError, match="sampling_rate=8000"):
        check_repo_files(card, {"preprocessor_config.json": {**PREPROCESSOR, "sampling_rate": 8000}})
    # a key config.json leaves out has transformers' default: wavlm-large's card states layer norm
    wavlm = get_registry().get("wavlm-large")
    with pytest.raises(WeightsError, match="feat_extract_norm='group'"):
        check_repo_files(wavlm, {"config.json": {"model_type": "wavlm", "hidden_size": 1024, "num_hidden_layers": 24}})
    # the files save_pretrained writes for every twin are accepted
    for twin in TWINS:
        ref, path = twins[twin]
        folder = tmp_path / twin
        feature_extractor(TWINS[twin][0]["do_normalize"]).save_pretrained(folder)
        files = {"config.json": json.loads((path.parent / "config.json").read_text()),
                 "preprocessor_config.json": json.loads((folder / "preprocessor_config.json").read_text())}  # fmt: skip
        check_repo_files(get_registry().get(twin), files)


# ---- geometry ------------------------------------------------------------------------------------


def test_frame_counts_are_transformers_own() -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    with torch.device("meta"):
        model = Wav2Vec2Model(Wav2Vec2Config(num_hidden_layers=1))
    cfg = geo.settings({"model_type": "wav2vec2"})
    lengths = torch.arange(400, 20000, 7)
    theirs = model._get_feat_extract_output_lengths(lengths)
    ours = torch.tensor([geo.frame_count(int(n), cfg) for n in lengths])
    assert torch.equal(ours, theirs.to(ours.dtype))
    assert torch.equal(ours, (lengths - FIELD) // HOP + 1)
    assert (geo.frame_hop(cfg), geo.frame_field(cfg), geo.frame_count(399, cfg)) == (HOP, FIELD, 0)


@pytest.mark.parametrize("model_type", geo.MODEL_TYPES)
def test_defaults_are_transformers_defaults(model_type: str) -> None:
    import transformers

    from embedzoo_ssl.model import CLASSES

    config = getattr(transformers, CLASSES[model_type][0])()
    for key, value in geo.ARCH_DEFAULTS[model_type].items():
        theirs = getattr(config, key)
        assert (list(theirs) if isinstance(theirs, (list, tuple)) else theirs) == value, key
    assert transformers.Wav2Vec2FeatureExtractor().do_normalize == geo.FRONTEND_DEFAULTS["do_normalize"]


def test_config_is_checked() -> None:
    from embedzoo.errors import CardError

    with pytest.raises(CardError, match="model_type"):
        geo.settings({"hidden_size": 32})
    with pytest.raises(CardError, match="unknown data2vec-audio config keys \\['do_stable_layer_norm'\\]"):
        geo.settings({"model_type": "data2vec-audio", "do_stable_layer_norm": True})
    with pytest.raises(CardError, match="one length"):
        geo.settings({"model_type": "hubert", "conv_dim": [512] * 6})
    stable = geo.geometry({"model_type": "wavlm", "feat_extract_norm": "layer", "do_stable_layer_norm": True, "num_hidden_layers": 3})
    assert [spec.name for spec in stable.layers] == ["features", "embed", "block1", "block2", "block3", "norm"]
    assert stable.hidden_states == ("embed", "block1", "block2", "block3")
    assert {spec.frame_offset for spec in stable.layers} == {OFFSET}


def test_catalog_cards_complete() -> None:
    """Every real card: its default layer, its `last` preset (last_hidden_state) and the family's
    frame-mode defaults resolve."""
    cards = [card for card in get_registry() if card.family == "ssl" and card.id not in TWINS]
    assert len(cards) == 15
    for card in cards:
        depth = geo.settings(card.config)["num_hidden_layers"]
        knobs = resolve_knobs(card)
        assert knobs.layers == (f"block{depth // 2}",) and knobs.mode == "frame", card.id
        last = resolve_knobs(card, {"preset": "last"}).layers
        assert last == (("norm",) if geo.stable_layer_norm(geo.settings(card.config)) else (f"block{depth}",)), card.id
        for preset in card.presets:
            resolve_knobs(card, {"preset": preset})
        assert resolve_knobs(card, {"layers": "all"}).layers == card.hidden_states and len(card.hidden_states) == depth + 1


@pytest.mark.parametrize("twin", list(TWINS))
def test_conformance(twin: str) -> None:
    check_family(get_registry().get(twin))


# ---- bad input -----------------------------------------------------------------------------------


def test_shorter_than_one_frame(twins) -> None:
    """A 100-sample clip: window mode pads it around its centre to the 400-sample field (equal to
    the reference on that padded input), frame mode completes its one frame with zeros; a direct
    forward_layers call that short is refused, naming the field."""
    twin = "ssl-wavlm-group-small"
    ref, _ = twins[twin]
    clip = noise(1, 100, seed=7)
    window = load(twin, twins, mode="window", layers=["block2"])
    scene = window.scene_embeddings(clip, SR)
    padded = np.pad(clip, ((0, 0), (150, 150)))
    assert rel_err(scene, layer_of(ref, padded, twin, "block2").mean(dim=1)) < TOLERANCE
    frames = load(twin, twins, layers=["block2"])
    ts, times = frames.timestamp_embeddings(clip, SR)
    assert ts.shape == (1, 1, 32) and torch.isfinite(ts).all()
    assert rel_err(ts[0], layer_of(ref, np.pad(clip, ((0, 0), (0, 300))), twin, "block2")[0]) < TOLERANCE
    with pytest.raises(ConfigError, match="shorter than one frame"):
        frames.forward_layers(torch.zeros(1, 399))


@pytest.mark.parametrize("twin", ["ssl-wav2vec2-group-small", "ssl-hubert-group-small", "ssl-data2vec-audio-small"])
def test_silence_is_finite(twin: str, twins) -> None:
    """All zeros: do_normalize's (0 - 0) / sqrt(0 + 1e-7) is 0, GroupNorm/LayerNorm of a constant
    is their bias: no NaN, in either mode."""
    silence = np.zeros((1, SR), np.float32)
    for mode in ("frame", "window"):
        model = load(twin, twins, mode=mode, layers=["features", "block2"])
        assert torch.isfinite(model.scene_embeddings(silence, SR)).all()
        assert torch.isfinite(model.timestamp_embeddings(silence, SR)[0]).all()


# ---- registration ---------------------------------------------------------------------------------


def test_plugin_registers_the_family_torch_free() -> None:
    assert_torch_free_import("embedzoo_ssl", "embedzoo_ssl.geometry")
    assert_registers("ssl", ["ssl"])


def test_wavlm_attention_through_sdpa_equals_transformers_own() -> None:
    """The plugin's WavLM attention (SDPA, the gated bias as the mask) against transformers'
    WavLMAttention with the same parameters: outputs and the position bias it passes on, with and
    without a key padding mask (the plugin passes none; the class takes one, as its parent does)."""
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    from embedzoo_ssl.model import SdpaWavLMAttention

    torch.manual_seed(0)
    eager = WavLMAttention(embed_dim=32, num_heads=4, num_buckets=16, max_distance=40).eval()
    with torch.no_grad():
        for parameter in eager.parameters():
            parameter.normal_(0, 0.3)
    sdpa = SdpaWavLMAttention(embed_dim=32, num_heads=4, num_buckets=16, max_distance=40).eval()
    sdpa.load_state_dict(eager.state_dict())
    x = torch.randn(2, 37, 32)
    mask = torch.ones(2, 37, dtype=torch.long)
    mask[1, 30:] = 0
    with torch.inference_mode():
        for attention_mask in (None, mask):
            theirs, _, their_bias = eager(x, attention_mask=attention_mask)
            ours, weights, our_bias = sdpa(x, attention_mask=attention_mask)
            assert weights is None and torch.equal(our_bias, their_bias)
            assert rel_err(ours, theirs) < 1e-5
        assert rel_err(sdpa(x, attention_mask=mask)[0], sdpa(x)[0]) > 1e-3  # the mask does act
