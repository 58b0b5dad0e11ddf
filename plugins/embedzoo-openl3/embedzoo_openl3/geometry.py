"""OpenL3's architecture facts, torch-free: the one place they are stated (the catalog completes
every OpenL3 card from `geometry(config)`, and model.py builds the network from the same `OpenL3Cfg`).

One forward is one 1 s window at 48 kHz (48000 samples: min_window = max_window). The frontend is
an STFT every 242 samples (`linear`: n_fft 512, no padding; `mel128`/`mel256`: n_fft 2048 on the
window zero-padded by Keras 'same' for 1 s), then four conv blocks of two 3x3 convs (64, 128, 256,
512 channels), blocks 1-3 closed by a 2x2 max-pool; the embedding max-pools block 4's map.

No layer has a frame mode: the frontend subtracts the maximum of the whole window from every
frame, so a frame is not a function of its own receptive field alone -- a long chunk would be
normalised by the chunk's loudest moment, not OpenL3's 1 s window's (`frame_mode=False`). The
blocks' frame hop and field are stated all the same: they place a block's frames in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from embedzoo.plugin import CardError, Geometry, LayerSpec

SAMPLE_RATE = 48000
WINDOW = 48000  # one second: the only input size the embedding is defined for
HOP = 242
CHANNELS = (64, 128, 256, 512)
LAYERS = ("spectrogram", "block1", "block2", "block3", "block4", "embedding")
INPUT_REPRS = ("mel128", "mel256", "linear")
CONTENT_TYPES = ("music", "env")  # the training videos: changes the weights only
EMBEDDING_SIZES = (512, 6144)


@dataclass(frozen=True)
class OpenL3Cfg:
    """One OpenL3 variant: its input representation and embedding size (content type changes weights only)."""

    input_repr: str
    embedding_size: int

    @property
    def n_fft(self) -> int:
        return 512 if self.input_repr == "linear" else 2048

    @property
    def bins(self) -> int:
        """Frequency bins of the spectrogram the network sees."""
        return {"linear": 257, "mel128": 128, "mel256": 256}[self.input_repr]

    @property
    def pad(self) -> tuple[int, int]:
        """kapre's Keras 'same' padding, computed for a 1 s input whatever the input's length."""
        if self.input_repr == "linear":
            return (0, 0)
        rest = WINDOW % HOP
        total = max(self.n_fft - (HOP if rest == 0 else rest), 0)
        return (total // 2, total - total // 2)

    def frames(self, samples: int) -> int:
        """STFT frames of an input of `samples` samples."""
        return (samples + sum(self.pad) - self.n_fft) // HOP + 1

    def block_bands(self) -> tuple[int, ...]:
        """Frequency bands after each block (floor-halved by the three 2x2 pools)."""
        bands, out = self.bins, []
        for index in range(4):
            bands = bands // 2 if index < 3 else bands
            out.append(bands)
        return tuple(out)

    def block_frames(self) -> tuple[tuple[int, int], ...]:
        """(frame_hop, frame_field) in samples of block1..block4: 3x3 convs widen the field by two
        frames of their input, 2x2 pools double the hop."""
        out = []
        field, jump = 1, 1  # in STFT frames
        for index in range(4):
            field += 4 * jump
            if index < 3:
                field, jump = field + jump, jump * 2
            out.append((jump * HOP, (field - 1) * HOP + self.n_fft))
        return tuple(out)

    def embedding_pool(self) -> tuple[int, int]:
        """Max-pool (bands, time steps) over block 4's map of a 1 s window: the whole map for 512-d;
        (F/4, 8) for 6144-d, leaving 4 bands x 3 time steps x 512 channels."""
        bands, steps = self.block_bands()[-1], self.frames(WINDOW) // 8
        return (bands, steps) if self.embedding_size == 512 else (bands // 4, 8)

    @property
    def shortest(self) -> int:
        """The shortest input the blocks take: seven hops past one STFT frame (block 4 needs a map
        of eight frames after three pools)."""
        return self.n_fft + 7 * HOP - sum(self.pad)


def settings(config: Mapping[str, Any]) -> OpenL3Cfg:
    """The variant a card's config names; anything else is a CardError listing the choices."""
    cfg = OpenL3Cfg(str(config.get("input_repr")), int(config.get("embedding_size", 0)))
    unknown = sorted(set(config) - {"input_repr", "content_type", "embedding_size"})
    if unknown or cfg.input_repr not in INPUT_REPRS or cfg.embedding_size not in EMBEDDING_SIZES or config.get("content_type") not in CONTENT_TYPES:
        raise CardError(
            f"OpenL3 config {dict(config)} is unknown",
            hint=f"set config.input_repr ({', '.join(INPUT_REPRS)}), config.content_type ({', '.join(CONTENT_TYPES)}) "
            f"and config.embedding_size ({', '.join(map(str, EMBEDDING_SIZES))}), nothing else",
        )
    return cfg


def geometry(config: Mapping[str, Any]) -> Geometry:
    """The spectrogram (one frame per STFT frame), block1..block4 (channels x bands maps) and the
    pooled embedding of the variant `config` names; window mode only."""
    cfg = settings(config)
    blocks = tuple(
        LayerSpec(f"block{k}", channels * bands, bands=bands, frame_hop=hop, frame_field=field, frame_mode=False)
        for k, (channels, bands, (hop, field)) in enumerate(zip(CHANNELS, cfg.block_bands(), cfg.block_frames()), 1)
    )
    layers = (
        LayerSpec("spectrogram", cfg.bins, frame_mode=False),
        *blocks,
        LayerSpec("embedding", cfg.embedding_size, pooled=True),
    )
    return Geometry(layers, frame_hop=HOP, frame_field=cfg.n_fft, max_window=WINDOW, min_window=WINDOW, sample_rate=SAMPLE_RATE)
