"""The conformance suite over every model of the catalog whose plugin is installed (timm's
tests/test_models.py): each is built with random weights and every layer is checked against its
family's geometry (`embedzoo.testing.check_family`). A plugin's own tests keep only its parity."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from embedzoo.registry import get_registry
from embedzoo.testing import catalog_ids, check_family

CARDS = catalog_ids()


def test_every_installed_family_is_in_the_suite():
    families = {get_registry().get(name).family for name in CARDS}
    assert {"crepe", "passt", "panns", "vggish", "yamnet", "efficientat", "openl3"} <= families


@pytest.mark.parametrize("card_id", CARDS)
def test_model_matches_its_family_geometry(card_id):
    torch = pytest.importorskip("torch")
    with torch.random.fork_rng(devices=[]):
        check_family(get_registry().get(card_id))


PLUGIN_SOURCES = sorted((Path(__file__).parents[1] / "plugins").glob("embedzoo-*/embedzoo_*/*.py"))


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_plugin_modules_use_only_the_plugin_surface(path):
    """The family contract, checked in the source: plugins import embedzoo.plugin only, never read
    the engine's knobs, never override configure, and keep no card checks of their own."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "embedzoo":
            assert node.module == "embedzoo.plugin", f"{path.name}:{node.lineno} imports {node.module}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] != "embedzoo" or alias.name == "embedzoo.plugin", f"{path.name}:{node.lineno} imports {alias.name}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            assert node.attr not in ("knobs", "_overrides"), f"{path.name}:{node.lineno} reads self.{node.attr}"
        if isinstance(node, ast.FunctionDef):
            assert node.name not in ("configure", "_check_card"), f"{path.name}:{node.lineno} defines {node.name}"
    if path.name in ("__init__.py", "geometry.py"):
        assert "import torch" not in path.read_text(), f"{path} must stay torch-free"


def test_every_plugin_states_its_family_in_geometry_py():
    for package in sorted((Path(__file__).parents[1] / "plugins").glob("embedzoo-*/embedzoo_*")):
        assert {"__init__.py", "geometry.py", "model.py"} <= {p.name for p in package.glob("*.py")}, package
