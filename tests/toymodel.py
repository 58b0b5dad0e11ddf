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
