"""Shared helpers: the reference EfficientAT network (ssondo's copy of `models/mn`), randomised and
saved in EfficientAT's release format, hear21passt's AugmentMelSTFT, and reference layers via hooks."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from hear21passt.models.preprocess import AugmentMelSTFT
from ssondo.models.MobileNetV3.model import MN
from ssondo.models.MobileNetV3.model import get_model as ssondo_mn

from embedzoo import hub
from embedzoo.card import ModelCard
from embedzoo.extractor import as_sequence
from embedzoo.registry import get_registry
from embedzoo.testing import rel_err
from embedzoo_efficientat.model import EfficientAT, create_model

TOLERANCE = 1e-5
WIDTHS = {"efficientat-mn04-as": 0.4, "efficientat-mn05-as": 0.5, "efficientat-mn10-as": 1.0, "efficientat-mn20-as": 2.0,
          "efficientat-mn30-as": 3.0, "efficientat-mn40-as": 4.0, "efficientat-mn40-as-ext": 4.0}  # fmt: skip


def get_card(card_id: str) -> ModelCard:
    """The catalog's card (registry.yaml)."""
    return get_registry().get(card_id)


def make_audio(rows: int, samples: int, seed: int, sr: int = 32000) -> torch.Tensor:
    """Noise plus a chirp; row 0 has a stretch of exact silence (the log-mel floor)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / sr
    audio = 0.1 * torch.randn(rows, samples, generator=g) + 0.3 * torch.sin(2 * math.pi * (200 + 800 * t) * t)
    audio[0, samples // 4 : samples // 4 + min(sr // 10, samples // 4)] = 0.0
    return audio


def reference_mel() -> AugmentMelSTFT:
    """EfficientAT's front end (`models/preprocess.py` defaults: fmin 0, fmax 16000 - 2000 // 2) in eval mode."""
    return AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
                          fmin=0.0, fmax=None, fmin_aug_range=10, fmax_aug_range=2000).eval()  # fmt: skip


def randomised_reference(width: float, seed: int) -> MN:
    """ssondo's EfficientAT MobileNetV3 with the mlp head, every weight random: BatchNorm affine and
    running statistics too, and Linear layers large enough that the logits are far from constant."""
    torch.manual_seed(seed)
    ref = ssondo_mn(width_mult=width, classification_head=True)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in ref.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
                module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=g))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) + 0.5)
                module.num_batches_tracked.fill_(1000)
            elif isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) / math.sqrt(module.in_features))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
    return ref.eval()


def release_state_dict(ref: MN) -> dict[str, torch.Tensor]:
    """ssondo's keys -> EfficientAT's release keys: the same `features.*`; its head Sequential lacks
    EfficientAT's pooling and flatten modules, so classifier.0/3 are EfficientAT's classifier.2/5."""
    renames = {"classifier.0.": "classifier.2.", "classifier.3.": "classifier.5."}
    out = {}
    for key, value in ref.state_dict().items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        out[key] = value.clone()
    return out


def save_release(ref: MN, path: Path) -> Path:
    """The reference's weights as EfficientAT publishes them: a plain state dict, torch.save'd."""
    torch.save(release_state_dict(ref), path)
    return path


def converted_model(card_id: str, path: Path) -> EfficientAT:
    """Our model for a card, with the release file at `path` converted by the core (checkpoint_filter_fn)."""
    card = get_card(card_id)
    model = create_model(card)
    model.load_state_dict(hub.convert_checkpoint(card, path), strict=True)
    return model


def reference_layers(ref: MN, audio: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every layer of the reference, from forward hooks, in our (batch, frames, width) layout."""
    taken: dict[str, torch.Tensor] = {}
    hooks = []
    for i, block in enumerate(ref.features):
        def keep(module, args, output, name=f"block{i}"):
            taken[name] = output.permute(0, 3, 1, 2).flatten(2)  # (B, C, F, T) -> (B, T, C*F)

        hooks.append(block.register_forward_hook(keep))
        for sub in block.modules():
            if hasattr(sub, "conc_se_layers"):
                def keep_se(module, args, output, name=f"se{i}"):
                    taken[name] = output[:, None].clone()  # EfficientAT_HEAR's se features: fc1 before its ReLU

                hooks.append(sub.conc_se_layers[0].fc1.register_forward_hook(keep_se))
    hooks.append(ref.classifier[0].register_forward_hook(lambda m, a, o: taken.__setitem__("hidden", o.clone())))  # its Hardswish is in place
    try:
        with torch.no_grad():
            mel = reference_mel()(audio)
            logits, features = ref(mel[:, None])
    finally:
        for hook in hooks:
            hook.remove()
    taken["mel"] = mel.transpose(1, 2)
    taken["hidden"] = taken["hidden"].reshape(audio.shape[0], 1, -1)
    taken["features"] = features.reshape(audio.shape[0], 1, -1)
    taken["logits"] = logits.reshape(audio.shape[0], 1, -1)
    return taken


def our_layers(model: EfficientAT, audio: torch.Tensor, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Our layers (all when None) as (batch, frames, width) sequences, the reference's layout: block
    maps flattened channel-major by the core's `as_sequence`, pooled vectors as one frame."""
    names = list(model.layer_names) if names is None else list(names)
    with torch.no_grad():
        outputs = model.forward_layers(audio, names)
    return {name: as_sequence(out, model.card.layer(name), model.card.id) for name, out in zip(names, outputs)}


def assert_layers_match(model: EfficientAT, ref: MN, audio: torch.Tensor, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Our layers (all when None) against the reference's on the same audio, within TOLERANCE; returns ours."""
    names = list(model.layer_names) if names is None else names
    expected = reference_layers(ref, audio)
    ours = our_layers(model, audio, names)
    for name in names:
        assert ours[name].abs().max() > 0, name
        assert rel_err(ours[name], expected[name]) < TOLERANCE, name
    return ours
