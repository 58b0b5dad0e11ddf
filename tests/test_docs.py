"""The docs name the tests that prove their promises: every test they name must exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
REFERENCE = re.compile(r"((?:tests|plugins)/[\w./-]+\.py)::(\w+)")


@pytest.mark.parametrize("doc", ["docs/reliability.md"])
def test_every_test_a_doc_names_exists(doc):
    text = (ROOT / doc).read_text()
    named = REFERENCE.findall(text)
    assert len(named) > 30
    missing = [f"{path}::{name}" for path, name in named if not re.search(rf"^\s*def {name}\(", (ROOT / path).read_text(), re.M)]
    assert not missing, missing
