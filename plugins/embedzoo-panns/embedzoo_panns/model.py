"""PANNs CNN14 (Kong, Cao, Iqbal, Wang, Wang, Plumbley 2020) as an embedzoo extractor.

Frontend: STFT (Hann, periodic; centred, reflect padding) -> power -> slaney mel filterbank ->
power_to_db (ref 1, amin 1e-10, no top_db), then BatchNorm over the mel bins (`bn0`). Six conv
blocks (two 3x3 conv + BatchNorm + ReLU, then 2x2 average pooling; the last block does not pool)
take 64 -> 2048 channels; the feature map is averaged over frequency. Then one of two heads:
- `clip` (Cnn14): max + mean over time, fc1 + ReLU gives the 2048-d embedding, and a sigmoid linear
  head the 527 AudioSet probabilities;
- `decision-level-max` (Cnn14_DecisionLevelMax): a 3-frame max + mean filter over time, fc1 + ReLU
  and the sigmoid head on every frame (segment probabilities), max over time for the clip.

Layers (what `forward_layers` returns, in their natural shapes; geometry.py declares them):
- `logmel`: (batch, 1 + samples // hop, mel_bins) -- the dB log-mel *before* bn0, as the
  reference's `logmel_extractor` returns it;
- `block1` .. `block6`: a conv block's output map (batch, channels, bands, frames) -- the
  reference's (B, C, T, F) with time last, a view. Block k's frames advance by hop * 2**min(k, 5);
- clip head: `embedding` (batch, 2048: fc1 after ReLU) and `logits` (batch, 527: the *sigmoid*
  clipwise output, as the reference's `clipwise_output`): one whole-window vector each;
- decision-level head: `segment_embedding` (batch, frames, 2048: fc1 after ReLU) and
  `segment_logits` (batch, frames, 527: the reference's sigmoid `segmentwise_output`) per block-6
  frame, and `logits` (batch, 527: their max over the window, `clipwise_output`).

Every layer returns every frame the network computes (zero-padded convolutions at the input's
ends), as the reference does. Frame mode is the core's: geometry.py gives each framed layer its
frame grid from the receptive-field `Span`s -- block k's frame i sits on sample
(i + (2**k - 1) / 2) hop (`frame_offset`), and `frame_skip` is the first frame whose whole field
lies inside a chunk -- so the core's crop of each chunk gives a long clip's frames as the
network's frames over the whole clip, on the reference's own time grid (block 6 pooled over
frequency, read every 10 ms: panns_hear's `sed_embedding`, the `sed` preset), without the zero
padding the reference sees at the clip's ends.

Numerically this follows `panns_hear.models.Cnn14` / `Cnn14_DecisionLevelMax` (the original
audioset_tagging_cnn code) and its torchlibrosa frontend, whose STFT is a Conv1d with DFT x window
kernels: the core's `embedzoo.frontends.DBMelSpectrogram` computes the same spectrum with
torch.stft, and the checkpoint's frozen kernels are checked against `dft_kernels`.

Speed: float32 inference on the CPU (no autograd, no autocast) runs the conv blocks on oneDNN's own
blocked tensors, each BatchNorm folded into its conv and the weights reordered for oneDNN once
(`ConvBlock.packed`, remade when a weight changes), instead of a reorder of every weight and map in
every call: 1.3-1.5x on 1 s windows (bench/RESULTS.md). The packed copy costs the conv weights'
size again in memory (~300 MB). Everything else (CUDA, autocast, autograd) runs the blocks as
strided tensors in `config.channels_last`'s layout.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedzoo.plugin import ConfigError, Extractor, ModelCard, WeightsError, frontends, onednn, remap_state_dict, unwrap_state_dict

from embedzoo_panns.geometry import (
    CHANNELS,
    CHANNELS_LAST,
    CLASSES,
    CONV_KERNEL,
    EMBED_DIM,
    HEAD_FILTER,
    POOLS,
    PannsCfg,
    layer_names,
    min_samples,
    parse_config,
)

__all__ = ["Cnn14", "PannsCfg", "create_model", "checkpoint_filter_fn", "CHANNELS_LAST"]

dft_kernels = frontends.dft_kernels  # what torchlibrosa's frozen STFT kernels in a checkpoint must equal


# ---- the network ---------------------------------------------------------------------------------


class ConvBlock(onednn.DerivedCache, nn.Module):
    """(3x3 conv, BatchNorm, ReLU) x 2, then average pooling (2x2, or none for the last block)."""

    def __init__(self, in_chs: int, out_chs: int, pool: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, CONV_KERNEL, padding=CONV_KERNEL // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, CONV_KERNEL, padding=CONV_KERNEL // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        if x.is_mkldnn:
            return self.forward_onednn(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, self.pool) if self.pool > 1 else x

    def forward_onednn(self, x: Tensor) -> Tensor:
        """The same block on oneDNN's own (opaque, blocked) tensors, for float32 inference on the CPU:
        BatchNorm folded into each conv, whose weights are reordered once (`packed`) instead of in
        every call, and no layout conversion between the blocks (bench/RESULTS.md: 1.2-1.3x)."""
        (w1, b1), (w2, b2) = self.packed()
        same = [CONV_KERNEL // 2] * 2
        x = torch.relu_(torch.mkldnn_convolution(x, w1, b1, same, [1, 1], [1, 1], 1))
        x = torch.relu_(torch.mkldnn_convolution(x, w2, b2, same, [1, 1], [1, 1], 1))
        return F.avg_pool2d(x, self.pool) if self.pool > 1 else x

    def packed(self) -> tuple[tuple[Tensor, Tensor], ...]:
        """Both convs with their BatchNorm folded in, as oneDNN tensors (`embedzoo.onednn`)."""
        pairs = ((self.conv1, self.bn1), (self.conv2, self.bn2))
        same = (CONV_KERNEL // 2,) * 2
        return self.derived("packed", lambda: tuple(onednn.pack_conv(*onednn.fold_batchnorm(conv, bn), padding=same) for conv, bn in pairs))


onednn_inference = onednn.onednn_inference
onednn_blocks = onednn.run_blocks


class Cnn14(Extractor):
    """CNN14 behind embedzoo's extractor interface."""

    def __init__(self, card: ModelCard, cfg: PannsCfg):
        super().__init__(card)
        self.cfg = cfg
        self.frontend = frontends.DBMelSpectrogram(cfg.sample_rate, cfg.n_fft, cfg.hop, cfg.mel_bins, cfg.fmin, cfg.fmax)
        self.bn0 = nn.BatchNorm2d(cfg.mel_bins)
        chs = (1,) + CHANNELS
        self.blocks = nn.ModuleList(ConvBlock(chs[i], chs[i + 1], pool) for i, pool in enumerate(POOLS))
        if cfg.channels_last:
            self.blocks.to(memory_format=torch.channels_last)
        self.fc1 = nn.Linear(CHANNELS[-1], EMBED_DIM)
        self.head = nn.Linear(EMBED_DIM, CLASSES)
        self.layer_names: tuple[str, ...] = layer_names(cfg.head)

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
        onednn = onednn_inference(x, self)
        if onednn:
            x = x.to_mkldnn()
        elif self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = onednn_blocks(x, self.blocks[:deepest], names, out)
        if deepest < len(self.blocks):
            return out
        x = x.mean(dim=3)  # over frequency: (B, 2048, T)
        if self.cfg.head == "clip":
            x = F.relu(self.fc1(x.amax(dim=2) + x.mean(dim=2)))
            out["embedding"] = x
        else:
            pad = HEAD_FILTER // 2
            x = F.max_pool1d(x, HEAD_FILTER, stride=1, padding=pad) + F.avg_pool1d(x, HEAD_FILTER, stride=1, padding=pad)
            x = F.relu(self.fc1(x.transpose(1, 2)))
            out["segment_embedding"] = x
        if deepest > order["embedding" if self.cfg.head == "clip" else "segment_embedding"]:
            probs = torch.sigmoid(self.head(x))
            if self.cfg.head == "clip":
                out["logits"] = probs
            else:
                out["segment_logits"], out["logits"] = probs, probs.amax(dim=1)
        return out

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """audio (batch, samples) -> each layer in its natural shape (module docstring), every frame."""
        names = list(self.layer_names) if layers is None else list(layers)
        unknown = [name for name in names if name not in self.layer_names]
        if unknown:
            raise ConfigError(f"model {self.card.id} has no layer(s) {unknown}", hint=f"choose from: {', '.join(self.layer_names)}")
        need = max(min_samples(self.cfg, name) for name in names)
        if audio.ndim != 2 or audio.shape[-1] < need:
            raise ConfigError(f"CNN14 needs audio of shape (batch, samples >= {need}) for {names}, got {tuple(audio.shape)}")
        raw = self.forward_intermediates(audio, names)
        # blocks are (B, C, T, F) inside: time last is the core's (B, C, F, T) map
        return [raw[name].transpose(2, 3) if name.startswith("block") else raw[name] for name in names]


# ---- checkpoint conversion ------------------------------------------------------------------------

# the reference's frontend tensors -> the same tensors recomputed for our frontend; checked, then dropped
_FRONTEND_KEYS = {
    "spectrogram_extractor.stft.conv_real.weight": lambda frontend: dft_kernels(frontend.stft.n_fft)[0].float(),
    "spectrogram_extractor.stft.conv_imag.weight": lambda frontend: dft_kernels(frontend.stft.n_fft)[1].float(),
    "logmel_extractor.melW": lambda frontend: frontend.mel,
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
    for key, recompute in _FRONTEND_KEYS.items():
        if key not in source:
            continue
        value, ours = source.pop(key), recompute(model.frontend)
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


def create_model(card: ModelCard) -> Cnn14:
    """A CNN14 of the card's `config.variant` (frontend) and `config.head` (`clip`, the default, or
    `decision-level-max`), randomly initialised, in eval mode; `config.channels_last` (optional)
    picks the conv blocks' memory layout. geometry.py parses the config."""
    return Cnn14(card, parse_config(card.config)).eval()
