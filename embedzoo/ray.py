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
import gc
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


class _Roster:
    """The actors of one job, as they start (a tiny actor the pool's actors report to), so that a
    failed job can end them: Ray Data only drops its handles, and an actor lives while one does."""

    def __init__(self) -> None:
        self.actors: list = []

    def add(self, handles: list) -> None:
        self.actors.extend(handles)

    def get(self) -> list:
        return self.actors


class _ShardActor:
    """What each actor of the pool is: the model (from the object store), once; then shards."""

    def __init__(self, extractor: list, layout: "OutputLayout", scene: bool, timestamp: bool, block_seconds: float,
                 device: str, cpus: float, prefetch: int, roster: list | None = None):  # fmt: skip
        import ray
        import torch

        from embedzoo.extractor import pick_device

        if roster:
            ray.get(roster[0].add.remote([ray.get_runtime_context().current_actor]))

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
        from embedzoo.pipeline import ShardTask

        return self.run([(ShardTask.from_json(str(text)), None) for text in batch["task"]])

    def run(self, shards: list[tuple["ShardTask", list[bytes] | None]]) -> dict[str, list]:
        """Each shard through `run_shard`, as the rows the driver books: results, seconds, worker."""
        from embedzoo.pipeline import run_shard

        out: dict[str, list] = {"results": [], "audio_seconds": [], "worker": []}
        for task, payloads in shards:
            results = run_shard(self.extractor, task, self.writer, scene=self.scene, timestamp=self.timestamp,
                                block_seconds=self.block_seconds, prefetch=self.prefetch, payloads=payloads)  # fmt: skip
            out["results"].append(json.dumps([asdict(r) for r in results]))
            out["audio_seconds"].append(sum(r.seconds for r in results))
            out["worker"].append(json.dumps(self.worker))
        return out


ROW_PREFIX = "ray-dataset://"
"""The source path of a file that is a row of a Ray Dataset of audio bytes: `ray-dataset://<name>`."""


@dataclass(frozen=True)
class _Rows:
    """A Ray Dataset of audio bytes: the dataset, its bytes column and its name column."""

    dataset: Any
    column: str
    name_column: str


def _tag_rows(batch: dict[str, Any], slots: list, name_column: str, column: str) -> dict[str, Any]:
    """The batch's rows that some shard holds: their bytes, shard number and place in the shard."""
    import numpy as np
    import ray

    where = ray.get(slots[0])
    keep = [i for i, name in enumerate(batch[name_column]) if str(name) in where]
    places = [where[str(batch[name_column][i])] for i in keep]
    return {
        "embedzoo_shard": np.array([shard for shard, _ in places], dtype=np.int64),
        "embedzoo_position": np.array([position for _, position in places], dtype=np.int64),
        "embedzoo_bytes": np.array([bytes(batch[column][i]) for i in keep], dtype=object),
    }


def _pack_shard(group: dict[str, Any]) -> dict[str, Any]:
    """One shard's rows (in any order) as one row: its number and its files' bytes in order."""
    import numpy as np

    order = np.argsort(group["embedzoo_position"], kind="stable")
    payloads = np.empty(1, dtype=object)
    payloads[0] = [bytes(group["embedzoo_bytes"][i]) for i in order]
    return {"embedzoo_shard": group["embedzoo_shard"][:1], "embedzoo_payloads": payloads}


class _RowShardActor(_ShardActor):
    """An actor that gets each shard as one row holding its files' bytes, in the shard's order."""

    def __init__(self, tasks: list, **actor: Any):
        import ray

        super().__init__(**actor)
        self.tasks = ray.get(tasks[0])

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from embedzoo.pipeline import ShardTask

        shards = []
        for number, payloads in zip(batch["embedzoo_shard"], batch["embedzoo_payloads"]):
            task = ShardTask.from_json(self.tasks[int(number)])
            if len(payloads) != len(task.paths):
                raise RuntimeError(f"shard {task.number} has {len(task.paths)} files but {len(payloads)} rows came: are the names unique?")
            shards.append((task, [bytes(p) for p in payloads]))
        return self.run(shards)


def _describe_rows(batch: dict[str, Any], column: str, name_column: str) -> dict[str, Any]:
    """Each row's name, size, sha256 and duration (from its header, where soundfile reads it; 0
    otherwise), so that the driver can name and plan without the bytes."""
    import hashlib
    import io

    import numpy as np
    import soundfile as sf

    names, sizes, hashes, seconds = [], [], [], []
    for name, data in zip(batch[name_column], batch[column]):
        data = bytes(data)
        names.append(str(name))
        sizes.append(len(data))
        hashes.append(hashlib.sha256(data).hexdigest())
        try:
            seconds.append(float(sf.info(io.BytesIO(data)).duration))
        except Exception:  # not a soundfile format (mp3 in old libsndfile, m4a): planned by count
            seconds.append(0.0)
    return {"name": np.array(names, dtype=object), "size": np.array(sizes, dtype=np.int64), "sha256": np.array(hashes, dtype=object), "seconds": np.array(seconds)}


def _portable(extractor: "Extractor") -> "Extractor":
    """The extractor as the object store should carry it: on the CPU (an actor moves it to its
    device), and with each parametrization (the weight norm of wav2vec2's positional conv) baked into
    a plain weight -- torch pickles no parametrized module, and an actor only runs inference, whose
    every forward computes that same weight."""
    from torch.nn.utils import parametrize

    parametrized = [module for module in extractor.modules() if parametrize.is_parametrized(module)]
    if extractor.device.type == "cpu" and not parametrized:
        return extractor
    portable = copy.deepcopy(extractor).to("cpu")
    for module in list(portable.modules()):
        if parametrize.is_parametrized(module):
            _bake(module)
    return portable


def _bake(module: Any) -> None:
    """A copied module's parametrized tensors computed once and kept as plain parameters, under its
    own class again. Not torch's `remove_parametrizations`: a deep copy shares the injected class
    with the original, and that would delete the original's property too."""
    import torch
    from torch.nn.utils import parametrize

    with torch.no_grad():
        values = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
    module.__class__ = parametrize.type_before_parametrizations(module)
    del module._modules["parametrizations"]
    for name, value in values.items():
        module.register_parameter(name, torch.nn.Parameter(value, requires_grad=False))


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
    rows: "_Rows | None" = None,
) -> None:
    """Run the shards on Ray; `on_shard(results, audio_seconds)` is called in the driver as each
    shard comes back (in completion order), `on_worker` with the actor that ran it (pid, node, GPU ids).
    `rows`: the shards' files are rows of a Ray Dataset of audio bytes (`embed_dataset`), grouped
    by shard on the cluster, instead of paths each actor opens."""
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
        roster = ray.remote(num_cpus=0)(_Roster).remote()
        actor = dict(extractor=holder, layout=layout, scene=scene, timestamp=timestamp, block_seconds=block_seconds,
                     device=options.device, cpus=options.cpus_per_actor, prefetch=options.prefetch, roster=[roster])  # fmt: skip
        pool = dict(compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high), num_cpus=options.cpus_per_actor,
                    num_gpus=options.gpus_per_actor or None, batch_format="numpy")  # fmt: skip
        if rows is None:
            items = [{"task": task.to_json()} for task in sorted(tasks, key=lambda t: (-t.seconds, t.number))]
            dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(_ShardActor, batch_size=1, fn_constructor_kwargs=actor, **pool)
        else:
            # each row tagged with its shard and place (rows of no shard to run dropped), then one row
            # per shard holding its files' bytes in order: a shuffle, materialised (spilling to disk
            # if need be) before the actor pool starts, so its tasks never wait for CPUs the actors hold
            slots = {task.paths[p][len(ROW_PREFIX):]: (task.number, p) for task in tasks for p in range(len(task.paths))}
            tagged = rows.dataset.map_batches(_tag_rows, fn_kwargs=dict(slots=[ray.put(slots)], name_column=rows.name_column, column=rows.column), batch_format="numpy")
            packed = tagged.groupby("embedzoo_shard").map_groups(_pack_shard, batch_format="numpy").materialize()
            tasks_ref = [ray.put({t.number: t.to_json() for t in tasks})]
            dataset = packed.map_batches(_RowShardActor, batch_size=1, fn_constructor_kwargs=dict(**actor, tasks=tasks_ref), **pool)
        failure = None
        try:
            for row in dataset.iter_rows():
                on_shard([FileResult(**r) for r in json.loads(str(row["results"]))], float(row["audio_seconds"]))
                if on_worker is not None:
                    on_worker(json.loads(str(row["worker"])))
        except (ray.exceptions.RayError, ray.data.exceptions.UserCodeException) as exc:
            failure = _cause(exc)
        if failure is not None:
            # Ray Data drops its handles to the failed pool's actors but something may still hold
            # one, and an actor lives while a handle does: end them, or the next job here waits
            # for the CPUs they hold
            del dataset
            for handle in ray.get(roster.get.remote()):
                ray.kill(handle)
            ray.kill(roster)
            gc.collect()
            raise RayJobError(f"a shard failed on Ray: {failure}", hint="fix the cause and run the same command again: finished shards are kept and skipped")
        ray.kill(roster)
    finally:
        if started:
            ray.shutdown()


def embed_dataset(extractor: "Extractor | str", paths: Any, out_dir: Any, *, options: RayOptions | None = None, column: str = "path",
                  name_column: str = "name", **job: Any):  # fmt: skip
    """Embed with `--engine ray` from Python: `paths` is a list of files, folders, globs or URLs
    (`s3://...`: `embedzoo.remote`), or a Ray Dataset with a `column` of such paths, or of audio
    file bytes (a binary column; then `name_column` names each row's output, e.g. 'a/b.wav',
    unique, its extension telling the decoder the format). `extractor` is an Extractor or a model spec
    (loaded here on the CPU; the actors move it to their device). Other arguments are
    `embed_files`'s (scene, timestamp, fmt, knobs, shard_rows, shard_seconds, ...). Returns its Summary."""
    from embedzoo.inputs import collect_inputs
    from embedzoo.pipeline import embed_files

    if isinstance(extractor, str):
        from embedzoo.loader import load

        extractor = load(extractor, device="cpu")
    rows = None
    if hasattr(paths, "select_columns") and hasattr(paths, "iter_rows"):  # a Ray Dataset
        if column not in paths.columns():
            raise ConfigError(f"the dataset has no column {column!r} (it has {paths.columns()})", hint="pass column='<the column of file paths or bytes>'")
        if _is_binary(paths.schema(), column):
            rows = _Rows(paths, column, name_column)
            files = _row_files(rows)
        else:
            files = collect_inputs([str(row[column]) for row in paths.select_columns([column]).iter_rows()])
    else:
        files = collect_inputs(list(paths) if not isinstance(paths, (str, os.PathLike)) else [paths])
    return embed_files(extractor, files, out_dir, engine="ray", ray=options or RayOptions(), rows=rows, **job)


def _is_binary(schema: Any, column: str) -> bool:
    import pyarrow as pa

    kind = schema.base_schema.field(column).type if hasattr(schema, "base_schema") else dict(zip(schema.names, schema.types))[column]
    return isinstance(kind, pa.DataType) and (pa.types.is_binary(kind) or pa.types.is_large_binary(kind))


def _row_files(rows: _Rows) -> list:
    """The dataset's rows as inputs, described on the cluster (name, size, sha256, duration)."""
    from embedzoo.inputs import InputFile, KnownSource, safe_name

    if rows.name_column not in rows.dataset.columns():
        raise ConfigError(f"a dataset of audio bytes needs a {rows.name_column!r} column naming each row's output", hint="pass name_column='<the column of names such as a/b.wav>'")
    described = rows.dataset.map_batches(_describe_rows, fn_kwargs=dict(column=rows.column, name_column=rows.name_column), batch_format="numpy")
    meta = sorted(described.take_all(), key=lambda r: str(r["name"]))
    seen: set[str] = set()
    files = []
    for row in meta:
        name = str(row["name"])
        if name in seen:
            raise ConfigError(f"two rows of the dataset are named {name!r}", hint=f"the {rows.name_column!r} column must name each row's output once")
        seen.add(name)
        files.append(InputFile(ROW_PREFIX + name, safe_name(name), known=KnownSource(int(row["size"]), str(row["sha256"]), float(row["seconds"]))))
    return files
