"""Conformance: hear-validator passes on the small twin of ast-audioset-10-10-0.4593 (random
weights) with the family's defaults: scene = pooler_output of the clip, timestamps = the same of
1 s windows every 50 ms, each padded to max_length frames as ASTFeatureExtractor pads."""

from __future__ import annotations

import os

import pytest
from ast_small import CARDS, ast_catalog, small_id  # noqa: F401  (ast_catalog is a fixture)

from embedzoo.testing import run_hear_validator

pytest.importorskip("hearvalidator")


def test_hear_validator_passes(ast_catalog, tmp_path) -> None:  # noqa: F811
    stdout = run_hear_validator(f"{small_id(CARDS[0])}?weights=random", env=dict(os.environ), cwd=tmp_path, timeout=600)
    assert "Received embedding of shape: torch.Size([8, 64])" in stdout, stdout[-2000:]
    assert "Interval between timestamps is 50.0ms" in stdout, stdout[-2000:]
