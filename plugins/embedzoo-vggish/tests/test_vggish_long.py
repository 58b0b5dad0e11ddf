"""VGGish at scale: long input and the speed setting.

- An hour of audio through the core: a `Session` fed the hour in 10 s chunks (as a decoder or a
  live stream would) keeps far less than one decoded copy of the hour in traced memory, and its
  timestamp embeddings are VGGish's embeddings of the right stretches of the stream. Cheap knobs
  keep it fast (random weights): layer `block1` (frontend and the first VGG stage: the whole
  extraction path at a fraction of the cost), one 0.975 s example every two minutes for timestamps
  and for the scene.
- `config.channels_last` (NHWC convolutions, the default, chosen by bench/vggish.py) changes the
  memory layout, not the results: the other setting matches torchvggish on every layer too.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from embedzoo.errors import CardError
from embedzoo.registry import get_card
from embedzoo.testing import rel_err, stream_one_clip
from embedzoo_vggish.geometry import EXAMPLE_SAMPLES
from embedzoo_vggish.model import CHANNELS_LAST, checkpoint_filter_fn, create_model

RATE = 16000
HOUR = 3600 * RATE
CHUNK = 10 * RATE
HOP_S = 120


def tone_table() -> np.ndarray:
    """(60, RATE): one second of each minute's signal, a pair of tones at whole-Hz frequencies (so
    each second repeats; the hour never has to be computed, let alone held)."""
    n = np.arange(RATE) / RATE
    f0 = 150.0 + 40.0 * np.arange(60)[:, None]
    return (0.3 * np.sin(2 * np.pi * f0 * n) + 0.1 * np.sin(2 * np.pi * (3 * f0 + 7) * n)).astype(np.float32)


def stream(table: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) of the hour: minute m plays table[m] over and over."""
    n = np.arange(start, stop)
    return table[n // (60 * RATE), n % RATE]


def test_an_hour_streams_through_vggish_in_bounded_memory():
    torch.manual_seed(0)
    model = create_model(get_card("vggish"))
    model.configure(layers="block1", readout="mean", hop_ms=HOP_S * 1000, scene_hop_ms=HOP_S * 1000)
    table = tone_table()
    decoded_bytes = HOUR * 4  # one float32 copy of the hour
    result, peak = stream_one_clip(model, (stream(table, start, min(start + CHUNK, HOUR)) for start in range(0, HOUR, CHUNK)))
    assert peak < decoded_bytes / 8, f"peak {peak / 1e6:.0f} MB traced for {decoded_bytes / 1e6:.0f} MB of audio"
    count = 3600 // HOP_S + 1
    assert torch.equal(result.timestamps, torch.arange(count) * HOP_S * 1000.0)
    assert result.timestamp.shape == (count, 2048) and result.scene.shape == (2048,) and torch.isfinite(result.scene).all()
    # the k-th timestamp embedding is VGGish's output on the example centred at k * 2 minutes
    for k in (1, 17, 29):
        centre = k * HOP_S * RATE
        window = stream(table, centre - EXAMPLE_SAMPLES // 2, centre + EXAMPLE_SAMPLES - EXAMPLE_SAMPLES // 2)
        expected = model.embed_segments(window[None])[0]
        assert (result.timestamp[k] - expected).abs().max() <= 1e-5 * expected.abs().max(), k
    steps = result.timestamp[1:-1].diff(dim=0).abs().amax(dim=1)
    assert (steps > 1e-3 * result.timestamp.abs().max()).all()  # each minute's tones give their own embedding


def test_memory_layout_setting_changes_speed_not_results():
    """The default layout is what test_vggish.py checks against torchvggish; here the other one."""
    assert create_model(get_card("vggish")).features[3].weight.is_contiguous(memory_format=torch.channels_last) == CHANNELS_LAST
    channels_last = not CHANNELS_LAST
    tv = pytest.importorskip("torchvggish.torchvggish")
    vggish_input = pytest.importorskip("torchvggish.vggish_input")
    torch.manual_seed(1)
    ref = tv._vgg(postprocess=False).eval()
    with torch.no_grad():
        for module in ref.modules():  # He-scaled, so activations stay O(1) through the stack
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.normal_(0.0, (2.0 / module.weight[0].numel()) ** 0.5)
                module.bias.uniform_(-0.1, 0.1)
    card = get_card("vggish")
    model = create_model(dataclasses.replace(card, config={**card.config, "channels_last": channels_last}))
    model.load_state_dict(checkpoint_filter_fn(ref.state_dict(), model), strict=True)
    noise = 0.2 * np.random.default_rng(2).standard_normal((2, EXAMPLE_SAMPLES)).astype(np.float32)
    audio = noise + np.stack([stream(tone_table(), start, start + EXAMPLE_SAMPLES) for start in (0, 3 * 60 * RATE)])
    pools = [m for m in ref.features if isinstance(m, torch.nn.MaxPool2d)]
    maps: dict[str, torch.Tensor] = {}
    hooks = [pool.register_forward_hook(lambda _m, _i, o, n=n: maps.__setitem__(f"block{n + 1}", o)) for n, pool in enumerate(pools)]
    try:
        with torch.no_grad():
            examples = torch.cat([vggish_input.waveform_to_examples(a.astype(np.float64), RATE).detach() for a in audio])
            expected = {"embedding": ref(examples)[:, None]}
    finally:
        for hook in hooks:
            hook.remove()
    expected.update({k: v.transpose(2, 3) for k, v in maps.items()})  # (N, C, T, F) -> the natural (N, C, F, T)
    names = ["block1", "block2", "block3", "block4", "embedding"]
    with torch.no_grad():
        ours = dict(zip(names, model.forward_layers(torch.from_numpy(audio), names)))
    assert model.features[3].weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    for name in names:
        assert rel_err(ours[name], expected[name]) < 1e-5, name
    with pytest.raises(CardError, match="strides"):
        create_model(dataclasses.replace(card, config={"strides": 2}))
