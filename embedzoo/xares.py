"""Any catalog model as an X-ARES audio encoder (the `xares` package, 0.1.3).

X-ARES benchmarks an encoder given as a Python file holding one class whose name ends in
`Encoder`: a `torch.nn.Module` with `sampling_rate` (the rate it wants its audio at; X-ARES
resamples to it), `output_dim`, `hop_size_in_ms`, and `forward` taking a (batch, samples) tensor
to (batch, frames, output_dim). X-ARES builds it without arguments, names its output folders by
the class name, and checks it with `xares.audio_encoder_checker.check_audio_encoder`. Here:

    # crepe_encoder.py -- then: python -m xares.run crepe_encoder.py src/tasks/*.py
    from embedzoo.xares import encoder_class
    CrepeTinyEncoder = encoder_class("crepe-tiny?hop_ms=20")

`encoder_class(spec)` makes such a class for a model spec (an id, a preset, knobs, `weights=`),
named after the spec so that two models' (or settings') X-ARES outputs never share a folder;
`EmbedzooEncoder(spec, ...)` is the same for direct use. The frames are the model's timestamp
embeddings: one every `hop_ms` (`hop_size_in_ms`), centred at k * hop_ms, each seeing the
model's timestamp window (`window_ms`), long audio processed in bounded chunks by the engine.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from embedzoo.errors import ConfigError
from embedzoo.spec import ModelSpec

__all__ = ["EmbedzooEncoder", "encoder_class", "class_name"]


class EmbedzooEncoder(nn.Module):
    """An embedzoo model with X-ARES's encoder interface (see the module doc)."""

    model: str = "crepe-tiny"  # the spec a class made by `encoder_class` builds without arguments

    def __init__(
        self,
        model: str | None = None,
        *,
        weights: str | Path | None = None,
        device: str = "cpu",
        seed: int = 0,
        offline: bool | None = None,
        mirror: str | Path | None = None,
        cache_dir: str | Path | None = None,
        **knobs: Any,
    ) -> None:
        super().__init__()
        from embedzoo.loader import load

        # X-ARES moves the encoder where it runs (`.to(device)`); it loads on the CPU by default
        self.extractor = load(model or self.model, weights=weights, device=device, seed=seed, offline=offline, mirror=mirror, cache_dir=cache_dir, **knobs)
        self.sampling_rate: int = int(self.extractor.sample_rate)
        self.output_dim: int = int(self.extractor.timestamp_embedding_size)
        self.hop_size_in_ms: float = float(self.extractor.knobs.hop_ms)
        self.eval()

    def train(self, mode: bool = True) -> "EmbedzooEncoder":
        """The model stays frozen (batch norm statistics, dropout) whatever mode a caller sets."""
        super().train(mode)
        self.extractor.eval()
        return self

    def forward(self, audio: Tensor) -> Tensor:
        """(batch, samples) or (samples,) at `sampling_rate` -> (batch, frames, output_dim), float32."""
        if not isinstance(audio, Tensor):
            audio = torch.as_tensor(audio)
        if audio.ndim == 1:
            audio = audio.unsqueeze(0)
        if audio.ndim != 2:
            raise ConfigError(f"an X-ARES encoder takes (batch, samples) audio, not shape {tuple(audio.shape)}")
        embeddings, _ = self.extractor.timestamp_embeddings(audio.float(), self.sampling_rate)
        return embeddings.float()

    def extra_repr(self) -> str:
        return f"model={self.extractor.card.id}, sampling_rate={self.sampling_rate}, output_dim={self.output_dim}, hop_size_in_ms={self.hop_size_in_ms:g}"


def class_name(spec: str) -> str:
    """`crepe-tiny` -> `CrepeTinyEncoder`; a spec with a preset, knobs or weights gets a hash of
    itself before `Encoder` (`CrepeTiny3f2a9c1bEncoder`): X-ARES names its folders by the class."""
    parsed = ModelSpec.parse(spec)
    words = "".join(part[:1].upper() + part[1:] for part in "".join(c if c.isalnum() else " " for c in parsed.name).split())
    plain = str(parsed) == parsed.name
    return f"{words}{'' if plain else hashlib.sha256(str(parsed).encode()).hexdigest()[:8]}Encoder"


def encoder_class(spec: str, name: str | None = None, **defaults: Any) -> type[EmbedzooEncoder]:
    """A subclass of `EmbedzooEncoder` that builds `spec` without arguments (what X-ARES calls),
    named `name` or `class_name(spec)`; `defaults` are keyword arguments of every instance
    (`device=`, `cache_dir=`, knobs). Bind it to a variable of the same name, so it pickles."""
    ModelSpec.parse(spec)  # a malformed spec fails here, not when X-ARES first builds it
    name = name or class_name(spec)
    if not name.endswith("Encoder") or not name.isidentifier():
        raise ConfigError(f"X-ARES needs a class name that is an identifier ending in 'Encoder', not {name!r}")

    def __init__(self: EmbedzooEncoder, **kwargs: Any) -> None:
        EmbedzooEncoder.__init__(self, spec, **{**defaults, **kwargs})

    caller = sys._getframe(1).f_globals.get("__name__", __name__)
    return type(name, (EmbedzooEncoder,), {"model": spec, "__init__": __init__, "__module__": caller, "__qualname__": name, "__doc__": f"X-ARES encoder of the embedzoo model {spec}."})
