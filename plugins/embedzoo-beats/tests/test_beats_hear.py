"""Conformance: hear-validator passes on the small twin of beats-iter3-plus-as2m (random weights)
with the family's defaults: frame mode, the last block, one timestamp per 160 ms patch column,
the scene their mean."""

from __future__ import annotations

import os

import pytest
from beats_small import PRETRAINED, beats_catalog, small_id  # noqa: F401  (beats_catalog is a fixture)

from embedzoo.testing import run_hear_validator

pytest.importorskip("hearvalidator")


def test_hear_validator_passes(beats_catalog, tmp_path) -> None:  # noqa: F811
    stdout = run_hear_validator(f"{small_id(PRETRAINED)}?weights=random", env=dict(os.environ), cwd=tmp_path, timeout=600)
    assert "Received embedding of shape: torch.Size([8, 48])" in stdout, stdout[-2000:]
    assert "Interval between timestamps is 160.0ms" in stdout, stdout[-2000:]
