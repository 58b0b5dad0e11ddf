"""PANNs CNN14 (Kong, Cao, Iqbal, Wang, Wang, Plumbley 2020) as an embedzoo extractor.

Frontend: STFT (Hann, periodic; centred, reflect padding) -> power -> slaney mel filterbank ->
power_to_db (ref 1, amin 1e-10, no top_db), then BatchNorm over the mel bins (`bn0`). Six conv
blocks (two 3x3 conv + BatchNorm + ReLU, then 2x2 average pooling; the last block does not pool)
take 64 -> 2048 channels; the feature map is averaged over frequency. Then one of two heads:
- `clip` (Cnn14): max + mean over time, fc1 + ReLU gives the 2048-d embedding, and a sigmoid linear
  head the 527 AudioSet probabilities;
- `decision-level-max` (Cnn14_DecisionLevelMax): a 3-frame max + mean filter over time, fc1 + ReLU
  and the sigmoid head on every frame (segment probabilities), max over time for the clip.

Layers (what `forward_layers` returns, each (batch, frames, width)):
- `logmel`: (batch, 1 + samples // hop, mel_bins) -- the dB log-mel *before* bn0, as the
  reference's `logmel_extractor` returns it;
- `block1` .. `block6`: a conv block's output, time steps as frames, channels x frequency
  flattened channel-major (C, F) -> C*F. Block k's frames advance by hop * 2**min(k, 5) samples;
- clip head: `embedding` (2048, fc1 after ReLU) and `logits` (527, the *sigmoid* clipwise output,
  as the reference's `clipwise_output`): one whole-window vector, returned as one frame;
- decision-level head: `segment_embedding` (2048, fc1 after ReLU) and `segment_logits` (527, the
  reference's sigmoid `segmentwise_output`) per block-6 frame, and `logits` (527, their max over
  the window: `clipwise_output`).

Frame mode: every stage's output frame i is computed from STFT frames first + jump i .. last + jump i
(`Span`); a 2x2 pooling makes frame i the mean of frames 2i and 2i + 1, so it is centred half a
hop of the finer stage late -- block k's frame i sits on sample (i + (2**k - 1) / 2) hop. The
cards declare that grid (`frame_offset`), and frame mode returns, from each chunk, the frames whose
whole field lies inside it: a long clip's frames are then the network's frames over the whole clip,
on the reference's own time grid (block 6 pooled over frequency, read every 10 ms: panns_hear's
`sed_embedding`, the `sed` preset), without the zero padding the reference sees at the clip's ends.

Numerically this follows `panns_hear.models.Cnn14` / `Cnn14_DecisionLevelMax` (the original
audioset_tagging_cnn code) and its torchlibrosa frontend, whose STFT is a Conv1d with DFT x window
kernels: the core's `embedzoo.frontends.DBMelSpectrogram` computes the same kernels in float64 and
runs the same convolution.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedzoo.card import ModelCard
from embedzoo.hub import unwrap_state_dict
from embedzoo.remap import remap_state_dict
from embedzoo.errors import CardError, ConfigError, WeightsError
from embedzoo.extractor import Extractor
from embedzoo.frontends import DBMelSpectrogram

__all__ = ["Cnn14", "PannsCfg", "Span", "create_model", "checkpoint_filter_fn"]

CHANNELS = (64, 128, 256, 512, 1024, 2048)
CLASSES = 527
EMBED_DIM = 2048
HEADS = ("clip", "decision-level-max")
# NHWC conv blocks: same results, 6-17% less time on CPU (bench/panns.py, bench/RESULTS.md);
# a card's `config.channels_last` overrides it
CHANNELS_LAST = True


@dataclass(frozen=True)
class PannsCfg:
    """One CNN14 variant: its rate and frontend, its head; and how the conv blocks run."""

    sample_rate: int
    n_fft: int
    hop: int
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    head: str = "clip"
    channels_last: bool = CHANNELS_LAST


@dataclass(frozen=True)
class Span:
    """Output frame i of a stage is computed from STFT frames first + jump*i ... last + jump*i."""

    first: int
    last: int
    jump: int

    def conv(self, kernel: int) -> "Span":
        """A 'same'-padded convolution (or filter) over time of odd `kernel` frames."""
        reach = (kernel // 2) * self.jump
        return Span(self.first - reach, self.last + reach, self.jump)

    def pool(self, size: int) -> "Span":
        """Non-overlapping pooling of `size` frames."""
        return Span(self.first, self.last + (size - 1) * self.jump, self.jump * size)


# ---- the network ---------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """(3x3 conv, BatchNorm, ReLU) x 2, then average pooling (2x2, or none for the last block)."""

    def __init__(self, in_chs: int, out_chs: int, pool: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, self.pool) if self.pool > 1 else x


class Cnn14(Extractor):
    """CNN14 behind embedzoo's extractor interface."""

    def __init__(self, card: ModelCard, cfg: PannsCfg):
        super().__init__(card)
        self.cfg = cfg
        self.frontend = DBMelSpectrogram(cfg.sample_rate, cfg.n_fft, cfg.hop, cfg.mel_bins, cfg.fmin, cfg.fmax)
        self.bn0 = nn.BatchNorm2d(cfg.mel_bins)
        chs = (1,) + CHANNELS
        self.blocks = nn.ModuleList(ConvBlock(chs[i], chs[i + 1], 2 if i < 5 else 1) for i in range(6))
        if cfg.channels_last:
            self.blocks.to(memory_format=torch.channels_last)
        self.fc1 = nn.Linear(CHANNELS[-1], EMBED_DIM)
        self.head = nn.Linear(EMBED_DIM, CLASSES)
        blocks = tuple(f"block{i + 1}" for i in range(6))
        freqs = [cfg.mel_bins // 2 ** min(i + 1, 5) for i in range(6)]
        widths = {"logmel": cfg.mel_bins, **{b: CHANNELS[i] * freqs[i] for i, b in enumerate(blocks)}}
        self.bands = {"logmel": 1, **dict(zip(blocks, freqs))}
        # the STFT frames each stage's output frame is computed from
        span, self.spans = Span(0, 0, 1), {"logmel": Span(0, 0, 1)}
        for name, block in zip(blocks, self.blocks):
            span = span.conv(3).conv(3).pool(block.pool)
            self.spans[name] = span
        if cfg.head == "clip":
            head = {"embedding": EMBED_DIM, "logits": CLASSES}
        else:
            head = {"segment_embedding": EMBED_DIM, "segment_logits": CLASSES, "logits": CLASSES}
            self.spans["segment_embedding"] = self.spans["segment_logits"] = span.conv(3)
        self.layer_names: tuple[str, ...] = ("logmel", *blocks, *head)
        self.layer_widths: dict[str, int] = {**widths, **head}
        self._check_card()

    # ---- geometry --------------------------------------------------------------------------

    def layer_geometry(self, name: str) -> dict[str, int | bool]:
        """What the card must say of a layer: width, bands, pooled, and for framed layers the frame
        grid -- hop, field and offset in samples, from the layer's `Span`.

        STFT frame t covers samples [t hop - n_fft/2, t hop + n_fft/2) (centred), so output i is
        centred on (first + last) hop / 2 + i jump hop: that is its `frame_offset`. The `frame_field`
        is twice the centre of the first output whose field starts inside the input (index
        `skip`): frame mode returns outputs skip, skip + 1, ... of a chunk (see `frame_skip`).
        """
        width = self.layer_widths[name]
        if name not in self.spans:
            return {"width": width, "bands": 1, "pooled": True, "frame_hop": 0, "frame_field": 0, "frame_offset": 0}
        span, hop = self.spans[name], self.cfg.hop
        offset = (span.first + span.last) * hop // 2
        frame_hop = span.jump * hop
        skip = self.frame_skip(name)
        return {
            "width": width,
            "bands": self.bands.get(name, 1),
            "pooled": False,
            "frame_hop": frame_hop,
            "frame_field": 2 * (offset + skip * frame_hop),
            "frame_offset": offset,
        }

    def frame_skip(self, name: str) -> int:
        """The first output frame of a framed layer whose field lies wholly inside the input."""
        span, hop = self.spans[name], self.cfg.hop
        before = self.cfg.n_fft // 2 - span.first * hop  # samples output 0's field reaches before the input
        return max(0, -(-before // (span.jump * hop)))

    def _check_card(self) -> None:
        if self.card.sample_rate != self.cfg.sample_rate or self.card.frame_hop != self.cfg.hop:
            raise CardError(f"model {self.card.id}: this CNN14 runs at {self.cfg.sample_rate} Hz with frames every {self.cfg.hop} samples")
        for spec in self.card.layers:
            if spec.name not in self.layer_widths:
                raise CardError(f"model {self.card.id}: this CNN14 has no layer {spec.name!r}", hint=f"its layers are {', '.join(self.layer_names)}")
            geometry = self.layer_geometry(spec.name)
            hop, field, offset = (0, 0, 0) if spec.pooled else self.card.frame_grid(spec)
            declared = {"width": spec.width, "bands": spec.bands, "pooled": spec.pooled, "frame_hop": hop, "frame_field": field, "frame_offset": offset}
            if declared != geometry or spec.tokens:
                wrong = {k: v for k, v in geometry.items() if declared[k] != v}
                raise CardError(
                    f"model {self.card.id}: layer {spec.name} has {wrong}, the card says {({k: declared[k] for k in wrong})} (tokens {list(spec.tokens)})"
                )

    # ---- forward ---------------------------------------------------------------------------

    def forward_intermediates(self, audio: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """Raw stage outputs for the named layers: logmel (B, T, M), blockK (B, C, T_k, F_k),
        embedding (B, 2048), segment_embedding (B, T_6, 2048), segment_logits (B, T_6, 527),
        logits (B, 527). Stops after the deepest stage asked."""
        order = {name: i for i, name in enumerate(self.layer_names)}
        deepest = max(order[n] for n in names)
        out: dict[str, Tensor] = {}
        mel = self.frontend(audio)
        out["logmel"] = mel
        if deepest == 0:
            return out
        x = self.bn0(mel.transpose(1, 2)[:, :, :, None])[..., 0].transpose(1, 2)[:, None]  # BatchNorm over mel bins
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for index, block in enumerate(self.blocks):
            if index + 1 > deepest:
                return out
            x = block(x)
            out[f"block{index + 1}"] = x
        x = x.mean(dim=3)  # over frequency: (B, 2048, T)
        if self.cfg.head == "clip":
            x = F.relu(self.fc1(x.amax(dim=2) + x.mean(dim=2)))
            out["embedding"] = x
        else:
            x = F.max_pool1d(x, 3, stride=1, padding=1) + F.avg_pool1d(x, 3, stride=1, padding=1)
            x = F.relu(self.fc1(x.transpose(1, 2)))
            out["segment_embedding"] = x
        if deepest > order["embedding" if self.cfg.head == "clip" else "segment_embedding"]:
            probs = torch.sigmoid(self.head(x))
            if self.cfg.head == "clip":
                out["logits"] = probs
            else:
                out["segment_logits"], out["logits"] = probs, probs.amax(dim=1)
        return out

    def min_samples(self, names: Sequence[str]) -> int:
        """The shortest input for these layers: in window mode, one block-5 frame (the reference's
        deepest pooling) when a block is asked, else one STFT frame's reflection; in frame mode, the
        deepest layer's frame field (frame-mode chunks are cut to it)."""
        if self.knobs.mode == "frame":
            return max(int(self.layer_geometry(n)["frame_field"]) for n in names)
        if all(n == "logmel" for n in names):
            return self.cfg.n_fft // 2 + 1
        return max(self.cfg.hop * 2**5 - self.cfg.hop, self.cfg.n_fft // 2 + 1)

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """audio (batch, samples) -> per layer (batch, frames, width); see the module docstring.

        Window mode returns every frame a layer computes (zero-padded convolutions at the input's
        ends), as the reference does. Frame mode returns the frames whose whole field lies in the
        input, frame j centred on frame_field // 2 + j frame_hop: the core's chunking convention."""
        names = [spec.name for spec in self.card.layers] if layers is None else list(layers)
        for name in names:
            if name not in self.layer_names:
                raise ConfigError(f"model {self.card.id} has no layer {name!r}", hint=f"choose from: {', '.join(self.layer_names)}")
        need = self.min_samples(names)
        if audio.ndim != 2 or audio.shape[-1] < need:
            raise ConfigError(f"CNN14 needs audio of shape (batch, samples >= {need}), got {tuple(audio.shape)}")
        frame_mode = self.knobs.mode == "frame"
        raw = self.forward_intermediates(audio, names)
        outputs = []
        for name in names:
            x = raw[name]
            if name.startswith("block"):
                x = x.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)  # (B, T, C*F), channel-major
            elif x.ndim == 2:
                x = x[:, None, :]
            if frame_mode:
                geometry = self.layer_geometry(name)
                skip = self.frame_skip(name)
                count = (audio.shape[-1] - int(geometry["frame_field"])) // int(geometry["frame_hop"]) + 1
                if x.shape[1] < skip + count:
                    raise RuntimeError(f"{self.card.id}: layer {name} computed {x.shape[1]} frames, frame mode needs {skip + count}")
                x = x[:, skip : skip + count]
            outputs.append(x)
        return outputs


# ---- checkpoint conversion ------------------------------------------------------------------------

# the reference's frontend tensors -> our frontend's buffers: recomputed by us; checked, then dropped
_FRONTEND_KEYS = {
    "spectrogram_extractor.stft.conv_real.weight": "stft.dft_real",
    "spectrogram_extractor.stft.conv_imag.weight": "stft.dft_imag",
    "logmel_extractor.melW": "mel",
}
FRONTEND_ATOL = 1e-6


def _our_key(key: str) -> str | None:
    if m := re.fullmatch(r"conv_block(\d)\.((?:conv|bn)[12]\.\w+)", key):
        return f"blocks.{int(m[1]) - 1}.{m[2]}"
    if m := re.fullmatch(r"fc_audioset\.(weight|bias)", key):
        return f"head.{m[1]}"
    if re.fullmatch(r"(bn0|fc1)\.\w+", key):
        return key
    return None


def _their_key(key: str) -> str:
    if m := re.fullmatch(r"blocks\.(\d)\.(.+)", key):
        return f"conv_block{int(m[1]) + 1}.{m[2]}"
    if key.startswith("head."):
        return "fc_audioset." + key[5:]
    return key


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: Cnn14) -> dict[str, Tensor]:
    """The authors' `{'model': state_dict}` (audioset_tagging_cnn / panns_hear key names) -> ours,
    losslessly: every learnt tensor is used once under its new name (`conv_blockK.*` ->
    `blocks.{K-1}.*`, `fc_audioset.*` -> `head.*`); the three frozen frontend tensors (STFT
    kernels, mel filterbank) are compared with the ones we recompute (within 1e-6) and dropped,
    so a checkpoint with a different frontend is refused rather than silently mis-read.
    Already-converted state dicts pass through (checked). Raises WeightsError naming any key that
    is unused, missing, or of the wrong shape."""
    source = dict(unwrap_state_dict(state_dict, model.card.id))
    for key, buffer in _FRONTEND_KEYS.items():
        if key not in source:
            continue
        value, ours = source.pop(key), model.frontend.get_buffer(buffer)
        if not isinstance(value, Tensor) or tuple(value.shape) != tuple(ours.shape) or not torch.allclose(value.float().cpu(), ours.cpu(), rtol=0, atol=FRONTEND_ATOL):
            raise WeightsError(
                f"checkpoint frontend tensor {key!r} (shape {tuple(getattr(value, 'shape', ()))}) differs from {model.card.id}'s "
                f"recomputed one (shape {tuple(ours.shape)})",
                hint="the checkpoint is of another sample rate / n_fft / mel setting: pick the matching card",
            )
    return remap_state_dict(
        source, model.state_dict(), _our_key, model_id=model.card.id, their_name=_their_key, optional=lambda key: False,
        unused_hint="is this a PANNs CNN14 checkpoint? nothing may be left unused",
        missing_hint="the checkpoint is truncated or not a CNN14 state dict",
    )  # fmt: skip


# ---- configs --------------------------------------------------------------------------------------

_VARIANTS: dict[str, PannsCfg] = {
    # Cnn14_mAP=0.431.pth, Cnn14_DecisionLevelMax_mAP=0.385.pth
    "cnn14-32k": PannsCfg(sample_rate=32000, n_fft=1024, hop=320, fmax=14000.0),
    "cnn14-16k": PannsCfg(sample_rate=16000, n_fft=512, hop=160, fmax=8000.0),  # Cnn14_16k_mAP=0.438.pth
}


def create_model(card: ModelCard) -> Cnn14:
    """A CNN14 of the card's `config.variant` (frontend) and `config.head` (`clip`, the default, or
    `decision-level-max`), randomly initialised, in eval mode; `config.channels_last` (optional)
    picks the conv blocks' memory layout."""
    variant = card.config.get("variant")
    if variant not in _VARIANTS:
        raise CardError(f"model {card.id}: PANNs variant {variant!r} is unknown", hint=f"set config.variant to one of {', '.join(_VARIANTS)}")
    unknown = set(card.config) - {"variant", "head", "channels_last"}
    if unknown:
        raise CardError(f"model {card.id}: unknown PANNs config keys {sorted(unknown)}", hint="known: variant, head, channels_last")
    head = card.config.get("head", "clip")
    if head not in HEADS:
        raise CardError(f"model {card.id}: PANNs head {head!r} is unknown", hint=f"set config.head to one of {', '.join(HEADS)}")
    cfg = dataclasses.replace(_VARIANTS[variant], head=head, channels_last=bool(card.config.get("channels_last", CHANNELS_LAST)))
    return Cnn14(card, cfg).eval()
