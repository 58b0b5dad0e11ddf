"""The `embedzoo` command: thin -- it parses, calls the library, prints.

`list`, `plugins`, `info` and every `--help` stay torch-free (heavy imports live inside commands).
Errors embedzoo raises on purpose are printed as one message plus a hint, without a traceback.
"""

from __future__ import annotations

import json
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
            text = f"{info.help} Choices to try: repeat the option, or separate them with spaces ('a,b' is one choice)."
        else:
            text = f"{info.help} Values to try: repeat the option, or separate them with commas."
        func = click.option(_flag(name), f"sweep_{name}", multiple=True, help=text)(func)
    return func


def sweep_grid(kwargs: dict[str, Any]) -> dict[str, list[Any]]:
    """Pop the sweep options out of a command's kwargs: knob -> the distinct values given, in order."""
    grid: dict[str, list[Any]] = {}
    for name in SWEEP_KNOBS:
        raw: tuple[str, ...] = kwargs.pop(f"sweep_{name}")
        kind = KNOBS[name].kind
        parts = [part for item in raw for part in (item.split() if kind is tuple else item.replace(",", " ").split())]
        values = list(dict.fromkeys(kind(part) if kind in (int, float) else part for part in parts))
        if values:
            grid[name] = values
    return grid


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
    """


def _console():
    """Rich console; lines never wrap mid-value (hashes, paths) when output is piped."""
    from rich.console import Console

    return Console(soft_wrap=True, markup=False, highlight=False, width=None if sys.stdout.isatty() else 200)


def _size(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def _model_rows(pattern: str | None, installed_only: bool) -> list[dict[str, Any]]:
    from embedzoo import hub
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
    from rich.table import Table

    table = Table(title=f"embedzoo catalog ({len(rows)} models)")
    for column in ("model", "family", "installed", "cached", "download", "params", "rate", "license"):
        table.add_column(column)
    for row in rows:
        name = row["id"] + (f" ({', '.join(row['aliases'])})" if row["aliases"] else "")
        table.add_row(
            name,
            row["family"],
            "yes" if row["installed"] else f"no: embedzoo install {row['family']}",
            "yes" if row["cached"] else "no",
            _size(row["download_size"]),
            f"{row['params'] / 1e6:.1f} M" if row["params"] else "-",
            f"{row['sample_rate'] // 1000 if row['sample_rate'] % 1000 == 0 else row['sample_rate'] / 1000} kHz",
            row["license"] or "-",
        )
    _console().print(table)


@main.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(model: str, as_json: bool) -> None:
    """Everything the catalog knows about MODEL: sources, layers, knobs, presets, license."""
    from embedzoo import hub
    from embedzoo.card import card_to_dict
    from embedzoo.registry import get_registry

    card = get_registry().get(model)
    data = card_to_dict(card)
    data["complete"] = card.complete
    data["cached"] = hub.is_cached(card)
    files = [f for s in card.sources for f in (s, *s.extras)]
    data["recorded_pins"] = {f.describe(): hub.recorded_pin(f) for f in files if not (f.sha256 or f.kind == "hf")}
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    out = _console()
    out.print(f"{card.id}  {card.description}")
    if card.aliases:
        out.print(f"aliases: {', '.join(card.aliases)}")
    out.print(f"family {card.family} (plugin {card.plugin}), {card.sample_rate} Hz, license {card.license or '?'}")
    out.print(f"frontend: {card.frontend or '-'}")
    if card.complete:
        out.print(
            f"native frames every {card.samples_to_ms(card.frame_hop):g} ms, each seeing {card.samples_to_ms(card.frame_field):g} ms; "
            f"windows {card.samples_to_ms(card.min_window):g} .. {card.samples_to_ms(card.max_window):g} ms"
        )
        out.print("layers: " + ", ".join(f"{l.name} ({l.width}{'; tokens ' + '/'.join(l.tokens) if l.tokens else ''})" for l in card.layers))
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
        elif source.kind == "hf":
            pin = f"revision {source.revision}"
        else:
            seen = hub.recorded_pin(source)
            pin = f"UNPINNED (first seen sha256 {seen})" if seen else "UNPINNED (hash recorded at first download)"
        out.print(f"source: {source.describe()}  [{pin}]  {_size(source.size)}")
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
@click.option("--force", is_flag=True, help="Fetch and convert again even if cached.")
def pull(models: tuple[str, ...], mirror: Path | None, offline: bool, force: bool) -> None:
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
            path = weights.pull(card, mirror=mirror, offline=offline or None, force=force)
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
@click.option("--format", "fmt", type=click.Choice(["npy", "parquet"]), default="npy", show_default=True, help="npy: HEAR eval-kit layout; parquet: sharded, one row per file.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
@click.option("--workers", type=int, default=1, show_default=True, help="Decoding worker processes (0: decode in the main process).")
@click.option("--weights", metavar="PATH|random", default=None, help="Use this weights file (.safetensors, or an original checkpoint), or 'random': the initial weights (also `MODEL?weights=...`).")
@click.option("--from", "mirror", type=click.Path(file_okay=False, path_type=Path), default=None, help="A local mirror folder for the weights.")
@click.option("--offline", is_flag=True, help="Never use the network.")
@click.option("--overwrite", is_flag=True, help="Recompute files already done, and allow other settings in OUT.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def embed(model: str, inputs: tuple[str, ...], out_dir: Path, what: str, fmt: str, device: str, workers: int,
          weights: str | None, mirror: Path | None, offline: bool, overwrite: bool, quiet: bool, as_json: bool, **kwargs: Any) -> None:
    """Embeddings of audio INPUTS (files, folders, globs) with MODEL, written to OUT.

    MODEL is a model spec: ID[:PRESET][?KNOB=VALUE&...][&weights=PATH|random], e.g.
    'crepe-tiny?hop_ms=25&weights=random'; the options below apply on top of it.

    Re-running the same command skips finished files; a killed job resumes. Failed files are
    listed in OUT/errors.jsonl; the exit status is 1 if any file failed.
    """
    from embedzoo.inputs import collect_inputs
    from embedzoo.loader import load
    from embedzoo.pipeline import embed_files

    knobs = knobs_from(kwargs)
    files = collect_inputs(list(inputs))
    extractor = load(model, weights=weights, device=device, offline=offline or None, mirror=mirror, **knobs)
    weights_id = extractor.weights_identity
    progress_bar = None
    if not quiet and not as_json:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress_bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.fields[name]}")
        )
    task = None

    def on_progress(name: str, seconds: float) -> None:
        if progress_bar is not None and task is not None:
            progress_bar.update(task, advance=1, name=name)

    scene, timestamp = what in ("scene", "both"), what in ("timestamp", "both")
    if progress_bar is not None:
        with progress_bar:
            task = progress_bar.add_task(extractor.card.id, total=len(files), name="")
            summary = embed_files(extractor, files, out_dir, scene=scene, timestamp=timestamp, fmt=fmt, workers=workers, overwrite=overwrite, weights=weights_id, on_progress=on_progress)
            progress_bar.update(task, completed=len(files))
    else:
        summary = embed_files(extractor, files, out_dir, scene=scene, timestamp=timestamp, fmt=fmt, workers=workers, overwrite=overwrite, weights=weights_id)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    elif not quiet:
        rate = summary.done / summary.wall_seconds if summary.wall_seconds else 0.0
        click.echo(
            f"{summary.done} embedded, {summary.skipped} already done, {len(summary.failed)} failed "
            f"({summary.audio_seconds:.1f} s of audio in {summary.wall_seconds:.1f} s, {rate:.2f} files/s) -> {summary.out_dir}"
        )
    for failure in summary.failed if not as_json else []:
        click.secho(f"failed: {failure.path}: {failure.error}", fg="red", err=True)
    sys.exit(0 if summary.ok else 1)


@main.command()
@click.argument("model")
@click.option("--device", default="auto", show_default=True)
@click.option("--hear-validator/--no-hear-validator", default=True, show_default=True, help="Also run the official hear-validator when it is installed.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@knob_options
def validate(model: str, device: str, hear_validator: bool, as_json: bool, **kwargs: Any) -> None:
    """HEAR 2021 API conformance of MODEL (a model spec, as for `embed`), plus embedzoo's own checks."""
    from embedzoo.validate import validate_model

    report = validate_model(model, device=device, run_hear_validator=hear_validator, **knobs_from(kwargs))
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
    """Converted weights in embedzoo's cache (EMBEDZOO_CACHE, default ~/.cache/embedzoo)."""


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True)
def cache_ls(as_json: bool) -> None:
    """List cached models with their sizes."""
    from dataclasses import asdict

    from embedzoo.weights import cache_entries

    entries = cache_entries()
    if as_json:
        click.echo(json.dumps([asdict(e) for e in entries], indent=2, default=str))
        return
    for e in entries:
        click.echo(f"{e.model_id}\t{_size(e.size)}\t{e.path}")
    if not entries:
        click.echo("the cache is empty")


@cache.command("rm")
@click.argument("models", nargs=-1, required=True)
def cache_rm(models: tuple[str, ...]) -> None:
    """Remove cached weights of MODELS (ids or globs)."""
    from embedzoo.weights import remove

    removed = remove(list(models))
    for path in removed:
        click.echo(f"removed {path}")
    if not removed:
        click.echo("nothing matched")


@cache.command("verify")
def cache_verify() -> None:
    """Re-hash every cached file against its record; exit 1 on any mismatch."""
    from embedzoo.weights import verify

    bad = 0
    for entry, ok, problem in verify():
        click.echo(f"{'ok  ' if ok else 'FAIL'} {entry.model_id} {entry.path}{'' if ok else ': ' + problem}")
        bad += not ok
    sys.exit(1 if bad else 0)


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
    click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, ..."),
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


def _stage_progress(quiet: bool):
    """A rich progress bar driven by evaluate's (stage, done, total) callback, or nothing."""
    if quiet:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=_console_err())
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return bar, update


def _console_err():
    from rich.console import Console

    return Console(stderr=True)


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
    bar, update = _stage_progress(kwargs["quiet"] or as_json)
    common = dict(settings=settings, weights=weights, knobs=knobs, device=kwargs["device"], workers=kwargs["workers"], offline=kwargs["offline"] or None, mirror=kwargs["mirror"], progress=update)
    if bar is not None:
        with bar:
            result = evaluate(model, task_dir, **common)
    else:
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
    settings = _eval_settings(kwargs)
    quiet = kwargs["quiet"]
    progress_bar = None
    if not quiet:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress_bar = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[point]}"), console=_console_err())
    bar_task = None

    def on_point(index: int, total: int, point: Any, status: str) -> None:
        label = f"{point.model} " + " ".join(f"{k}={v}" for k, v in point.overrides.items() if v is not None)
        if progress_bar is not None and bar_task is not None:
            progress_bar.update(bar_task, total=total, completed=index + (status != "running"), point=f"{label} [{status}]")
        elif not quiet and status != "running":
            click.echo(f"[{index + 1}/{total}] {label}: {status}")

    common = dict(grid=grid, knobs=knobs, settings=settings, device=kwargs["device"], workers=kwargs["workers"], offline=kwargs["offline"] or None, mirror=kwargs["mirror"], on_point=on_point, plot_metric=kwargs["plot_metric"])
    if progress_bar is not None:
        with progress_bar:
            bar_task = progress_bar.add_task("sweep", total=None, point="")
            rows = run_sweep(list(models), task_dir, out_dir, **common)
    else:
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


if __name__ == "__main__":
    main()
