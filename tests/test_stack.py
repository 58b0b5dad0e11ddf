"""Every layer at once (`layers=all`), stacked (`stack=True`: (layers, T, D) per clip, npy per
layer, a parquet layer axis), the `padding` choice a family may offer, and batches of clips of
mixed lengths -- on a toy "transformer" whose layers are known exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

from embedzoo.card import LayerSpec, ModelCard
from embedzoo.errors import ConfigError
from embedzoo.extractor import Extractor
from embedzoo.inputs import collect_inputs
from embedzoo.pipeline import embed_files

TOY_TRANSFORMER = ModelCard(
    id="toyformer",
    family="toy",
    plugin="tests",
    sample_rate=16000,
    layers=(
        LayerSpec("embed", 4),
        LayerSpec("block1", 4, tokens=("cls",)),
        LayerSpec("block2", 4, tokens=("cls",)),
        LayerSpec("logits", 3, pooled=True),
    ),
    frame_hop=4,
    frame_field=8,
    min_window=8,
    max_window=64,
    hidden_states=("embed", "block1", "block2"),
    paddings=("crop", "full"),
    defaults={"layers": ["block2"], "readout": "mean", "hop_ms": 0.5, "window_ms": 2.0, "batch_seconds": 0.02},
)


class ToyFormer(Extractor):
    """Frames of 8 samples every 4, a linear embedding, two 'blocks' that mix every frame with the
    mean of all (so a padded frame would change every other one), and pooled logits. padding
    'full' zero-pads the input to max_window first (a reference that always sees its full input)."""

    def __init__(self, card: ModelCard = TOY_TRANSFORMER):
        super().__init__(card)
        generator = torch.Generator().manual_seed(1)
        self.proj = torch.nn.Linear(8, 4)
        self.mix = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2))
        self.head = torch.nn.Linear(4, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        self.paddings_seen: list[str] = []

    def forward_layers(self, audio, layers=None, padding="crop"):
        self.paddings_seen.append(padding)
        if padding == "full":
            audio = torch.nn.functional.pad(audio, (0, self.card.max_window - audio.shape[-1]))
        x = self.proj(audio.unfold(-1, 8, 4))
        out = {"embed": x}
        for index, mix in enumerate(self.mix, start=1):
            x = torch.tanh(mix(x) + x.mean(dim=1, keepdim=True))
            out[f"block{index}"] = torch.cat([x.amax(dim=1, keepdim=True), x], dim=1)  # cls, then frames
        out["logits"] = self.head(x.mean(dim=1))
        return [out[name] for name in (layers or [spec.name for spec in self.card.layers])]


@pytest.fixture
def toy() -> ToyFormer:
    return ToyFormer().eval()


def clips() -> list[np.ndarray]:
    generator = np.random.default_rng(0)
    return [generator.standard_normal(n).astype(np.float32) * 0.3 for n in (90, 37, 160)]


@pytest.mark.parametrize("mode", ["window", "frame"])
def test_stacked_layers_equal_each_layer_alone(toy, mode):
    audio = clips()
    stacked = toy.embed(audio, 16000, knobs={"layers": "all", "stack": True, "mode": mode})
    assert toy.with_knobs({"layers": "all"}).knobs.layers == ("embed", "block1", "block2")
    for index, clip in enumerate(audio):
        assert stacked[index].scene.shape == (3, 4)
        assert stacked[index].timestamp.shape[:2] == (3, len(stacked[index].timestamps))
        for layer, name in enumerate(("embed", "block1", "block2")):
            (alone,) = toy.embed([clip], 16000, knobs={"layers": name, "mode": mode})
            torch.testing.assert_close(stacked[index].scene[layer], alone.scene, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(stacked[index].timestamp[layer], alone.timestamp, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(stacked[index].timestamps, alone.timestamps)


def test_all_layers_concatenated_by_default_and_readouts_stack_per_layer(toy):
    (clip,) = clips()[:1]
    (flat,) = toy.embed([clip], 16000, knobs={"layers": "block1,block2", "readout": "cls+mean"})
    (stacked,) = toy.embed([clip], 16000, knobs={"layers": "block1,block2", "readout": "cls+mean", "stack": True})
    assert flat.scene.shape == (16,) and stacked.scene.shape == (2, 8)
    torch.testing.assert_close(stacked.scene.flatten(), flat.scene, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stacked.timestamp.transpose(0, 1).flatten(1), flat.timestamp, rtol=1e-5, atol=1e-6)


def test_stack_is_refused_where_it_cannot_hold(toy):
    with pytest.raises(ConfigError, match="one width.*block2 4.*logits 3"):
        toy.configure(layers="block2,logits", stack=True)
    with pytest.raises(ConfigError, match="levels"):
        ToyFormer(dataclasses.replace(TOY_TRANSFORMER, presets={"w": {"window_ms": 1}})).configure(stack=True, levels="w")
    model = ToyFormer().eval().configure(layers="all", stack=True)
    with pytest.raises(ConfigError, match="HEAR API"):
        model.scene_embeddings(np.zeros((1, 100), np.float32), 16000)


def test_a_family_without_hidden_states_reads_every_layer():
    from toymodel import TOY_CARD, ToyExtractor

    assert ToyExtractor().configure(layers="all").knobs.layers == tuple(spec.name for spec in TOY_CARD.layers)


def test_padding_is_the_familys_choice_and_reaches_forward_layers(toy):
    assert toy.knobs.padding == "crop"  # the first the geometry names
    clip = clips()[1]  # shorter than max_window: 'full' pads it
    (crop,) = toy.embed([clip], 16000, timestamp=False)
    (full,) = toy.with_knobs({"padding": "full"}).embed([clip], 16000, timestamp=False)
    assert set(toy.paddings_seen) == {"crop", "full"}
    assert not torch.allclose(crop.scene, full.scene)  # the padded frames take part in the mean
    with pytest.raises(ConfigError, match="(?s)no padding 'zeros'.*crop, full"):
        toy.configure(padding="zeros")
    from toymodel import ToyExtractor

    with pytest.raises(ConfigError, match="offers no choice of padding"):
        ToyExtractor().configure(padding="crop")


def test_a_batch_of_mixed_lengths_equals_each_clip_alone(toy):
    """Windows are batched only with windows of their own length, so no clip is padded into another
    one's attention (the blocks mix every frame with the mean of all)."""
    audio = clips()
    for knobs in ({"mode": "window", "window_ms": 4.0}, {"mode": "frame"}, {"layers": "logits", "window_ms": 4.0}):
        together = toy.embed(audio, 16000, knobs=knobs)
        for clip, result in zip(audio, together):
            (alone,) = toy.embed([clip], 16000, knobs=knobs)
            torch.testing.assert_close(result.scene, alone.scene, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(result.timestamp, alone.timestamp, rtol=1e-5, atol=1e-6)


@pytest.fixture
def wavs(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    for index, clip in enumerate(clips()):
        sf.write(root / f"c{index}.wav", clip, 16000, subtype="FLOAT")
    return root


def test_embed_writes_stacked_layers_as_one_eval_kit_folder_per_layer(tmp_path, wavs, toy):
    from embedzoo.audio import load_audio

    files = collect_inputs([wavs])
    out = tmp_path / "npy"
    summary = embed_files(toy, files, out, workers=0, knobs={"layers": "all", "stack": True})
    assert summary.done == 3 and summary.ok
    for f in files:
        (want,) = toy.embed([load_audio(f.path, 16000)[0]], 16000, knobs={"layers": "all", "stack": True})
        for layer, name in enumerate(("embed", "block1", "block2")):
            root = out / "layers" / name
            np.testing.assert_array_equal(np.load(root / "scene" / f"{f.name}.embedding.npy"), want.scene[layer].numpy())
            np.testing.assert_array_equal(np.load(root / "timestamp" / f"{f.name}.embedding.npy"), want.timestamp[layer].numpy())
            np.testing.assert_array_equal(np.load(root / "timestamp" / f"{f.name}.timestamps.npy"), want.timestamps.numpy())
    assert not (out / "scene").exists()
    again = embed_files(toy, files, out, workers=0, knobs={"layers": "all", "stack": True})
    assert again.skipped == 3
    embed_files(toy, files, out, workers=0, overwrite=True)  # other settings: every stacked output goes
    assert not (out / "layers").exists() and (out / "scene").is_dir()


def test_embed_writes_a_parquet_layer_axis(tmp_path, wavs, toy):
    import pyarrow.parquet as pq

    from embedzoo.audio import load_audio

    files = collect_inputs([wavs])
    out = tmp_path / "pq"
    embed_files(toy, files, out, fmt="parquet", workers=0, knobs={"layers": "all", "stack": True})
    timestamp = {row["name"]: row for row in pq.read_table(out / "timestamp").to_pylist()}
    scene = {row["name"]: row for row in pq.read_table(out / "scene").to_pylist()}
    assert pq.read_schema(next((out / "timestamp").glob("part-*.parquet"))).field("embedding").metadata[b"shape"] == b"(L, T, D)"
    for f in files:
        (want,) = toy.embed([load_audio(f.path, 16000)[0]], 16000, knobs={"layers": "all", "stack": True})
        np.testing.assert_array_equal(np.asarray(timestamp[f.name]["embedding"], np.float32), want.timestamp.numpy())
        np.testing.assert_array_equal(np.asarray(scene[f.name]["embedding"], np.float32), want.scene.numpy())
        np.testing.assert_array_equal(np.asarray(timestamp[f.name]["timestamps"], np.float32), want.timestamps.numpy())


def test_frame_chunk_makes_frames_independent_of_the_batch_budget():
    """The blocks mix every frame with the mean of its chunk: without the family's frame_chunk, a
    smaller batch budget would cut shorter chunks and change the frames."""
    clip = np.random.default_rng(3).standard_normal(300).astype(np.float32)
    loose = ToyFormer().eval()
    fixed = ToyFormer(dataclasses.replace(TOY_TRANSFORMER, frame_chunk=64)).eval()
    results = {}
    for name, model in (("loose", loose), ("fixed", fixed)):
        for seconds in (0.004, 0.0025):  # 64 and 40 samples of budget
            (results[name, seconds],) = model.embed([clip], 16000, knobs={"mode": "frame", "batch_seconds": seconds})
    torch.testing.assert_close(results["fixed", 0.004].timestamp, results["fixed", 0.0025].timestamp, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(results["loose", 0.004].timestamp, results["loose", 0.0025].timestamp)
    torch.testing.assert_close(results["fixed", 0.004].timestamp, results["loose", 0.004].timestamp, rtol=1e-5, atol=1e-6)


def test_a_padded_forward_counts_the_full_input_in_a_batch():
    card = dataclasses.replace(TOY_TRANSFORMER, padded=("full",))
    model = ToyFormer(card).eval().configure(batch_seconds=0.016)  # 256 samples of budget
    assert model.batch_rows(32) == 8  # crop: each window costs its own 32 samples
    assert model.with_knobs({"padding": "full"}).batch_rows(32) == 4  # full: each forward runs on 64
