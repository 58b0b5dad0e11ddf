"""The `embedzoo` command: thin -- it parses, calls the library, prints.

`list`, `plugins`, `info` and every `--help` stay torch-free (heavy imports live inside commands).
Errors embedzoo raises on purpose are printed as one message plus a hint, without a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from embedzoo.errors import EmbedzooError
from embedzoo.knobs import KNOBS, SWEEP_KNOBS, KnobInfo, Knobs, knob_fields  # torch-free


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _knob_option(name: str, info: KnobInfo) -> Callable[[Callable], Callable]:
    """A knob's option (`--hop-ms` for hop_ms), typed, with the choices and help of its metadata."""
    if info.kind is bool:  # --stack / --no-stack; unset keeps the model's default
        return click.option(f"{_flag(name)}/--no-{name.replace('_', '-')}", name, default=None, help=info.help)
    kind = click.Choice(list(info.choices)) if info.choices else info.kind if info.kind in (int, float) else str
    return click.option(_flag(name), name, type=kind, default=None, help=info.help)


def knob_options(func: Callable | None = None, *, knobs: type = Knobs, skip: Sequence[str] = ()) -> Any:
    """Decorator: one option per knob of `knobs` (each field's metadata makes it), but `skip`."""

    def decorate(command: Callable) -> Callable:
        for name, info in reversed(knob_fields(knobs).items()):
            if info.option and name not in skip:
                command = _knob_option(name, info)(command)
        return command

    return decorate if func is None else decorate(func)


def knobs_from(kwargs: dict[str, Any], knobs: type = Knobs) -> dict[str, Any]:
    """Pop the knob options out of a command's kwargs, keeping only those the user gave."""
    given = {name: kwargs.pop(name) for name in knob_fields(knobs) if name in kwargs}
    return {name: value for name, value in given.items() if value is not None}


def sweep_options(func: Callable) -> Callable:
    """Decorator: a repeatable option per sweep axis (`SWEEP_KNOBS`), whose values the grid takes."""
    for name in reversed(SWEEP_KNOBS):
        info = KNOBS[name]
        if info.kind is tuple:
            text = f"{info.help} Choices to try: repeat the option, once per choice ('a,b' and 'a b' are one choice: a and b concatenated)."
        else:
            text = f"{info.help} Values to try: repeat the option, or separate them with commas or spaces."
        func = click.option(_flag(name), f"sweep_{name}", multiple=True, help=text)(func)
    return func


def sweep_grid(kwargs: dict[str, Any]) -> dict[str, list[Any]]:
    """Pop the sweep options out of a command's kwargs: knob -> the distinct values given, in order.

    A list knob (layers) takes one choice per option, its names comma- or space-separated as
    everywhere else (`--layers a,b` and `--layers "a b"` are one point reading a and b); a number
    or a word (hop, window, mode) takes several values per option, comma- or space-separated. A
    value of the wrong kind is a ConfigError naming the option, before any work."""
    from embedzoo.errors import ConfigError
    from embedzoo.knobs import coerce_knob, split_names

    grid: dict[str, list[Any]] = {}
    for name in SWEEP_KNOBS:
        raw: tuple[str, ...] = kwargs.pop(f"sweep_{name}")
        info = KNOBS[name]
        if info.kind is tuple:
            choices = [split_names(item) for item in raw]
            if any(not names for names in choices):
                raise ConfigError(f"{_flag(name)} was given an empty choice", hint=f"name at least one, e.g. {_flag(name)} a --{name.replace('_', '-')} b,c")
            values = [",".join(names) for names in choices]
        else:
            values = []
            for part in (part for item in raw for part in split_names(item)):
                try:
                    values.append(coerce_knob(name, part))
                except ConfigError:
                    example = "10,25,50" if info.kind in (int, float) else ",".join(info.choices)
                    raise ConfigError(f"{_flag(name)}: {part!r} is not {'a number' if info.kind in (int, float) else 'a value of it'}", hint=f"e.g. {_flag(name)} {example}") from None
                if info.choices and values[-1] not in info.choices:
                    raise ConfigError(f"{_flag(name)}: {part!r} is not one of {', '.join(info.choices)}", hint=f"e.g. {_flag(name)} {','.join(info.choices)}")
        values = list(dict.fromkeys(values))
        if values:
            grid[name] = values
    return grid


def check_sweep(models: Sequence[str], grid: dict[str, list[Any]], knobs: dict[str, Any]) -> None:
    """Before any work: each model spec parses and names a catalog model, and every grid value is
    one that some point of each model can run with -- a layer the model lacks, a window past its
    longest input or base knobs no point can use are a ConfigError naming the option and the
    model. Points that only fail in combination (frame mode with a pooled layer) remain the
    sweep's failed rows, as documented."""
    from embedzoo.errors import ConfigError
    from embedzoo.eval.sweep import sweep_points
    from embedzoo.knobs import resolve_knobs
    from embedzoo.registry import get_registry
    from embedzoo.spec import ModelSpec

    registry = get_registry()
    for model in dict.fromkeys(models):
        spec = ModelSpec.parse(model)
        card = registry.get(spec.name)
        if not card.complete:
            continue  # loading it says which plugin to install
        usable: set[tuple[str, Any]] = set()
        failures: dict[tuple[str, Any], ConfigError] = {}
        first: tuple[str, ConfigError] | None = None
        for point in sweep_points([model], grid):
            values = [(k, v) for k, v in point.overrides.items() if v is not None]
            try:
                resolve_knobs(card, {**spec.overrides(), **knobs, **dict(values)})
            except ConfigError as error:
                first = first or (" ".join(f"{_flag(k)} {v}" for k, v in values), error)
                for item in values:
                    failures.setdefault(item, error)
                continue
            usable.update(values)
        if not usable and first is not None:
            where, error = first
            raise ConfigError(f"sweep: no point can run with {model}{f' ({where})' if where else ''}: {error.message}", hint=error.hint)
        for (knob, value), error in failures.items():
            if (knob, value) not in usable:
                raise ConfigError(f"sweep: {_flag(knob)} {value} cannot run with {model}: {error.message}", hint=error.hint)


def _check_device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--device: an unknown device ('gpu') or one this machine lacks ('cuda' without a GPU) is an
    error before any work (torch is imported here, after --help has been answered)."""
    if value is not None:
        from embedzoo.extractor import pick_device

        pick_device(value)
    return value


class EmbedzooGroup(click.Group):
    """Shows EmbedzooError as a readable message (exit 2 for usage, 1 otherwise)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EmbedzooError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"  hint: {exc.hint}", err=True)
            ctx.exit(1)


@click.group(cls=EmbedzooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="embedzoo")
def main() -> None:
    """embedzoo: one model zoo, one interface, for general-purpose audio embeddings.

    \b
      embedzoo list                              the catalog: installed? cached? size, license
      embedzoo install crepe                     add a plugin distribution
      embedzoo pull crepe-tiny                   fetch, verify and convert weights once
      embedzoo embed crepe-tiny clips/ -o out/   embeddings for a folder of audio
      embedzoo validate crepe-tiny               HEAR 2021 API conformance
      embedzoo make-task pitch tasks/pitch       a synthetic task in the HEAR layout
      embedzoo eval crepe-tiny tasks/pitch       HEAR-style downstream evaluation
      embedzoo sweep crepe-tiny tasks/pitch --layers conv4 --layers conv5 -o sweep/
      embedzoo embed-task crepe-tiny tasks/ -o embeddings   for hear-eval-kit's predictor
    """


def _console():
    """Rich console; lines never wrap mid-value (hashes, paths) when output is piped, unless
    COLUMNS says how wide the reader's terminal is (rich then reads it)."""
    import os

    from rich.console import Console

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit() else 200
    return Console(soft_wrap=True, markup=False, highlight=False, width=width)


def _terminal_width() -> int:
    """The reader's terminal width: the terminal's, or COLUMNS; unlimited when piped without it."""
    import os
    import shutil

    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    return shutil.get_terminal_size((10**6, 24)).columns if sys.stdout.isatty() else 10**6


def text_table(headers: list[str], rows: list[list[str]], width: int, keep: int = 0) -> str:
    """Rows under headers in columns two spaces apart, at most `width` wide where it can be: cells
    wrap between words, the first column's extras (aliases) first, never its first `keep`
    characters (a model id is never cut), then the widest columns. Hand-written: rich lays out 150 catalog rows in 0.2 s, most of `list`'s 0.5 s budget."""
    import textwrap

    import re

    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    # no word is broken but after a hyphen (BSD-3-|Clause): a column shrinks to its longest such
    # part, the first (model ids, whose hyphens must stay) to `keep`
    parts = re.compile(r"[^\s-]*-?")
    floor = [max((len(part) for cell in column for part in parts.findall(cell)), default=1) for column in zip(headers, *rows)]
    floor[0] = max(keep, 1)
    while sum(widths) + 2 * (len(widths) - 1) > width:
        shrinkable = [i for i, w in enumerate(widths) if w > floor[i]]
        if not shrinkable:
            break
        # the first column's extras (aliases) wrap first, then the widest other column
        widest = 0 if 0 in shrinkable else max(shrinkable, key=lambda i: widths[i] - floor[i])
        widths[widest] -= 1
    lines = []
    for row in [headers, ["-" * w for w in widths], *rows]:
        wrapped = [
            textwrap.wrap(cell, w, break_on_hyphens=False, break_long_words=False) if i == 0 else _wrap_parts(parts.findall(cell), w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ]
        wrapped = [lines_ or [""] for lines_ in wrapped]
        for k in range(max(len(parts) for parts in wrapped)):
            lines.append("  ".join((parts[k] if k < len(parts) else "").ljust(w) for parts, w in zip(wrapped, widths)).rstrip())
    return "\n".join(lines)


def _wrap_parts(parts: list[str], width: int) -> list[str]:
    """Greedy lines of at most `width` from a cell's parts (words, and hyphenated pieces that keep
    their hyphen), joined by a space after a word and by nothing after a hyphen."""
    lines: list[str] = []
    line = ""
    for part in (p for p in parts if p):
        joined = line + ("" if not line or line.endswith("-") else " ") + part
        if line and len(joined) > width:
            lines.append(line)
            line = part
        else:
            line = joined
    return lines + [line] if line else lines


def _size(n: int | None) -> str:
    from embedzoo.progress import human_size

    return human_size(n) if n else "-"


def _model_rows(pattern: str | None, installed_only: bool) -> list[dict[str, Any]]:
    from embedzoo.weights import cache as hub  # the cache module alone: list and info stay light
    from embedzoo.plugins import load_plugins
    from embedzoo.registry import get_registry

    families = load_plugins().families
    rows = []
    for card in get_registry().find(pattern):
        installed = card.family in families
        if installed_only and not installed:
            continue
        rows.append(
            {
                "id": card.id,
                "aliases": list(card.aliases),
                "family": card.family,
                "plugin": card.plugin,
                "installed": installed,
                "cached": hub.is_cached(card),
                "download_size": card.download_size,
                "params": card.params,
                "sample_rate": card.sample_rate,
                "license": card.license,
                "pinned": card.pinned,
            }
        )
    return rows


@main.command("list")
@click.argument("pattern", required=False)
@click.option("--installed", "installed_only", is_flag=True, help="Only models whose plugin is installed.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(pattern: str | None, installed_only: bool, as_json: bool) -> None:
    """Models in the catalog (PATTERN: a glob like 'crepe-*', or text the name contains)."""
    rows = _model_rows(pattern, installed_only)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    missing = sorted({row["family"] for row in rows if not row["installed"]})
    cells = [
        [
            row["id"] + (f" ({', '.join(row['aliases'])})" if row["aliases"] else ""),
            row["family"],
            ("cached" if row["cached"] else "installed") if row["installed"] else "no plugin",
            f"{row['params'] / 1e6:.1f} M" if row["params"] else "-",
            f"{row['sample_rate'] / 1000:g} kHz",
            row["license"] or "-",
        ]
        for row in rows
    ]
    # the download size is in --json and `info` (few cards state it): 80 columns hold the rest
    headers = ["model (aliases)", "family", "status", "params", "rate", "license"]
    click.echo(f"embedzoo catalog ({len(rows)} models)")
    click.echo(text_table(headers, cells, _terminal_width(), keep=max((len(row["id"]) for row in rows), default=0)))
    if missing:
        import textwrap

        click.echo(textwrap.fill(f"not installed: `embedzoo install {' | '.join(missing)}`", _terminal_width(), break_on_hyphens=False))


@main.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(model: str, as_json: bool) -> None:
    """Everything the catalog knows about MODEL: sources, layers, knobs, presets, license."""
    from embedzoo.weights import cache as hub  # the cache module alone: list and info stay light
    from embedzoo.card import card_to_dict
    from embedzoo.registry import get_registry

    card = get_registry().get(model)
    data = card_to_dict(card)
    data["complete"] = card.complete
    data["cached"] = hub.is_cached(card)
    files = [f for s in card.sources for f in (s, *s.extras)]
    data["recorded_pins"] = {f.describe(): hub.recorded_pin(f) for f in files if not (f.sha256 or f.commit_pinned)}
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    out = _console()
    out.print(f"{card.id}  {card.description}")
    if card.aliases:
        out.print(f"aliases: {', '.join(card.aliases)}")
    out.print(f"family {card.family} (plugin {card.plugin}), {card.sample_rate} Hz, license {card.license or '?'}")
    if not card.redistribute:
        out.print("redistribution: not allowed by the licence (embedzoo never mirrors these weights; each user pulls them)")
    out.print(f"frontend: {card.frontend or '-'}")
    if card.complete:
        out.print(
            f"native frames every {card.samples_to_ms(card.frame_hop):g} ms, each seeing {card.samples_to_ms(card.frame_field):g} ms; "
            f"windows {card.samples_to_ms(card.min_window):g} .. {card.samples_to_ms(card.max_window):g} ms"
        )
        out.print("layers: " + ", ".join(f"{l.name} ({l.width}{'; tokens ' + '/'.join(l.tokens) if l.tokens else ''})" for l in card.layers))
        out.print(f"layers=all reads: {', '.join(card.all_layers)}")
        if card.paddings:
            out.print(f"paddings (the padding knob; first is the default): {', '.join(card.paddings)}")
    elif card.id in get_registry().problems:
        out.print(f"layers: unavailable, plugin {card.plugin} could not describe this model: {get_registry().problems[card.id].message}")
    else:
        out.print(f"layers: given by plugin {card.plugin}, not installed (`embedzoo install {card.family}`)")
    out.print(f"defaults: {dict(card.defaults)}")
    for name, preset in card.presets.items():
        out.print(f"preset {name}: {dict(preset)}")
    for source in (f for s in card.sources for f in (s, *s.extras)):
        if source.sha256:
            pin = f"sha256 {source.sha256}"
        elif source.commit_pinned:
            pin = f"revision {source.revision}"
        elif source.kind == "hf":
            held = hub.recorded_pin(source)
            pin = f"UNPINNED branch {source.revision} (held to commit {held} since the first pull)" if held else f"UNPINNED branch {source.revision} (its commit is recorded at the first pull)"
        else:
            seen = hub.recorded_pin(source)
            pin = f"UNPINNED (first seen sha256 {seen})" if seen else "UNPINNED (hash recorded at first download)"
        repo_files = f"  + {', '.join(source.files)}" if source.files else ""
        out.print(f"source: {source.describe()}{repo_files}  [{pin}]  {_size(source.size)}")
    out.print(f"cached: {'yes' if data['cached'] else 'no'}")
    if card.reference_scores:
        out.print("reference scores: " + ", ".join(f"{k} {v}" for k, v in card.reference_scores.items()))
    if card.citation:
        out.print(f"cite: {card.citation}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """Installed plugins: name, version, families, and the error of any that failed to load."""
    from dataclasses import asdict

    from embedzoo.plugins import load_plugins
    from embedzoo.registry import get_registry

    try:
        get_registry()  # completing the cards records each plugin's problems with them
    except EmbedzooError:
        pass  # a broken catalog is `list`'s error to report; this command lists plugins regardless
    infos = load_plugins().infos
    if as_json:
        click.echo(json.dumps([asdict(i) | {"ok": i.ok} for i in infos], indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"embedzoo plugins ({len(infos)})")
    for column in ("plugin", "distribution", "version", "families", "status"):
        table.add_column(column)
    for i in infos:
        if not i.ok:
            status = Text(f"failed: {i.error}", style="red")
        elif i.problems:
            status = Text(f"ok; cannot describe {len(i.problems)} model(s): " + "; ".join(i.problems), style="yellow")
        else:
            status = Text("ok", style="green")
        table.add_row(i.name, i.distribution, i.version, ", ".join(i.families) or "-", status)
    _console().print(table)


@main.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-e", "--editable", is_flag=True, help="Editable install (for plugin folders you are developing).")
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade if already installed.")
def install(names: tuple[str, ...], editable: bool, upgrade: bool) -> None:
    """Install plugin distributions: a family (crepe), a model id, a distribution name or a folder."""
    from embedzoo.installer import install as do_install

    code = do_install(list(names), editable=editable, upgrade=upgrade)
    sys.exit(code)


@main.command()
@click.argument("names", nargs=-1, required=True)
def uninstall(names: tuple[str, ...]) -> None:
    """Remove plugin distributions (by family, model id or distribution name)."""
    from embedzoo.installer import uninstall as do_uninstall

    sys.exit(do_uninstall(list(names)))


@main.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--from", "mirror", type=click.Path(file_okay=False, path_type=Path), default=None, help="A local mirror folder (as EMBEDZOO_MIRROR).")
@click.option("--offline", is_flag=True, help="Never use the network.")
@click.option("--force", is_flag=True, help="Fetch and convert again even if cached (to the same bytes).")
@click.option("--quiet", "-q", is_flag=True, help="No download or conversion progress on stderr.")
def pull(models: tuple[str, ...], mirror: Path | None, offline: bool, force: bool, quiet: bool) -> None:
    """Fetch, verify and convert the weights of MODELS (ids, aliases or globs) once."""
    from embedzoo import weights
    from embedzoo.registry import get_registry

    registry = get_registry()
    cards = []
    for name in models:
        found = registry.find(name) if any(c in name for c in "*?[") else [registry.get(name)]
        if not found:
            raise EmbedzooError(f"no model matches {name!r}", hint="`embedzoo list` shows every model")
        cards.extend(found)
    failed = 0
    for card in cards:
        try:
            path = weights.pull(card, mirror=mirror, offline=offline or None, force=force, quiet=quiet)
            click.echo(f"{card.id}: {path}")
        except EmbedzooError as exc:
            failed += 1
            click.secho(f"{card.id}: {exc}", fg="red", err=True)
    sys.exit(1 if failed else 0)


@main.command()
@click.argument("model")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@knob_options
@click.option("--scene", "what", flag_value="scene", help="Scene embeddings only.")
@click.option("--timestamp", "what", flag_value="timestamp", help="Timestamp embeddings only.")
@click.option("--both", "what", flag_value="both", default=True, help="Scene and timestamp embeddings (default).")
@click.option("--format", "fmt", type=click.Choice(["npy", "parquet"]), default="npy", show_default=True, help="npy: one .npy per file and kind (`embed-task` writes hear-eval-kit's layout); parquet: sharded, one row per file.")
@click.option("--device", default="auto", show_default=True, callback=_check_device, help="auto (CUDA when present), cpu, cuda, cuda:1, mps, ...")
@click.option("--workers", type=int, default=None, help="Decoding worker processes (0: decode in the main process; default 1 on the CPU, all cores but one beside a GPU); --engine local.")
@click.option("--weights", metavar="PATH|random", default=None, help="Use this weights file (.safetensors, or an original checkpoint), or 'random': the initial weights (also `MODEL?weights=...`).")
@click.option("--from", "mirror", type=click.Path(file_okay=False, path_type=Path), default=None, help="A local mirror folder for the weights.")
@click.option("--offline", is_flag=True, help="Never use the network.")
@click.option("--overwrite", is_flag=True, help="Delete every embedding in OUT first and recompute (also to change the settings of OUT).")
@click.option("--shard-files", type=click.IntRange(min=1), default=256, show_default=True, help="Files per shard at most (a shard is batched, scheduled and committed as one; parquet: one part per shard).")
@click.option("--shard-seconds", type=click.FloatRange(min=0, min_open=True), default=1800.0, show_default=True, help="Seconds of audio per shard at most (a longer file is a shard alone).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="local: the shards in order on this machine; ray: on Ray Data, here or on a cluster (pip install 'embedzoo[ray]'); both write the same bytes.")
@click.option("--address", default=None, help="--engine ray: the Ray cluster (ray://HOST:10001, auto; default: RAY_ADDRESS, else a local one).")
@click.option("--ray-actors", default=None, metavar="N|MIN-MAX", help="--engine ray: actors in the pool, or an autoscaling range (default: as many as the cluster's CPUs or GPUs hold).")
@click.option("--cpus-per-actor", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help="--engine ray: CPUs each actor reserves (and its torch threads).")
@click.option("--gpus-per-actor", type=click.FloatRange(min=0), default=0.0, show_default=True, help="--engine ray: GPUs each actor reserves; fractions share a device (0.5: two actors a GPU).")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr, no summary line.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def embed(model: str, inputs: tuple[str, ...], out_dir: Path, what: str, fmt: str, device: str, workers: int | None,
          weights: str | None, mirror: Path | None, offline: bool, overwrite: bool, shard_files: int, shard_seconds: float, engine: str,
          address: str | None, ray_actors: str | None, cpus_per_actor: float, gpus_per_actor: float, quiet: bool, as_json: bool, **kwargs: Any) -> None:
    """Embeddings of audio INPUTS (files, folders, globs) with MODEL, written to OUT.

    MODEL is a model spec: ID[:PRESET][?KNOB=VALUE&...][&weights=PATH|random], e.g.
    'crepe-tiny?hop_ms=25&weights=random'; the options below apply on top of it.

    Re-running the same command skips finished files; a killed job resumes; one job at a time
    writes to OUT. The files are planned into shards (sorted by path, capped by --shard-files and
    --shard-seconds); --engine local runs them here, --engine ray on a Ray cluster, with the same
    output bytes. Failed files are listed in OUT/errors.jsonl; the exit status is 1 if any file
    failed. OUT/sources.jsonl (npy) or each parquet row maps an output to its source file.
    """
    from embedzoo.inputs import collect_inputs
    from embedzoo.loader import load
    from embedzoo.pipeline import JobProgress, embed_files
    from embedzoo.progress import EmbedProgress

    knobs = knobs_from(kwargs)
    files = collect_inputs(list(inputs))
    ray_options = None
    if engine == "ray":  # the driver keeps the model on the CPU: each actor moves it to its device
        from embedzoo.ray import RayOptions, _parse_actors

        ray_options = RayOptions(address=address, actors=_parse_actors(ray_actors), cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, device=device)
    extractor = load(model, weights=weights, device="cpu" if engine == "ray" else device, offline=offline or None, mirror=mirror, quiet=quiet, **knobs)
    scene, timestamp = what in ("scene", "both"), what in ("timestamp", "both")
    if workers is None:  # a GPU outruns one decoding process; the CPU's cores are the model's
        workers = max(1, (os.cpu_count() or 2) - 1) if extractor.device.type == "cuda" else 1

    def run(progress: JobProgress | None) -> Any:
        return embed_files(
            extractor, files, out_dir, scene=scene, timestamp=timestamp, fmt=fmt, workers=workers, overwrite=overwrite,
            weights=extractor.weights_identity, progress=progress, shard_rows=shard_files, shard_seconds=shard_seconds,
            engine=engine, ray=ray_options,
        )  # fmt: skip

    if quiet:
        summary = run(None)
    else:
        with EmbedProgress(extractor.card.id) as display:
            summary = run(JobProgress(on_change=display.update))
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    elif not quiet:
        rate = summary.done / summary.wall_seconds if summary.wall_seconds else 0.0
        redone = f" ({summary.redone} of them again: source changed or output incomplete)" if summary.redone else ""
        click.echo(
            f"{summary.done} embedded{redone}, {summary.skipped} already done, {len(summary.failed)} failed "
            f"({summary.audio_seconds:.1f} s of audio in {summary.wall_seconds:.1f} s, {rate:.2f} files/s) -> {summary.out_dir}"
        )
    for note in summary.notes if not (as_json or quiet) else []:
        click.echo(f"note: {note}", err=True)
    for failure in summary.failed if not as_json else []:
        click.secho(f"failed: {failure.path}: {failure.error}", fg="red", err=True)
    sys.exit(0 if summary.ok else 1)


@main.command()
@click.argument("model")
@click.option("--device", default="auto", show_default=True, callback=_check_device, help="auto (CUDA when present), cpu, cuda, cuda:1, mps, ...")
@click.option("--hear-validator/--no-hear-validator", default=True, show_default=True, help="Also run the official hear-validator when it is installed.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@knob_options
def validate(model: str, device: str, hear_validator: bool, as_json: bool, quiet: bool, **kwargs: Any) -> None:
    """HEAR 2021 API conformance of MODEL (a model spec, as for `embed`), plus embedzoo's own checks.

    Progress goes to stderr: a bar on a terminal; elsewhere a line per check (and one every few
    seconds while a check runs). The report goes to stdout."""
    from embedzoo.progress import Reporter
    from embedzoo.validate import validate_model

    with Reporter(f"validate {model}", quiet=quiet) as reporter:

        def on_check(index: int, total: int, name: str, check: Any) -> None:
            if check is None:
                reporter.update("checks" if reporter.live else name, index, total, announce=False)
            elif reporter.live:
                reporter.update("checks", index + 1, total)
            else:
                reporter.line(f"[{index + 1}/{total}] {'ok  ' if check.ok else 'FAIL'} {name}: {check.detail}")

        report = validate_model(model, device=device, run_hear_validator=hear_validator, on_check=on_check, **knobs_from(kwargs))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for check in report.checks:
            mark = click.style("ok  ", fg="green") if check.ok else click.style("FAIL", fg="red")
            click.echo(f"{mark} {check.name}: {check.detail}")
        click.echo("valid" if report.ok else "NOT valid")
    sys.exit(0 if report.ok else 1)


@main.group()
def cache() -> None:
    """Converted weights and evaluation embeddings in embedzoo's cache (EMBEDZOO_CACHE, default ~/.cache/embedzoo)."""


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True)
def cache_ls(as_json: bool) -> None:
    """List cached weights and evaluation embeddings, per model, with their sizes."""
    from dataclasses import asdict

    from embedzoo.weights import cache_entries, embeddings_entries

    weights, embeddings = cache_entries(), embeddings_entries()
    if as_json:
        rows = [{"kind": "weights", **asdict(e)} for e in weights] + [{"kind": "embeddings", **asdict(e)} for e in embeddings]
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for e in weights:
        click.echo(f"weights\t{e.model_id}\t{_size(e.size)}\t{e.path}")
    for e in embeddings:
        click.echo(f"embeddings\t{e.model_id}\t{_size(e.size)} ({e.files} files)\t{e.path}")
    if not weights and not embeddings:
        click.echo("the cache is empty")


@cache.command("rm")
@click.argument("models", nargs=-1, required=True)
@click.option("--only", type=click.Choice(["weights", "embeddings"]), default=None, help="Remove only the converted weights (and their downloaded originals), or only the evaluation embeddings.")
def cache_rm(models: tuple[str, ...], only: str | None) -> None:
    """Remove the cached weights and evaluation embeddings of MODELS (ids or globs)."""
    from embedzoo.weights import remove

    removed = remove(list(models), weights=only != "embeddings", embeddings=only != "weights")
    for path in removed:
        click.echo(f"removed {path}")
    if not removed:
        click.echo("nothing matched")


@cache.command("verify")
def cache_verify() -> None:
    """Re-hash every cached weights file against its record; exit 1 on any mismatch."""
    from embedzoo.weights import verify

    bad = 0
    for entry, ok, problem in verify():
        click.echo(f"{'ok  ' if ok else 'FAIL'} {entry.model_id} {entry.path}{'' if ok else ': ' + problem}")
        if not ok:
            click.echo(f"     fix: embedzoo pull --force {entry.model_id}")
        bad += not ok
    sys.exit(1 if bad else 0)


@cache.command("mirror")
@click.argument("models", nargs=-1, required=True)
@click.option("--to", "dest", type=click.Path(file_okay=False, path_type=Path), required=True, help="The mirror folder (made if missing).")
@click.option("--offline", is_flag=True, help="Never use the network: copy what is already downloaded.")
@click.option("--quiet", "-q", is_flag=True, help="No download progress on stderr.")
def cache_mirror(models: tuple[str, ...], dest: Path, offline: bool, quiet: bool) -> None:
    """Copy the verified original weights of MODELS into a mirror folder (for --from DIR or
    EMBEDZOO_MIRROR elsewhere); refuses weights whose licence forbids redistributing them."""
    from embedzoo.registry import get_registry
    from embedzoo.weights import mirror_model

    registry = get_registry()
    for name in models:
        for path in mirror_model(registry.get(name), dest, offline=offline or None, quiet=quiet):
            click.echo(f"{name}: {path}")


# ---- downstream evaluation: make-task, eval, sweep ---------------------------------------------

TASK_KINDS = ("pitch", "scene", "scene-multilabel", "event")  # embedzoo.eval.tasks.KINDS, kept here so --help stays light

DOWNSTREAM_OPTIONS = [
    click.option("--scene-from", type=click.Choice(["scene", "timestamp"]), default="scene", show_default=True, help="Scene tasks: the model's scene embedding, or the mean of its timestamp embeddings (then hop and window shape it)."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seeds the grid sampling, initialisation, shuffling and dropout (and 'random' weights)."),
    click.option("--grid-points", type=int, default=8, show_default=True, help="Hyper-parameter grid points tried on the first split."),
    click.option("--max-epochs", type=int, default=None, help="Epochs at most (HEAR: 500)."),
    click.option("--patience", type=int, default=None, help="Validation checks without gain before stopping (HEAR: 20, a check every 3 epochs)."),
    click.option("--hidden-dim", type=int, default=None, help="Width of the hidden layers (HEAR: 1024)."),
    click.option("--standardize", is_flag=True, help="z-score embeddings with the training split's statistics (not HEAR's recipe)."),
    click.option("--device", default="auto", show_default=True, callback=_check_device, help="auto (CUDA when present), cpu, cuda, cuda:1, mps, ..."),
    click.option("--workers", type=int, default=1, show_default=True, help="Decoding worker processes (0: in the main process)."),
    click.option("--from", "mirror", type=click.Path(file_okay=False, path_type=Path), default=None, help="A local mirror folder for the weights."),
    click.option("--offline", is_flag=True, help="Never use the network."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
]


def downstream_options(func):
    for option in reversed(DOWNSTREAM_OPTIONS):
        func = option(func)
    return func


def _eval_settings(kwargs: dict[str, Any]):
    from embedzoo.eval.evaluate import EvalSettings

    return EvalSettings(
        seed=kwargs.pop("seed"),
        grid_points=kwargs.pop("grid_points"),
        max_epochs=kwargs.pop("max_epochs"),
        patience=kwargs.pop("patience"),
        hidden_dim=kwargs.pop("hidden_dim"),
        scene_from=kwargs.pop("scene_from"),
        standardize=kwargs.pop("standardize"),
    )


def _reporter(title: str, quiet: bool):
    """Progress on stderr for a long command (`embedzoo.progress.Reporter`): a bar on a
    terminal, plain lines at least every few seconds elsewhere."""
    from embedzoo.progress import Reporter

    return Reporter(title, quiet=quiet)


@main.command("make-task")
@click.argument("kind", type=click.Choice(TASK_KINDS))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", type=click.Choice(["tiny", "small", "medium"]), default="small", show_default=True, help="How many examples (small: what the tests use).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same files.")
@click.option("--sample-rate", "sample_rates", type=int, multiple=True, help="Rate(s) to write the audio at (repeatable; default 16000).")
@click.option("--folds", type=int, default=0, help="Write K folds (k-fold split mode) instead of train/valid/test.")
@click.option("--overwrite", is_flag=True, help="Replace an existing task folder.")
def make_task_command(kind: str, out_dir: Path, size: str, seed: int, sample_rates: tuple[int, ...], folds: int, overwrite: bool) -> None:
    """Write a synthetic task of KIND into OUT_DIR, in the HEAR 2021 task layout.

    \b
      pitch             harmonic tones over several octaves, timbres unseen in training
                        held out for validation and test (pitch_acc, chroma_acc)
      scene             noise colours, chirps, click trains, AM tones, one per clip (top1_acc, mAP, ...)
      scene-multilabel  the same sources mixed, one to three per clip (mAP, d_prime, aucroc)
      event             tones, noise bursts and chirps with onsets and offsets in 3 s clips
                        (event onset F-measure, 200 ms and 50 ms; onset-offset)
    """
    from embedzoo.eval.tasks import describe, make_task

    task = make_task(kind, out_dir, size=size, seed=seed, sample_rates=sample_rates or (16000,), folds=folds, overwrite=overwrite)
    click.echo(f"wrote {out_dir}")
    click.echo(describe(task))


@main.command("eval")
@click.argument("model")
@click.argument("task_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@knob_options
@click.option("--weights", default=None, help="A weights file (.safetensors or original), or 'random': the architecture with its initial weights, a control.")
@downstream_options
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Results JSON (default: embedzoo-results/<task>/<model>-<settings>.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the results JSON instead of the table.")
def eval_command(model: str, task_dir: Path, weights: str | None, out_path: Path | None, as_json: bool, **kwargs: Any) -> None:
    """Evaluate MODEL (a model spec, as for `embed`) on the HEAR-layout task in TASK_DIR: frozen
    embeddings, a shallow MLP.

    Embeddings are cached per model, weights, knobs and file in the embedzoo cache, so a second
    run (or a sweep) reuses them. Scores are on the test split(s), with hyper-parameters chosen on
    the first split's validation data.
    """
    from embedzoo.eval.evaluate import default_result_path, evaluate, finite, result_lines, result_table, write_json

    knobs = knobs_from(kwargs)
    settings = _eval_settings(kwargs)
    with _reporter(f"eval {model}", kwargs["quiet"] or as_json) as reporter:
        common = dict(settings=settings, weights=weights, knobs=knobs, device=kwargs["device"], workers=kwargs["workers"], offline=kwargs["offline"] or None, mirror=kwargs["mirror"], progress=reporter.update)
        result = evaluate(model, task_dir, **common)
    out_path = out_path or default_result_path(result)
    write_json(out_path, result)
    if as_json:
        click.echo(json.dumps(finite(result), indent=2))
        return
    from rich.table import Table

    out = _console()
    for line in result_lines(result):
        out.print(line)
    columns, rows = result_table(result)
    table = Table(title=f"{result['model']} on {result['task']['name']} (* primary)")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    out.print(f"results: {out_path}")


@main.command()
@click.argument("models", nargs=-1, required=True)
@click.argument("task_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@sweep_options
@knob_options(skip=SWEEP_KNOBS)
@click.option("--plot-metric", default=None, help="The score the plots show (default: the task's primary metric).")
@downstream_options
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for runs/*.json, results.csv and the plots.")
def sweep(models: tuple[str, ...], task_dir: Path, out_dir: Path, **kwargs: Any) -> None:
    """Evaluate MODELS on TASK_DIR over a grid of knobs; write a CSV and plots into OUT.

    \b
      embedzoo sweep crepe-tiny 'crepe-tiny?weights=random' tasks/pitch \\
          --layers conv3 --layers conv4 --layers conv5 --layers conv6 --hop-ms 10,50 -o sweep/

    Every combination of the values given for the swept knobs (layers, hop, window, mode) is one
    point (a knob not given stays at each model's default); the other knob options apply to every
    point, on top of each model spec's own. Cached embeddings are reused; finished points are kept in OUT/runs/, so an
    interrupted sweep resumes where it stopped. Plots: OUT/score_vs_<knob>.png, one line per
    model, the best test score over the other knobs.
    """
    from embedzoo.eval.sweep import sweep as run_sweep

    grid = sweep_grid(kwargs)
    knobs = knobs_from(kwargs)
    check_sweep(models, grid, knobs)
    settings = _eval_settings(kwargs)
    quiet = kwargs["quiet"]
    with _reporter("sweep", quiet) as reporter:

        def on_point(index: int, total: int, point: Any, status: str) -> None:
            label = f"[{index + 1}/{total}] {point.model}" + "".join(f" {k}={v}" for k, v in point.overrides.items() if v is not None)
            reporter.prefix = f"{label}: "
            if reporter.live:
                reporter.update("points", index + (status != "running"), total)
            if status != "running":
                reporter.line(f"{label}: {status}")

        common = dict(grid=grid, knobs=knobs, settings=settings, device=kwargs["device"], workers=kwargs["workers"], offline=kwargs["offline"] or None, mirror=kwargs["mirror"], on_point=on_point, progress=reporter.update, plot_metric=kwargs["plot_metric"])
        rows = run_sweep(list(models), task_dir, out_dir, **common)
    from rich.table import Table

    table = Table(title=f"sweep on {task_dir} ({len(rows)} points)")
    varying = [k for k in SWEEP_KNOBS if k in grid]
    metric = next((r["primary_metric"] for r in rows if r.get("primary_metric")), "score")
    for column in ["model", *varying, metric]:
        table.add_column(column)
    for row in rows:
        score = row.get("primary_score")
        table.add_row(row["model"], *[str(row[k]) for k in varying], row["error"] and f"failed: {row['error']}" or (f"{score:.4f}" if isinstance(score, float) else "-"))
    if not quiet:
        _console().print(table)
    click.echo(f"results: {out_dir / 'results.csv'}; plots: " + (", ".join(p.name for p in sorted(out_dir.glob('score_vs_*.png'))) or "none (no knob took two values)"))
    sys.exit(1 if any(r["error"] for r in rows) else 0)


def _task_folders(paths: Sequence[Path]) -> list[Path]:
    """Task folders, as given or found one level below a folder of tasks (heareval's --tasks-dir)."""
    out: list[Path] = []
    for path in paths:
        found = [path] if (path / "task_metadata.json").is_file() else sorted(p for p in path.iterdir() if (p / "task_metadata.json").is_file())
        out += found or [path]  # not a task, nor a folder of tasks: load_task says so
    return out


@main.command("embed-task")
@click.argument("model")
@click.argument("task_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="The embeddings folder (heareval's embeddings/): writes OUT/NAME/<task>/.")
@click.option("--name", default=None, help="The model's folder under OUT (default: the model spec as a safe file name).")
@knob_options
@click.option("--weights", metavar="PATH|random", default=None, help="A weights file, or 'random': the initial weights (also `MODEL?weights=...`).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of 'random' weights.")
@click.option("--device", default="auto", show_default=True, callback=_check_device, help="auto (CUDA when present), cpu, cuda, cuda:1, mps, ...")
@click.option("--workers", type=int, default=1, show_default=True, help="Decoding worker processes (0: in the main process).")
@click.option("--from", "mirror", type=click.Path(file_okay=False, path_type=Path), default=None, help="A local mirror folder for the weights.")
@click.option("--offline", is_flag=True, help="Never use the network.")
@click.option("--overwrite", is_flag=True, help="Replace task folders that hold other settings' embeddings.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
def embed_task_command(model: str, task_dirs: tuple[Path, ...], out_dir: Path, name: str | None, weights: str | None, seed: int, device: str,
                       workers: int, mirror: Path | None, offline: bool, overwrite: bool, quiet: bool, as_json: bool, **kwargs: Any) -> None:  # fmt: skip
    """Embed the HEAR tasks in TASK_DIRS (task folders, or folders of them) with MODEL, in the
    layout hear-eval-kit's predictor reads: OUT/NAME/<task>/, as `heareval.embeddings.runner`
    writes it. Then train and score with the official kit:

    \b
      embedzoo embed-task crepe-tiny tasks/ -o embeddings
      embedzoo embed-task 'crepe-tiny?weights=random' tasks/ -o embeddings
      python -m heareval.predictions.runner embeddings/*/*

    NAME defaults to the model spec, so models and settings never overwrite each other; a
    finished task is skipped when re-run with the same settings. Embeddings are cached as for
    `eval`.
    """
    from embedzoo.hearkit import embed_tasks

    with _reporter(f"embed-task {model}", quiet or as_json) as reporter:

        def on_task(index: int, total: int, task: str, status: str) -> None:
            reporter.prefix = f"[{index + 1}/{total}] {task}: "
            if status != "running":
                reporter.line(f"[{index + 1}/{total}] {task}: {status}")

        outputs = embed_tasks(
            model, _task_folders(task_dirs), out_dir, name=name, weights=weights, knobs=knobs_from(kwargs), device=device, workers=workers,
            seed=seed, offline=offline or None, mirror=mirror, overwrite=overwrite, progress=reporter.update, on_task=on_task,
        )  # fmt: skip
    if as_json:
        click.echo(json.dumps([{"task": o.task, "path": str(o.path), "status": o.status, "rows": o.rows, "size": o.size} for o in outputs], indent=2))
        return
    for o in outputs:
        click.echo(f"{o.task}: {o.status} {o.path} (" + ", ".join(f"{split} {rows}" for split, rows in o.rows.items()) + f" rows of {o.size})")
    import shlex

    folders = sorted({str(o.path.parent) for o in outputs})
    click.echo("next: python -m heareval.predictions.runner " + " ".join(f"{shlex.quote(f)}/*" for f in folders))


if __name__ == "__main__":
    main()
