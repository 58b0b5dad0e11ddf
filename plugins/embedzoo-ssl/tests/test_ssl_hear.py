"""Conformance: hear-validator passes on a small ssl twin (wav2vec2, group norm, 2 layers) with
random weights, in the family's default frame mode (timestamps every 50 ms, scenes the mean of
the clip's frames)."""

from __future__ import annotations

import os

import pytest
from ssl_testutil import catalog_env

from embedzoo.testing import run_hear_validator

pytest.importorskip("hearvalidator")


def test_hear_validator_passes(tmp_path):
    env = {**os.environ, **catalog_env(tmp_path), "OMP_NUM_THREADS": "1"}
    stdout = run_hear_validator("ssl-wav2vec2-group-small?weights=random&layers=block2", env=env, cwd=tmp_path, timeout=600)
    assert "Looks good!" in stdout
