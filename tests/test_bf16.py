"""bfloat16 autocast against float32, per family, and scaled-dot-product attention in every
transformer: the figures docs/performance.md states, measured.

The CPU's autocast(cpu, bfloat16) is the proxy for CUDA's: the same ops run in bf16 (matmuls,
convolutions) and the same stay float32 (the frontends turn autocast off). Each family's default
layers of one card (transformers at the conformance suite's test width) embed two clips both ways;
the error is max |bf16 - fp32| / max |fp32| over scene and timestamp embeddings.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from embedzoo.loader import build_model
from embedzoo.plugins import load_plugins
from embedzoo.testing import randomise_batchnorm

from test_models import TEST_WIDTH, conformance_card

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"

# family -> (the card measured, bf16 tolerance): the measured error (random weights, CPU proxy)
# rounded up with headroom; docs/performance.md's table states the same numbers
BF16 = {
    "panns": ("panns-cnn14-16k", 2e-2),
    "vggish": ("vggish", 2e-2),
    "yamnet": ("yamnet", 1e-2),
    "efficientat": ("efficientat-mn04-as", 2e-2),
    "openl3": ("openl3-linear-env-512", 2e-2),
    "crepe": ("crepe-tiny", 2e-2),
    "ast": ("ast-audioset-10-10-0.4593", 3e-2),
    "ssl": ("hubert-base-ls960", 5e-2),
    "whisper": ("whisper-base", 1e-3),
    "clap": ("clap-htsat-unfused", 3e-2),
    "beats": ("beats-iter1", 1e-2),
    "dasheng": ("dasheng-base", 1e-2),
    "ced": ("ced-tiny", 2e-2),
    "passt": ("passt-s-ap476", 3e-2),
}

# oneDNN's bf16 convolutions are wrong on this torch (2.11, CPU) for some shapes: NaN for PaSST's
# patch embedding (16x16, stride 10) on batches of windows, errors of 0.4-0.5 after the 1-d conv
# stacks of HuBERT and BEATs (2e-2 and 3e-3 without oneDNN). CUDA runs no oneDNN, so the proxy
# measures these with torch's own kernels -- only these: those are far slower for big CNNs (35 s a
# window for OpenL3 against 0.4 s)
ONEDNN_WRONG = {"passt", "ssl", "beats"}

# cards whose attention is another class than their family's card in BF16: WavLM's gated
# relative-position attention (transformers' eager class, replaced by the ssl plugin's SDPA one)
OTHER_ATTENTION = ("wavlm-base-plus", "wav2vec2-base", "data2vec-audio-base")
TRANSFORMERS = sorted({*TEST_WIDTH, "passt"} - {"ssl"}) + ["ssl"]


def _installed(family: str) -> bool:
    return family in load_plugins().families


def _model(card_id: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomise_batchnorm(build_model(conformance_card(card_id)).eval())


def _clips(rate: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [0.1 * rng.standard_normal(int(seconds * rate)).astype(np.float32) for seconds in (1.3, 0.7)]


def _doc_table() -> dict[str, float]:
    """The bf16 table of docs/performance.md: | family | card | tolerance | ... |."""
    rows = re.findall(r"^\| `?(\w+)`? \| `([\w.-]+)` \| ([0-9.e-]+) \|", DOC.read_text(), re.MULTILINE)
    return {family: float(tolerance) for family, _, tolerance in rows}


def test_the_documented_tolerances_are_the_tested_ones():
    assert _doc_table() == {family: tolerance for family, (_, tolerance) in BF16.items()}


@pytest.mark.parametrize("family", list(BF16))
def test_bfloat16_stays_within_the_familys_tolerance(family, one_thread):
    card_id, tolerance = BF16[family]
    assert _installed(family), f"the {family} plugin is not installed: bash scripts/test.sh installs every plugin"
    model = _model(card_id)
    clips = _clips(model.card.sample_rate)
    sparse = {"hop_ms": 250.0} if model.knobs.mode == "window" else {}  # fewer windows: bf16 convolutions are slow on the CPU
    exact = model.embed(clips, model.card.sample_rate, knobs=sparse)
    with torch.backends.mkldnn.flags(enabled=family not in ONEDNN_WRONG):
        rounded = model.embed(clips, model.card.sample_rate, knobs={**sparse, "dtype": "bfloat16"})
    errors = []
    for ours, reference in zip(rounded, exact):
        for kind in ("scene", "timestamp"):
            a, b = getattr(ours, kind).double(), getattr(reference, kind).double()
            assert torch.isfinite(a).all(), f"{card_id}: non-finite {kind} embeddings in bfloat16"
            errors.append(float((a - b).abs().max() / b.abs().max()))
    assert 0 < max(errors) <= tolerance, (card_id, errors)


class _Attention(TorchFunctionMode):
    """Counts the attention calls of a forward: SDPA, and the softmax / MHA of eager attention."""

    def __init__(self) -> None:
        super().__init__()
        self.sdpa = self.eager = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.sdpa += 1
        elif func in (F.softmax, torch.softmax, torch.Tensor.softmax, F.multi_head_attention_forward):
            self.eager += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("card_id", sorted({BF16[f][0] for f in TRANSFORMERS} | set(OTHER_ATTENTION)))
def test_every_transformer_attends_with_sdpa(card_id, one_thread):
    """No explicit softmax or multi_head_attention_forward anywhere in a forward: CLAP's HTS-AT and
    WavLM too, whose transformers classes have none (their plugins swap in SDPA ones)."""
    family = conformance_card(card_id).family
    assert _installed(family), f"the {family} plugin is not installed: bash scripts/test.sh installs every plugin"
    model = _model(card_id)
    counter = _Attention()
    with counter:
        model.embed(_clips(model.card.sample_rate)[:1], model.card.sample_rate, timestamp=False)
    assert counter.sdpa > 0 and counter.eager == 0, (card_id, counter.sdpa, counter.eager)
