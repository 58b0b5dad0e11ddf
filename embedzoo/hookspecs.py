"""The hooks a plugin may implement. All of them are torch-free: they only describe."""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("embedzoo")
hookimpl = pluggy.HookimplMarker("embedzoo")


@hookspec
def register_families(register: Callable[..., None]) -> None:
    """Register each architecture family as register(Family(name, "pkg.model", geometry)); the model module is imported lazily."""


@hookspec
def register_models(register: Callable[..., None]) -> None:
    """Register model cards (a registry.yaml `models:` entry as a dict, or a ModelCard) the catalog does not list."""
