"""`embedzoo install` / `uninstall`: add or remove plugin distributions in embedzoo's interpreter.

A name resolves through the catalog: a family (`crepe`), a model id (`crepe-tiny`) or a plugin
distribution (`embedzoo-crepe`). In a source checkout the plugin's folder under `plugins/` is
installed; elsewhere the distribution is installed from the package index. An existing folder or
wheel path is installed as given. pip runs as `sys.executable -m pip`; where pip is missing, uv.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from embedzoo.errors import PluginError
from embedzoo.registry import get_registry, source_checkout_root


def resolve_plugin(name: str) -> str:
    """The distribution name of a plugin given by family, model id or distribution name."""
    registry = get_registry()
    for card in registry:
        if name in (card.plugin, card.family, card.plugin.removeprefix("embedzoo-")) or name in card.names:
            return card.plugin
    if name.startswith("embedzoo-"):
        return name
    families = sorted({card.family for card in registry})
    raise PluginError(f"no plugin called {name!r} in the catalog", hint=f"known families: {', '.join(families)}")


def install_target(name: str) -> str:
    """What pip is given: a path as is, a source-checkout folder, or a distribution name."""
    if Path(name).exists():
        return str(Path(name).resolve())
    dist = resolve_plugin(name)
    root = source_checkout_root()
    if root is not None and (root / "plugins" / dist / "pyproject.toml").is_file():
        return str(root / "plugins" / dist)
    return dist


def pip_command() -> list[str]:
    """`python -m pip` for this interpreter, or uv targeting it when pip is absent."""
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    uv = shutil.which("uv")
    if uv:
        return [uv, "pip"]
    raise PluginError(
        f"neither pip nor uv is available for {sys.executable}",
        hint=f"run `{sys.executable} -m ensurepip` or install uv",
    )


def _run(command: list[str]) -> int:
    if command[0].endswith("uv") or Path(command[0]).name == "uv":
        command = [*command[:3], "--python", sys.executable, *command[3:]]
    return subprocess.run(command).returncode


def install(names: list[str], editable: bool = False, upgrade: bool = False) -> int:
    targets: list[str] = []
    for name in names:
        target = install_target(name)
        if editable and Path(target).is_dir():
            targets += ["-e", target]
        else:
            targets.append(target)
    command = [*pip_command(), "install", *(["--upgrade"] if upgrade else []), *targets]
    return _run(command)


def uninstall(names: list[str]) -> int:
    dists = [resolve_plugin(name) for name in names]
    base = pip_command()
    confirm = ["-y"] if base[0] == sys.executable else []  # uv never asks
    return _run([*base, "uninstall", *confirm, *dists])
