"""The host path of issue 15: batches assembled in one copy, the device's budget, the `compile`
knob, and the stereo down-mix -- each against an independent computation of the same thing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedzoo.audio import to_mono
from embedzoo.extractor import Session

from toymodel import TOY_CARD, ToyExtractor


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", list(range(2, 12)))
def test_down_mix_is_numpys_mean_to_the_bit(channels, dtype):
    """The fast column sum gives numpy's mean byte for byte, signed zeros included (numpy sums
    from +0.0: two -0.0 samples mix to +0.0); from 8 channels numpy's own mean runs."""
    x = np.random.default_rng(channels).standard_normal((5000, channels)).astype(dtype)
    x[:4] = -0.0
    x[4:8, 0] = 0.0
    expected = x.mean(axis=1, dtype=np.float32) if dtype == np.float32 else x.mean(axis=1)
    mixed = to_mono(x)
    assert mixed.dtype == expected.dtype
    assert mixed.tobytes() == expected.tobytes()


def test_a_batch_is_its_pieces_padded_as_torch_pads_them():
    """`host_batch` copies the pieces of a batch once, into the padded batch, that F.pad of their
    concatenation would give; it shares no memory with them (the framers reuse theirs)."""
    model = ToyExtractor().eval()
    rng = np.random.default_rng(0)
    pieces = [rng.standard_normal((n, 5)).astype(np.float32) for n in (2, 1, 3)]
    batch = model.host_batch(pieces)
    short = TOY_CARD.min_window - 5
    expected = torch.nn.functional.pad(torch.from_numpy(np.concatenate(pieces)), (short // 2, short - short // 2))
    assert batch.shape == expected.shape and torch.equal(batch, expected)
    assert not any(np.shares_memory(batch.numpy(), piece) for piece in pieces)
    assert torch.equal(model.embed_batch(batch, 5).cpu(), model.embed_segments(np.concatenate(pieces)))


def test_a_session_gives_what_one_forward_per_batch_gives():
    """Rows filed from results kept on the device equal `embed_segments` of the same batches."""
    model = ToyExtractor().eval().configure(batch_size=3, hop_ms=0.5, window_ms=1.0)
    clip = np.random.default_rng(1).standard_normal(64).astype(np.float32)
    session = Session(model, scene=False, timestamp=True)
    session.open("a")
    session.push("a", clip)
    session.close("a")
    session.flush()
    (_, result), = session.take()
    window, hop = model.window_samples, model.hop_samples
    padded = np.pad(clip, window // 2)
    windows = np.stack([padded[i * hop : i * hop + window] for i in range(len(result.timestamp))])
    expected = torch.cat([model.embed_segments(windows[i : i + 3]) for i in range(0, len(windows), 3)])
    assert torch.equal(result.timestamp, expected)


def test_the_gpu_budget_applies_off_the_cpu_only():
    """batch_seconds sizes the CPU's batches, gpu_batch_seconds a GPU's (here a model on the meta
    device, which is no CPU): the two devices' best batches differ tenfold."""
    model = ToyExtractor().eval().configure(batch_seconds=0.01, gpu_batch_seconds=0.1)
    assert model.batch_rows(16) == 160 // 16 and model.chunk_samples(8) == 160
    meta = model.to("meta")
    assert meta.batch_rows(16) == 1600 // 16
    assert meta.chunk_samples(8) == 400  # frame chunks within the budget, at most max_window


def test_compile_matches_eager_and_compiles_before_the_first_clip():
    """The compile knob: a Session compiles each track's full-batch shape when it opens (not in
    the first clip's time), and embeddings equal eager ones within 1e-5."""
    pytest.importorskip("torch._inductor")
    eager = ToyExtractor().eval().configure(batch_size=4)
    compiled = eager.with_knobs({"compile": True})
    clip = np.random.default_rng(2).standard_normal(300).astype(np.float32)
    session = Session(compiled)
    assert session._batch_shapes() and compiled._compiled["shapes"] == {
        (rows, size, frames, knobs.layers, knobs.padding) for rows, size, frames, knobs in session._batch_shapes()
    }
    ours = compiled.embed([clip], 16000)[0]
    reference = eager.embed([clip], 16000)[0]
    assert torch.allclose(ours.timestamp, reference.timestamp, atol=1e-5, rtol=0)
    assert torch.allclose(ours.scene, reference.scene, atol=1e-5, rtol=0)
    assert eager._forward() == eager.forward_layers  # the views without the knob run eager


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_batches_are_pinned_and_embeddings_are_the_cpus():
    """The CUDA branch: batches assembled in pinned memory, results copied back behind the queue
    and read after the clip's event -- the same embeddings as on the CPU within 1e-5."""
    cpu = ToyExtractor().eval().configure(batch_size=3)
    gpu = ToyExtractor().eval().configure(batch_size=3).to("cuda")
    assert gpu.host_batch([np.zeros((2, 8), dtype=np.float32)]).is_pinned()
    rng = np.random.default_rng(3)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (50, 300, 900)]
    for ours, reference in zip(gpu.embed(clips, 16000), cpu.embed(clips, 16000)):
        assert ours.scene.device.type == "cpu"
        assert torch.allclose(ours.scene, reference.scene, atol=1e-5, rtol=0)
        assert torch.allclose(ours.timestamp, reference.timestamp, atol=1e-5, rtol=0)
