"""Conformance: hear-validator passes on a small Whisper twin (random weights) with preset `hear`
(frame mode, the nearest 20 ms frame every 50 ms; the defaults differ only in the hop). Every
forward is a 30 s input, so the validator's 24 clips cost 24 forwards per call whatever their length."""

from __future__ import annotations

import pytest
from whisper_testutil import whisper_catalog  # noqa: F401  (a fixture)

from embedzoo.testing import run_hear_validator

pytest.importorskip("hearvalidator")


def test_hear_validator_passes(whisper_catalog: str, tmp_path) -> None:
    hop = 50
    stdout = run_hear_validator("whisper-test-80:hear?weights=random", env={"EMBEDZOO_REGISTRY": whisper_catalog}, cwd=tmp_path, timeout=600)
    assert "Received embedding of shape: torch.Size([8, 64])" in stdout  # scene: the mean of the norm frames
    assert f"Received embedding of shape: torch.Size([16, {1 + 2000 // hop}, 64])" in stdout, stdout[-2000:]
    assert f"Interval between timestamps is {hop:.1f}ms" in stdout
