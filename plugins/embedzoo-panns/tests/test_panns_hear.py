"""Conformance: hear-validator passes on panns-cnn14 (random weights, converted to safetensors), in
window mode (the default: the embedding of 1 s windows) and with preset `sed` (frame mode, block 6
every 10 ms: the HEAR 2021 PANNs submission's timestamp embedding).

The model runs at 32 kHz, which HEAR does not accept; the core's HEAR wrapper exposes a HEAR rate
(48 kHz) and resamples, so the validator sees a conforming module.
"""

from __future__ import annotations

import pytest
import torch
from panns_testutil import catalog_env, get_card, randomised_reference
from safetensors.torch import save_file

from embedzoo import hub
from embedzoo.testing import run_hear_validator

pytest.importorskip("hearvalidator")


@pytest.mark.parametrize("preset", ["", ":sed"])
def test_hear_validator_passes(tmp_path, preset):
    ref = randomised_reference("panns-cnn14", seed=11)
    original = tmp_path / "Cnn14_random.pth"
    torch.save({"model": ref.state_dict()}, original)
    weights = tmp_path / "panns-cnn14.safetensors"
    save_file(hub.convert_checkpoint(get_card("panns-cnn14"), original), str(weights))
    del ref
    stdout = run_hear_validator(f"panns-cnn14{preset}?weights={weights}", env=catalog_env(), cwd=tmp_path, timeout=600)
    assert "Received embedding of shape: torch.Size([8, 2048])" in stdout  # scene: embedding, or block 6 over frequency
    if preset:  # the validator's 2 s clips -> 1 + 2 s // 10 ms timestamps
        assert "Received embedding of shape: torch.Size([16, 201, 2048])" in stdout, stdout[-2000:]
        assert "Interval between timestamps is 10.0ms" in stdout
