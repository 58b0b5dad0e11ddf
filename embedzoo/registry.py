"""The catalog: registry.yaml merged with the cards plugins register; lookup by id, alias or glob.

A catalog file has `families:` (fields a family's models share: plugin, rate, licence, knobs) and
`models:` (per checkpoint: id, aliases, config or arch, sources, ...). Layers and windows are not in
the catalog: the family's plugin derives them from `config` (`embedzoo.family`).

A name (id or alias) claimed twice is an error naming both providers. `EMBEDZOO_REGISTRY` adds
extra catalog files (os.pathsep-separated), for private models.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

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


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader where libyaml is present
# fields a family's geometry supplies: a catalog entry that states them is refused (one place only)
ARCHITECTURE_FIELDS = ("layers", "frame_hop", "frame_field", "min_window", "max_window", "hidden_states", "paddings", "padded", "frame_chunk")
# what a `families:` section may state for all of its models (a model's own value wins)
FAMILY_FIELDS = ("plugin", "sample_rate", "frontend", "license", "homepage", "citation", "description", "defaults", "presets", "config", "archs", "reference_scores")


@dataclass
class Catalog:
    """One catalog file: `families:` (fields shared by a family's models) and `models:` (entries)."""

    path: Path
    families: dict[str, dict[str, Any]]
    models: list[dict[str, Any]]


def read_catalog(path: Path) -> Catalog:
    """The families and model entries of one catalog file, checked for shape."""
    try:
        data = yaml.load(path.read_text(), Loader=_YAML_LOADER) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CardError(f"cannot read catalog {path}: {exc}") from exc
    if not isinstance(data, dict) or set(data) - {"families", "models"}:
        raise CardError(f"catalog {path}: expected top-level keys 'families' and 'models'")
    families, models = data.get("families") or {}, data.get("models") or []
    if not isinstance(families, dict) or not isinstance(models, list):
        raise CardError(f"catalog {path}: 'families' must be a mapping and 'models' a list of entries")
    for name, shared in families.items():
        unknown = set(shared or {}) - set(FAMILY_FIELDS)
        if unknown:
            raise CardError(f"catalog {path}: family {name} has unknown fields {sorted(unknown)}", hint=f"a family may state {', '.join(FAMILY_FIELDS)}")
    return Catalog(path, {name: dict(shared or {}) for name, shared in families.items()}, models)


def resolve_entry(entry: Mapping[str, Any], families: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A `models:` entry completed with its family's shared fields: the model's own values win,
    `defaults` and `presets` merge key by key, and `arch: NAME` picks the family's named config
    (`archs:`) under the entry's own `config`."""
    entry = dict(entry)
    ident = entry.get("id", "?")
    stated = [name for name in ARCHITECTURE_FIELDS if name in entry]
    if stated:
        raise CardError(
            f"model {ident}: {', '.join(stated)} come from the family's geometry.py, not the catalog",
            hint="state the architecture through `config` (or `arch`); the plugin derives layers and windows from it",
        )
    shared = dict(families.get(entry.get("family", ""), {}))
    archs = shared.pop("archs", {})
    arch = entry.pop("arch", None)
    config = dict(shared.get("config", {}))
    if arch is not None:
        if arch not in archs:
            raise CardError(f"model {ident}: family {entry.get('family')} has no arch {arch!r}", hint=f"archs: {', '.join(archs) or 'none'}")
        config.update(archs[arch])
    config.update(entry.get("config", {}))
    merged = {**shared, **entry, "config": config}
    for name in ("defaults", "presets", "reference_scores"):
        if name in shared or name in entry:
            merged[name] = {**shared.get(name, {}), **entry.get(name, {})}
    return merged


class Registry:
    """Cards by id, with every alias pointing at its id."""

    def __init__(self) -> None:
        self.cards: dict[str, ModelCard] = {}
        self._names: dict[str, str] = {}
        self.problems: dict[str, CardError] = {}  # card id -> why its family could not complete it

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
    """Merge the packaged catalog, EMBEDZOO_REGISTRY files and plugin-registered cards; with plugins,
    complete each card from its family's geometry (a card that fails is kept incomplete and its
    error recorded in `problems`: it never breaks the rest of the catalog)."""
    registry = Registry()
    paths = [default_registry_path()]
    extra = os.environ.get("EMBEDZOO_REGISTRY", "")
    paths += [Path(p) for p in extra.split(os.pathsep) if p]
    catalogs = [read_catalog(path) for path in paths]
    families: dict[str, dict[str, Any]] = {}
    origin: dict[str, Path] = {}
    for catalog in catalogs:
        for name, shared in catalog.families.items():
            if name in families:
                raise DuplicateNameError(f"family {name!r} is described twice: in {origin[name]} and in {catalog.path}")
            families[name], origin[name] = shared, catalog.path
    for catalog in catalogs:
        provider = catalog.path.name if catalog.path == paths[0] else str(catalog.path)
        for entry in catalog.models:
            registry.add(card_from_dict(resolve_entry(entry, families), provider=provider))
    if with_plugins:
        from embedzoo.plugins import load_plugins

        state = load_plugins()

        def report(plugin: str, message: str) -> None:
            for info in state.infos:
                if info.name == plugin:
                    info.problems.append(message)

        for plugin, card in state.cards:
            provider = f"plugin {plugin}"
            try:  # a plugin's malformed or clashing card is reported and left out, never fatal
                registry.add(card_from_dict(resolve_entry(card, families), provider) if isinstance(card, dict) else _with_provider(card, provider))
            except (CardError, DuplicateNameError) as exc:
                report(plugin, f"card left out: {exc.message}")
        for card in list(registry):
            family = state.families.get(card.family)
            if family is None:
                continue
            try:
                registry.cards[card.id] = family.complete(card)
            except CardError as exc:
                registry.problems[card.id] = exc
                report(family.plugin, exc.message)
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
