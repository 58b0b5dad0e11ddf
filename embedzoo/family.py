"""A model family: what a plugin registers, stated once, torch-free.

A family is a name, the module that builds its models (imported lazily, on first use) and a pure
function from a card's `config` to the architecture's facts (`Geometry`: layer specs, native frame
grid, window limits) -- timm's `feature_info` stated beside its config. The catalog's cards carry
only what a checkpoint adds (sources, config, knobs, licence); `Family.complete` fills in the rest
when the plugin is installed, so nothing about an architecture is written twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from embedzoo.card import LayerSpec, ModelCard
from embedzoo.errors import CardError

__all__ = ["Family", "Geometry"]


@dataclass(frozen=True)
class Geometry:
    """An architecture's facts for one config, in samples at `sample_rate`.

    `layers`: what `forward_layers` returns, in order (the last one is the default layer);
    `frame_hop`/`frame_field`: the native frame grid of layers that do not state their own;
    `min_window`/`max_window`: the shortest and longest input one forward takes;
    `sample_rate`: the rate this config runs at, when the config decides it (else the card's);
    `hidden_states`: the layers `layers="all"` reads, in order -- a transformer's embedding output
    and every block, as `transformers`' `output_hidden_states` returns them (empty: every layer);
    `paddings`: how the model can treat an input shorter than its full one, when it has a choice
    (the `padding` knob; the first is the default) -- `forward_layers` then takes `padding=`;
    `padded`: the paddings under which every forward runs on `max_window` samples whatever the
    window (the model pads to its full input: AST's reference, Whisper): batches count that cost;
    `frame_chunk`: frame mode's chunk length in samples when the frames depend on the whole chunk
    (attention), so the chunking is the model's, never the batch budget's (0: as the budget allows,
    for networks whose valid frames do not depend on the chunk).
    """

    layers: tuple[LayerSpec, ...]
    frame_hop: int
    frame_field: int
    max_window: int
    min_window: int = 1
    sample_rate: int | None = None
    hidden_states: tuple[str, ...] = ()
    paddings: tuple[str, ...] = ()
    padded: tuple[str, ...] = ()
    frame_chunk: int = 0

    def __post_init__(self) -> None:
        names = {layer.name for layer in self.layers}
        stray = [name for name in self.hidden_states if name not in names]
        if stray:
            raise CardError(f"hidden_states names {stray}, which are not among the layers {sorted(names)}")
        if len(set(self.paddings)) != len(self.paddings) or not all(isinstance(p, str) and p for p in self.paddings):
            raise CardError(f"paddings must be distinct names, got {self.paddings}")
        if set(self.padded) - set(self.paddings):
            raise CardError(f"padded names {sorted(set(self.padded) - set(self.paddings))}, which are not among the paddings {self.paddings}")
        if not 0 <= self.frame_chunk <= self.max_window:
            raise CardError(f"frame_chunk {self.frame_chunk} must lie in [0, max_window {self.max_window}]")


@dataclass(frozen=True)
class Family:
    """One architecture family: `register(Family(name, "pkg.model", geometry))` in a plugin's hook.

    `model` names the module with `create_model(card)` and `checkpoint_filter_fn(state, model)`;
    `geometry(config)` must be torch-free and cheap (the catalog calls it for every card).
    """

    name: str
    model: str
    geometry: Callable[[Mapping[str, Any]], Geometry]
    plugin: str = ""  # filled in by the plugin loader: the entry point that registered it

    def __post_init__(self) -> None:
        if not self.name or not self.model:
            raise CardError("a Family needs a name and the module path of its model")
        if not callable(self.geometry):
            raise CardError(f"family {self.name}: geometry must be a function config -> Geometry")

    def complete(self, card: ModelCard) -> ModelCard:
        """The card with the architecture fields from `geometry(card.config)`, checked against the
        card's own knobs (default layers, presets' layers, sample rate)."""
        if card.family != self.name:
            raise CardError(f"model {card.id} is of family {card.family!r}, not {self.name!r}")
        try:
            geometry = self.geometry(dict(card.config))
        except CardError as exc:
            raise CardError(f"model {card.id}: {exc.message}", hint=exc.hint) from exc
        except Exception as exc:  # a geometry bug is the plugin's, reported with the card
            raise CardError(f"model {card.id}: family {self.name}'s geometry failed on config {dict(card.config)}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(geometry, Geometry):
            raise CardError(f"family {self.name}: geometry() returned {type(geometry).__name__}, not Geometry")
        if geometry.sample_rate is not None and geometry.sample_rate != card.sample_rate:
            raise CardError(
                f"model {card.id}: config {dict(card.config)} runs at {geometry.sample_rate} Hz, the card says {card.sample_rate}",
                hint=f"set sample_rate: {geometry.sample_rate} in its registry entry",
            )
        fields = {f.name for f in dataclasses.fields(Geometry)} - {"sample_rate"}
        completed = dataclasses.replace(card, **{name: getattr(geometry, name) for name in fields})
        _check_knob_layers(completed)
        return completed


def _check_knob_layers(card: ModelCard) -> None:
    """Every layer named by the card's defaults, presets and levels must exist (or be `all`)."""
    named = [("defaults", card.defaults)] + [(f"preset {name}", preset) for name, preset in card.presets.items()]
    for where, knobs in named:
        layers = knobs.get("layers", ())
        for layer in [layers] if isinstance(layers, str) else layers:
            for name in str(layer).replace(" ", "").split(","):
                if name == "all" and name not in {spec.name for spec in card.layers}:
                    continue  # the card's hidden states (`ModelCard.all_layers`)
                if name and name not in {spec.name for spec in card.layers}:
                    raise CardError(
                        f"model {card.id}: {where} names layer {name!r}, which this architecture does not have",
                        hint=f"layers: {', '.join(spec.name for spec in card.layers)}",
                    )
