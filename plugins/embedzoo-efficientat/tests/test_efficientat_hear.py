"""Conformance: hear-validator passes on efficientat-mn04-as, its weights pulled offline from a local
mirror holding a random-weight checkpoint in EfficientAT's release format (converted by the core to safetensors on
first use, as the real release file would be).

The model runs at 32 kHz, which HEAR does not accept; embedzoo.hear presents 48 kHz and resamples.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from efficientat_testutil import get_card, randomised_reference, save_release

pytest.importorskip("hearvalidator")

MODEL = "efficientat-mn04-as"


def test_hear_validator_passes_with_weights_from_a_mirror(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    release = get_card(MODEL).sources[0].url.rsplit("/", 1)[-1]  # mn04_as_mAP_432.pt
    save_release(randomised_reference(0.4, seed=21), mirror / release)
    env = {**os.environ, "EMBEDZOO_MIRROR": str(mirror), "EMBEDZOO_CACHE": str(cache), "EMBEDZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "hearvalidator.validate", "embedzoo.hear", "-m", f"{MODEL}?hop_ms=500", "-d", "cpu"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Looks good!" in result.stdout
    assert "Received embedding of shape: torch.Size([8, 384])" in result.stdout  # mn04's pooled features
    converted = list((cache / "models" / MODEL).rglob("*.safetensors"))
    assert len(converted) == 1, converted  # pulled from the mirror and converted once, into the cache
