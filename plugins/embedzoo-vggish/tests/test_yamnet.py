"""embedzoo's YAMNet against torch-vggish-yamnet (the reference implementation).

Random weights in the reference's own `YAMNet` (BatchNorm statistics and affine parameters
randomised), saved with torch.save in the layout of w-hc's `yamnet.pth`, converted by the core
(`embedzoo.load("yamnet", weights=path)`), then:
- frontend: the log-mel of every patch equals the reference's `WaveformToInput` (a 15600-sample
  window is one patch of its centred STFT once the clip is reflect-padded by 200 samples), and
  frame mode's log-mel equals its whole-clip spectrogram (`wavform_to_log_mel`);
- every block (forward hooks on the reference's `layer1..layer14`), the embedding and the logits
  of each patch within 1e-5 relative error; frequency pooling of a block against the reference map;
- the core's timestamp embeddings equal the reference's whole-clip path (patches of a clip -> embeddings
  and logits) where they correspond;
- frame mode: every block's frames equal the reference network run once over the whole clip (its
  outputs whose receptive field lies in the clip), whatever the chunk size;
- conversion is lossless and names bad keys; an unknown config is refused;
- an hour of audio streams through a Session in bounded memory.
(Shapes, widths, bands and frame counts against `geometry.py`: the core's tests/test_models.py.)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch_vggish_yamnet import yamnet as reference
from torch_vggish_yamnet.input_proc import WaveformToInput

import embedzoo
from embedzoo.errors import CardError, ConfigError, WeightsError
from embedzoo.registry import get_card
from embedzoo.testing import rel_err, stream_one_clip
from embedzoo_vggish.geometry import EXAMPLE_SAMPLES as PATCH_SAMPLES
from embedzoo_vggish.geometry import YAMNET_BLOCKS as BLOCKS
from embedzoo_vggish.geometry import yamnet_blocks, yamnet_geometry
from embedzoo_vggish.yamnet import checkpoint_filter_fn, create_model, folded_inference, release_key_map

SR = 16000
TOLERANCE = 1e-5
PATCH_HOP = 96 * 160  # the reference's patches do not overlap: 15360 samples


def randomised_reference(seed: int) -> nn.Module:
    """torch-vggish-yamnet's YAMNet with random weights: He-normal convs (activations stay O(1)
    through 14 blocks), random BatchNorm statistics and affine parameters, default classifier."""
    torch.manual_seed(seed)
    ref = reference.yamnet(pretrained=False)
    with torch.no_grad():
        for module in ref.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.3)
                module.num_batches_tracked.fill_(seed)
    return ref.eval()


def make_audio(samples: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SR
    return torch.from_numpy((0.2 * rng.standard_normal(samples) + 0.5 * np.sin(2 * np.pi * (300 + 900 * t) * t)).astype(np.float32))


def hooked(ref: nn.Module) -> dict[int, torch.Tensor]:
    """Outputs of the reference's layer1..layer14, refreshed on every forward."""
    caught: dict[int, torch.Tensor] = {}
    for k, name in enumerate(ref.layer_names, 1):
        getattr(ref, name).register_forward_hook(lambda _m, _i, out, k=k: caught.__setitem__(k, out.detach().clone()))
    return caught


def as_frames(block: torch.Tensor) -> torch.Tensor:
    """The reference's (N, C, T, F) map in embedzoo's frame layout (N, T, C*F), frequency fastest."""
    return block.permute(0, 2, 1, 3).flatten(2)


def as_map(block: torch.Tensor) -> torch.Tensor:
    """The reference's (N, C, T, F) map in a conv layer's natural shape (N, C, F, T)."""
    return block.transpose(2, 3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ref = randomised_reference(seed=5)
    caught = hooked(ref)
    path = tmp_path_factory.mktemp("yamnet") / "yamnet.pth"
    torch.save(ref.state_dict(), path)  # the layout of w-hc's release file
    model = embedzoo.load("yamnet", weights=path, device="cpu")
    return ref, caught, model, path


@torch.no_grad()  # outputs compared as values
def test_every_layer_of_every_patch_matches_the_reference(setup):
    ref, caught, model, _ = setup
    clip = make_audio(3 * SR + 777, seed=1)
    patches = WaveformToInput()(clip[None], SR)  # (3, 1, 96, 64): patch k = centred frames 96k .. 96k+95
    with torch.no_grad():
        embedding, logits = ref(patches)
    # patch k's centred frames are uncentred frames of the clip reflect-padded by 200 samples
    padded = torch.nn.functional.pad(clip[None, None], (200, 200), mode="reflect")[0, 0]
    windows = torch.stack([padded[k * PATCH_HOP : k * PATCH_HOP + PATCH_SAMPLES] for k in range(len(patches))])
    ours = dict(zip(["logmel", *BLOCKS, "embedding", "logits"], model.forward_layers(windows)))

    assert rel_err(ours["logmel"], patches[:, 0]) < TOLERANCE
    for k, name in enumerate(BLOCKS, 1):
        assert rel_err(ours[name], as_map(caught[k])) < TOLERANCE, name
    assert rel_err(ours["embedding"], embedding.flatten(1)) < TOLERANCE
    assert rel_err(ours["logits"], logits) < TOLERANCE
    # a subset of layers stops early and gives the same values
    block5, emb = model.forward_layers(windows, ["block5", "embedding"])
    assert torch.equal(block5, ours["block5"]) and torch.equal(emb, ours["embedding"])

    # a longer window (154 frames: odd lengths from block 5 on, where "SAME" pads both sides)
    long = clip[None, : 25000]
    logmel, block9, embedding_long = model.forward_layers(long, ["logmel", "block9", "embedding"])
    with torch.no_grad():
        reference_embedding, _ = ref(logmel[:, None])
    assert logmel.shape[1] == 154
    assert rel_err(block9, as_map(caught[9])) < TOLERANCE
    assert rel_err(embedding_long, reference_embedding.flatten(1)) < TOLERANCE


def test_folded_and_unfolded_paths_match_the_reference_and_follow_new_weights(setup):
    """Float32 inference folds each BatchNorm into the conv before it (what the test above checks);
    with autograd on (or under autocast) the blocks run as they are. Both match the reference on
    every block, and the folded weights are remade when a weight or statistic changes."""
    ref, caught, model, _ = setup
    patches = torch.randn(2, 1, 96, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert folded_inference(patches, model)
        ref(patches)  # fills `caught`
    assert not folded_inference(patches, model)
    expected = dict(caught)
    with torch.enable_grad():
        x, maps = patches, []
        for block in model.blocks:  # the blocks as modules: BatchNorm and ReLU after each conv
            x = block(x)
            maps.append(x)
    assert maps[-1].requires_grad
    for k, output in enumerate(maps, 1):
        assert rel_err(output.detach(), expected[k]) < TOLERANCE, k
    with torch.no_grad():
        folded = [model.folded_block(k, patches if k == 0 else maps[k - 1].detach()) for k in range(len(maps))]
    for k, output in enumerate(folded, 1):
        assert rel_err(output, expected[k]) < TOLERANCE, k
    fresh = create_model(get_card("yamnet"))  # random weights
    with torch.no_grad():
        before = fresh.folded_block(13, maps[12].detach())
        fresh.load_state_dict(model.state_dict(), strict=True)
        after = fresh.folded_block(13, maps[12].detach())
        fresh.blocks[13].bn2.running_mean.add_(0.5)  # one statistic, in place
        moved = fresh.folded_block(13, maps[12].detach())
    assert rel_err(before, expected[14]) > 1e-2
    assert rel_err(after, expected[14]) < TOLERANCE
    assert rel_err(moved, after) > 1e-4


def test_frequency_pooling_of_a_block_matches_the_reference_map(setup):
    ref, caught, model, _ = setup
    clip = make_audio(PATCH_HOP, seed=2)  # exactly one patch
    patch = WaveformToInput()(clip[None], SR)
    with torch.no_grad():
        ref(patch)
    block7 = caught[7]  # (1, 512, 6, 4)
    model.configure(layers="block7", freq_pool="mean+max", readout="mean", pad_mode="reflect")
    try:
        padded = torch.nn.functional.pad(clip[None, None], (200, 200), mode="reflect")[0, 0, :PATCH_SAMPLES]
        ours = model.embed_segments(padded[None])
    finally:
        model.configure(layers="embedding", freq_pool="flat", pad_mode="constant")
    expected = torch.cat([block7.mean(dim=3).mean(dim=2), block7.amax(dim=3).mean(dim=2)], dim=1)
    assert rel_err(ours, expected) < TOLERANCE


def test_timestamp_embeddings_match_the_reference_whole_clip_path(setup):
    """The reference cuts a clip's centred log-mel into patches: patch k sees samples
    [15360 k - 200, 15360 k + 15400), centred 7600 samples after 15360 k. embedzoo's window k at a
    960 ms hop sees [15360 k - 7800, 15360 k + 7800). So the reference's patches of the clip delayed
    by 7600 zero samples are embedzoo's windows of the clip (zero padding, HEAR timestamps)."""
    ref, _, model, _ = setup
    clip = make_audio(5 * SR + 1234, seed=3)
    delayed = torch.cat([torch.zeros(7600), clip, torch.zeros(PATCH_SAMPLES)])
    with torch.no_grad():
        embedding, logits = ref(WaveformToInput()(delayed[None], SR))
    model.configure(layers="embedding,logits", hop_ms=960, pad_mode="constant")
    try:
        ours, timestamps = model.timestamp_embeddings(clip[None], SR)
    finally:
        model.configure(layers="embedding", hop_ms=480)
    count = ours.shape[1]
    assert count == len(clip) // PATCH_HOP + 1 and count <= len(embedding)
    assert torch.allclose(timestamps[0], torch.arange(count) * 960.0)
    expected = torch.cat([embedding.flatten(1), logits], dim=1)[:count]
    assert rel_err(ours[0], expected) < TOLERANCE


def test_frame_mode_equals_the_reference_network_over_the_whole_clip(setup):
    """Frame mode reads each block at its own rate; frame j must be the reference network's output
    centred on sample j x frame_hop of the clip, computed over the whole clip at once (no chunk
    edges), although embedzoo computes it in chunks (4 s of audio per forward: several per block)."""
    ref, caught, model, _ = setup
    clip = make_audio(4 * SR + 1234, seed=4)
    # the log-mel: frame j centred on sample 160 j, reflect padding = the reference's whole-clip spectrogram
    _, spectrogram = WaveformToInput().wavform_to_log_mel(clip[None], SR)
    model.configure(mode="frame", layers="logmel", pad_mode="reflect", hop_ms=10, batch_seconds=4)
    try:
        logmel, _ = model.timestamp_embeddings(clip[None], SR)
        assert rel_err(logmel[0], torch.from_numpy(spectrogram)) < TOLERANCE

        # One pass of the reference over the clip delayed by P zeros. Its centred frame t + 2 covers
        # clip samples [160 t + 120 - P, 160 t + 520 - P): uncentred frames, as ours are; on a multiple
        # of 32 frames every stride-2 conv pads at the end only, as our frame mode does.
        delay = 160 + 5 * 5120
        delayed = torch.cat([torch.zeros(delay), clip, torch.zeros(60000)])
        _, spec = WaveformToInput().wavform_to_log_mel(delayed[None], SR)
        spec = torch.from_numpy(spec)[2:]
        with torch.no_grad():
            ref(spec[None, None, : len(spec) // 32 * 32])
        for k, geometry in enumerate(yamnet_blocks(), 1):
            hop, field = geometry.frame_hop, geometry.frame_field
            model.configure(layers=f"block{k}", pad_mode="constant", hop_ms=hop * 1000 / SR)
            frames, timestamps = model.timestamp_embeddings(clip[None], SR)
            count = frames.shape[1]
            assert count == len(clip) // hop + 1
            assert torch.allclose(timestamps[0], torch.arange(count) * hop * 1000.0 / SR)
            # reference output i is centred on clip sample centre0 + 120 - delay + i * hop, where
            # centre0 = field // 2 - skip * hop is where output 0 is centred on an undelayed input
            offset, rest = divmod(delay - 120 - (field // 2 - geometry.skip * hop), hop)
            assert rest == 0 and offset >= geometry.skip
            expected = as_frames(caught[k])[0, offset : offset + count]
            assert rel_err(frames[0], expected) < TOLERANCE, k
    finally:
        model.configure(mode="window", layers="embedding", hop_ms=480, pad_mode="constant", batch_seconds=128)


@torch.no_grad()  # outputs compared as values
def test_defaults_and_pooled_layers(setup):
    _, _, model, _ = setup
    assert model.knobs.hop_ms == 480 and model.window_samples == PATCH_SAMPLES
    clip = make_audio(3 * SR, seed=6)
    embeddings, timestamps = model.timestamp_embeddings(clip[None], SR)
    assert embeddings.shape == (1, 7, 1024)
    assert torch.allclose(timestamps[0], torch.arange(7) * 480.0)
    # a short clip is zero-padded around its centre to one patch for the pooled layers
    short = make_audio(SR // 2, seed=7)
    scene = model.scene_embeddings(short[None], SR)
    centred = torch.nn.functional.pad(short, ((PATCH_SAMPLES - len(short)) // 2, PATCH_SAMPLES - len(short) - (PATCH_SAMPLES - len(short)) // 2))
    assert rel_err(scene[0], model.forward_layers(centred[None], ["embedding"])[0][0]) < TOLERANCE
    with pytest.raises(ConfigError, match="frame mode"):
        model.configure(mode="frame")  # embedding and logits are one vector per window
    assert model.knobs.mode == "window"
    frames, _ = embedzoo.load("yamnet:frames", weights=setup[3], device="cpu").timestamp_embeddings(clip[None], SR)
    assert frames.shape == (1, len(clip) // 5120 + 1, 1024)  # block14's 1024 channels, mean over 2 bands


def test_conversion_is_lossless_and_names_bad_keys(setup):
    ref, _, model, _ = setup
    original = ref.state_dict()
    mapping = release_key_map()
    assert set(mapping) == set(original)  # every key of the release layout has a place
    converted = checkpoint_filter_fn(original, model)
    assert set(converted) == set(model.state_dict())
    for key, value in original.items():
        assert torch.equal(converted[mapping[key]], value), key
    assert set(checkpoint_filter_fn(converted, model)) == set(converted)  # our own layout passes through

    old = {k: v for k, v in original.items() if not k.endswith("num_batches_tracked")}
    assert int(checkpoint_filter_fn(old, model)["blocks.3.bn2.num_batches_tracked"]) == 0  # unused counter: filled
    with pytest.raises(WeightsError, match="layer9.pointwise_conv.bn.running_var"):
        checkpoint_filter_fn({k: v for k, v in original.items() if k != "layer9.pointwise_conv.bn.running_var"}, model)
    with pytest.raises(WeightsError, match="layer15.conv.weight"):
        checkpoint_filter_fn({**original, "layer15.conv.weight": torch.zeros(1)}, model)
    with pytest.raises(WeightsError, match="classifier.weight"):
        checkpoint_filter_fn({**original, "classifier.weight": torch.zeros(527, 1024)}, model)


def test_an_unknown_config_is_refused():
    """YAMNet has no variants: a config key other than channels_last is a typo, in the catalog and
    when building."""
    with pytest.raises(CardError, match="width_mult"):
        yamnet_geometry({"width_mult": 2})
    with pytest.raises(CardError, match="config"):
        create_model(dataclasses.replace(get_card("yamnet"), config={"width_mult": 2}))


def test_an_hour_streams_through_a_session_in_bounded_memory():
    """An hour at 16 kHz pushed in 10 s chunks (never held whole), the embedding of a 0.975 s
    window every minute; the scene's windows are the timestamps' (the card's scene window and hop
    follow them) and are computed once. Traced numpy memory stays a fraction of the hour."""
    torch.manual_seed(0)
    model = create_model(get_card("yamnet")).eval()
    model.configure(hop_ms=60000, scene_hop_ms=60000)
    chunk = make_audio(10 * SR, seed=21).numpy()  # the same 10 s, over and over
    hour_bytes = 3600 * SR * 4
    result, peak = stream_one_clip(model, (chunk for _ in range(360)))
    assert result.timestamp.shape == (61, 1024) and result.scene.shape == (1024,)
    assert torch.isfinite(result.timestamp).all() and result.timestamp.std() > 0
    inside = result.timestamp[1:-1]  # windows centred on whole minutes see the same 10 s period
    assert rel_err(inside, inside[:1].expand_as(inside)) < TOLERANCE
    assert torch.allclose(result.scene, result.timestamp.mean(dim=0), rtol=1e-5, atol=1e-6)
    assert peak < hour_bytes / 8, f"peak {peak / 1e6:.0f} MB for {hour_bytes / 1e6:.0f} MB of audio"
