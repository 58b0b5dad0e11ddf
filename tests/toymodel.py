"""A tiny, fully known extractor used to test the core engine against independent computations.

Native frames: every 4 samples, each seeing 8 samples, mapped by a fixed random linear layer.
Layer "frames" has a "sum" token (a global feature of the whole input, so window and frame mode
genuinely differ); layer "energy" has no tokens.
"""

from __future__ import annotations

import torch

from embedzoo.card import LayerSpec, ModelCard
from embedzoo.extractor import Extractor

TOY_CARD = ModelCard(
    id="toy",
    family="toy",
    plugin="tests",
    sample_rate=16000,
    layers=(LayerSpec("frames", 6, tokens=("sum",)), LayerSpec("energy", 1)),
    frame_hop=4,
    frame_field=8,
    min_window=8,
    max_window=400,
    defaults={"layers": ["frames"], "readout": "mean", "hop_ms": 0.5, "window_ms": 2.0, "scene_hop_ms": 10, "batch_seconds": 0.02},
)


class ToyExtractor(Extractor):
    def __init__(self, card: ModelCard = TOY_CARD):
        super().__init__(card)
        generator = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Linear(8, 6)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(6, 8, generator=generator))
            self.proj.bias.copy_(torch.randn(6, generator=generator))

    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        return audio.unfold(-1, 8, 4)  # (batch, frames, 8)

    def forward_layers(self, audio, layers=None):
        layers = list(layers or [spec.name for spec in self.card.layers])
        frames = self.frames(audio)
        out = []
        for name in layers:
            if name == "frames":
                feats = torch.tanh(self.proj(frames))
                token = audio.sum(dim=-1, keepdim=True).expand(-1, 6)[:, None, :]
                out.append(torch.cat([token, feats], dim=1))
            else:
                out.append((frames**2).mean(dim=-1, keepdim=True))
        return out


def reference_timestamps(model: ToyExtractor, audio: torch.Tensor, window: int, hop: int, mode: str):
    """The HEAR baseline recipe written out plainly: pad window//2, unfold, one forward per window."""
    pad = window // 2
    padded = torch.nn.functional.pad(audio[:, None, :], (pad, pad), mode=mode)[:, 0]
    segments = padded.unfold(-1, window, hop)  # (batch, n, window)
    outs = []
    for index in range(segments.shape[1]):
        segment = segments[:, index]
        short = model.card.min_window - segment.shape[-1]
        if short > 0:
            segment = torch.nn.functional.pad(segment, (short // 2, short - short // 2))
        outs.append(model.embed_segments(segment))
    times = torch.arange(segments.shape[1]) * hop * 1000.0 / model.card.sample_rate
    return torch.stack(outs, dim=1), times


# A toy CNN: layers with frequency bands, a coarser frame rate, and a pooled vector -- the per-layer
# geometry CNN plugins declare. "map": 2 channels x 3 bands per native frame (hop 4, field 8);
# "coarse": pairs of native frames (hop 8, field 12); "late": the same pairs on a grid offset by 2
# samples (frame j of a clip centred on 2 + 8j); "pooled": one vector per forward.
TOY_CNN_CARD = ModelCard(
    id="toycnn",
    family="toy",
    plugin="tests",
    sample_rate=16000,
    layers=(
        LayerSpec("map", 6, bands=3),
        LayerSpec("coarse", 6, bands=3, frame_hop=8, frame_field=12),
        LayerSpec("late", 6, bands=3, frame_hop=8, frame_field=12, frame_offset=2),
        LayerSpec("pooled", 2, pooled=True),
        LayerSpec("raw", 1, min_window=2),
    ),
    frame_hop=4,
    frame_field=8,
    min_window=16,
    max_window=400,
    defaults={"layers": ["map"], "readout": "mean", "hop_ms": 0.5, "window_ms": 2.0, "batch_seconds": 0.02},
)


class ToyCNN(ToyExtractor):
    def __init__(self) -> None:
        super().__init__(TOY_CNN_CARD)

    @torch.no_grad()
    def maps(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 2 channels, 3 bands), channel-major like a flattened conv map."""
        return torch.tanh(self.proj(self.frames(audio))).unflatten(-1, (2, 3))

    def forward_layers(self, audio, layers=None):
        """Natural shapes, as a CNN plugin returns them: (B, C, F, T) maps, a (B, D) pooled vector."""
        layers = list(layers or [spec.name for spec in self.card.layers])
        if layers == ["raw"]:
            return [audio[:, :, None]]
        maps = self.maps(audio)
        pairs = maps[:, : maps.shape[1] // 2 * 2].unflatten(1, (-1, 2)).mean(dim=2)
        out = {
            "map": maps.permute(0, 2, 3, 1),
            "coarse": pairs.permute(0, 2, 3, 1),
            "late": pairs.permute(0, 2, 3, 1),
            "pooled": maps.amax(dim=(1, 3)),
            "raw": audio[:, :, None],
        }
        return [out[name] for name in layers]


# A 768-wide toy transformer: rows of a batch differ in their last bits with the batch's size, as
# in every real transformer, so byte equality between two runs means they batched alike.
WIDE_CARD = ModelCard(
    id="widetoy",
    family="toy",
    plugin="tests",
    sample_rate=16000,
    layers=(LayerSpec("block", 768),),
    frame_hop=160,
    frame_field=400,
    min_window=400,
    max_window=16000,
    defaults={"layers": ["block"], "readout": "mean", "hop_ms": 250, "window_ms": 500, "batch_seconds": 2.0},
)


class WideToy(Extractor):
    def __init__(self) -> None:
        super().__init__(WIDE_CARD)
        generator = torch.Generator().manual_seed(1)
        self.embed_frames = torch.nn.Linear(400, 768)
        self.block = torch.nn.TransformerEncoderLayer(768, 12, dim_feedforward=1536, batch_first=True)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)

    def forward_layers(self, audio, layers=None):
        frames = audio.unfold(-1, 400, 160)
        return [self.block(self.embed_frames(frames))]


class FaultyToy(ToyExtractor):
    """The toy, with a fault that fires while a marker file exists: "exit" deletes the marker and
    kills its process (an actor dying mid-shard; the retry finds no marker), "raise" raises (a bug)."""

    def __init__(self, marker: str, fault: str) -> None:
        super().__init__()
        self.marker, self.fault = marker, fault

    def forward_layers(self, audio, layers=None):
        import os

        if os.path.exists(self.marker):
            if self.fault == "exit":
                os.unlink(self.marker)
                os._exit(1)
            raise RuntimeError(f"the fault of {self.marker}")
        return super().forward_layers(audio, layers)
