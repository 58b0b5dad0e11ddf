"""Conformance: hear-validator passes on the small twin of ced-mini (random weights) with the
family's defaults: scene = the mean of the final norm over the clip (windows of one chunk),
timestamps = the same of 480 ms windows every 50 ms."""

from __future__ import annotations

import os

import pytest
from ced_small import ced_catalog, small_id  # noqa: F401  (ced_catalog is a fixture)

from embedzoo.testing import run_hear_validator

pytest.importorskip("hearvalidator")


def test_hear_validator_passes(ced_catalog, tmp_path) -> None:  # noqa: F811
    stdout = run_hear_validator(f"{small_id('ced-mini')}?weights=random", env=dict(os.environ), cwd=tmp_path, timeout=600)
    assert "Received embedding of shape: torch.Size([8, 32])" in stdout, stdout[-2000:]
    assert "Interval between timestamps is 50.0ms" in stdout, stdout[-2000:]
