"""`embed_files` / `embedzoo embed`: outputs equal the in-memory API, failures are isolated,
re-runs skip, killed jobs resume, memory stays bounded on hour-long files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from embedzoo.audio import load_audio
from embedzoo.errors import ConfigError
from embedzoo.inputs import collect_inputs
from embedzoo.pipeline import SOURCES, TEMP_PREFIX, embed_files
from fakedist import TOY_PLUGIN, make_dist
from toymodel import ToyExtractor


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    root = tmp_path / "clips"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", tone(0.3, 16000), 16000)
    sf.write(root / "sub" / "b.flac", tone(0.21, 22050, 300, channels=2), 22050)
    sf.write(root / "c.ogg", tone(0.5, 44100, 880), 44100)
    sf.write(root / "d.wav", tone(0.003, 8000), 8000)  # shorter than one window
    (root / "broken.wav").write_bytes(b"RIFF but not really a wav file")
    sf.write(root / "empty.wav", np.zeros((0,), np.float32), 16000)
    return root


@pytest.fixture
def toy() -> ToyExtractor:
    return ToyExtractor().eval()


def test_outputs_equal_the_in_memory_api_and_failures_are_isolated(tmp_path, clips, toy):
    files = collect_inputs([clips])
    summary = embed_files(toy, files, tmp_path / "out", workers=0)
    assert summary.done == 4 and summary.skipped == 0 and not summary.ok
    failed = {f.name for f in summary.failed}
    assert failed == {"broken.wav", "empty.wav"}
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert {e["name"] for e in errors} == failed and all(e["error"] for e in errors)
    for f in files:
        if f.name in failed:
            continue
        audio, _ = load_audio(f.path, 16000)
        want = toy.embed([audio], 16000)[0]
        scene = np.load(tmp_path / "out" / "scene" / f"{f.name}.embedding.npy")
        emb = np.load(tmp_path / "out" / "timestamp" / f"{f.name}.embedding.npy")
        times = np.load(tmp_path / "out" / "timestamp" / f"{f.name}.timestamps.npy")
        np.testing.assert_allclose(scene, want.scene.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(emb, want.timestamp.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(times, want.timestamps.numpy())
        assert emb.dtype == np.float32 and emb.shape[0] == times.shape[0]


def test_rerun_skips_finished_files_and_retries_failed_ones(tmp_path, clips, toy):
    files = collect_inputs([clips])
    embed_files(toy, files, tmp_path / "out", workers=0)
    stamp = (tmp_path / "out" / "scene" / "a.wav.embedding.npy").stat().st_mtime_ns
    again = embed_files(toy, files, tmp_path / "out", workers=0)
    assert again.skipped == 4 and again.done == 0 and len(again.failed) == 2
    assert (tmp_path / "out" / "scene" / "a.wav.embedding.npy").stat().st_mtime_ns == stamp


def test_other_settings_in_the_same_folder_are_refused(tmp_path, clips, toy):
    files = collect_inputs([clips / "a.wav"])
    embed_files(toy, files, tmp_path / "out", workers=0)
    toy.configure(hop_ms=1.0)
    with pytest.raises(ConfigError, match="other settings") as refused:
        embed_files(toy, files, tmp_path / "out", workers=0)
    assert "knobs.hop_ms: 0.5 there, 1.0 now" in refused.value.message  # names what differs, only that
    assert embed_files(toy, files, tmp_path / "out", workers=0, overwrite=True).done == 1
    toy.configure(batch_seconds=0.5)  # batching changes speed, not results: the folder is reused
    assert embed_files(toy, files, tmp_path / "out", workers=0).skipped == 1
    toy.configure(dtype="bfloat16")  # bfloat16 rounds the results: not mixed with float32 ones
    with pytest.raises(ConfigError, match="dtype"):
        embed_files(toy, files, tmp_path / "out", workers=0)


def test_worker_processes_give_the_same_result(tmp_path, clips, toy):
    files = collect_inputs([clips])
    embed_files(toy, files, tmp_path / "w0", workers=0, scene=True, timestamp=False)
    embed_files(toy, files, tmp_path / "w2", workers=2, scene=True, timestamp=False)
    for path in (tmp_path / "w0" / "scene").rglob("*.npy"):
        other = tmp_path / "w2" / "scene" / path.relative_to(tmp_path / "w0" / "scene")
        np.testing.assert_array_equal(np.load(path), np.load(other))


def test_parquet_shards_hold_one_row_per_file_and_resume(tmp_path, clips, toy):
    import pyarrow.parquet as pq

    files = collect_inputs([clips])
    summary = embed_files(toy, files, tmp_path / "pq", fmt="parquet", workers=0, shard_rows=3)
    assert summary.done == 4
    table = pq.read_table(tmp_path / "pq" / "timestamp")
    rows = {r["name"]: r for r in table.to_pylist()}
    assert set(rows) == {"a.wav", "sub/b.flac", "c.ogg", "d.wav"}
    a = rows["a.wav"]
    emb = np.asarray(a["embedding"], np.float32)  # (T, D): a list of T fixed-size lists of D
    want = toy.embed([load_audio(clips / "a.wav", 16000)[0]], 16000)[0]
    np.testing.assert_allclose(emb, want.timestamp.numpy(), rtol=1e-5, atol=1e-6)
    assert len(list((tmp_path / "pq" / "scene").glob("part-*.parquet"))) == 2
    again = embed_files(toy, files, tmp_path / "pq", fmt="parquet", workers=0, shard_rows=3)
    assert again.skipped == 4 and again.done == 0


def test_an_hour_long_file_is_embedded_in_bounded_memory(tmp_path, toy):
    path = tmp_path / "hour.wav"
    rate, minutes = 8000, 60
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as handle:
        for minute in range(minutes):
            handle.write(tone(60.0, rate, 200 + minute))
    toy.configure(scene_hop_ms=1000, scene_window_ms=25)
    decoded_bytes = rate * 60 * minutes * 4  # one float32 copy at the file's own rate
    tracemalloc.start()
    try:
        summary = embed_files(toy, collect_inputs([path]), tmp_path / "out", scene=True, timestamp=False, workers=0, block_seconds=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.done == 1 and abs(summary.audio_seconds - 3600) < 1
    assert peak < decoded_bytes / 4, f"peak {peak / 1e6:.0f} MB for {decoded_bytes / 1e6:.0f} MB of decoded audio"


# ---- the CLI, end to end, with a toy plugin ---------------------------------------------------


@pytest.fixture
def toy_cli(tmp_path):
    site = make_dist(tmp_path / "site", "embedzoo-toyplug", TOY_PLUGIN, {"toyplug": "toyplug"})
    weights = tmp_path / "toy.safetensors"
    proj = torch.nn.Linear(8, 6)
    save_file({"proj.weight": proj.weight.detach().clone(), "proj.bias": proj.bias.detach().clone()}, weights)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")])), "EMBEDZOO_CACHE": str(tmp_path / "cache")}
    return env, weights


def cli(env, *args, **kw):
    return subprocess.run([sys.executable, "-m", "embedzoo", *args], env=env, capture_output=True, text=True, **kw)


def test_cli_embed_json_summary_and_exit_status(tmp_path, clips, toy_cli):
    env, weights = toy_cli
    result = cli(env, "embed", "toy-model", str(clips), "-o", str(tmp_path / "out"), "--weights", str(weights), "--json", "--hop-ms", "1", "--workers", "0")
    assert result.returncode == 1, result.stderr  # two files are bad
    summary = json.loads(result.stdout)
    assert summary["done"] == 4 and len(summary["failed"]) == 2 and summary["ok"] is False
    good = cli(env, "embed", "toy-model", str(clips / "a.wav"), str(clips / "c.ogg"), "-o", str(tmp_path / "good"), "--weights", str(weights), "-q")
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "good" / "timestamp" / "c.ogg.timestamps.npy").is_file()
    missing = cli(env, "embed", "toy-model", str(tmp_path / "nope.wav"), "-o", str(tmp_path / "x"), "--weights", str(weights))
    assert missing.returncode == 1 and "nope.wav" in missing.stderr and "Traceback" not in missing.stderr


def test_a_killed_job_resumes_without_corrupt_or_missing_output(tmp_path, toy_cli):
    env, weights = toy_cli
    root = tmp_path / "many"
    root.mkdir()
    for i in range(40):
        sf.write(root / f"{i:03d}.wav", tone(2.0, 16000, 100 + 10 * i), 16000)
    args = ["embed", "toy-model", str(root), "-o", str(tmp_path / "out"), "--weights", str(weights), "--hop-ms", "0.25", "--workers", "0", "-q", "--timestamp"]
    proc = subprocess.Popen([sys.executable, "-m", "embedzoo", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = tmp_path / "out" / "timestamp"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.embedding.npy"))) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len(list(out.glob("*.embedding.npy")))
    assert 5 <= first < 40, "the job should have been killed part-way"
    for path in out.glob("*.embedding.npy"):  # whatever exists is complete
        assert np.load(path).shape[1] == 6
    result = cli(env, *args[:-2], "--json", "--timestamp")
    summary = json.loads(result.stdout)
    assert result.returncode == 0 and summary["skipped"] >= first and summary["done"] + summary["skipped"] == 40
    assert len(list(out.glob("*.embedding.npy"))) == 40 == len(list(out.glob("*.timestamps.npy")))
    assert not list((tmp_path / "out").rglob(f"{TEMP_PREFIX}*")) and not list((tmp_path / "out").glob("sources.*.journal"))
    # every output exactly once, byte for byte what a clean run writes, and so is the record of sources
    clean = cli(env, *[a if a != str(tmp_path / "out") else str(tmp_path / "clean") for a in args])
    assert clean.returncode == 0, clean.stderr
    for path in sorted((tmp_path / "clean").rglob("*.npy")):
        assert path.read_bytes() == (tmp_path / "out" / path.relative_to(tmp_path / "clean")).read_bytes(), path
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "clean" / "timestamp").iterdir())
    assert (tmp_path / "out" / SOURCES).read_text() == (tmp_path / "clean" / SOURCES).read_text()
