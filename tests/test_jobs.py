"""Jobs you can trust (issue 11): nothing lost or mixed in an output folder.

Shards named by their rows, one job per folder, start-up cleanup of embedzoo's own temporaries
only, output names that are a function of each file with a record of every output's source,
`--overwrite` without leftovers, awkward file names, permissions, non-finite embeddings,
Parquet that other tools read, progress within long files, and kill -9 then resume.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from embedzoo.audio import load_audio
from embedzoo.inputs import NAME_BYTES, collect_inputs
from embedzoo.pipeline import LOCK, PARQUET_METADATA_KEY, SOURCES, TEMP_PREFIX, JobProgress, OutputBusyError, embed_files
from test_pipeline import cli, tone, toy_cli  # noqa: F401  (toy_cli is a fixture)
from toymodel import ToyExtractor

TESTS = Path(__file__).parent


@pytest.fixture
def toy() -> ToyExtractor:
    return ToyExtractor().eval()


def write_clips(root: Path, count: int, seconds: float = 0.2, start: int = 0) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = root / f"{i:03d}.wav"
        sf.write(path, tone(seconds, 16000, 100 + 37 * i), 16000)
        paths.append(path)
    return paths


def sources(out: Path) -> dict[str, dict]:
    return {r["name"]: r for r in map(json.loads, (out / SOURCES).read_text().splitlines())}


def npy_outputs(out: Path) -> dict[str, bytes]:
    """Every npy output below OUT, by path relative to OUT."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for kind in ("scene", "timestamp") for p in (out / kind).rglob("*.npy")}


def parquet_rows(out: Path, kind: str) -> list[dict]:
    """Every row of OUT/kind, sorted by name (a name appearing twice shows up twice)."""
    import pyarrow.parquet as pq

    rows = [row for shard in sorted((out / kind).glob("part-*.parquet")) for row in pq.read_table(shard).to_pylist()]
    return sorted(rows, key=lambda r: r["name"])


def sha8(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


# ---- parquet shards ---------------------------------------------------------------------------


def test_a_deleted_shard_is_recomputed_without_touching_the_others(tmp_path, toy):
    root = tmp_path / "clips"
    write_clips(root, 4)
    files = collect_inputs([root])
    clean = tmp_path / "clean"
    embed_files(toy, files, clean, fmt="parquet", workers=0, shard_rows=2)
    out = tmp_path / "out"
    embed_files(toy, files, out, fmt="parquet", workers=0, shard_rows=2)
    shards = sorted((out / "timestamp").glob("part-*.parquet"))
    assert len(shards) == 2
    assert sorted(p.name for p in shards) == sorted(p.name for p in (clean / "timestamp").glob("part-*.parquet"))  # names: a function of the rows
    shards[0].unlink()
    kept = shards[1].read_bytes()
    again = embed_files(toy, files, out, fmt="parquet", workers=0, shard_rows=2)
    assert again.done == 2 and again.skipped == 2
    assert shards[1].read_bytes() == kept  # the other shard is untouched
    for kind in ("scene", "timestamp"):
        rows = parquet_rows(out, kind)
        assert [r["name"] for r in rows] == ["000.wav", "001.wav", "002.wav", "003.wav"]  # each exactly once
        assert rows == parquet_rows(clean, kind)


def test_jobs_with_other_inputs_into_one_parquet_folder_keep_every_row(tmp_path, toy):
    write_clips(tmp_path / "day1", 3)
    write_clips(tmp_path / "day2", 2, start=3)
    out = tmp_path / "out"
    embed_files(toy, collect_inputs([tmp_path / "day1"]), out, fmt="parquet", workers=0, shard_rows=2)
    embed_files(toy, collect_inputs([tmp_path / "day2"]), out, fmt="parquet", workers=0, shard_rows=2)
    assert [r["name"] for r in parquet_rows(out, "timestamp")] == ["000.wav", "001.wav", "002.wav", "003.wav", "004.wav"]
    again = embed_files(toy, collect_inputs([tmp_path / "day1", tmp_path / "day2"]), out, fmt="parquet", workers=0, shard_rows=2)
    assert again.skipped == 5 and again.done == 0


def test_an_unreadable_shard_is_moved_aside_and_its_rows_recomputed(tmp_path, toy):
    root = tmp_path / "clips"
    write_clips(root, 4)
    files = collect_inputs([root])
    out = tmp_path / "out"
    embed_files(toy, files, out, fmt="parquet", workers=0, shard_rows=2)
    shard = sorted((out / "scene").glob("part-*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # truncated
    again = embed_files(toy, files, out, fmt="parquet", workers=0, shard_rows=2)
    assert again.done == 2 and again.skipped == 2 and any("unreadable" in n for n in again.notes)
    assert (out / "corrupt" / "scene" / shard.name).is_file()
    assert [r["name"] for r in parquet_rows(out, "scene")] == ["000.wav", "001.wav", "002.wav", "003.wav"]
    assert [r["name"] for r in parquet_rows(out, "timestamp")] == ["000.wav", "001.wav", "002.wav", "003.wav"]


def test_parquet_is_read_by_pyarrow_and_hf_datasets(tmp_path, toy, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "clips"
    root.mkdir()
    sf.write(root / "a.wav", tone(0.3, 16000), 16000)
    sf.write(root / "b.wav", tone(0.5, 16000, 300), 16000)
    out = tmp_path / "out"
    embed_files(toy, collect_inputs([root]), out, fmt="parquet", workers=0, weights="test-weights")
    table = pq.read_table(out / "timestamp")
    dim = toy.timestamp_embedding_size
    assert table.schema.field("embedding").type == pa.list_(pa.list_(pa.float32(), dim))
    assert table.schema.field("timestamps").type == pa.list_(pa.float32())
    assert pq.read_table(out / "scene").schema.field("embedding").type == pa.list_(pa.float32(), dim)
    settings = json.loads(table.schema.metadata[PARQUET_METADATA_KEY])
    assert settings == {**json.loads((out / "embedzoo.json").read_text()), "kind": "timestamp"}
    assert settings["model"] == "toy" and settings["weights"] == "test-weights" and settings["knobs"]["hop_ms"] == 0.5
    row = {r["name"]: r for r in table.to_pylist()}["b.wav"]
    want = toy.embed([load_audio(root / "b.wav", 16000)[0]], 16000)[0]
    np.testing.assert_allclose(np.asarray(row["embedding"]), want.timestamp.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(row["timestamps"]), want.timestamps.numpy())
    assert row["source_sha256"] == hashlib.sha256((root / "b.wav").read_bytes()).hexdigest()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out / "timestamp" / "*.parquet"), split="train", cache_dir=str(tmp_path / "hf"))
    assert sorted(ds["name"]) == ["a.wav", "b.wav"]
    b = ds.with_format("numpy")[list(ds["name"]).index("b.wav")]
    assert b["embedding"].shape == want.timestamp.shape and b["embedding"].dtype == np.float32
    np.testing.assert_allclose(b["embedding"], want.timestamp.numpy(), rtol=1e-5, atol=1e-6)
    scene = datasets.load_dataset("parquet", data_files=str(out / "scene" / "*.parquet"), split="train", cache_dir=str(tmp_path / "hf"))
    assert np.asarray(scene.with_format("numpy")[0]["embedding"]).shape == (dim,)


# ---- one job per folder, cleanup --------------------------------------------------------------


def test_a_second_job_into_a_busy_folder_refuses_and_touches_nothing(tmp_path, toy):
    root = tmp_path / "clips"
    write_clips(root, 3)
    files = collect_inputs([root])
    out = tmp_path / "out"
    paused, resume = threading.Event(), threading.Event()
    results: list = []

    def first_file_done(name: str, seconds: float) -> None:
        paused.set()
        resume.wait(60)

    job = threading.Thread(target=lambda: results.append(embed_files(toy, files, out, workers=0, on_progress=first_file_done)))
    job.start()
    try:
        assert paused.wait(60)
        in_flight = out / "timestamp" / f"{TEMP_PREFIX}in-flight"  # what the first job is writing now
        in_flight.write_bytes(b"half an output")
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK}
        with pytest.raises(OutputBusyError) as busy:
            embed_files(toy, files, out, workers=0)
        assert f"pid {os.getpid()}" in busy.value.message and "-o" in busy.value.hint
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK} == before
    finally:
        resume.set()
        job.join(60)
    assert results[0].done == 3 and results[0].ok
    assert in_flight.is_file()  # the first job never cleans up behind itself
    again = embed_files(toy, files, out, workers=0)  # the lock is free again; start-up removes the leftover
    assert again.skipped == 3 and not in_flight.exists()


def test_startup_cleanup_removes_only_embedzoo_temporaries(tmp_path, toy):
    root = tmp_path / "clips"
    write_clips(root, 2)
    out = tmp_path / "out"
    embed_files(toy, collect_inputs([root]), out, workers=0)
    mine = [out / f"{TEMP_PREFIX}x", out / "scene" / f"{TEMP_PREFIX}0a1b2c", out / "timestamp" / "sub" / f"{TEMP_PREFIX}y"]
    users = [out / "notes.tmp", out / ".draft.tmp", out / "scene" / ".000.wav.embedding.npy.abc.tmp", out / "timestamp" / "keep.txt", out / "other" / f"{TEMP_PREFIX}z"]
    for path in mine + users:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    summary = embed_files(toy, collect_inputs([root]), out, workers=0)
    assert summary.skipped == 2
    assert not any(p.exists() for p in mine)
    assert all(p.read_bytes() == b"x" for p in users)


# ---- names and the record of sources ----------------------------------------------------------


def test_adding_an_input_renames_no_output(tmp_path, toy):
    write_clips(tmp_path / "day1", 3)
    write_clips(tmp_path / "day2", 2)  # the same names as day1's first two, other content
    sf.write(tmp_path / "day2" / "000.wav", tone(0.2, 16000, 999), 16000)
    sf.write(tmp_path / "day2" / "001.wav", tone(0.2, 16000, 888), 16000)
    out = tmp_path / "out"
    embed_files(toy, collect_inputs([tmp_path / "day1"]), out, workers=0)
    first = npy_outputs(out)
    both = embed_files(toy, collect_inputs([tmp_path / "day1", tmp_path / "day2"]), out, workers=0)
    assert both.skipped == 3 and both.done == 2
    assert {k: v for k, v in npy_outputs(out).items() if k in first} == first
    names = sources(out)
    assert names[f"000~{sha8(tmp_path / 'day2' / '000.wav')}.wav"]["path"] == str(tmp_path / "day2" / "000.wav")
    assert names["000.wav"]["path"] == str(tmp_path / "day1" / "000.wav")


def test_a_different_file_under_a_finished_name_is_embedded_not_skipped(tmp_path, toy):
    (tmp_path / "day1").mkdir()
    (tmp_path / "day2").mkdir()
    sf.write(tmp_path / "day1" / "take.wav", tone(0.3, 16000, 200), 16000)
    sf.write(tmp_path / "day2" / "take.wav", tone(0.3, 16000, 700), 16000)
    out = tmp_path / "out"
    embed_files(toy, collect_inputs([tmp_path / "day1"]), out, workers=0)
    day1 = npy_outputs(out)
    second = embed_files(toy, collect_inputs([tmp_path / "day2"]), out, workers=0)
    assert second.done == 1 and second.skipped == 0
    name = f"take~{sha8(tmp_path / 'day2' / 'take.wav')}.wav"
    assert npy_outputs(out)["scene/take.wav.embedding.npy"] == day1["scene/take.wav.embedding.npy"]  # day1's is kept
    want = toy.embed([load_audio(tmp_path / "day2" / "take.wav", 16000)[0]], 16000)[0]
    np.testing.assert_allclose(np.load(out / "scene" / f"{name}.embedding.npy"), want.scene.numpy(), rtol=1e-5, atol=1e-6)
    records = sources(out)
    assert records[name]["path"] == str(tmp_path / "day2" / "take.wav")
    assert records[name]["sha256"] == hashlib.sha256((tmp_path / "day2" / "take.wav").read_bytes()).hexdigest()
    assert records[name]["size"] == (tmp_path / "day2" / "take.wav").stat().st_size
    # the same result as embedding both in one run
    together = tmp_path / "together"
    embed_files(toy, collect_inputs([tmp_path / "day1", tmp_path / "day2"]), together, workers=0)
    assert npy_outputs(together) == npy_outputs(out)
    # and both folders resume: nothing more to do
    assert embed_files(toy, collect_inputs([tmp_path / "day2", tmp_path / "day1"]), out, workers=0).skipped == 2


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_a_file_changed_in_place_is_embedded_again(tmp_path, toy, fmt):
    root = tmp_path / "clips"
    write_clips(root, 3)
    files = collect_inputs([root])
    out = tmp_path / "out"
    embed_files(toy, files, out, fmt=fmt, workers=0)
    stat = (root / "001.wav").stat()
    sf.write(root / "001.wav", tone(0.2, 16000, 1234), 16000)  # same size, other samples
    os.utime(root / "001.wav", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert (root / "001.wav").stat().st_size == stat.st_size
    again = embed_files(toy, files, out, fmt=fmt, workers=0)
    assert again.done == 1 and again.redone == 1 and again.skipped == 2
    want = toy.embed([load_audio(root / "001.wav", 16000)[0]], 16000)[0].scene.numpy()
    if fmt == "npy":
        np.testing.assert_allclose(np.load(out / "scene" / "001.wav.embedding.npy"), want, rtol=1e-5, atol=1e-6)
        assert sources(out)["001.wav"]["sha256"] == hashlib.sha256((root / "001.wav").read_bytes()).hexdigest()
    else:
        rows = parquet_rows(out, "scene")
        assert [r["name"] for r in rows] == ["000.wav", "001.wav", "002.wav"]  # the old row is gone
        np.testing.assert_allclose(np.asarray(rows[1]["embedding"]), want, rtol=1e-5, atol=1e-6)


def test_a_moved_folder_is_recognised_by_content(tmp_path, toy):
    write_clips(tmp_path / "here", 3)
    out = tmp_path / "out"
    embed_files(toy, collect_inputs([tmp_path / "here"]), out, workers=0)
    (tmp_path / "here").rename(tmp_path / "there")
    assert embed_files(toy, collect_inputs([tmp_path / "there"]), out, workers=0).skipped == 3


def test_truncated_or_empty_outputs_are_never_counted_as_done(tmp_path, toy):
    root = tmp_path / "clips"
    write_clips(root, 3)
    files = collect_inputs([root])
    out = tmp_path / "out"
    embed_files(toy, files, out, workers=0)
    clean = npy_outputs(out)
    emb = out / "timestamp" / "000.wav.embedding.npy"
    emb.write_bytes(emb.read_bytes()[:100])
    (out / "scene" / "001.wav.embedding.npy").write_bytes(b"")
    again = embed_files(toy, files, out, workers=0)
    assert again.done == 2 and again.redone == 2 and again.skipped == 1
    assert npy_outputs(out) == clean


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_overwrite_leaves_no_outputs_of_the_old_settings(tmp_path, toy, fmt):
    root = tmp_path / "clips"
    write_clips(root, 3)
    out = tmp_path / "out"
    embed_files(toy, collect_inputs([root]), out, fmt=fmt, workers=0, shard_rows=1)
    (out / "timestamp" / "mine.txt").write_text("a user's file")
    toy.configure(hop_ms=1.0)
    again = embed_files(toy, collect_inputs([root / "000.wav"]), out, fmt=fmt, workers=0, overwrite=True, shard_rows=1)
    assert again.done == 1
    if fmt == "npy":
        assert sorted(npy_outputs(out)) == ["scene/000.wav.embedding.npy", "timestamp/000.wav.embedding.npy", "timestamp/000.wav.timestamps.npy"]
        assert list(sources(out)) == ["000.wav"]
    else:
        for kind in ("scene", "timestamp"):
            assert [r["name"] for r in parquet_rows(out, kind)] == ["000.wav"]
    assert json.loads((out / "embedzoo.json").read_text())["knobs"]["hop_ms"] == 1.0
    assert (out / "timestamp" / "mine.txt").read_text() == "a user's file"


def test_awkward_file_names_get_safe_names_and_the_rest_goes_on(tmp_path, toy):
    root = tmp_path / "clips"
    root.mkdir()
    long = "x" * 245 + ".wav"  # its outputs would exceed the 255-byte limit on names
    awkward = [long, "line\nbreak.wav", "-rf.wav", "normal.wav"]
    for i, name in enumerate(awkward):
        sf.write(root / name, tone(0.2, 16000, 200 + 50 * i), 16000)
    raw = os.fsencode(root) + b"/caf\xe9.wav"  # latin-1, not UTF-8
    try:
        with open(raw, "wb") as handle:
            sf.write(handle, tone(0.2, 16000, 900), 16000, format="WAV")
    except OSError:
        raw = None  # a file system that insists on UTF-8 names
    files = collect_inputs([root])
    summary = embed_files(toy, files, tmp_path / "out", workers=0)
    failed = {f.name: f.error for f in summary.failed}
    assert summary.done + len(failed) == len(files) == len(awkward) + (raw is not None)
    assert set(failed) <= {"caf%E9.wav"}  # only the decoder can refuse a name, and then for that file alone
    if failed:
        assert "UTF-8" in failed["caf%E9.wav"] and "rename" in failed["caf%E9.wav"]
    records = sources(tmp_path / "out")
    for name, record in records.items():
        name.encode("utf-8")  # valid UTF-8
        assert not any(ord(c) < 0x20 for c in name)
        assert all(not part.startswith("-") and len(part.encode()) <= NAME_BYTES for part in name.split("/"))
        for output in record["outputs"]:
            assert (tmp_path / "out" / output).is_file() and len(Path(output).name.encode()) <= 255
    by_path = {record["path"]: name for name, record in records.items()}
    assert by_path[str(root / "line\nbreak.wav")] == "line%0Abreak.wav"
    assert by_path[str(root / "-rf.wav")] == "%2Drf.wav"
    assert by_path[str(root / "normal.wav")] == "normal.wav"
    assert by_path[str(root / long)].startswith("x" * 200) and by_path[str(root / long)].endswith(".wav")
    if raw is not None and not failed:
        assert os.fsencode(next(p for p in by_path if "caf" in p)) == raw


def test_outputs_follow_the_umask(tmp_path, toy):
    root = tmp_path / "clips"
    write_clips(root, 2)
    old = os.umask(0o002)
    try:
        embed_files(toy, collect_inputs([root]), tmp_path / "npy", workers=0)
        embed_files(toy, collect_inputs([root]), tmp_path / "pq", fmt="parquet", workers=0)
    finally:
        os.umask(old)
    written = [p for folder in ("npy", "pq") for p in (tmp_path / folder).rglob("*") if p.is_file()]
    assert len(written) > 8
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o664)}, [(p.name, oct(p.stat().st_mode & 0o777)) for p in written]


def test_an_unwritable_output_folder_says_what_to_do(tmp_path, clips_for_cli, toy_cli):  # noqa: F811
    env, weights = toy_cli
    if os.geteuid() == 0:  # root writes anywhere a mode allows; sysfs refuses even root
        if not Path("/sys/kernel").is_dir():
            pytest.skip("needs a folder this user cannot write to")
        target = Path("/sys/embedzoo-test-out")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        target = locked / "out"
    result = cli(env, "embed", "toy-model", str(clips_for_cli), "-o", str(target), "--weights", str(weights), "-q")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot write to" in result.stderr and "hint:" in result.stderr and "-o folder" in result.stderr


@pytest.fixture
def clips_for_cli(tmp_path: Path) -> Path:
    write_clips(tmp_path / "cli-clips", 2)
    return tmp_path / "cli-clips"


# ---- bad embeddings ---------------------------------------------------------------------------


class LoudIsNaN(ToyExtractor):
    """The toy, but a window louder than 0.8 comes out NaN: a model that overflows on some input."""

    def forward_layers(self, audio, layers=None):
        outputs = super().forward_layers(audio, layers)
        loud = audio.abs().amax(dim=-1) > 0.8
        return [torch.where(loud[:, None, None], torch.full_like(o, torch.nan), o) for o in outputs]


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_a_non_finite_embedding_is_a_per_file_error(tmp_path, fmt):
    root = tmp_path / "clips"
    root.mkdir()
    sf.write(root / "quiet.wav", tone(0.3, 16000), 16000)
    sf.write(root / "loud.wav", 1.9 * tone(0.3, 16000), 16000)  # peaks at 0.95
    out = tmp_path / "out"
    summary = embed_files(LoudIsNaN().eval(), collect_inputs([root]), out, fmt=fmt, workers=0)
    assert summary.done == 1 and [f.name for f in summary.failed] == ["loud.wav"]
    assert "NaN or Inf" in summary.failed[0].error
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["name"] for e in errors] == ["loud.wav"]
    if fmt == "npy":
        assert not list(out.rglob("loud.wav*")) and list(sources(out)) == ["quiet.wav"]
    else:
        assert [r["name"] for r in parquet_rows(out, "scene")] == ["quiet.wav"]
    again = embed_files(LoudIsNaN().eval(), collect_inputs([root]), out, fmt=fmt, workers=0)
    assert again.skipped == 1 and [f.name for f in again.failed] == ["loud.wav"]  # never a success


# ---- progress ---------------------------------------------------------------------------------


def test_progress_moves_within_a_long_file_when_stderr_is_not_a_terminal(tmp_path, toy_cli):  # noqa: F811
    env, weights = toy_cli
    sf.write(tmp_path / "long.wav", tone(75.0, 16000), 16000)  # decoded in 30 s blocks
    result = cli(
        {**env, "EMBEDZOO_PROGRESS_SECONDS": "0"}, "embed", "toy-model", str(tmp_path / "long.wav"), "-o", str(tmp_path / "out"),
        "--weights", str(weights), "--scene", "--workers", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("toy-model: ")]
    within = {line.split(", ")[2] for line in lines if "0/1 files" in line and "long.wav at" in line}
    assert len(within) >= 2, lines  # seconds of audio move before the file is done
    assert "1/1 files" in lines[-1] and "75.0 s of audio" in lines[-1]


def test_the_progress_heartbeat_prints_while_nothing_else_does():
    from embedzoo.progress import EmbedProgress

    now = [0.0]
    stream = io.StringIO()
    display = EmbedProgress("toy", stream=stream, interval=5.0, clock=lambda: now[0])
    state = JobProgress()
    state.total, state.current, state.current_seconds, state.audio_seconds = 1, "long.wav", 30.0, 30.0
    display.update(state)  # less than 5 s since the last line: quiet
    now[0] = 3.0
    display.beat()
    assert stream.getvalue() == ""
    now[0] = 6.0
    display.beat()  # one forward pass of a long file: nothing reported for 6 s
    assert stream.getvalue() == "toy: 0/1 files (0 already done, 0 failed), 30.0 s of audio decoded; long.wav at 30.0 s [0:06] ...\n"
    now[0] = 7.0
    display.beat()
    assert stream.getvalue().count("\n") == 1


# ---- kill -9, then resume ---------------------------------------------------------------------

KILL_SCRIPT = """
import os, signal, sys
from embedzoo.inputs import collect_inputs
from embedzoo.pipeline import embed_files
from toymodel import ToyExtractor

finished = []

def kill_after_seven(name, seconds):  # two shards of 3 committed, the third half-way
    finished.append(name)
    if len(finished) == 7:
        os.kill(os.getpid(), signal.SIGKILL)

toy = ToyExtractor().eval()
toy.configure(hop_ms=0.25)
embed_files(toy, collect_inputs([sys.argv[1]]), sys.argv[2], fmt="parquet", workers=0, shard_rows=3, on_progress=kill_after_seven)
"""


def test_a_parquet_job_killed_mid_way_resumes_to_the_rows_of_a_clean_run(tmp_path, toy):
    root = tmp_path / "many"
    write_clips(root, 12, seconds=1.0)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH", "")]))}
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(root), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [r["name"] for r in parquet_rows(out, "scene")] == [f"{i:03d}.wav" for i in range(6)]
    toy.configure(hop_ms=0.25)
    resumed = embed_files(toy, collect_inputs([root]), out, fmt="parquet", workers=0, shard_rows=3)
    assert resumed.skipped == 6 and resumed.done == 6 and resumed.ok
    clean = tmp_path / "clean"
    embed_files(toy, collect_inputs([root]), clean, fmt="parquet", workers=0, shard_rows=3)
    for kind in ("scene", "timestamp"):
        rows = parquet_rows(out, kind)
        assert [r["name"] for r in rows] == [f"{i:03d}.wav" for i in range(12)]  # each exactly once
        assert rows == parquet_rows(clean, kind)
        assert sorted(p.name for p in (out / kind).glob("part-*.parquet")) == sorted(p.name for p in (clean / kind).glob("part-*.parquet"))
    assert not [p for p in out.rglob(f"{TEMP_PREFIX}*")]
