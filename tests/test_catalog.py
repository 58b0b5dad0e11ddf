"""Catalog, cards and plugin loading -- and that the light commands never import torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedzoo.card import Source, card_from_dict
from embedzoo.errors import CardError, DuplicateNameError, ModelNotFoundError, PluginError
from embedzoo.registry import build_registry, default_registry_path, read_catalog, resolve_entry
from fakedist import BROKEN_PLUGIN, TOY_PLUGIN, make_dist


def run_cli(args: list[str], env_extra: dict[str, str] | None = None, check_torch: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process; with check_torch, fail if torch got imported."""
    code = (
        "import sys\nfrom embedzoo.cli import main\n"
        "try:\n    main(sys.argv[1:], prog_name='embedzoo')\nexcept SystemExit as e:\n    code = e.code or 0\nelse:\n    code = 0\n"
        + ("assert 'torch' not in sys.modules, 'torch was imported'\n" if check_torch else "")
        + "sys.exit(code)\n"
    )
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)


@pytest.fixture
def toy_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    make_dist(site, "embedzoo-toyplug", TOY_PLUGIN, {"toyplug": "toyplug"})
    make_dist(site, "embedzoo-brokenplug", BROKEN_PLUGIN, {"brokenplug": "brokenplug"})
    return site


def with_site(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")]))}


def test_every_card_in_the_catalog_is_valid_unique_and_completed_by_its_plugin():
    bare = build_registry(with_plugins=False)  # from the YAML alone, as `list` works without plugins
    names = [name for card in bare for name in card.names]
    assert len(names) == len(set(names)) and len(bare) > 30
    for card in bare:
        assert not card.complete, f"{card.id}: the catalog must not state layers"
        assert card.sources and card.license and card.plugin.startswith("embedzoo-")
        assert (Path(__file__).parents[1] / "plugins" / card.plugin / "pyproject.toml").is_file()
    full = build_registry()
    assert full.problems == {}
    for card in full:
        assert card.complete, f"{card.id}: plugin {card.plugin} is not installed"
        for layer in card.defaults.get("layers", []):
            card.layer(layer)


def test_weights_whose_licence_forbids_rehosting_are_marked_so():
    """Non-commercial and evaluation-only weight licences (CC-BY-NC, NTT's) forbid rehosting: such a
    card says `redistribute: false` (embedzoo.weights.mirror_model then refuses it); the others
    default to true."""
    for card in build_registry(with_plugins=False):
        if any(mark in card.license.upper() for mark in ("-NC", "NTT", "EVALUATION")):
            assert card.redistribute is False, f"{card.id} ({card.license}) must say redistribute: false"
        assert isinstance(card.redistribute, bool)


def test_the_catalog_stays_short_per_card():
    """A checkpoint of an existing family is a few lines: shared fields live under `families:`."""
    lines = [line for line in default_registry_path().read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(lines) / len(read_catalog(default_registry_path()).models) <= 16


def test_family_fields_are_shared_and_a_models_own_values_win():
    families = {"fam": {"plugin": "embedzoo-fam", "sample_rate": 16000, "license": "MIT", "defaults": {"hop_ms": 10, "layers": ["a"]},
                        "presets": {"p": {"layers": ["a"]}}, "config": {"depth": 12, "width": 64}, "archs": {"small": {"depth": 2}}}}  # fmt: skip
    entry = {"id": "m", "family": "fam", "arch": "small", "config": {"width": 32}, "defaults": {"hop_ms": 20}, "presets": {"q": {"layers": ["b"]}}, "license": "CC-BY-4.0"}
    card = card_from_dict(resolve_entry(entry, families))
    assert card.plugin == "embedzoo-fam" and card.sample_rate == 16000 and card.license == "CC-BY-4.0"
    assert dict(card.config) == {"depth": 2, "width": 32}
    assert dict(card.defaults) == {"hop_ms": 20, "layers": ["a"]} and set(card.presets) == {"p", "q"}
    with pytest.raises(CardError, match="no arch 'huge'"):
        resolve_entry(dict(entry, arch="huge"), families)


def test_a_catalog_entry_that_states_layers_is_refused(tmp_path, monkeypatch):
    extra = tmp_path / "mine.yaml"
    entry = dict(read_catalog(default_registry_path()).models[0], id="my-crepe", aliases=[], layers=[{"name": "conv5", "width": 256}])
    extra.write_text(json.dumps({"models": [entry]}))
    monkeypatch.setenv("EMBEDZOO_REGISTRY", str(extra))
    with pytest.raises(CardError, match="layers come from the family's geometry.py"):
        build_registry(with_plugins=False)


def test_a_new_checkpoint_is_a_short_entry_completed_by_the_family(tmp_path, monkeypatch):
    extra = tmp_path / "mine.yaml"
    extra.write_text("models:\n  - {id: my-crepe, family: crepe, config: {capacity: full}, sources: [{kind: url, url: 'https://example.org/w.pt'}]}\n")
    monkeypatch.setenv("EMBEDZOO_REGISTRY", str(extra))
    card = build_registry().get("my-crepe")
    assert card.complete and card.layer("conv5").width == 2048 and card.license == "MIT" and card.defaults["layers"] == ["conv5"]


def test_lookup_by_id_alias_glob_and_close_names():
    registry = build_registry(with_plugins=False)
    assert registry.get("crepe").id == "crepe-tiny"
    assert {c.id for c in registry.find("crepe-*")} == {"crepe-tiny", "crepe-full"}
    with pytest.raises(ModelNotFoundError, match="did you mean crepe-tiny"):
        registry.get("crepe-tinny")


def test_malformed_cards_are_refused_with_the_reason():
    with pytest.raises(CardError, match="40-hex commit"):
        Source(kind="hf", repo="a/b", filename="x.bin", revision="refs/pr/1")
    with pytest.raises(CardError, match="sha256"):
        Source(kind="url", url="https://example.org/x.pt", sha256="abc")
    with pytest.raises(CardError, match="unknown card fields"):
        card_from_dict({"id": "x", "famly": "y"})


def test_a_name_claimed_twice_names_both_providers(tmp_path, monkeypatch):
    extra = tmp_path / "mine.yaml"
    entry = dict(read_catalog(default_registry_path()).models[0], id="my-crepe", aliases=["crepe"])
    extra.write_text(json.dumps({"models": [entry]}))
    monkeypatch.setenv("EMBEDZOO_REGISTRY", str(extra))
    with pytest.raises(DuplicateNameError) as err:
        build_registry(with_plugins=False)
    assert "'crepe'" in str(err.value) and "registry.yaml" in str(err.value) and str(extra) in str(err.value)


def test_plugin_cards_join_the_catalog_and_duplicates_name_the_plugin(toy_site, tmp_path):
    result = run_cli(["list", "--json"], with_site(toy_site))
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert rows["toy-model"]["installed"] is True
    dup = tmp_path / "dup"
    make_dist(dup, "embedzoo-dupplug", {"dupplug/__init__.py": TOY_PLUGIN["toyplug/__init__.py"].replace('"toyfam"', '"dupfam"').replace("toy-model", "crepe-tiny")}, {"dupplug": "dupplug"})
    # a plugin's clashing card is left out and reported; it breaks neither `list` nor the first claimant
    result = run_cli(["list", "--json"], with_site(dup))
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert rows["crepe-tiny"]["family"] == "crepe"
    plugins = {i["name"]: i for i in json.loads(run_cli(["plugins", "--json"], with_site(dup)).stdout)}
    (problem,) = plugins["dupplug"]["problems"]
    assert "crepe-tiny" in problem and "plugin dupplug" in problem and "registry.yaml" in problem


def test_a_broken_plugin_is_reported_and_breaks_nothing(toy_site):
    result = run_cli(["plugins", "--json"], with_site(toy_site), check_torch=True)
    assert result.returncode == 0, result.stderr
    infos = {i["name"]: i for i in json.loads(result.stdout)}
    assert infos["brokenplug"]["ok"] is False and "broken on purpose" in infos["brokenplug"]["error"]
    assert infos["brokenplug"]["version"] == "0.0.1"
    assert infos["toyplug"]["ok"] is True and infos["toyplug"]["families"] == ["toyfam"]
    assert run_cli(["list"], with_site(toy_site)).returncode == 0


def test_embedzoo_load_plugins_selects_what_loads(toy_site):
    env = with_site(toy_site)
    none = json.loads(run_cli(["plugins", "--json"], {**env, "EMBEDZOO_LOAD_PLUGINS": ""}).stdout)
    assert none == []
    only = json.loads(run_cli(["plugins", "--json"], {**env, "EMBEDZOO_LOAD_PLUGINS": "toyplug"}).stdout)
    assert [i["name"] for i in only] == ["toyplug"]


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "--json"], ["plugins"], ["info", "crepe-tiny"], ["embed", "--help"], ["validate", "--help"], ["pull", "--help"], ["cache", "--help"]])
def test_light_commands_never_import_torch(args, toy_site):
    result = run_cli(args, with_site(toy_site), check_torch=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_model_without_its_plugin_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("EMBEDZOO_LOAD_PLUGINS", "")
    from embedzoo import plugins

    plugins.load_plugins(refresh=True)
    try:
        with pytest.raises(PluginError, match="embedzoo install crepe"):
            plugins.family_module("crepe", "embedzoo-crepe")
    finally:
        monkeypatch.delenv("EMBEDZOO_LOAD_PLUGINS")
        plugins.load_plugins(refresh=True)


def test_info_shows_sources_pins_and_layers():
    result = run_cli(["info", "crepe-full"])
    assert result.returncode == 0, result.stderr
    assert "133225604dedd2e4" in result.stdout and "conv5 (2048)" in result.stdout and "MIT" in result.stdout


def test_info_of_a_model_whose_plugin_is_missing_works_from_the_yaml():
    result = run_cli(["info", "crepe-full"], {"EMBEDZOO_LOAD_PLUGINS": ""}, check_torch=True)
    assert result.returncode == 0, result.stderr
    assert "133225604dedd2e4" in result.stdout and "given by plugin embedzoo-crepe, not installed" in result.stdout


BAD_GEOMETRY_PLUGIN = {
    "badgeo/__init__.py": '''
        from embedzoo.plugin import CardError, Family, Geometry, LayerSpec, hookimpl

        def geometry(config):
            if config.get("size") != "ok":
                raise CardError(f"no such size {config.get('size')!r}")
            return Geometry((LayerSpec("out", 4),), frame_hop=4, frame_field=8, min_window=8, max_window=400)

        @hookimpl
        def register_families(register):
            register(Family("badgeo", "badgeo.model", geometry))

        @hookimpl
        def register_models(register):
            for size in ("ok", "huge"):
                register({"id": f"badgeo-{size}", "family": "badgeo", "plugin": "embedzoo-badgeo", "sample_rate": 16000,
                          "config": {"size": size}, "license": "MIT"})
    ''',
}


def test_a_card_its_family_cannot_describe_is_reported_and_breaks_nothing(tmp_path):
    site = make_dist(tmp_path / "site", "embedzoo-badgeo", BAD_GEOMETRY_PLUGIN, {"badgeo": "badgeo"})
    plugins = run_cli(["plugins", "--json"], with_site(site), check_torch=True)
    assert plugins.returncode == 0, plugins.stderr
    (info,) = [i for i in json.loads(plugins.stdout) if i["name"] == "badgeo"]
    assert info["ok"] and info["problems"] == ["model badgeo-huge: no such size 'huge'"]
    listed = run_cli(["list", "--json"], with_site(site))
    assert listed.returncode == 0 and {"badgeo-ok", "badgeo-huge", "crepe-tiny"} <= {row["id"] for row in json.loads(listed.stdout)}
    shown = run_cli(["info", "badgeo-huge"], with_site(site))
    assert shown.returncode == 0 and "no such size 'huge'" in shown.stdout


@pytest.mark.parametrize("columns", ["80", "60"])
def test_list_never_cuts_a_model_id_and_wraps_the_rest(columns):
    result = run_cli(["list"], {"COLUMNS": columns})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    ids = [card.id for card in build_registry(with_plugins=False)]
    starts = {line.split()[0] for line in lines if line.strip()}
    assert set(ids) <= starts, sorted(set(ids) - starts)  # every id whole, at the start of its row
    if columns == "80":
        assert max(len(line) for line in lines) <= 80
