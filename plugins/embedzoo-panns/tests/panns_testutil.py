"""Shared fixtures: PANNs cards, randomised reference CNN14s (clip and decision-level heads) and
their original checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from panns_hear.models import Cnn14 as RefCnn14
from panns_hear.models import Cnn14_DecisionLevelMax as RefCnn14DLM

from embedzoo import hub
from embedzoo.card import ModelCard
from embedzoo.registry import get_registry
from embedzoo_panns.model import Cnn14, create_model

REF_ARGS = {
    "panns-cnn14": dict(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000, classes_num=527),
    "panns-cnn14-16k": dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000, classes_num=527),
    "panns-cnn14-dlm": dict(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000, classes_num=527),
}
REF_CLASSES = {"panns-cnn14": RefCnn14, "panns-cnn14-16k": RefCnn14, "panns-cnn14-dlm": RefCnn14DLM}


def get_card(card_id: str) -> ModelCard:
    """The catalog's card (registry.yaml)."""
    return get_registry().get(card_id)


def catalog_env() -> dict[str, str]:
    """Environment for a subprocess that finds panns-cnn14 by name."""
    return dict(os.environ)


def randomised_reference(card_id: str, seed: int) -> RefCnn14 | RefCnn14DLM:
    """panns_hear's Cnn14 (or Cnn14_DecisionLevelMax) with random weights, BatchNorm affine and
    running statistics randomised."""
    torch.manual_seed(seed)
    ref = REF_CLASSES[card_id](**REF_ARGS[card_id])
    g = torch.Generator().manual_seed(seed + 1)
    state = ref.state_dict()
    for key, value in state.items():
        if "extractor" in key or key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            state[key] = 0.2 * torch.randn(value.shape, generator=g)
        elif "bn" in key and key.endswith("weight"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        elif "bn" in key and key.endswith("bias"):
            state[key] = 0.1 * torch.randn(value.shape, generator=g)
    if "bn0.running_mean" in state:  # dB log-mel inputs: centre them roughly as the trained model does
        state["bn0.running_mean"] = -40 + 5 * torch.randn(64, generator=g)
        state["bn0.running_var"] = 300 + 50 * torch.rand(64, generator=g)
    ref.load_state_dict(state)
    return ref.eval()


def saved_reference(card_id: str, seed: int, folder) -> tuple[RefCnn14 | RefCnn14DLM, Path]:
    """(randomised reference, its original .pth), saved as released: {'model': state_dict, ...}."""
    ref = randomised_reference(card_id, seed)
    path = folder / f"{card_id}-random.pth"
    torch.save({"model": ref.state_dict(), "iteration": 0}, path)
    return ref, path


def converted_model(card_id: str, path: Path) -> Cnn14:
    """The plugin's model of a card, with an original checkpoint converted by the core."""
    card = get_card(card_id)
    model = create_model(card)
    model.load_state_dict(hub.convert_checkpoint(card, path), strict=True)
    return model


@pytest.fixture(scope="session")
def cnn14_32k(tmp_path_factory):
    """(reference Cnn14, original .pth path) for the 32 kHz model."""
    return saved_reference("panns-cnn14", 0, tmp_path_factory.mktemp("panns"))


@pytest.fixture(scope="session")
def cnn14_dlm(tmp_path_factory):
    """(reference Cnn14_DecisionLevelMax, original .pth path)."""
    return saved_reference("panns-cnn14-dlm", 30, tmp_path_factory.mktemp("panns-dlm"))
