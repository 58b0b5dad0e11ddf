"""`--engine ray`: a job's shards on Ray Data, on a laptop (`ray.init()` local) or a cluster.

The driver (`embedzoo.pipeline`) checks the manifest, reads what is done, claims names and plans
shards exactly as `--engine local` does; this module maps `run_shard` over that plan with Ray
Data: one row per shard (heaviest first, so an hour-long file does not straggle at the end), a
callable class on an actor pool (the model is sent once through the object store and loaded once
per actor), `num_cpus` / `num_gpus` (fractional allowed) per actor, decoding inside the actor (a
shard's files in order, in bounded memory). Each actor writes its shards' outputs straight into the
output folder with embedzoo's own writers (fixed names, atomic renames, one journal per actor), so
a shard retried after a dead actor or node overwrites its files with identical bytes and never
duplicates one; the rows that come back to the driver carry each file's result for the progress
display, the summary and `errors.jsonl`. Ray's `write_parquet` (random names per run) and
`read_audio` (whole files, no resampling, no per-file errors) are deliberately not used.

The output folder must be one file system that every node sees at the same path (local disk on
one machine; NFS, Lustre, EFS or a FUSE mount on a cluster); see docs/scale.md.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from embedzoo.errors import ConfigError, EmbedzooError

if TYPE_CHECKING:
    from embedzoo.extractor import Extractor
    from embedzoo.pipeline import FileResult, OutputLayout, ShardTask

__all__ = ["RayOptions", "RayJobError", "run_shards", "embed_dataset"]


class RayJobError(EmbedzooError):
    """A shard failed on Ray for a reason that is not one file's (a bug, a model that cannot run)."""


@dataclass(frozen=True)
class RayOptions:
    """How the shards are spread over Ray.

    `address`: the cluster (`ray://host:10001`, `auto`, or None: `RAY_ADDRESS` if set, else a new
    local cluster on this machine). `actors`: a fixed pool size, or (min, max) for an autoscaling
    pool; None: as many as the cluster's CPUs (or GPUs, with `gpus_per_actor`) hold, never more
    than there are shards. `cpus_per_actor` / `gpus_per_actor`: the resources each actor reserves
    (fractional GPUs share a device: 0.5 puts two actors on each). `device`: where the actors run
    the model (auto: CUDA when the actor holds a GPU). `prefetch`: decoded chunks an actor keeps
    ready ahead of the model. `init`: further `ray.init` arguments (object_store_memory,
    runtime_env, ...), used only when embedzoo starts Ray itself.
    """

    address: str | None = None
    actors: int | tuple[int, int] | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    device: str = "auto"
    prefetch: int = 4
    init: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.cpus_per_actor > 0:
            raise ConfigError(f"cpus_per_actor must be positive, not {self.cpus_per_actor}")
        if self.gpus_per_actor < 0:
            raise ConfigError(f"gpus_per_actor cannot be negative ({self.gpus_per_actor})")
        sizes = self.actors if isinstance(self.actors, tuple) else (self.actors,) if self.actors is not None else ()
        if any(not isinstance(n, int) or n < 1 for n in sizes) or (len(sizes) == 2 and sizes[0] > sizes[1]):
            raise ConfigError(f"actors must be a positive count or (min, max), not {self.actors!r}")

    def pool(self, shards: int, resources: dict[str, float]) -> tuple[int, int]:
        """(min, max) actors for this many shards on a cluster with these resources."""
        if isinstance(self.actors, tuple):
            return (min(self.actors[0], shards), min(self.actors[1], shards))
        if self.actors is not None:
            return (max(1, min(self.actors, shards)),) * 2
        fit = int(resources.get("CPU", 1) // self.cpus_per_actor)
        if self.gpus_per_actor:
            fit = min(fit, int(resources.get("GPU", 0) // self.gpus_per_actor))
            if fit < 1:
                raise ConfigError(
                    f"the Ray cluster has {resources.get('GPU', 0):g} GPU(s): no actor can hold {self.gpus_per_actor:g}",
                    hint="connect to a cluster with GPUs (--address), or leave --gpus-per-actor at 0",
                )
        return (max(1, min(fit, shards)),) * 2


def _parse_actors(text: str | None) -> int | tuple[int, int] | None:
    """`--ray-actors 4` or `--ray-actors 2-8` (an autoscaling pool)."""
    if text is None:
        return None
    low, sep, high = str(text).partition("-")
    try:
        return (int(low), int(high)) if sep else int(low)
    except ValueError:
        raise ConfigError(f"--ray-actors takes a count or MIN-MAX, not {text!r}") from None


class _ShardActor:
    """What each actor of the pool is: the model (from the object store), once; then shards."""

    def __init__(self, extractor: list, layout: "OutputLayout", scene: bool, timestamp: bool, block_seconds: float,
                 device: str, cpus: float, prefetch: int):  # fmt: skip
        import ray
        import torch

        from embedzoo.extractor import pick_device

        torch.set_num_threads(max(1, int(cpus)))
        model = ray.get(extractor[0])
        gpus = ray.get_gpu_ids()
        if device == "auto":
            device = "cuda" if gpus and torch.cuda.is_available() else "cpu"
        self.extractor = model.to(pick_device(device)).eval()
        self.layout, self.scene, self.timestamp = layout, scene, timestamp
        self.block_seconds, self.prefetch = block_seconds, prefetch
        self.writer = layout.shard_writer()  # one journal per actor: journals never interleave
        self.worker = {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "gpu_ids": [str(g) for g in gpus], "device": str(self.extractor.device)}

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from embedzoo.pipeline import ShardTask, run_shard

        out: dict[str, list] = {"results": [], "audio_seconds": [], "worker": []}
        for text in batch["task"]:
            task = ShardTask.from_json(str(text))
            results = run_shard(self.extractor, task, self.writer, scene=self.scene, timestamp=self.timestamp,
                                block_seconds=self.block_seconds, prefetch=self.prefetch)  # fmt: skip
            out["results"].append(json.dumps([asdict(r) for r in results]))
            out["audio_seconds"].append(sum(r.seconds for r in results))
            out["worker"].append(json.dumps(self.worker))
        return out


def _portable(extractor: "Extractor") -> "Extractor":
    """The extractor as the object store should carry it: on the CPU (an actor moves it to its device)."""
    if extractor.device.type == "cpu":
        return extractor
    return copy.deepcopy(extractor).to("cpu")


_RAISED = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit|Interrupt)): (.*)$")


def _cause(exc: BaseException) -> str:
    """The error a remote task raised: Ray keeps it only as text, in the traceback it wraps (the
    last `SomeError: message` line that is not one of Ray's own)."""
    raised = [m for m in map(_RAISED.match, str(exc).splitlines()) if m and not m.group(1).startswith("ray.")]
    if raised:
        return f"{raised[-1].group(1)}: {raised[-1].group(2)}"
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def run_shards(
    extractor: "Extractor",
    tasks: Sequence["ShardTask"],
    layout: "OutputLayout",
    *,
    scene: bool,
    timestamp: bool,
    block_seconds: float,
    options: RayOptions,
    on_shard: Callable[[list["FileResult"], float], None],
    on_worker: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Run the shards on Ray; `on_shard(results, audio_seconds)` is called in the driver as each
    shard comes back (in completion order), `on_worker` with the actor that ran it (pid, node, GPU ids)."""
    if not tasks:
        return
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError(
            "--engine ray needs Ray", hint="pip install 'embedzoo[ray]' -c constraints.txt (without the constraints pip pulls another torch)"
        ) from None
    from embedzoo.pipeline import FileResult

    started = False
    if not ray.is_initialized():
        ray.init(address=options.address, include_dashboard=False, **options.init)
        started = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # embedzoo's display shows files; Ray's would show blocks
        low, high = options.pool(len(tasks), ray.cluster_resources())
        holder = [ray.put(_portable(extractor))]  # in a list: Ray hands the actors the reference, they fetch it once
        rows = [{"task": task.to_json()} for task in sorted(tasks, key=lambda t: (-t.seconds, t.number))]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _ShardActor,
            batch_size=1,
            batch_format="numpy",
            fn_constructor_kwargs=dict(extractor=holder, layout=layout, scene=scene, timestamp=timestamp, block_seconds=block_seconds,
                                       device=options.device, cpus=options.cpus_per_actor, prefetch=options.prefetch),  # fmt: skip
            compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
            num_cpus=options.cpus_per_actor,
            num_gpus=options.gpus_per_actor or None,
        )
        try:
            for row in dataset.iter_rows():
                on_shard([FileResult(**r) for r in json.loads(str(row["results"]))], float(row["audio_seconds"]))
                if on_worker is not None:
                    on_worker(json.loads(str(row["worker"])))
        except (ray.exceptions.RayError, ray.data.exceptions.UserCodeException) as exc:
            raise RayJobError(
                f"a shard failed on Ray: {_cause(exc)}",
                hint="fix the cause and run the same command again: finished shards are kept and skipped",
            ) from exc
    finally:
        if started:
            ray.shutdown()


def embed_dataset(extractor: "Extractor | str", paths: Any, out_dir: Any, *, options: RayOptions | None = None, column: str = "path", **job: Any):
    """Embed with `--engine ray` from Python: `paths` is a list of files, folders, globs or URLs
    (`s3://...`: `embedzoo.remote`), or a Ray Dataset with a `column` of such paths. `extractor` is an Extractor or a model spec
    (loaded here on the CPU; the actors move it to their device). Other arguments are
    `embed_files`'s (scene, timestamp, fmt, knobs, shard_rows, shard_seconds, ...). Returns its Summary."""
    from embedzoo.inputs import collect_inputs
    from embedzoo.pipeline import embed_files

    if isinstance(extractor, str):
        from embedzoo.loader import load

        extractor = load(extractor, device="cpu")
    if hasattr(paths, "select_columns") and hasattr(paths, "iter_rows"):  # a Ray Dataset
        if column not in paths.columns():
            raise ConfigError(f"the dataset has no column {column!r} (it has {paths.columns()})", hint="pass column='<the column of file paths>'")
        paths = [str(row[column]) for row in paths.select_columns([column]).iter_rows()]
    files = collect_inputs(list(paths) if not isinstance(paths, (str, os.PathLike)) else [paths])
    return embed_files(extractor, files, out_dir, engine="ray", ray=options or RayOptions(), **job)
