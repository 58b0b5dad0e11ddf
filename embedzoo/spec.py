"""The model-spec grammar, parsed in one place: `ID[:PRESET][?KNOB=VALUE&...][&weights=PATH|random]`.

    crepe-tiny
    passt-s-ap476:2levelmel                   a preset of the card (also `?preset=2levelmel`)
    crepe-tiny?hop_ms=25&layers=conv4,conv5   knobs (dashes work too: `hop-ms`)
    crepe-tiny?weights=random                 the architecture's initial weights (no download)
    passt-s-ap476?weights=/models/passt.pt    a weights file (safetensors, or an original checkpoint)

Every entry point takes the same strings: `embedzoo.load`, the HEAR API's `load_model`, and
`embedzoo embed | eval | sweep | validate`. Values stay strings here: `embedzoo.knobs` reads and
checks them against the model's card. Torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from embedzoo.errors import ConfigError

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: which model, which preset, which knobs on top, which weights."""

    name: str
    preset: str | None = None
    knobs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    weights: str | None = None

    @classmethod
    def parse(cls, text: str | ModelSpec) -> ModelSpec:
        """Read a spec string (a ModelSpec passes through); ConfigError says what is malformed."""
        if isinstance(text, ModelSpec):
            return text
        name, _, query = str(text).strip().partition("?")
        name, colon, preset = name.partition(":")
        if not name:
            raise ConfigError(f"model spec {text!r} names no model", hint="e.g. crepe-tiny, crepe-tiny:frames, crepe-tiny?hop_ms=25")
        if colon and not preset:
            raise ConfigError(f"model spec {text!r}: no preset after ':'", hint="write ID:PRESET, or leave the ':' out")
        values: dict[str, str] = {}
        for item in filter(None, query.split("&")):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise ConfigError(f"model spec {text!r}: expected knob=value, got {item!r}")
            if key in values:
                raise ConfigError(f"model spec {text!r} sets {key} twice")
            values[key] = value.strip()
        query_preset, weights = values.pop("preset", None), values.pop("weights", None)
        if weights == "":
            raise ConfigError(f"model spec {text!r}: weights= needs a file or 'random'")
        return cls(name, preset or None, values)._merged(preset=query_preset, weights=weights)

    def with_weights(self, weights: str | os.PathLike | None) -> ModelSpec:
        """These weights (None keeps the spec's); given both ways, they must agree."""
        return self._merged(weights=None if weights is None else os.fspath(weights))

    def with_knobs(self, **knobs: Any) -> ModelSpec:
        """More knobs on top of the spec's (None values are left out); `preset=` sets the preset."""
        knobs = {k: v for k, v in knobs.items() if v is not None}
        preset = knobs.pop("preset", None)
        spec = replace(self, knobs={**self.knobs, **knobs})
        return spec if preset is None else replace(spec, preset=preset)

    def overrides(self) -> dict[str, Any]:
        """The knob overrides this spec makes, preset included, as `embedzoo.knobs.resolve_knobs` takes them."""
        return {**({"preset": self.preset} if self.preset else {}), **self.knobs}

    def __str__(self) -> str:
        """The spec as a string that parses back to it (what a subprocess such as hear-validator gets)."""
        query = [f"{key}={_text(value)}" for key, value in self.knobs.items()]
        if self.weights is not None:
            query.append(f"weights={self.weights}")
        return self.name + (f":{self.preset}" if self.preset else "") + ("?" + "&".join(query) if query else "")

    def _merged(self, *, preset: str | None = None, weights: str | None = None) -> ModelSpec:
        """Set the preset or the weights, refusing a second, different value for either."""
        for what, mine, theirs in (("preset", self.preset, preset), ("weights", self.weights, weights)):
            if mine is not None and theirs is not None and mine != theirs:
                raise ConfigError(f"model {self.name}: {what} given twice ({mine!r} and {theirs!r})", hint=f"give {what} once")
        return replace(self, preset=self.preset or preset, weights=self.weights if self.weights is not None else weights)


def _text(value: Any) -> str:
    """A knob value as spec text: lists comma-joined, numbers as Python prints them."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
