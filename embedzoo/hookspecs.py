"""The hooks a plugin may implement. All of them are torch-free: they only describe."""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("embedzoo")
hookimpl = pluggy.HookimplMarker("embedzoo")


@hookspec
def register_families(register: Callable[..., None]) -> None:
    """Register each architecture family as register(family, "module.path") -- the module is imported lazily."""


@hookspec
def register_models(register: Callable[..., None]) -> None:
    """Register model cards (ModelCard or registry-style dict) that registry.yaml does not list."""
