"""Conformance: hear-validator passes on efficientat-mn04-as, its weights pulled offline from a local
mirror holding a random-weight checkpoint in EfficientAT's release format (converted by the core to safetensors on
first use, as the real release file would be).

The model runs at 32 kHz, which HEAR does not accept; embedzoo.hear presents 48 kHz and resamples.
"""

from __future__ import annotations

import os

import pytest
from efficientat_testutil import get_card, randomised_reference, save_release

from embedzoo.testing import run_hear_validator

pytest.importorskip("hearvalidator")

MODEL = "efficientat-mn04-as"


def test_hear_validator_passes_with_weights_from_a_mirror(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    release = get_card(MODEL).sources[0].url.rsplit("/", 1)[-1]  # mn04_as_mAP_432.pt
    save_release(randomised_reference(0.4, seed=21), mirror / release)
    env = {**os.environ, "EMBEDZOO_MIRROR": str(mirror), "EMBEDZOO_CACHE": str(cache), "EMBEDZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    stdout = run_hear_validator(f"{MODEL}?hop_ms=500", env=env, cwd=tmp_path, timeout=600)
    assert "Received embedding of shape: torch.Size([8, 384])" in stdout  # mn04's pooled features
    converted = list((cache / "models" / MODEL).rglob("*.safetensors"))
    assert len(converted) == 1, converted  # pulled from the mirror and converted once, into the cache
