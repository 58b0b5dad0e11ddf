"""Inputs behind URLs (embedzoo.remote): a corpus served over http on 127.0.0.1 (fsspec's http
file system, as s3fs / gcsfs would serve a bucket) embeds to the bytes its local copy gives."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from embedzoo.errors import AudioError
from embedzoo.inputs import collect_inputs
from embedzoo.pipeline import SOURCES, embed_files
from toymodel import ToyExtractor


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """`folder` over http on 127.0.0.1 (directory listings included); its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "site" / "clips"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, seconds in [("a.wav", 0.5), ("b.flac", 0.8), ("sub/c.wav", 0.3)]:
        sf.write(root / name, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
    (root / ".hidden.wav").write_bytes(b"skipped")
    server, base = serve(tmp_path / "site")
    yield root, f"{base}/clips/"
    server.shutdown()


def npy(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.npy"))}


def test_a_folder_url_is_listed_named_and_embedded_like_its_local_copy(tmp_path, corpus):
    root, url = corpus
    remote_files = collect_inputs([url])
    local_files = collect_inputs([root])
    assert [f.name for f in remote_files] == [f.name for f in local_files] == ["a.wav", "b.flac", "sub/c.wav"]
    assert [f.name for f in collect_inputs([url + "*.wav"])] == ["a.wav"]  # a glob, relative to its root
    toy = ToyExtractor().eval()
    summary = embed_files(toy, remote_files, tmp_path / "remote", workers=1)
    embed_files(toy, local_files, tmp_path / "local", workers=0)
    assert summary.ok and summary.done == 3
    assert npy(tmp_path / "remote") == npy(tmp_path / "local")
    records = {r["name"]: r for r in map(json.loads, (tmp_path / "remote" / SOURCES).read_text().splitlines())}
    assert records["a.wav"]["path"] == url + "a.wav" and records["a.wav"]["mtime_ns"] > 0  # http Last-Modified
    local_records = {r["name"]: r for r in map(json.loads, (tmp_path / "local" / SOURCES).read_text().splitlines())}
    assert records["a.wav"]["sha256"] == local_records["a.wav"]["sha256"]


def test_a_rerun_skips_remote_files_and_a_changed_object_is_embedded_again(tmp_path, corpus):
    root, url = corpus
    toy = ToyExtractor().eval()
    embed_files(toy, collect_inputs([url]), tmp_path / "out", workers=0)
    again = embed_files(toy, collect_inputs([url]), tmp_path / "out", workers=0)
    assert again.skipped == 3 and again.done == 0
    sf.write(root / "a.wav", np.full(4000, 0.05, dtype=np.float32), 16000)  # another size
    changed = embed_files(toy, collect_inputs([url]), tmp_path / "out", workers=0)
    assert changed.done == 1 and changed.redone == 1 and changed.skipped == 2


def test_a_missing_object_is_one_files_error_and_a_bad_url_says_what_to_do(tmp_path, corpus):
    root, url = corpus
    files = collect_inputs([url])
    (root / "b.flac").unlink()  # gone between listing and decoding
    summary = embed_files(ToyExtractor().eval(), files, tmp_path / "out", workers=0)
    assert summary.done == 2 and [f.name for f in summary.failed] == ["b.flac"]
    assert "b.flac" in summary.failed[0].path and "cannot read it" in summary.failed[0].error
    with pytest.raises(AudioError, match="holds no audio files"):
        collect_inputs([url + "nothing-here/"])
    with pytest.raises(AudioError, match="cannot list 'nosuchprotocol://x'"):
        collect_inputs(["nosuchprotocol://x"])
