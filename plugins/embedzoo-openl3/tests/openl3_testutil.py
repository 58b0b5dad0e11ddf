"""Shared helpers: OpenL3 cards, a randomised torchopenl3 reference saved as its `.pth.tar`, and
our converted twin. torchopenl3's model constructor builds its frontend offline (librosa), so a
reference needs no download."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from embedzoo import hub
from embedzoo.card import ModelCard
from embedzoo.registry import get_registry
from embedzoo.testing import rel_err  # noqa: F401  (re-exported to the test modules)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torchopenl3.models import PytorchOpenl3

from embedzoo_openl3.model import OpenL3, create_model

SR = 48000
TOLERANCE = 1e-5
VARIANTS = [(r, c, s) for r in ("mel128", "mel256", "linear") for c in ("music", "env") for s in (512, 6144)]


def card_id(input_repr: str, content_type: str, embedding_size: int) -> str:
    return f"openl3-{input_repr}-{content_type}-{embedding_size}"


def get_card(ident: str) -> ModelCard:
    return get_registry().get(ident)


def randomised_reference(input_repr: str, content_type: str, embedding_size: int, seed: int) -> PytorchOpenl3:
    """torchopenl3's PytorchOpenl3 with random weights: He-normal convs (so activations stay O(1)
    through eight layers), BatchNorm affine and running statistics randomised; the input BatchNorm
    gets statistics of a dB spectrogram in [-80, 0]. The frontend buffers stay as torchopenl3 builds them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa: "Empty filters detected in mel frequency basis"
        ref = PytorchOpenl3(content_type=content_type, input_repr=input_repr, embedding_size=embedding_size)
    g = torch.Generator().manual_seed(seed)
    state = ref.state_dict()
    for key, value in state.items():
        if key.startswith("speclayer.") or key.endswith("num_batches_tracked"):
            continue
        module = key.rsplit(".", 1)[0]
        if module.startswith(("conv2d", "audio_embedding_layer")):
            if key.endswith("weight"):
                state[key] = torch.randn(value.shape, generator=g) * (2.0 / value[0].numel()) ** 0.5
            else:
                state[key] = 0.1 * torch.randn(value.shape, generator=g)
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            state[key] = 0.2 * torch.randn(value.shape, generator=g)
        elif key.endswith("weight"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        else:
            state[key] = 0.1 * torch.randn(value.shape, generator=g)
    state["batch_normalization_1.running_mean"] = torch.tensor([-40.0])
    state["batch_normalization_1.running_var"] = torch.tensor([300.0])
    state["batch_normalization_2.num_batches_tracked"] = torch.tensor(seed + 7)  # a counter that must survive
    ref.load_state_dict(state)
    return ref.eval()


def save_original(ref: PytorchOpenl3, path: Path) -> Path:
    """As the released `torchopenl3_*.pth.tar` files: torch.save of the model's plain state dict
    (frontend buffers included), which torchopenl3 loads with `load_state_dict` directly."""
    torch.save(ref.state_dict(), path)
    return path


def converted(card: ModelCard, path: Path) -> OpenL3:
    """Our model with the original file converted through the core, as `embedzoo pull` would."""
    model = create_model(card)
    model.load_state_dict(hub.convert_checkpoint(card, path), strict=True)
    return model


def make_audio(rows: int, samples: int, seed: int) -> torch.Tensor:
    """Noise plus a chirp at different levels per row; row 0 has a stretch of exact silence (which
    hits the 1e-10 amplitude floor and the -80 dB clamp)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / SR
    chirp = torch.sin(2 * math.pi * (150 + 4000 * t) * t)
    audio = 0.05 * torch.randn(rows, samples, generator=g) + 0.3 * chirp
    audio = audio * torch.linspace(1.0, 0.2, rows)[:, None]
    audio[0, samples // 5 : samples // 5 + SR // 6] = 0.0
    return audio


def reference_layers(ref: PytorchOpenl3, audio: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every layer of the reference in our natural shapes, from its own forward: the spectrogram
    (speclayer) as (batch, frames, bins), the block maps (batch, C, F, T) (hooks on the three max
    pools' inputs are not modules, so blocks are read from `keep_all_outputs`, located by shape),
    and the embedding (batch, D)."""
    with torch.no_grad():
        outputs = ref(audio[:, None, :], keep_all_outputs=True)
    spectrogram = outputs[0][:, 0]  # (B, bins, frames)
    # the three max-pool outputs are the 4-d tensors whose time axis halves; block 4 ends with the
    # audio_embedding_layer conv, the third-last output (before the final pool and the flatten)
    pools = [o for i, o in enumerate(outputs) if i and o.ndim == 4 and o.shape[-1] < outputs[i - 1].shape[-1] and o.shape[1] == outputs[i - 1].shape[1]]
    blocks = pools[:3] + [outputs[-3]]
    assert [b.shape[1] for b in blocks] == [64, 128, 256, 512]
    taken = {"spectrogram": spectrogram.transpose(1, 2)}
    for index, block in enumerate(blocks):
        taken[f"block{index + 1}"] = block  # already (batch, C, F, T)
    taken["embedding"] = outputs[-1]
    return taken
