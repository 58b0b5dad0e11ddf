"""Conformance: hear-validator passes on `yamnet`, its weights pulled offline from a local mirror
holding a random-weight checkpoint in the layout of w-hc's `yamnet.pth` (converted by the core to
safetensors on first use, as the real release file would be)."""

from __future__ import annotations

import os

import pytest
import torch
from test_yamnet import randomised_reference

from embedzoo.registry import get_card
from embedzoo.testing import run_hear_validator

pytest.importorskip("hearvalidator")


def test_hear_validator_passes_with_weights_from_a_mirror(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    release = get_card("yamnet").sources[0].url.rsplit("/", 1)[-1]  # yamnet.pth
    torch.save(randomised_reference(seed=21).state_dict(), mirror / release)
    env = {**os.environ, "EMBEDZOO_MIRROR": str(mirror), "EMBEDZOO_CACHE": str(cache), "EMBEDZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    stdout = run_hear_validator("yamnet", env=env, cwd=tmp_path, timeout=600)
    assert "Received embedding of shape: torch.Size([8, 1024])" in stdout  # the pooled embedding
    converted = list((cache / "models" / "yamnet").rglob("*.safetensors"))
    assert len(converted) == 1, converted  # pulled from the mirror and converted once, into the cache
