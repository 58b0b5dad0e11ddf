"""The catalog: registry.yaml merged with the cards plugins register; lookup by id, alias or glob.

A name (id or alias) claimed twice is an error naming both providers. `EMBEDZOO_REGISTRY` adds
extra catalog files (os.pathsep-separated), for private models.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from embedzoo.card import ModelCard, card_from_dict
from embedzoo.errors import CardError, DuplicateNameError, ModelNotFoundError


def default_registry_path() -> Path:
    """registry.yaml as installed in the wheel, or at the root of a source checkout."""
    packaged = resources.files("embedzoo").joinpath("registry.yaml")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "registry.yaml"


def source_checkout_root() -> Path | None:
    """The repository root when embedzoo runs from a source checkout (plugins/ lies beside it)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "plugins").is_dir() and (root / "registry.yaml").is_file() else None


def read_catalog(path: Path) -> list[dict[str, Any]]:
    """The list of card dicts in one catalog file."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CardError(f"cannot read catalog {path}: {exc}") from exc
    models = (data or {}).get("models", [])
    if not isinstance(models, list):
        raise CardError(f"catalog {path}: 'models' must be a list of cards")
    return models


class Registry:
    """Cards by id, with every alias pointing at its id."""

    def __init__(self) -> None:
        self.cards: dict[str, ModelCard] = {}
        self._names: dict[str, str] = {}

    def add(self, card: ModelCard) -> None:
        for name in card.names:
            if name in self._names:
                other = self.cards[self._names[name]]
                raise DuplicateNameError(
                    f"model name {name!r} is claimed twice: by {other.id!r} from {other.provider} "
                    f"and by {card.id!r} from {card.provider}",
                    hint="remove one of the two, or rename it",
                )
        self.cards[card.id] = card
        for name in card.names:
            self._names[name] = card.id

    def get(self, name: str) -> ModelCard:
        """The card called `name` (id or alias), or an error suggesting near names."""
        if name in self._names:
            return self.cards[self._names[name]]
        close = difflib.get_close_matches(name, list(self._names), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "`embedzoo list` shows every model"
        raise ModelNotFoundError(f"no model called {name!r} in the catalog", hint=hint)

    def find(self, pattern: str | None = None) -> list[ModelCard]:
        """Cards whose id or alias matches a glob (`passt-*`), or contains the text; all when None."""
        if not pattern:
            return list(self.cards.values())
        globbing = any(ch in pattern for ch in "*?[")
        found = []
        for card in self.cards.values():
            if any(fnmatch.fnmatch(n, pattern) if globbing else pattern in n for n in card.names):
                found.append(card)
        return found

    def __iter__(self) -> Iterable[ModelCard]:
        return iter(self.cards.values())

    def __len__(self) -> int:
        return len(self.cards)


def build_registry(with_plugins: bool = True) -> Registry:
    """Merge the packaged catalog, EMBEDZOO_REGISTRY files and plugin-registered cards."""
    registry = Registry()
    paths = [default_registry_path()]
    extra = os.environ.get("EMBEDZOO_REGISTRY", "")
    paths += [Path(p) for p in extra.split(os.pathsep) if p]
    for path in paths:
        for entry in read_catalog(path):
            registry.add(card_from_dict(entry, provider=str(path.name if path == paths[0] else path)))
    if with_plugins:
        from embedzoo.plugins import load_plugins

        for plugin, card in load_plugins().cards:
            provider = f"plugin {plugin}"
            registry.add(card_from_dict(card, provider) if isinstance(card, dict) else _with_provider(card, provider))
    return registry


def _with_provider(card: ModelCard, provider: str) -> ModelCard:
    import dataclasses

    return dataclasses.replace(card, provider=provider)


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide catalog (built once)."""
    return build_registry()


def get_card(name: str) -> ModelCard:
    return get_registry().get(name)
