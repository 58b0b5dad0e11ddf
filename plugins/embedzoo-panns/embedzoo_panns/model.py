"""PANNs CNN14 (Kong, Cao, Iqbal, Wang, Wang, Plumbley 2020) as an embedzoo extractor.

Frontend: STFT (Hann, periodic; centred, reflect padding) -> power -> slaney mel filterbank ->
power_to_db (ref 1, amin 1e-10, no top_db), then BatchNorm over the mel bins (`bn0`). Six conv
blocks (two 3x3 conv + BatchNorm + ReLU, then 2x2 average pooling; the last block does not pool)
take 64 -> 2048 channels; the feature map is averaged over frequency, then max + mean over time,
fc1 + ReLU gives the 2048-d embedding, and a sigmoid linear head the 527 AudioSet probabilities.

Layers (what `forward_layers` returns, each (batch, frames, width)):
- `logmel`: (batch, 1 + samples // hop, mel_bins) -- the dB log-mel *before* bn0, as the
  reference's `logmel_extractor` returns it;
- `block1` .. `block6`: a conv block's output, time steps as frames, channels x frequency
  flattened channel-major (C, F) -> C*F. Block k's frames advance by hop * 2**min(k, 5) samples;
- `embedding` (2048, fc1 after ReLU) and `logits` (527, the *sigmoid* clipwise output, as the
  reference's `clipwise_output`): one whole-window vector, returned as one frame.

Numerically this follows `panns_hear.models.Cnn14` (the original audioset_tagging_cnn code) and its
torchlibrosa frontend, whose STFT is a Conv1d with DFT x window kernels: the core's
`embedzoo.frontends.DBMelSpectrogram` computes the same kernels in float64 and runs the same
convolution.
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
from embedzoo.errors import CardError, ConfigError, WeightsError
from embedzoo.extractor import Extractor
from embedzoo.frontends import DBMelSpectrogram

__all__ = ["Cnn14", "PannsCfg", "create_model", "checkpoint_filter_fn"]

CHANNELS = (64, 128, 256, 512, 1024, 2048)
CLASSES = 527
EMBED_DIM = 2048
# NHWC conv blocks: same results, 6-17% less time on CPU (bench/panns.py, bench/RESULTS.md);
# a card's `config.channels_last` overrides it
CHANNELS_LAST = True


@dataclass(frozen=True)
class PannsCfg:
    """One CNN14 variant: its rate and frontend; and how the conv blocks run."""

    sample_rate: int
    n_fft: int
    hop: int
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    channels_last: bool = CHANNELS_LAST


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
        freqs = [cfg.mel_bins // 2 ** min(i + 1, 5) for i in range(6)]
        self.layer_names: tuple[str, ...] = ("logmel",) + tuple(f"block{i + 1}" for i in range(6)) + ("embedding", "logits")
        self.layer_widths: dict[str, int] = {
            "logmel": cfg.mel_bins,
            **{f"block{i + 1}": CHANNELS[i] * freqs[i] for i in range(6)},
            "embedding": EMBED_DIM,
            "logits": CLASSES,
        }
        self._check_card()

    def _check_card(self) -> None:
        for spec in self.card.layers:
            if spec.name not in self.layer_widths:
                raise CardError(f"model {self.card.id}: CNN14 has no layer {spec.name!r}", hint=f"CNN14's layers are {', '.join(self.layer_names)}")
            if spec.width != self.layer_widths[spec.name] or spec.tokens:
                raise CardError(f"model {self.card.id}: layer {spec.name} is {self.layer_widths[spec.name]} wide without tokens, the card says {spec.width} (tokens {list(spec.tokens)})")
        if self.card.sample_rate != self.cfg.sample_rate or self.card.frame_hop != self.cfg.hop:
            raise CardError(f"model {self.card.id}: this CNN14 runs at {self.cfg.sample_rate} Hz with frames every {self.cfg.hop} samples")

    def forward_intermediates(self, audio: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """Raw stage outputs for the named layers: logmel (B, T, M), blockK (B, C, T_k, F_k),
        embedding (B, 2048), logits (B, 527). Stops after the deepest stage asked."""
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
        x = x.amax(dim=2) + x.mean(dim=2)
        x = F.relu(self.fc1(x))
        out["embedding"] = x
        if deepest > order["embedding"]:
            out["logits"] = torch.sigmoid(self.head(x))
        return out

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """audio (batch, samples) -> per layer (batch, frames, width); see the module docstring."""
        if self.knobs.mode == "frame":
            # each layer has its own frame rate and centring (see the module docstring); the core's
            # frame mode assumes one card-wide frame_hop, centred at frame_field // 2 in a chunk
            raise ConfigError(
                f"model {self.card.id} does not support frame mode yet: its layers have different frame rates",
                hint="use mode 'window' (the HEAR recipe)",
            )
        names = [spec.name for spec in self.card.layers] if layers is None else list(layers)
        for name in names:
            if name not in self.layer_names:
                raise ConfigError(f"model {self.card.id} has no layer {name!r}", hint=f"choose from: {', '.join(self.layer_names)}")
        need = (self.cfg.hop * 2**5) if any(n not in ("logmel",) for n in names) else 1
        if audio.ndim != 2 or audio.shape[-1] < max(need - self.cfg.hop, self.cfg.n_fft // 2 + 1):
            raise ConfigError(f"CNN14 needs audio of shape (batch, samples >= {max(need - self.cfg.hop, self.cfg.n_fft // 2 + 1)}), got {tuple(audio.shape)}")
        raw = self.forward_intermediates(audio, names)
        outputs = []
        for name in names:
            x = raw[name]
            if name.startswith("block"):
                x = x.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)  # (B, T, C*F), channel-major
            elif x.ndim == 2:
                x = x[:, None, :]
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
    source = unwrap_state_dict(state_dict, model.card.id)
    target = model.state_dict()
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in source.items():
        if not isinstance(value, Tensor):
            raise WeightsError(f"checkpoint key {key!r} holds a {type(value).__name__}, not a tensor")
        if key in _FRONTEND_KEYS:
            ours = model.frontend.get_buffer(_FRONTEND_KEYS[key])
            if tuple(value.shape) != tuple(ours.shape) or not torch.allclose(value.float().cpu(), ours.cpu(), rtol=0, atol=FRONTEND_ATOL):
                raise WeightsError(
                    f"checkpoint frontend tensor {key!r} (shape {tuple(value.shape)}) differs from {model.card.id}'s "
                    f"recomputed one (shape {tuple(ours.shape)})",
                    hint="the checkpoint is of another sample rate / n_fft / mel setting: pick the matching card",
                )
            continue
        ours_key = key if key in target else _our_key(key)
        if ours_key is None or ours_key not in target:
            raise WeightsError(f"checkpoint key {key!r} has no place in {model.card.id}", hint="is this a PANNs CNN14 checkpoint? nothing may be left unused")
        if ours_key in out:
            raise WeightsError(f"checkpoint keys {origin[ours_key]!r} and {key!r} both map to {ours_key!r}")
        expected = tuple(target[ours_key].shape)
        if tuple(value.shape) != expected:
            raise WeightsError(f"checkpoint key {key!r} has shape {tuple(value.shape)}; {model.card.id} needs {expected} for {ours_key!r}")
        out[ours_key] = value.contiguous()
        origin[ours_key] = key
    missing = [k for k in target if k not in out]
    if missing:
        raise WeightsError(f"checkpoint lacks {', '.join(repr(_their_key(k)) for k in missing)} for {model.card.id}", hint="the checkpoint is truncated or not a CNN14 state dict")
    return {k: out[k] for k in target}


# ---- configs --------------------------------------------------------------------------------------

_VARIANTS: dict[str, PannsCfg] = {
    "cnn14-32k": PannsCfg(sample_rate=32000, n_fft=1024, hop=320, fmax=14000.0),  # Cnn14_mAP=0.431.pth
    "cnn14-16k": PannsCfg(sample_rate=16000, n_fft=512, hop=160, fmax=8000.0),  # Cnn14_16k_mAP=0.438.pth
}


def create_model(card: ModelCard) -> Cnn14:
    """A CNN14 of the card's `config.variant`, randomly initialised, in eval mode; `config.channels_last`
    (optional) picks the conv blocks' memory layout."""
    variant = card.config.get("variant")
    if variant not in _VARIANTS:
        raise CardError(f"model {card.id}: PANNs variant {variant!r} is unknown", hint=f"set config.variant to one of {', '.join(_VARIANTS)}")
    unknown = set(card.config) - {"variant", "channels_last"}
    if unknown:
        raise CardError(f"model {card.id}: unknown PANNs config keys {sorted(unknown)}", hint="known: variant, channels_last")
    cfg = dataclasses.replace(_VARIANTS[variant], channels_last=bool(card.config.get("channels_last", CHANNELS_LAST)))
    return Cnn14(card, cfg).eval()
