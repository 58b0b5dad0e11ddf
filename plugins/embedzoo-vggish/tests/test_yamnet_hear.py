"""Conformance: hear-validator passes on `yamnet`, its weights pulled offline from a local mirror
holding a random-weight checkpoint in the layout of w-hc's `yamnet.pth` (converted by the core to
safetensors on first use, as the real release file would be)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from test_yamnet import randomised_reference

from embedzoo.registry import get_card

pytest.importorskip("hearvalidator")


def test_hear_validator_passes_with_weights_from_a_mirror(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    release = get_card("yamnet").sources[0].url.rsplit("/", 1)[-1]  # yamnet.pth
    torch.save(randomised_reference(seed=21).state_dict(), mirror / release)
    env = {**os.environ, "EMBEDZOO_MIRROR": str(mirror), "EMBEDZOO_CACHE": str(cache), "EMBEDZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "hearvalidator.validate", "embedzoo.hear", "-m", "yamnet", "-d", "cpu"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Looks good!" in result.stdout
    assert "Received embedding of shape: torch.Size([8, 1024])" in result.stdout  # the pooled embedding
    converted = list((cache / "models" / "yamnet").rglob("*.safetensors"))
    assert len(converted) == 1, converted  # pulled from the mirror and converted once, into the cache
