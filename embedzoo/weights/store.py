"""Convert and store: an original checkpoint -> the model's state dict, saved once as safetensors.

`pull` fetches a card's original (`embedzoo.weights.fetch`), converts it to the model's own
state-dict layout with the plugin's `checkpoint_filter_fn` -- proven by a strict load into a fresh
model -- and stores it in the cache with a meta.json of its provenance, including the converted
file's sha256; extraction only ever reads that file (`load_weights`). The converted bytes are a
function of the tensors alone (the safetensors header carries no per-run metadata), so `pull --force`
writes the same file again and the weights identity that outputs record stays valid. A cached file
is re-hashed against meta.json at its first use in a process: damaged bytes are converted again
from the verified original, or refused with the command to run -- never used. Legacy pickles are
read only with `torch.load(weights_only=True)`: a checkpoint that needs arbitrary code is refused.
`convert_checkpoint` does the same conversion in memory for a file the user passes
(`embedzoo.load(id, weights=PATH)`).

torch and safetensors are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pickle
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from embedzoo.card import ModelCard, Source
from embedzoo.errors import ChecksumError, OfflineError, WeightsError
from embedzoo.remap import unwrap_state_dict
from embedzoo.weights.cache import (
    META_FILE,
    MODEL_FILE,
    atomic_write_text,
    cache_key,
    converted_path,
    embedzoo_version,
    file_lock,
    follow_umask,
    meta_matches,
    now_iso,
    permission_error,
    read_meta,
    sha256_file,
)
from embedzoo.weights.fetch import EntryMissing, Progress, fetch_source, resolved_revision
from embedzoo.weights.listing import resolve_in_folder, resolve_patterns
from embedzoo.progress import ByteProgress, Working, human_size

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["check_repo_files", "convert_checkpoint", "damage", "folder_checkpoint", "load_weights", "pull", "read_repo_files"]

_LIST_LIMIT = 10


# ----------------------------------------------------------------------------------------- convert


def _load_original(path: Path, fmt: str) -> Any:
    """Read an original checkpoint: safetensors, or a pickle restricted to tensors and containers."""
    if fmt == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise WeightsError(
                f"{path} is not a readable safetensors file: {exc}",
                hint="the file may be truncated or in another format: delete it and pull again",
            ) from exc
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{path} holds Python objects besides tensors and containers; embedzoo unpickles checkpoints only with "
            f"torch.load(weights_only=True) and refuses it ({first})",
            hint="if you trust its author, load it yourself in a separate session and save the state dict with "
            "safetensors.torch.save_file, then use that .safetensors file",
        ) from exc
    except Exception as exc:
        raise WeightsError(
            f"cannot read the checkpoint {path}: {type(exc).__name__}: {exc}",
            hint="the file may be truncated or not a PyTorch checkpoint: delete it and pull again",
        ) from exc


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f" ... and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else "")


def _merge_extras(card: ModelCard, path: Path, original: Any, extras: list[tuple[Path, str]]) -> Any:
    """The main checkpoint's tensors plus those of its extra files (one dict; no key twice)."""
    if not extras:
        return original
    merged = dict(unwrap_state_dict(original, card.id))
    for extra_path, extra_fmt in extras:
        extra = unwrap_state_dict(_load_original(extra_path, extra_fmt), card.id)
        twice = sorted(set(merged) & set(extra))
        if twice:
            raise WeightsError(f"{extra_path} and {path} both hold {_listing(twice)} (model {card.id})")
        merged.update(extra)
    return merged


def read_repo_files(card: ModelCard, paths: Mapping[str, Path]) -> dict[str, Any]:
    """The repo files of a hub checkpoint, parsed: JSON (config.json, preprocessor_config.json), or
    YAML for a name ending in .yaml / .yml (ESPnet's config.yaml, read with yaml.safe_load)."""
    import yaml

    parsed: dict[str, Any] = {}
    for name, path in paths.items():
        kind = "YAML" if name.endswith((".yaml", ".yml")) else "JSON"
        try:
            text = Path(path).read_text(encoding="utf-8")
            parsed[name] = yaml.safe_load(text) if kind == "YAML" else json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
            raise WeightsError(
                f"{path} ({name} of model {card.id}) is not readable {kind}: {exc}",
                hint="the file may be truncated or not the repo's: delete it (or fix the folder) and pull again",
            ) from exc
    return parsed


def check_repo_files(card: ModelCard, paths: Mapping[str, Path]) -> None:
    """Hand a hub checkpoint's repo files to the plugin (`check_repo_files(card, files)`, when it
    has one), which refuses a repo whose config.json or preprocessor_config.json disagrees with the
    card's config -- weights of another architecture would otherwise load into the wrong model, or
    run with the wrong frontend, without an error. A file the repo lacks is absent from `paths`: the
    plugin decides whether it may be."""
    from embedzoo.plugins import family_module

    checker = getattr(family_module(card.family, card.plugin), "check_repo_files", None)
    if checker is None:
        return
    files = read_repo_files(card, paths)
    try:
        checker(card, files)
    except WeightsError:
        raise
    except Exception as exc:
        where = ", ".join(str(path) for path in paths.values())
        raise WeightsError(
            f"the repo files of {card.id} ({where}) do not describe this model: {exc}",
            hint=f"is this a checkpoint of {card.id}? the card's config is {dict(card.config)}",
        ) from exc


def _convert(
    card: ModelCard, path: Path, fmt: str, extras: list[tuple[Path, str]] | None = None, repo_files: Mapping[str, Path] | None = None
) -> dict[str, Tensor]:
    """Original checkpoint (and its extra files) -> the model's state dict, proven by a strict
    load into a fresh model; a hub checkpoint's repo files are checked against the card first."""
    import torch

    from embedzoo.plugins import family_module

    if repo_files is not None:  # a hub checkpoint whose source names repo files (or a hub-like folder)
        check_repo_files(card, repo_files)
    original = _merge_extras(card, path, _load_original(path, fmt), extras or [])
    module = family_module(card.family, card.plugin)
    model = module.create_model(card)
    own = model.state_dict()
    already = (
        isinstance(original, Mapping)
        and set(original) == set(own)
        and all(isinstance(value, torch.Tensor) for value in original.values())
    )
    if already:  # a checkpoint already in embedzoo's layout (e.g. one of our own safetensors)
        state = dict(original)
    else:
        try:
            state = module.checkpoint_filter_fn(original, model)
        except Exception as exc:
            raise WeightsError(
                f"plugin {card.plugin} could not convert {path} for model {card.id}: {type(exc).__name__}: {exc}",
                hint=f"is this really a checkpoint of {card.id}? the plugin expects the layout of its original release",
            ) from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"plugin {card.plugin}: checkpoint_filter_fn must return a dict of tensors (converting {path})")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        lines = [f"the checkpoint {path} does not fit model {card.id} (plugin {card.plugin}) after conversion:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {_listing(shapes)}")
        hint = f"check that the file is a checkpoint of {card.id} (config {dict(card.config)})"
        raise WeightsError("\n".join(lines), hint=hint)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"the converted checkpoint {path} does not load into model {card.id}: {exc}") from exc
    return _standalone(state)


def _standalone(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous tensors that own their memory: what safetensors can save (it refuses shared storage)."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
            storage = tensor.untyped_storage()
        seen.add(storage.data_ptr())
        out[name] = tensor
    return out


def convert_checkpoint(card: ModelCard, path: str | os.PathLike) -> dict[str, Tensor]:
    """A user-supplied checkpoint (`embedzoo.load(id, weights=PATH)`) converted in memory, as `pull` would.

    `.safetensors` files are read with safetensors, anything else as a restricted pickle. A folder
    is a checkpoint laid out like the model's hub repo (`folder_checkpoint`).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        weights_file, fmt, repo_files = folder_checkpoint(card, path)
        return _convert(card, weights_file, fmt, repo_files=repo_files)
    if not path.is_file():
        raise WeightsError(f"no checkpoint file at {path}", hint="check the path given as weights=")
    fmt = "safetensors" if path.suffix == ".safetensors" else "torch"
    return _convert(card, path, fmt)


def folder_checkpoint(card: ModelCard, folder: Path) -> tuple[Path, str, dict[str, Path] | None]:
    """(weights file, its format, repo files) of a folder laid out like the model's hub repo -- what
    `save_pretrained` writes, a `hf download` of the repo, or a fine-tuned copy: the first of the
    card's hub sources whose file is in the folder, with those of the repo files that source names
    which are there (the plugin's check decides whether one may be absent)."""
    hub = [source for source in card.sources if source.kind == "hf"]
    for pattern_source in hub:
        source = resolve_in_folder(pattern_source, folder)
        if source is None:  # its weights pattern matches no file here
            continue
        candidate = folder.joinpath(*source.filename.split("/"))
        if candidate.is_file():
            repo_files = {name: folder.joinpath(*name.split("/")) for name in source.files}
            present = {name: file for name, file in repo_files.items() if file.is_file()}
            return candidate, source.format, present if source.files else None
    names = sorted({source.filename for source in hub})
    raise WeightsError(
        f"the folder {folder} holds no weights file of {card.id}" + (f" (looked for {', '.join(names)})" if names else ""),
        hint="pass a folder laid out like the model's hub repo, or the checkpoint file itself" if names
        else f"{card.id} has no hub source: pass its checkpoint file itself",
    )


# -------------------------------------------------------------------------------------------- pull


def pull(
    card: ModelCard,
    *,
    cache_dir: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    offline: bool | None = None,
    force: bool = False,
    progress: Progress | None = None,
    quiet: bool = False,
) -> Path:
    """Make sure the card's intact converted safetensors is in the cache and return its path.

    Returns at once, touching no original, when a finished conversion is there whose bytes match
    the sha256 in its meta.json (hashed once per process; unless `force`, which converts again --
    to the same bytes; the original is verified again either way). A damaged conversion is made
    again from the verified original; when no original can be had, the error names the command to
    run. Otherwise tries the card's sources in order and converts the first one that can be
    fetched; if none can, raises one error listing every source's (OfflineError when all were
    offline misses).

    Downloads and the conversion show progress on stderr unless `quiet`; `progress`, when given,
    receives the download's (bytes done, total) instead of the stderr display.
    """
    try:
        return _pull(card, cache_dir, mirror, offline, force, progress, quiet)
    except PermissionError as exc:
        raise permission_error(exc, cache_dir) from exc


def damage(card: ModelCard, path: Path) -> str | None:
    """Why the finished conversion at `path` cannot be used, or None when it is intact: meta.json
    for this card and key, the size it records, and the sha256 it records (memoised per process
    by path, size and mtime, so only the first use of a file in a process reads all of it)."""
    if not meta_matches(card, path):
        return "no finished conversion"
    expected = (read_meta(path) or {}).get("safetensors_sha256")
    actual = sha256_file(path)
    if actual != expected:
        return f"its sha256 is {actual} but meta.json records {expected}"
    return None


def _pull(
    card: ModelCard, cache_dir: Any, mirror: Any, offline: bool | None, force: bool, progress: Progress | None, quiet: bool
) -> Path:
    target = converted_path(card, cache_dir)
    if not force and damage(card, target) is None:
        return target
    if not card.sources:
        raise WeightsError(
            f"model {card.id} lists no weight sources",
            hint=f"pass a checkpoint yourself: embedzoo.load({card.id!r}, weights=PATH)",
        )
    with file_lock(target.parent.with_name(target.parent.name + ".lock")):
        problem = None if force else damage(card, target)
        if not force and problem is None:  # another process converted it meanwhile
            return target
        damaged = problem if problem and meta_matches(card, target) else None  # finished once, damaged since
        if damaged:  # a warning, not progress: shown even when quiet
            print(f"{card.id}: the cached weights {target} are damaged ({damaged}); converting them again", file=sys.stderr)
        try:
            source, original, extra_paths, repo_files = fetch_checkpoint(card, cache_dir, mirror, offline, progress, quiet)
            extras = [(path, extra.format) for path, extra in zip(extra_paths, source.extras)]
        except WeightsError as error:
            if damaged:
                _discard(target)  # never leave damaged weights that `list` calls cached
                raise type(error)(
                    f"the cached weights of {card.id} at {target} were damaged ({damaged}) and were removed; "
                    f"the original needed to convert them again is not available: {error.message}",
                    hint=f"run `embedzoo pull --force {card.id}` where the original can be had (online, or with "
                    f"--from DIR); or copy an intact cache folder here. {error.hint or ''}".strip(),
                )
            raise
        size = sum(path.stat().st_size for path in [original, *(p for p, _ in extras)])
        with _working(f"{card.id}: converting {original.name} ({human_size(size)})", quiet):
            state = _convert(card, original, source.format, extras, repo_files)
            _save(card, source, original, state, target, [path for path, _ in extras], repo_files or {}, resolved_revision(source, cache_dir))
    return target


def fetch_checkpoint(
    card: ModelCard, cache_dir: Any, mirror: Any, offline: bool | None, progress: Progress | None, quiet: bool
) -> tuple[Source, Path, list[Path], dict[str, Path] | None]:
    """The first of the card's sources that can be had, verified: (source, its file, its extras'
    files, its repo files -- None for a source without `files:`). Raises one error naming every
    source's failure when none can."""
    failures: list[tuple[Source, WeightsError]] = []
    for source in card.sources:
        try:
            source = resolve_patterns(source, cache_dir, mirror, offline)  # names given by pattern: the repo's files
            original = _fetch(card, source, cache_dir, mirror, offline, progress, quiet)
            extras = [_fetch(card, extra, cache_dir, mirror, offline, progress, quiet) for extra in source.extras]
            repo_files = _fetch_repo_files(card, source, cache_dir, mirror, offline, progress, quiet) if source.files else None
            return source, original, extras, repo_files
        except WeightsError as exc:
            failures.append((source, exc))
    raise _all_failed(card, failures)


def _working(label: str, quiet: bool) -> Any:
    return nullcontext() if quiet else Working(label)


def _fetch(
    card: ModelCard, source: Source, cache_dir: Any, mirror: Any, offline: bool | None, progress: Progress | None, quiet: bool
) -> Path:
    """One source's file, its download shown on stderr (or reported to `progress`)."""
    shown = None if progress is not None or quiet else ByteProgress(f"{card.id}: {source.basename}")
    try:
        return fetch_source(source, cache_dir=cache_dir, mirror=mirror, offline=offline, progress=progress or shown, model_id=card.id)
    finally:
        if shown is not None:
            shown.close()


def _fetch_repo_files(
    card: ModelCard, source: Source, cache_dir: Any, mirror: Any, offline: bool | None, progress: Progress | None, quiet: bool
) -> dict[str, Path]:
    """A hub source's repo files, at the commit its weights file came from (a branch source's
    first pull has just recorded it)."""
    revision = resolved_revision(source, cache_dir)
    found: dict[str, Path] = {}
    for name in source.files:
        try:
            found[name] = _fetch(card, Source(kind="hf", repo=source.repo, revision=revision, filename=name), cache_dir, mirror, offline, progress, quiet)
        except (EntryMissing, OfflineError):
            # the repo (or the mirror, offline) has no such file: the plugin's check sees it absent
            # (older repos lack preprocessor_config.json); the weights file itself was found
            continue
    return found


def _discard(target: Path) -> None:
    (target.parent / META_FILE).unlink(missing_ok=True)
    target.unlink(missing_ok=True)


def _all_failed(card: ModelCard, failures: list[tuple[Source, WeightsError]]) -> WeightsError:
    if len(failures) == 1:
        return failures[0][1]
    lines = [f"could not get the weights of model {card.id} from any of its {len(failures)} sources:"]
    for source, exc in failures:
        lines.append(f"  - {source.describe()}: " + str(exc).replace("\n", "\n    "))
    kinds = {type(exc) for _, exc in failures}
    cls = OfflineError if kinds == {OfflineError} else ChecksumError if kinds == {ChecksumError} else WeightsError
    return cls("\n".join(lines), hint=failures[0][1].hint)


def _save(
    card: ModelCard, source: Source, original: Path, state: dict[str, Tensor], target: Path, extras: list[Path] | None = None,
    repo_files: Mapping[str, Path] | None = None, revision: str = "",
) -> None:
    """Write model.safetensors, then meta.json, each atomically; no meta means no finished conversion."""
    from safetensors.torch import save_file

    original_sha = sha256_file(original)
    target.parent.mkdir(parents=True, exist_ok=True)
    (target.parent / META_FILE).unlink(missing_ok=True)
    tmp = target.with_name(f".{MODEL_FILE}.{os.getpid()}.tmp")
    try:
        # one metadata entry only: safetensors writes its metadata map in hash order, so more than
        # one would change the bytes (and the weights identity) from one run to the next;
        # provenance lives in meta.json
        save_file(state, str(tmp), metadata={"format": "pt"})
        follow_umask(tmp)  # safetensors creates 0600 files: a shared cache needs the umask's mode
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        plugin_version = importlib.metadata.version(card.plugin)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        plugin_version = ""
    meta = {
        "model_id": card.id,
        "key": cache_key(card),
        "source": source.describe(),
        "source_kind": source.kind,
        **({"revision": revision} if source.kind == "hf" else {}),
        "original_path": str(original),
        "original_sha256": original_sha,
        "original_size": original.stat().st_size,
        "extras": [{"path": str(path), "sha256": sha256_file(path)} for path in extras or []],
        "repo_files": {name: {"path": str(path), "sha256": sha256_file(path)} for name, path in (repo_files or {}).items()},
        "safetensors_sha256": sha256_file(target),
        "size": target.stat().st_size,
        "tensors": len(state),
        "embedzoo_version": embedzoo_version(),
        "plugin": card.plugin,
        "plugin_version": plugin_version,
        "date": now_iso(),
    }
    atomic_write_text(target.parent / META_FILE, json.dumps(meta, indent=2) + "\n")


# ------------------------------------------------------------------------------------------- load


def load_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a converted `.safetensors` file; extraction never unpickles anything."""
    path = Path(path).expanduser()
    if path.suffix != ".safetensors":
        raise WeightsError(
            f"{path} is not a .safetensors file; extraction only reads converted weights",
            hint="convert it first: `embedzoo pull <model id>` for catalog weights, or embedzoo.load(id, weights=PATH), "
            "which converts an original checkpoint (embedzoo.weights.convert_checkpoint)",
        )
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}", hint="run `embedzoo pull <model id>`")
    if not os.access(path, os.R_OK):
        raise permission_error(PermissionError(13, "Permission denied", str(path)))
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:
        raise WeightsError(
            f"cannot read the weights file {path}: {exc}",
            hint="it is damaged: `embedzoo cache verify` shows which, then pull the model again with --force",
        ) from exc
