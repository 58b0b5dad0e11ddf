"""The core engine (windowing, frames, scene pooling, packing, streaming) against plain recipes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from embedzoo.card import LayerSpec
from embedzoo.errors import AudioError, CardError, ConfigError
from embedzoo.extractor import Session
from toymodel import TOY_CNN_CARD, ToyExtractor, reference_timestamps


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and float((a - b).abs().max()) <= 1e-5 * max(1.0, float(b.abs().max()))


@pytest.fixture
def toy() -> ToyExtractor:
    return ToyExtractor().eval()


@pytest.mark.parametrize("length", [1, 7, 100, 333, 1600])
@pytest.mark.parametrize(("window_ms", "hop_ms", "pad_mode"), [(2.0, 0.5, "constant"), (1.5625, 0.75, "reflect"), (0.25, 0.25, "constant")])
def test_window_mode_matches_the_hear_recipe(toy, length, window_ms, hop_ms, pad_mode):
    audio = torch.randn(3, length, generator=torch.Generator().manual_seed(length))
    toy.configure(window_ms=window_ms, hop_ms=hop_ms, pad_mode=pad_mode, readout="mean+sum")
    window, hop = toy.window_samples, toy.hop_samples
    if pad_mode == "reflect" and window // 2 >= length:
        pytest.skip("torch's reflect pad needs pad < length; embedzoo's own case is tested below")
    emb, times = toy.timestamp_embeddings(audio, 16000)
    ref, ref_times = reference_timestamps(toy, audio, window, hop, pad_mode)
    assert close(emb, ref)
    assert torch.allclose(times, ref_times.expand(3, -1))
    assert emb.shape[-1] == toy.timestamp_embedding_size == 12


def test_reflect_padding_of_clips_shorter_than_the_pad(toy):
    toy.configure(window_ms=2.0, hop_ms=0.5, pad_mode="reflect")
    emb, times = toy.timestamp_embeddings(torch.randn(2, 5), 16000)
    assert emb.shape == (2, 1 + 5 // 8, 6) and torch.isfinite(emb).all()


def test_scene_is_one_forward_up_to_the_scene_window_then_mean_of_windows(toy):
    short = torch.randn(2, 300)
    assert close(toy.scene_embeddings(short, 16000), toy.embed_segments(short))
    long = torch.randn(2, 1000)
    toy.configure(scene_hop_ms=5, pad_mode="reflect")
    ref, _ = reference_timestamps(toy, long, 400, 80, "reflect")
    assert close(toy.scene_embeddings(long, 16000), ref.mean(dim=1))


def test_the_scene_reuses_the_timestamp_windows_when_they_are_the_same(toy):
    """Past one scene window the scene is the mean of windows of scene_window every scene_hop: when
    those are the timestamp windows (VGGish's, YAMNet's defaults) they are computed once."""
    forwarded = []
    forward_layers = toy.forward_layers
    toy.forward_layers = lambda audio, layers=None: forwarded.append(len(audio)) or forward_layers(audio, layers)
    audio = torch.randn(3, 1000, generator=torch.Generator().manual_seed(9))
    toy.configure(window_ms=25, hop_ms=5, scene_hop_ms=5, pad_mode="reflect")  # scene window: max_window, 400
    rows = {}
    for scene, timestamp in ((True, True), (True, False), (False, True)):
        forwarded.clear()
        rows[scene, timestamp] = (toy.embed(audio, 16000, scene=scene, timestamp=timestamp), sum(forwarded))
    (both, both_rows), (scenes, _), (stamps, stamp_rows) = rows[True, True], rows[True, False], rows[False, True]
    assert both_rows == stamp_rows == 3 * (1 + 1000 // 80)
    for b, s, t in zip(both, scenes, stamps):
        assert close(b.scene, s.scene) and close(b.timestamp, t.timestamp) and close(b.scene, t.timestamp.mean(dim=0))
    short = torch.randn(1, 300)  # within one scene window: still one forward of the whole clip
    assert close(toy.embed(short, 16000)[0].scene, toy.embed_segments(short)[0])
    toy.configure(scene_hop_ms=10)  # other windows: computed apart
    forwarded.clear()
    toy.embed(audio, 16000)
    assert sum(forwarded) == stamp_rows + 3 * (1 + 1000 // 160)


def test_tiny_clips_are_padded_to_the_minimum_window(toy):
    toy.configure(readout="first")
    out = toy.scene_embeddings(torch.ones(1, 3), 16000)
    padded = torch.nn.functional.pad(torch.ones(1, 3), (2, 3))
    assert close(out, toy.embed_segments(padded))


@torch.no_grad()
def frame_reference(toy: ToyExtractor, audio: torch.Tensor) -> torch.Tensor:
    """Frame j centred on j*hop: pad field//2 (and the tail), one conv pass, 1 + n//hop frames."""
    padded = torch.nn.functional.pad(audio, (4, 8))
    frames = torch.tanh(toy.proj(padded.unfold(-1, 8, 4)))
    return frames[:, : 1 + audio.shape[-1] // 4]


@pytest.mark.parametrize("length", [1, 9, 401, 2500])
def test_frame_mode_reads_native_frames_across_chunks(toy, length):
    audio = torch.randn(2, length, generator=torch.Generator().manual_seed(1))
    toy.configure(mode="frame", hop_ms=0.25)  # hop == native frame hop (4 samples)
    emb, times = toy.timestamp_embeddings(audio, 16000)
    ref = frame_reference(toy, audio)
    assert toy.chunk_samples(toy.card.frame_field) < length or length < 400  # several chunks for the long clips
    assert close(emb, ref)
    assert torch.allclose(times[0], torch.arange(ref.shape[1]) * 0.25)
    assert close(toy.scene_embeddings(audio, 16000), ref.mean(dim=1))


def test_frame_mode_resamples_to_the_requested_hop_by_nearest_frame(toy):
    audio = torch.randn(1, 1000)
    toy.configure(mode="frame", hop_ms=1.5)  # 24 samples = 6 native frames
    emb, times = toy.timestamp_embeddings(audio, 16000)
    ref = frame_reference(toy, audio)
    assert emb.shape[1] == 1 + 1000 // 24
    assert close(emb[0], ref[0, ::6][: emb.shape[1]])


def test_frame_mode_rejects_token_readouts(toy):
    with pytest.raises(ConfigError, match="frame mode"):
        toy.configure(mode="frame", readout="sum")


def test_clips_of_different_lengths_pack_into_shared_batches(toy):
    clips = [np.random.default_rng(i).standard_normal(n).astype(np.float32) for i, n in enumerate([50, 999, 3, 420])]
    together = toy.embed(clips, 16000)
    for clip, result in zip(clips, together):
        alone = toy.embed([clip], 16000)[0]
        assert close(result.timestamp, alone.timestamp) and close(result.scene, alone.scene)


@pytest.mark.parametrize("mode", ["window", "frame"])
def test_streaming_in_odd_chunks_equals_one_push(toy, mode):
    toy.configure(mode=mode, pad_mode="reflect" if mode == "window" else "constant", readout="mean" if mode == "frame" else "sum+max")
    clip = np.random.default_rng(3).standard_normal(5000).astype(np.float32)
    whole = toy.embed([clip], 16000)[0]
    session = Session(toy)
    session.open("a")
    rng = np.random.default_rng(4)
    position = 0
    while position < len(clip):
        step = int(rng.integers(1, 700))
        session.push("a", clip[position : position + step])
        position += step
    session.close("a")
    session.flush()
    (key, streamed), = session.take()
    assert key == "a"
    assert close(streamed.timestamp, whole.timestamp) and close(streamed.scene, whole.scene)
    assert torch.equal(streamed.timestamps, whole.timestamps)


def test_layers_and_readouts_concatenate_in_order(toy):
    audio = torch.randn(1, 64)
    toy.configure(layers=["energy", "frames"], readout="mean+max", window_ms=4)
    emb, _ = toy.timestamp_embeddings(audio, 16000)
    assert emb.shape[-1] == (1 + 6) * 2 == toy.timestamp_embedding_size
    toy.configure(layers=["frames"])
    frames_only, _ = toy.timestamp_embeddings(audio, 16000)
    assert close(emb[..., 2:], frames_only)


def test_resampling_from_any_rate(toy):
    audio = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32)
    emb, times = toy.timestamp_embeddings(audio[None], sample_rate=8000)
    assert emb.shape[1] == 1 + 16000 // toy.hop_samples  # 1 s at 16 kHz


def test_bad_audio_and_knobs_are_named(toy):
    with pytest.raises(AudioError, match="NaN"):
        toy.scene_embeddings(torch.tensor([[0.0, float("nan"), 1.0]]), 16000)
    with pytest.raises(AudioError, match="empty"):
        toy.embed([np.zeros(0, np.float32)], 16000)
    with pytest.raises(ConfigError, match="no layer 'conv9'"):
        toy.configure(layers=["conv9"])
    with pytest.raises(ConfigError, match="exceeds the longest input"):
        toy.configure(window_ms=1000)
    with pytest.raises(ConfigError, match="readout 'cls'"):
        toy.configure(readout="cls")


def test_a_discarded_clip_is_never_computed_and_others_finish(toy):
    session = Session(toy)
    session.open(1)
    session.push(1, np.ones(100, np.float32))
    session.open(2)
    session.push(2, np.ones(100, np.float32))
    session.discard(1)
    session.close(2)
    session.flush()
    assert [key for key, _ in session.take()] == [2]


def test_bfloat16_autocast_stays_close_to_float32(toy):
    audio = torch.randn(2, 300, generator=torch.Generator().manual_seed(5))
    exact, _ = toy.timestamp_embeddings(audio, 16000)
    toy.configure(dtype="bfloat16")
    approx, _ = toy.timestamp_embeddings(audio, 16000)
    assert approx.dtype == torch.float32
    assert float((approx - exact).abs().max()) < 0.05 * float(exact.abs().max())
    assert not torch.equal(approx, exact)  # autocast really ran in bfloat16


def test_a_model_in_training_mode_is_refused(toy):
    toy.train()
    with pytest.raises(ConfigError, match="training mode"):
        toy.scene_embeddings(torch.randn(1, 100), 16000)


# ---- per-layer geometry: frequency bands, coarser frames, pooled layers, levels ------------------


@pytest.fixture
def cnn():
    from toymodel import ToyCNN

    return ToyCNN().eval()


def test_freq_pool_pools_channel_major_bands(cnn):
    audio = torch.randn(2, 300, generator=torch.Generator().manual_seed(4))
    maps = cnn.maps(audio)  # (batch, frames, channels, bands)
    for pool, expected in [
        ("flat", maps.flatten(2)),
        ("mean", maps.mean(dim=-1)),
        ("max", maps.amax(dim=-1)),
        ("mean+max", torch.cat([maps.mean(dim=-1), maps.amax(dim=-1)], dim=-1)),
    ]:
        cnn.configure(freq_pool=pool, readout="mean+max")
        vectors = cnn.embed_segments(audio)
        assert vectors.shape[-1] == cnn.scene_embedding_size == 2 * expected.shape[-1]
        assert close(vectors, torch.cat([expected.mean(dim=1), expected.amax(dim=1)], dim=-1))
    with pytest.raises(ConfigError, match="freq_pool"):
        cnn.configure(freq_pool="median")


def test_flat_readout_flattens_frames_channel_major_and_measures_its_width(cnn):
    cnn.configure(layers="map", readout="flat", window_ms=2.0)  # 32 samples: 7 frames of 6
    audio = torch.randn(1, 32)
    assert cnn.scene_embedding_size == 42
    assert close(cnn.embed_segments(audio), cnn.maps(audio).flatten(2).transpose(1, 2).flatten(1))


def test_frame_mode_reads_each_layer_at_its_own_frame_rate(cnn):
    audio = torch.randn(1, 1000, generator=torch.Generator().manual_seed(5))
    cnn.configure(layers="map,coarse", mode="frame", hop_ms=1.0, freq_pool="mean")  # hop 16 samples
    emb, times = cnn.timestamp_embeddings(audio, 16000)
    padded_fine = torch.nn.functional.pad(audio, (4, 8))
    fine = cnn.maps(padded_fine).mean(dim=-1)[:, : 1 + 1000 // 4]  # centred on 4j
    padded_coarse = torch.nn.functional.pad(audio, (6, 12))
    coarse_maps = cnn.maps(padded_coarse)
    coarse = coarse_maps[:, : coarse_maps.shape[1] // 2 * 2].unflatten(1, (-1, 2)).mean(dim=2).mean(dim=-1)
    coarse = coarse[:, : 1 + 1000 // 8]  # centred on 8j
    assert emb.shape == (1, 1 + 1000 // 16, 4) and cnn.timestamp_embedding_size == 4
    assert close(emb[0, :, :2], fine[0, ::4][: emb.shape[1]])
    assert close(emb[0, :, 2:], coarse[0, ::2][: emb.shape[1]])
    assert close(cnn.scene_embeddings(audio, 16000)[0], torch.cat([fine[0].mean(dim=0), coarse[0].mean(dim=0)]))


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_frame_offset_keeps_the_layers_own_frame_grid(cnn, pad_mode):
    """A layer whose frame j sits on clip sample 2 + 8j: the clip is padded by field/2 - 2 = 4, so
    every chunk's frames are the ones of one pass over the whole padded clip, and each timestamp
    reads the frame whose centre is nearest."""
    audio = torch.randn(1, 1000, generator=torch.Generator().manual_seed(7))
    cnn.configure(layers="late", mode="frame", hop_ms=1.0, freq_pool="mean", pad_mode=pad_mode)  # 16 samples
    assert cnn.chunk_samples(12) < 1000  # several chunks
    emb, times = cnn.timestamp_embeddings(audio, 16000)
    padded = torch.nn.functional.pad(audio[:, None], (4, 12), mode=pad_mode)[:, 0]
    maps = cnn.maps(padded)
    late = maps[:, : maps.shape[1] // 2 * 2].unflatten(1, (-1, 2)).mean(dim=2).mean(dim=-1)
    late = late[0, : 1 + (1000 - 2) // 8]  # frames centred on 2 + 8j inside the clip
    centres = torch.arange(1 + 1000 // 16) * 16
    nearest = ((centres - 2) / 8).round().long().clamp(0, len(late) - 1)
    assert torch.equal(nearest[:3], torch.tensor([0, 2, 4]))
    assert emb.shape == (1, len(centres), 2) and torch.allclose(times[0], centres / 16.0)
    assert close(emb[0], late[nearest])
    assert close(cnn.scene_embeddings(audio, 16000)[0], late.mean(dim=0))


def test_a_frame_offset_beyond_half_the_field_is_refused():
    with pytest.raises(CardError, match="frame_offset"):
        dataclasses.replace(TOY_CNN_CARD, layers=(LayerSpec("late", 6, bands=3, frame_hop=8, frame_field=12, frame_offset=7),))


def test_pooled_layers_refuse_frame_mode(cnn):
    with pytest.raises(ConfigError, match="frame mode"):
        cnn.configure(layers="pooled", mode="frame")
    cnn.configure(layers="pooled", mode="window")
    assert cnn.embed_segments(torch.randn(3, 64)).shape == (3, 2)


def test_a_layer_min_window_replaces_the_card_one(cnn):
    cnn.configure(layers="raw", readout="flat", window_ms=0.25)  # 4 samples, card min_window 16
    audio = torch.arange(1.0, 5.0)[None]
    assert close(cnn.embed_segments(audio), audio)
    cnn.configure(layers="raw,map", readout="mean")  # the deeper need wins: padded to 16
    assert cnn.embed_segments(audio).shape == (1, 7)


def test_a_flat_readout_scene_is_the_mean_of_its_windows(cnn):
    cnn.configure(layers="map", readout="flat", window_ms=2.0, hop_ms=0.5)
    audio = torch.randn(2, 700, generator=torch.Generator().manual_seed(6))
    stamps, _ = cnn.timestamp_embeddings(audio, 16000)
    scene = cnn.scene_embeddings(audio, 16000)
    assert scene.shape == (2, cnn.scene_embedding_size) == (2, stamps.shape[-1])
    assert close(scene, stamps.mean(dim=1))
    both = cnn.embed(audio, 16000)  # with timestamps as well: the same windows, computed once
    assert all(close(b.scene, s) and close(b.timestamp, t) for b, s, t in zip(both, scene, stamps))


# ---- what a plugin declares, the engine does ------------------------------------------------


class _Recording(ToyExtractor):
    """The toy with a record of the input lengths the engine forwarded (the engine is under test)."""

    def __init__(self, card):
        super().__init__(card)
        self.lengths: list[int] = []

    def forward_layers(self, audio, layers=None):
        self.lengths.append(audio.shape[-1])
        return super().forward_layers(audio, layers)


def _with_frames_layer(**fields):
    from toymodel import TOY_CARD

    return dataclasses.replace(TOY_CARD, layers=(LayerSpec("frames", 6, tokens=("sum",), **fields), LayerSpec("energy", 1)))


def test_frame_skip_crops_the_frames_before_the_first_valid_one():
    # frames 0 and 1 of each chunk are declared invalid: frame mode must read from frame 2 on, so a
    # clip's frame j is the network's frame j + 2 over the chunk (the padded edge never shows)
    skipping = ToyExtractor(_with_frames_layer(frame_skip=2, frame_field=16)).eval()
    skipping.configure(mode="frame", hop_ms=0.25)
    audio = torch.randn(1, 300, generator=torch.Generator().manual_seed(8))
    emb, _ = skipping.timestamp_embeddings(audio, 16000)
    padded = torch.nn.functional.pad(audio, (8, 16))  # field // 2 before, the field after
    with torch.no_grad():
        frames = torch.tanh(skipping.proj(padded.unfold(-1, 8, 4)))[:, 2:]
    assert close(emb, frames[:, : emb.shape[1]])


def test_frame_mode_refuses_layers_declared_without_it():
    model = ToyExtractor(_with_frames_layer(frame_mode=False)).eval()
    with pytest.raises(ConfigError, match="cannot run in frame mode") as err:
        model.configure(mode="frame")
    assert "mode 'window'" in err.value.hint
    model.configure(layers="energy", mode="frame")  # the other layer still can


def test_frame_pad_extends_each_chunk_and_keeps_the_valid_frames():
    plain = ToyExtractor().eval().configure(mode="frame", hop_ms=0.25)
    padded = _Recording(_with_frames_layer(frame_pad=12)).eval().configure(mode="frame", hop_ms=0.25)
    audio = torch.randn(1, 2500, generator=torch.Generator().manual_seed(9))
    unpadded = _Recording(_with_frames_layer()).eval().configure(mode="frame", hop_ms=0.25)
    assert close(padded.timestamp_embeddings(audio, 16000)[0], plain.timestamp_embeddings(audio, 16000)[0])
    unpadded.timestamp_embeddings(audio, 16000)
    assert padded.lengths == [n + 12 for n in unpadded.lengths] and len(padded.lengths) > 1


def test_a_natural_map_must_match_its_declared_bands(cnn):
    from embedzoo.extractor import as_sequence

    spec = cnn.card.layer("map")
    good = torch.randn(2, 2, 3, 5)  # (batch, channels, bands, frames)
    assert as_sequence(good, spec).shape == (2, 5, 6)
    assert torch.equal(as_sequence(good, spec)[:, 1], good[:, :, :, 1].flatten(1))  # channel-major
    with pytest.raises(RuntimeError, match="3 x 2 map"):
        as_sequence(torch.randn(2, 3, 2, 5), spec)
    with pytest.raises(RuntimeError, match="not declare it pooled"):
        as_sequence(torch.randn(2, 6), spec)
    with pytest.raises(RuntimeError, match="return it as a"):
        as_sequence(torch.randn(2, 5, 6), spec)
