"""OpenL3 (Cramer, Wu, Salamon, Bello 2019) audio embedding networks as embedzoo extractors.

Twelve released models: input representation `mel128` | `mel256` | `linear`, trained on `music` or
`env` (environmental) AudioSet videos, with a 512- or 6144-d embedding. The weights are the
torchopenl3 port (`torchopenl3_{repr}_{content}_{size}.pth.tar`) of the authors' Keras models.

One forward is one 1 s window at 48 kHz (48000 samples: min_window = max_window). The network
(`geometry.py` states its variants' widths, bands and frames):

- frontend, as kapre 0.1.4 computes it (and torchopenl3 re-implements it): an STFT as a Conv1d of
  periodic-Hann x DFT kernels, hop 242, no centring. `linear`: n_fft 512, magnitude (257 bins).
  `mel128`/`mel256`: n_fft 2048 on the window zero-padded by 982 samples each side (Keras 'same'
  padding computed for a 1 s input), power, an HTK mel filterbank 0-24 kHz, then the square root.
  Then "decibels" as kapre defines them for amplitudes: 10*log10(max(x, 1e-10)), minus the maximum
  of the whole window, floored at -80. The window-wide maximum makes every frame depend on the
  whole window, which is why OpenL3's layers declare no frame mode (the core refuses it);
- BatchNorm over the (single-channel) spectrogram, then four conv blocks of two 3x3 convolutions
  (64, 128, 256, 512 channels), each conv followed by BatchNorm + ReLU and blocks 1-3 by a 2x2 max
  pool; block 4's second convolution (`audio_embedding_layer`) has neither BatchNorm nor ReLU;
- embedding: a max pool of block 4's map -- the whole map for 512-d; (F/4, 8) for 6144-d, leaving 4
  bands x 3 time steps x 512 channels -- flattened (band, time, channel), channels fastest.

Layers, in their natural shapes (what `forward_layers` returns):
- `spectrogram` (batch, frames, bins): the normalised frontend output (before the first BatchNorm),
  one frame per STFT frame (199 for mel, 197 for linear), 128 / 256 / 257 bins;
- `block1`..`block4` (batch, channels, bands, frames): a conv block's output: 64x{64,128,128},
  128x{32,64,64}, 256x{16,32,32}, 512x{16,32,32};
- `embedding` (batch, 512 | 6144): the pooled embedding, one vector per window.

Speed: float32 inference on the CPU (no autograd, no autocast) runs the conv blocks on oneDNN's own
blocked tensors, each BatchNorm folded into its conv and the weights reordered for oneDNN once
(`ConvBlock.packed`, remade when a weight changes); CUDA, autocast and autograd run them as strided
tensors (`memory_format`). bench/RESULTS.md has the figures.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedzoo.plugin import ConfigError, Extractor, ModelCard, WeightsError, onednn, remap_state_dict, unwrap_state_dict

from embedzoo_openl3.geometry import CHANNELS, HOP, LAYERS, SAMPLE_RATE, WINDOW, OpenL3Cfg, settings

__all__ = ["OpenL3", "OpenL3Cfg", "KapreFrontend", "create_model", "checkpoint_filter_fn", "htk_mel_filterbank", "dft_kernels"]

AMIN = 1e-10
DYNAMIC_RANGE = 80.0
BN_EPS = 1e-3  # Keras' BatchNormalization default, kept by the port


# ---- frontend ------------------------------------------------------------------------------------


def dft_kernels(n_fft: int) -> tuple[Tensor, Tensor]:
    """kapre 0.1.4's STFT kernels, (n_fft // 2 + 1, 1, n_fft) float32: cos / -sin of 2 pi k n / N
    in float64 times the periodic Hann window rounded to float32 (as kapre and torchopenl3 do)."""
    n = torch.arange(n_fft, dtype=torch.float64)
    w = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * 2 * math.pi / n_fft
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64).float().double()
    angle = w[:, None] * n[None, :]
    return (torch.cos(angle) * window).float()[:, None, :], (-torch.sin(angle) * window).float()[:, None, :]


def htk_mel_filterbank(n_fft: int, n_mels: int, norm: str = "l1") -> Tensor:
    """(n_mels, n_fft // 2 + 1) float32 HTK-mel triangles, 0 Hz to 24 kHz at 48 kHz, as
    `librosa.filters.mel(htk=True, norm=1)` gives them. `norm`: "l1" -- each filter sums to 1, what
    librosa >= 0.8 means by norm=1 (torchopenl3's buffer today); "area" -- Slaney's 2 / bandwidth,
    what librosa < 0.8 (and kapre 0.1.4 at OpenL3's training time) meant by norm=1."""
    fft_freqs = torch.linspace(0, SAMPLE_RATE / 2, n_fft // 2 + 1, dtype=torch.float64)
    top = 2595.0 * math.log10(1.0 + (SAMPLE_RATE / 2) / 700.0)
    mel_f = 700.0 * (10.0 ** (torch.linspace(0.0, top, n_mels + 2, dtype=torch.float64) / 2595.0) - 1.0)
    fdiff = mel_f[1:] - mel_f[:-1]
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0).float().double()  # librosa fills a float32 array
    if norm == "area":
        weights = weights * (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    elif norm == "l1":
        length = weights.sum(dim=1, keepdim=True)
        weights = weights / torch.where(length < torch.finfo(torch.float32).tiny, torch.ones_like(length), length)
    else:
        raise ValueError(f"mel norm must be 'l1' or 'area', not {norm!r}")
    return weights.float()


class KapreFrontend(nn.Module):
    """OpenL3's spectrogram, batched: (batch, samples) -> (batch, bins, frames), as kapre 0.1.4 /
    torchopenl3 compute it (see the module docstring); every op in the reference's order, so the
    result agrees to float32 rounding.

    The DFT kernels are recomputed (non-persistent); the mel filterbank is a persistent buffer: the
    released files carry their own (built by whichever librosa the porters had), and the model
    uses the one its checkpoint brings, after `checkpoint_filter_fn` has checked it is one of the
    two known HTK filterbanks.
    """

    def __init__(self, cfg: OpenL3Cfg):
        super().__init__()
        self.cfg = cfg
        real, imag = dft_kernels(cfg.n_fft)
        self.register_buffer("dft_real", real, persistent=False)
        self.register_buffer("dft_imag", imag, persistent=False)
        self.mel: Tensor | None
        if cfg.input_repr == "linear":
            self.mel = None
        else:
            self.register_buffer("mel", htk_mel_filterbank(cfg.n_fft, cfg.bins, "l1"))
        self.log10 = torch.tensor(math.log(10.0), dtype=torch.float32).item()

    def forward(self, audio: Tensor) -> Tensor:
        # always float32, also under autocast: 80 "dB" of amplitude is a ratio of 1e-8
        with torch.autocast(device_type=audio.device.type, enabled=False):
            x = audio[:, None, :].float()
            if any(self.cfg.pad):
                x = F.pad(x, self.cfg.pad)
            real = F.conv1d(x, self.dft_real, stride=HOP)
            imag = F.conv1d(x, self.dft_imag, stride=HOP)
            power = real.pow(2) + imag.pow(2)  # (batch, n_fft // 2 + 1, frames)
            amplitude = torch.sqrt(power if self.mel is None else torch.matmul(self.mel, power))
            db = 10 * torch.log(torch.clamp(amplitude, min=AMIN)) / self.log10
            db = db - torch.amax(db, dim=(1, 2), keepdim=True)
            return torch.clamp(db, min=-DYNAMIC_RANGE)


# ---- the network ---------------------------------------------------------------------------------


class ConvBlock(onednn.DerivedCache, nn.Module):
    """3x3 conv, BatchNorm, ReLU, 3x3 conv, then BatchNorm + ReLU + 2x2 max pool -- except the last
    block, whose second conv (the `audio_embedding_layer`) is left raw."""

    def __init__(self, in_chs: int, out_chs: int, last: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_chs, eps=BN_EPS)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1)
        self.bn2 = None if last else nn.BatchNorm2d(out_chs, eps=BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        if x.is_mkldnn:
            return self.forward_onednn(x)
        x = self.conv2(F.relu(self.bn1(self.conv1(x))))
        if self.bn2 is None:
            return x
        return F.max_pool2d(F.relu(self.bn2(x)), 2)

    def forward_onednn(self, x: Tensor) -> Tensor:
        """The same block on oneDNN's own (opaque, blocked) tensors, for float32 inference on the CPU:
        each BatchNorm folded into its conv, whose weights are reordered once (`packed`) instead of
        in every call, and no layout conversion between the blocks (bench/RESULTS.md)."""
        (w1, b1), (w2, b2) = self.packed()
        x = torch.relu_(torch.mkldnn_convolution(x, w1, b1, [1, 1], [1, 1], [1, 1], 1))
        x = torch.mkldnn_convolution(x, w2, b2, [1, 1], [1, 1], [1, 1], 1)
        return x if self.bn2 is None else F.max_pool2d(torch.relu_(x), 2)

    def packed(self) -> tuple[tuple[Tensor, Tensor], ...]:
        """Both convs with their BatchNorm folded in, as oneDNN tensors (`embedzoo.onednn`)."""
        pairs = ((self.conv1, self.bn1), (self.conv2, self.bn2))
        return self.derived("packed", lambda: tuple(onednn.pack_conv(*onednn.fold_batchnorm(conv, bn), padding=(1, 1)) for conv, bn in pairs))


onednn_inference = onednn.onednn_inference
onednn_blocks = onednn.run_blocks


class OpenL3(Extractor):
    """An OpenL3 audio network behind embedzoo's extractor interface."""

    def __init__(self, card: ModelCard, cfg: OpenL3Cfg):
        super().__init__(card)
        self.cfg = cfg
        self.frontend = KapreFrontend(cfg)
        self.bn0 = nn.BatchNorm2d(1, eps=BN_EPS)
        chs = (1,) + CHANNELS
        self.blocks = nn.ModuleList(ConvBlock(chs[i], chs[i + 1], last=i == 3) for i in range(4))
        self.memory_format = torch.contiguous_format

    # -- forward --

    def forward_intermediates(self, audio: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """Raw stage outputs for the named layers: spectrogram (B, bins, frames), blockK
        (B, C, bands, steps), embedding (B, D). Stops after the deepest stage asked."""
        deepest = max(LAYERS.index(name) for name in names)
        out: dict[str, Tensor] = {}
        spec = self.frontend(audio)
        out["spectrogram"] = spec
        x = self.bn0(spec[:, None])
        onednn = onednn_inference(x, self)
        x = x.to_mkldnn() if onednn else x.contiguous(memory_format=self.memory_format)
        x = onednn_blocks(x, self.blocks[: min(deepest, 4)], names, out)
        if deepest == LAYERS.index("embedding"):
            pool = self.cfg.embedding_pool()
            if x.shape[-1] != self.cfg.frames(WINDOW) // 8:
                raise ConfigError(f"{self.card.id}: the embedding is defined for {WINDOW}-sample windows only, got {audio.shape[-1]} samples")
            pooled = F.max_pool2d(x, pool)
            out["embedding"] = pooled.permute(0, 2, 3, 1).flatten(1)  # (band, step, channel), channels fastest
        return out

    def forward_layers(self, audio: Tensor, layers: Sequence[str] | None = None) -> list[Tensor]:
        """audio (batch, samples) -> per layer its natural shape; see the module docstring."""
        names = list(LAYERS) if layers is None else list(layers)
        unknown = [name for name in names if name not in LAYERS]
        if unknown:
            raise ConfigError(f"model {self.card.id} has no layer(s) {unknown}", hint=f"choose from: {', '.join(LAYERS)}")
        if audio.ndim != 2 or audio.shape[-1] < self.cfg.shortest:
            raise ConfigError(f"OpenL3 needs audio of shape (batch, samples), {WINDOW} samples a window; got {tuple(audio.shape)}")
        raw = self.forward_intermediates(audio, names)
        # the spectrogram is (B, bins, frames): a sequence is (B, frames, bins); maps and the embedding are natural
        return [raw[name].transpose(1, 2) if name == "spectrogram" else raw[name] for name in names]


# ---- checkpoint conversion ------------------------------------------------------------------------

# torchopenl3 module -> ours: batch_normalization_1 is the input BatchNorm, then per block
# conv2d_{2k-1}, batch_normalization_{2k}, conv2d_{2k}, batch_normalization_{2k+1}
_THEIRS = {"batch_normalization_1": "bn0", "audio_embedding_layer": "blocks.3.conv2"}
for _k in range(4):
    _THEIRS[f"conv2d_{2 * _k + 1}"] = f"blocks.{_k}.conv1"
    _THEIRS[f"batch_normalization_{2 * _k + 2}"] = f"blocks.{_k}.bn1"
    if _k < 3:
        _THEIRS[f"conv2d_{2 * _k + 2}"] = f"blocks.{_k}.conv2"
        _THEIRS[f"batch_normalization_{2 * _k + 3}"] = f"blocks.{_k}.bn2"
_OURS = {ours: theirs for theirs, ours in _THEIRS.items()}
_DFT_KEYS = {"speclayer.dft_real_kernels": "dft_real", "speclayer.dft_imag_kernels": "dft_imag"}
_MEL_KEY = "speclayer.mel_basis"
DFT_ATOL = 1e-6
MEL_RTOL = 1e-4  # per filter, relative to its peak: float32 rounding passes, another normalisation does not


def _our_key(key: str) -> str | None:
    module, _, leaf = key.rpartition(".")
    return f"{_THEIRS[module]}.{leaf}" if module in _THEIRS else None


def _their_key(key: str) -> str:
    if key == "frontend.mel":
        return _MEL_KEY
    module, _, leaf = key.rpartition(".")
    return f"{_OURS.get(module, module)}.{leaf}"


def mel_norm_of(mel: Tensor, cfg: OpenL3Cfg) -> str | None:
    """Which known HTK filterbank (`"l1"` or `"area"`) a checkpoint's mel basis is, or None."""
    if tuple(mel.shape) != (cfg.bins, cfg.n_fft // 2 + 1) or not torch.isfinite(mel).all():
        return None
    mel = mel.detach().double().cpu()
    for norm in ("l1", "area"):
        ours = htk_mel_filterbank(cfg.n_fft, cfg.bins, norm).double()
        peak = ours.abs().amax(dim=1, keepdim=True).clamp(min=1e-30)
        if bool(((mel - ours).abs() <= MEL_RTOL * peak).all()):
            return norm
    return None


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: OpenL3) -> dict[str, Tensor]:
    """A torchopenl3 `.pth.tar` (a plain state dict of `PytorchOpenl3`) -> ours, losslessly.

    - every learnt tensor (BatchNorm and conv weights, BatchNorm running statistics and counters) is
      used once under its new name (`conv2d_N`, `batch_normalization_N`, `audio_embedding_layer`
      -> `bn0`, `blocks.K.{conv,bn}{1,2}`);
    - the STFT kernels (`speclayer.dft_{real,imag}_kernels`) are compared with the ones we compute
      (within 1e-6) and dropped, so a file of another STFT size is refused;
    - the mel basis (`speclayer.mel_basis`, mel models only) is kept as `frontend.mel` after a
      check that it is the HTK filterbank of this variant, normalised either way librosa's
      norm=1 has meant (sum 1, or Slaney's area): the file decides, as it does in torchopenl3.
    Already-converted state dicts pass through the same checks. Raises WeightsError naming any key
    that is unused, missing, of the wrong shape, or a frontend tensor that does not match."""
    source = dict(unwrap_state_dict(state_dict, model.card.id))
    for key, buffer in _DFT_KEYS.items():
        if key not in source:
            continue
        value, ours = source.pop(key), getattr(model.frontend, buffer)
        if not isinstance(value, Tensor) or tuple(value.shape) != tuple(ours.shape) or float((value.float().cpu() - ours.cpu()).abs().max()) > DFT_ATOL:
            raise WeightsError(
                f"checkpoint frontend tensor {key!r} (shape {tuple(getattr(value, 'shape', ()))}) differs from {model.card.id}'s STFT kernels "
                f"(shape {tuple(ours.shape)})",
                hint="the checkpoint is of another input representation: pick the card that matches its file name",
            )
    mel = source.get(_MEL_KEY, source.get("frontend.mel"))
    if mel is not None and (not isinstance(mel, Tensor) or mel_norm_of(mel, model.cfg) is None):
        raise WeightsError(
            f"checkpoint frontend tensor {_MEL_KEY!r} (shape {tuple(getattr(mel, 'shape', ()))}) is not the {model.cfg.bins}-band HTK mel filterbank "
            f"of {model.card.id}",
            hint="the checkpoint is of another input representation: pick the card that matches its file name",
        )
    target = model.state_dict()
    return remap_state_dict(
        source, target, lambda key: "frontend.mel" if key == _MEL_KEY else _our_key(key), model_id=model.card.id,
        their_name=_their_key, adapt=lambda ours, value: value.to(target[ours].dtype), optional=lambda key: False,
        unused_hint="is this a torchopenl3 checkpoint of this variant? nothing may be left unused",
        missing_hint="the checkpoint is truncated or of another OpenL3 variant",
    )  # fmt: skip


# ---- configs --------------------------------------------------------------------------------------


def create_model(card: ModelCard) -> OpenL3:
    """An OpenL3 network of the card's `config.input_repr` / `config.embedding_size` (`geometry.settings`),
    randomly initialised, in eval mode (`config.content_type` only selects the weights)."""
    return OpenL3(card, settings(card.config)).eval()
