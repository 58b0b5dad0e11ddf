"""The conformance suite over every model of the catalog whose plugin is installed (timm's
tests/test_models.py): each is built with random weights and every layer is checked against its
family's geometry (`embedzoo.testing.check_family`). A plugin's own tests keep only its parity."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from embedzoo.card import ModelCard
from embedzoo.plugins import load_plugins
from embedzoo.registry import get_registry
from embedzoo.testing import catalog_ids, check_family

CARDS = catalog_ids()

# The transformer families run every forward on their full input (AST 10.24 s, Whisper 30 s,
# CLAP 10 s) and reach a billion parameters (hubert-xlarge): the suite checks each of their
# architectures at test width -- the same layers, frames, tokens, paddings and code, the widths and
# depths below -- as timm's suite skips its largest models. Their full sizes are proven by each
# plugin's full-size parity check against transformers (one per family).
TEST_WIDTH = {
    "ast": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 48},
    "ssl": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 48, "conv_dim": [16] * 7,
            "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4},
    "whisper": {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 48},
    "clap": {"patch_embeds_hidden_size": 8, "hidden_size": 64, "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 2, 2], "projection_dim": 16},
    "beats": {"embed_dim": 32, "encoder_embed_dim": 48, "encoder_attention_heads": 4, "encoder_ffn_embed_dim": 64, "encoder_layers": 2,
              "conv_pos": 16, "conv_pos_groups": 4},
    "dasheng": {"embed_dim": 32, "depth": 2, "num_heads": 2},
    "ced": {"embed_dim": 32, "depth": 2, "num_heads": 2},
}


def conformance_card(card_id: str) -> ModelCard:
    """The card as the suite builds it: at test width for the families above, else as it is."""
    card = get_registry().get(card_id)
    small = TEST_WIDTH.get(card.family)
    if small is None:
        return card
    family = load_plugins().families[card.family]
    defaults = {k: v for k, v in card.defaults.items() if k not in ("layers", "mode")}  # its default block may be deeper than 2
    return family.complete(dataclasses.replace(card, config={**card.config, **small}, layers=(), defaults=defaults, presets={}))


def distinct(card_ids: list[str]) -> list[str]:
    """One card per distinct (family, config, sample rate) as the suite builds it: checkpoints of
    one architecture (AST's siblings, Whisper's .en twins) are the same network."""
    seen: dict[str, str] = {}
    for card_id in card_ids:
        card = get_registry().get(card_id)
        small = TEST_WIDTH.get(card.family)
        key = repr((card.family, sorted({**card.config, **(small or {})}.items()), card.sample_rate)) if small else card_id
        seen.setdefault(key, card_id)
    return list(seen.values())


def test_every_installed_family_is_in_the_suite():
    families = {get_registry().get(name).family for name in CARDS}
    assert {"crepe", "passt", "panns", "vggish", "yamnet", "efficientat", "openl3", "ast", "ssl", "whisper", "clap", "dasheng", "ced", "beats"} <= families


@pytest.mark.parametrize("card_id", distinct(CARDS))
def test_model_matches_its_family_geometry(card_id):
    torch = pytest.importorskip("torch")
    with torch.random.fork_rng(devices=[]):
        check_family(conformance_card(card_id))


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
