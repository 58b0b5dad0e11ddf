"""`embedzoo install` for real: a plugin is pip-installed into a throwaway environment, and a
fresh process there lists its models; `uninstall` removes it again."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from embedzoo.installer import install_target, resolve_plugin
from embedzoo.errors import PluginError
from fakedist import TOY_PLUGIN


def test_names_resolve_through_the_catalog_to_plugin_folders():
    assert resolve_plugin("crepe") == resolve_plugin("crepe-tiny") == resolve_plugin("embedzoo-crepe") == "embedzoo-crepe"
    assert install_target("crepe").endswith(os.path.join("plugins", "embedzoo-crepe"))
    with pytest.raises(PluginError, match="known families"):
        resolve_plugin("no-such-family")


def write_plugin_project(folder: Path) -> Path:
    (folder / "toyplug").mkdir(parents=True)
    for relative, source in TOY_PLUGIN.items():
        (folder / relative).write_text(textwrap.dedent(source))
    (folder / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "embedzoo-toyplug"
        version = "0.3.0"
        dependencies = []

        [project.entry-points.embedzoo]
        toyplug = "toyplug"

        [tool.setuptools]
        packages = ["toyplug"]
    '''))
    return folder


def test_install_into_a_throwaway_environment_then_list_its_models(tmp_path):
    project = write_plugin_project(tmp_path / "embedzoo-toyplug")
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    # the throwaway env sees this environment's packages (embedzoo, torch) through a .pth file,
    # but installs into its own site-packages
    env_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    (env_site / "parent.pth").write_text("\n".join(site.getsitepackages() + [str(Path(__file__).parents[1])]) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EMBEDZOO_LOAD_PLUGINS")}
    run = lambda *args: subprocess.run([str(python), "-m", "embedzoo", *args], capture_output=True, text=True, env=env)
    before = json.loads(run("list", "--json").stdout)
    assert "toy-model" not in {row["id"] for row in before}
    installed = run("install", str(project))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    after = {row["id"]: row for row in json.loads(run("list", "--json").stdout)}
    assert after["toy-model"]["installed"] is True
    plugins = {p["name"]: p for p in json.loads(run("plugins", "--json").stdout)}
    assert plugins["toyplug"]["version"] == "0.3.0"
    # the parent environment is untouched
    mine = subprocess.run([sys.executable, "-m", "embedzoo", "list", "--json"], capture_output=True, text=True, env=env)
    assert "toy-model" not in mine.stdout
    removed = run("uninstall", "embedzoo-toyplug")
    assert removed.returncode == 0, removed.stderr
    assert "toy-model" not in run("list", "--json").stdout
