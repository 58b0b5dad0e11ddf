"""The PaSST cards' small twins (`<card>-small`: 64 wide, 2 blocks, 1 head), added to the catalog
through EMBEDZOO_REGISTRY, for tests whose references loop over windows: the recipes are the
windows, not the width."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import pytest
import yaml

from embedzoo.card import card_to_dict
from embedzoo.registry import get_registry

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
FULL_WIDTH = 768


def small_card_entry(card_id: str) -> dict[str, Any]:
    """The card as a catalog entry, with the small network: width/depth in config, layers cut to it."""
    card = get_registry().get(card_id)
    blocks = {f"block{i}" for i in range(SMALL["depth"] + 1, int(card.config.get("depth", 12)) + 1)}
    layers = tuple(
        dataclasses.replace(spec, width=SMALL["embed_dim"] if spec.width == FULL_WIDTH else spec.width)
        for spec in card.layers
        if spec.name not in blocks
    )
    small = dataclasses.replace(card, id=f"{card.id}-small", aliases=(), config={**card.config, **SMALL}, layers=layers)
    entry = card_to_dict(small)
    entry.pop("provider", None)
    return entry


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The `-small` cards in an extra catalog file for the duration of this module."""
    path = tmp_path_factory.mktemp("catalog") / "passt-small.yaml"
    path.write_text(yaml.safe_dump({"models": [small_card_entry(card_id) for card_id in SMALL_CARDS]}))
    before = os.environ.get("EMBEDZOO_REGISTRY")
    os.environ["EMBEDZOO_REGISTRY"] = os.pathsep.join(filter(None, [before, str(path)]))
    get_registry.cache_clear()
    yield
    if before is None:
        del os.environ["EMBEDZOO_REGISTRY"]
    else:
        os.environ["EMBEDZOO_REGISTRY"] = before
    get_registry.cache_clear()
