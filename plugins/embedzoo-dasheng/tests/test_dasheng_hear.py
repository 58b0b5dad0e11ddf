"""Conformance: hear-validator passes on the small twin of dasheng-base (random weights) with the
family's defaults (frame mode on the 40 ms tokens, scene = mean of the final norm's tokens)."""

from __future__ import annotations

import os

import pytest
from dasheng_small import TWIN, dasheng_catalog  # noqa: F401  (dasheng_catalog is a fixture)

from embedzoo.testing import run_hear_validator

pytest.importorskip("hearvalidator")


def test_hear_validator_passes(dasheng_catalog, tmp_path) -> None:  # noqa: F811
    stdout = run_hear_validator(f"{TWIN}?weights=random", env=dict(os.environ), cwd=tmp_path, timeout=600)
    assert "Received embedding of shape: torch.Size([8, 32])" in stdout, stdout[-2000:]
    assert "Interval between timestamps is 40.0ms" in stdout, stdout[-2000:]
