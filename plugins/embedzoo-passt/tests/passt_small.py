"""The PaSST cards' small twins (`<card>-small`: 64 wide, 2 blocks, 1 head), added to the catalog
through EMBEDZOO_REGISTRY, for tests whose references loop over windows: the recipes are the
windows, not the width.

Each twin is what a new checkpoint of the family is: a catalog entry of a few lines (id, family,
config, the presets and defaults it sets beyond the family's). The family's geometry derives
its layers (`block1`, `block2`), widths and windows from the config.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from embedzoo.testing import extra_catalog
from embedzoo.registry import default_registry_path, read_catalog

# hear21passt module -> the embedzoo card that reproduces it with preset "base"
RECIPES = {
    "base20sec": "passt-s-20sec-ap474",
    "base30sec": "passt-s-30sec-ap473",
    "hop100base": "passt-s-hop100-ap473",
    "hop160base": "passt-s-hop160-ap473",
}
# the cards that get a `-small` twin (the base card's serves test_passt_memory)
SMALL_CARDS = (*RECIPES.values(), "passt-s-ap476")
SMALL = {"embed_dim": 64, "depth": 2, "num_heads": 1}
# the family's `frames` preset reads block12, which a 2-block twin lacks: its last block instead
SMALL_PRESETS = {"frames": {"layers": [f"block{SMALL['depth']}"], "mode": "frame", "readout": "mean"}}


def small_entry(card_id: str) -> dict[str, Any]:
    """The card's own catalog entry, renamed, with the small network in its config."""
    (entry,) = [e for e in read_catalog(default_registry_path()).models if e["id"] == card_id]
    twin = {"id": f"{card_id}-small", "family": entry["family"], "config": {**entry["config"], **SMALL}}
    if "defaults" in entry:
        twin["defaults"] = entry["defaults"]
    twin["presets"] = {**entry.get("presets", {}), **SMALL_PRESETS}
    return twin


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The `-small` cards in an extra catalog file for the duration of this module."""
    with extra_catalog(lambda: [small_entry(card_id) for card_id in SMALL_CARDS], tmp_path_factory.mktemp("catalog"), "passt-small"):
        yield
