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


def test_the_scale_guide_shows_valid_configs_and_real_options():
    """docs/scale.md: its YAML (a `ray up` config, a KubeRay RayCluster) parses, and every
    `embedzoo embed` option it uses is one the command has."""
    import yaml
    from click.testing import CliRunner

    from embedzoo.cli import main

    text = (ROOT / "docs" / "scale.md").read_text()
    configs = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    assert {"available_node_types", "head_node_type"} <= set(configs[0]) and configs[1]["kind"] == "RayCluster"
    help_text = CliRunner().invoke(main, ["embed", "--help"]).output
    used = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", " ".join(re.findall(r"embedzoo embed [^\n]*(?:\\\n[^\n]*)*", text))))
    assert used and not [option for option in sorted(used) if option not in help_text]
