"""Plugin discovery with pluggy: entry-point group `embedzoo`, each entry point loaded on its own.

A plugin that fails to import (or whose hooks raise) is recorded with its name, version and error
and shown by `embedzoo plugins`; it never breaks another command. `EMBEDZOO_LOAD_PLUGINS` (a comma
list of entry-point names; empty means none) selects which plugins load.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import traceback
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from embedzoo import hookspecs
from embedzoo.errors import DuplicateNameError, PluginError
from embedzoo.family import Family

ENTRY_POINT_GROUP = "embedzoo"


@dataclass
class PluginInfo:
    """What `embedzoo plugins` shows for one entry point."""

    name: str
    distribution: str = ""
    version: str = ""
    families: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    error: str | None = None
    problems: list[str] = field(default_factory=list)  # cards of its families it could not complete

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class PluginState:
    manager: pluggy.PluginManager
    infos: list[PluginInfo]
    families: dict[str, Family]  # family name -> the Family its plugin registered
    cards: list[tuple[str, Any]]  # (plugin name, ModelCard or dict)


_STATE: PluginState | None = None


def _selected_names() -> set[str] | None:
    value = os.environ.get("EMBEDZOO_LOAD_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _short_error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def load_plugins(refresh: bool = False) -> PluginState:
    """Load every selected entry point once per process and collect what they register."""
    global _STATE
    if _STATE is not None and not refresh:
        return _STATE
    manager = pluggy.PluginManager("embedzoo")
    manager.add_hookspecs(hookspecs)
    selected = _selected_names()
    infos: list[PluginInfo] = []
    families: dict[str, Family] = {}
    cards: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for entry_point in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        if entry_point.name in seen or (selected is not None and entry_point.name not in selected):
            continue
        seen.add(entry_point.name)
        dist = entry_point.dist
        info = PluginInfo(
            name=entry_point.name,
            distribution=dist.metadata["Name"] if dist is not None else "",
            version=dist.version if dist is not None else "",
        )
        infos.append(info)
        try:
            module = entry_point.load()
            _collect(module, info, families, cards)
            manager.register(module, name=entry_point.name)
        except Exception as exc:  # a broken plugin is reported, never fatal
            info.error = _short_error(exc)
    _STATE = PluginState(manager, infos, families, cards)
    return _STATE


def _collect(module: ModuleType, info: PluginInfo, families: dict[str, Family], cards: list) -> None:
    """Call one plugin's hooks on its own, so its errors are attributed to it."""
    own: list[Family] = []
    own_cards: list[Any] = []

    def register_family(family: Family) -> None:
        if not isinstance(family, Family):
            raise PluginError(f"plugin {info.name}: register_families must call register(Family(...)), got {family!r}")
        own.append(family)

    def register_model(card: Any) -> None:
        own_cards.append(card)

    # A manager of its own per plugin: pluggy validates the hookimpls, and errors are this plugin's.
    single = pluggy.PluginManager("embedzoo")
    single.add_hookspecs(hookspecs)
    single.register(module, name=info.name)
    single.hook.register_families(register=register_family)
    single.hook.register_models(register=register_model)
    names = [family.name for family in own]
    for family in own:
        if family.name in families or names.count(family.name) > 1:
            other = families[family.name].plugin if family.name in families else info.name
            raise DuplicateNameError(f"family {family.name!r} is registered by both plugin {other!r} and plugin {info.name!r}")
    for family in own:
        families[family.name] = dataclasses.replace(family, plugin=info.name)
    info.families = sorted(names)
    for card in own_cards:
        cards.append((info.name, card))
        info.models.append(card["id"] if isinstance(card, dict) else card.id)


def family_module(family: str, plugin_hint: str = "") -> ModuleType:
    """Import (lazily, on first use) the module that builds models of `family`."""
    state = load_plugins()
    if family not in state.families:
        failed = [info for info in state.infos if not info.ok]
        detail = "".join(f"\n  plugin {i.name} failed to load: {i.error}" for i in failed)
        install = plugin_hint.removeprefix("embedzoo-") or family
        raise PluginError(
            f"no installed plugin provides the model family {family!r}{detail}",
            hint=f"run `embedzoo install {install}` (or check EMBEDZOO_LOAD_PLUGINS); `embedzoo plugins` lists what is loaded",
        )
    registered = state.families[family]
    try:
        module = importlib.import_module(registered.model)
    except Exception as exc:
        raise PluginError(f"plugin {registered.plugin!r} failed to import {registered.model} for family {family!r}: {_short_error(exc)}") from exc
    for required in ("create_model", "checkpoint_filter_fn"):
        if not hasattr(module, required):
            raise PluginError(f"plugin {registered.plugin!r}: module {registered.model} has no {required}()")
    return module
