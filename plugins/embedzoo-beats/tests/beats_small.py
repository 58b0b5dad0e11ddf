"""What the BEATs tests share: the cards' small twins, the reference (openbeats' BeatsEncoder with
random weights, saved as Microsoft's `{'cfg': ..., 'model': ...}` pickle), and the reference's
layers read the way embedzoo reads them.

The real cards are registry.yaml's; their `-small` twins go in a temporary catalog file (through
EMBEDZOO_REGISTRY): 48 wide, 2 blocks, a 32-wide patch embedding (so post_extract_proj exists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from embedzoo.testing import extra_catalog
from embedzoo.registry import get_registry

SR = 16000
TOLERANCE = 1e-5
PRETRAINED, FINETUNED = "beats-iter3-plus-as2m", "beats-iter3-plus-as2m-as2m-cpt2"
OPENBEATS = "openbeats-large-i3"  # its twin: Large's card config shrunk, 6 heads
SMALL = {"embed_dim": 32, "encoder_embed_dim": 48, "encoder_attention_heads": 4, "encoder_ffn_embed_dim": 64,
         "encoder_layers": 2, "conv_pos": 16, "conv_pos_groups": 4}  # fmt: skip
# the fine-tuned twin: a small bucket table (64 buckets to 100 patches), so 2.5 s clips (120 patches)
# reach the logarithmic buckets and the clamp; 10 classes
TWIN_CONFIG = {PRETRAINED: SMALL, FINETUNED: {**SMALL, "num_buckets": 64, "max_distance": 100, "predictor_class": 10},
               OPENBEATS: {**SMALL, "encoder_attention_heads": 6}}  # fmt: skip
SMALL_PRESETS = {"frames": {"layers": ["block2"], "mode": "frame", "readout": "mean", "hop_ms": 160}}


def small_id(card_id: str) -> str:
    return f"{card_id}-small"


@pytest.fixture(scope="module")
def beats_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The `-small` twins, through EMBEDZOO_REGISTRY, for the duration of a module."""

    def entries() -> list[dict[str, Any]]:
        registry = get_registry()
        return [{"id": small_id(card_id), "family": "beats", "config": {**dict(registry.get(card_id).config), **small},
                 "defaults": {"layers": ["block2"]}, "presets": SMALL_PRESETS} for card_id, small in TWIN_CONFIG.items()]  # fmt: skip

    with extra_catalog(entries, tmp_path_factory.mktemp("catalog"), "beats-small"):
        yield


# ---- the reference ------------------------------------------------------------------------------


def beats_cfg(card_id: str) -> dict[str, Any]:
    """The card's config as a checkpoint's plain-dict `cfg` (Microsoft's keys), dropouts off."""
    from embedzoo_beats.geometry import ARCH_KEYS, settings

    cfg = settings(get_registry().get(card_id).config)
    return {**{key: cfg[key] for key in ARCH_KEYS}, "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
            "encoder_layerdrop": 0.0, "dropout_input": 0.0, "layer_wise_gradient_decay_ratio": 1.0}  # fmt: skip


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random and O(1)-scaled (LayerNorms near 1, biases, grep_a, weight_g): the
    reference's init sets LayerNorms to the identity and biases to zero, which would hide a misplaced one."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "_pad" in name:
                continue  # the frozen padding-mask convs
            noise = torch.randn(p.shape, generator=generator)
            if ("norm" in name and name.endswith("weight")) or name.endswith(("grep_a", "weight_g")):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1 or name.endswith("relative_attention_bias.weight"):
                p.copy_(0.1 * noise if p.ndim == 1 else noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)


def reference(card_id: str, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """(openbeats BeatsEncoder with random weights, the checkpoint in Microsoft's layout). The
    checkpoint's `model` has one relative position table (layer 0's) and no padding convs, plus a
    random `predictor` for a fine-tuned card; the reference is loaded from it as openbeats loads
    (non-strictly), and the test of that load checks what it skipped."""
    from openbeats.beats_encoder import BeatsEncoder

    cfg = beats_cfg(card_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        source = BeatsEncoder(input_size=0, beats_config=cfg, is_pretraining=False)
    randomise(source, seed)
    state = {k: v.clone() for k, v in source.state_dict().items() if "_pad" not in k and not shared_table(k)}
    if cfg["finetuned_model"]:
        generator = torch.Generator().manual_seed(seed + 100)
        dim, classes = cfg["encoder_embed_dim"], cfg["predictor_class"]
        state["predictor.weight"] = torch.randn(classes, dim, generator=generator) / dim**0.5
        state["predictor.bias"] = 0.1 * torch.randn(classes, generator=generator)
    checkpoint = {"cfg": cfg, "model": state}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        model = BeatsEncoder(input_size=0, beats_config=cfg, is_pretraining=False)
    model.load_state_dict(state, strict=False)
    return model.eval(), checkpoint


def openbeats_checkpoint(card_id: str, seed: int = 0) -> dict[str, Any]:
    """An OpenBEATs SSL file (`shikhar7ssu/OpenBEATs-*`) as openbeats' exporter (`openbeats-convert`,
    stage C) writes it: `model` the whole BeatsEncoder state dict (the padding convs and layer 0's
    table repeated in every layer included), `cfg` the run's pretraining `beats_config` -- its keys
    as conf/pretrain_{base,large}.yaml gives them (decoder, codebook and mask keys, dropouts), every
    other key left to BeatsConfig's default -- with the twin's widths."""
    from openbeats.beats_encoder import BeatsEncoder

    card = get_registry().get(card_id)
    widths = ("embed_dim", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads", "conv_pos", "conv_pos_groups")
    cfg = {**{key: card.config[key] for key in widths if key in card.config}, "decoder_embed_dim": card.config.get("encoder_embed_dim", 768),
           "decoder_attention_heads": 16, "decoder_layers": 3, "codebook_vocab_size": 1024, "mask_ratio": 0.75, "dropout": 0.1,
           "encoder_layerdrop": 0.0, "deep_norm": True, "relative_position_embedding": True, "num_buckets": 320, "max_distance": 800,
           "gru_rel_pos": True, "use_flash_attn": False}  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        source = BeatsEncoder(input_size=0, beats_config=cfg, is_pretraining=False)
    randomise(source, seed)
    return {"model": {k: v.clone() for k, v in source.state_dict().items()}, "cfg": cfg}


def shared_table(key: str) -> bool:
    """openbeats' copies of layer 0's relative position table in layers 1.. (one module, shared)."""
    return ".self_attn.relative_attention_bias." in key and not key.startswith("encoder.layers.0.")


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> Path:
    torch.save(checkpoint, path)
    return path


def columns_of(sequence: torch.Tensor, bands: int = 8) -> torch.Tensor:
    """(B, columns * bands, D), time-major -> (B, columns, D), the mean over each column's bands
    (written out here, not with embedzoo.layers, so the test does not use the code it checks)."""
    batch, rows, dim = sequence.shape
    return sequence.reshape(batch, rows // bands, bands, dim).mean(dim=2)


def reference_layers(model: Any, checkpoint: dict[str, Any], clips: np.ndarray) -> dict[str, torch.Tensor]:
    """Every embedzoo layer of `clips` (batch, samples) as the reference computes it: openbeats'
    forward (waveform in, its own fbank and padding masks, every clip full length) with the encoder's
    layer_results captured (`max_layer` set so it keeps them), its final output checked against the
    last of them; `logits` = Microsoft's head, the mean over patches of predictor(output)."""
    depth = checkpoint["cfg"]["encoder_layers"]
    captured: dict[str, Any] = {}
    hook = model.encoder.register_forward_hook(lambda module, args, output: captured.update(results=output[1], last=output[0]))
    wav = torch.from_numpy(clips)
    ilens = torch.full((wav.shape[0],), wav.shape[1])
    try:
        with torch.inference_mode():
            model.max_layer = depth - 1  # keep layer_results (the reference then returns block N-1: read the hook)
            model(wav, ilens)
            results, last = captured["results"], captured["last"]
            model.max_layer = None
            final, _, _ = model(wav, ilens)
    finally:
        hook.remove()
        model.max_layer = None
    assert len(results) == depth + 1
    out = {"patch": columns_of(results[0][0].transpose(0, 1))}
    for index in range(depth):
        out[f"block{index + 1}"] = columns_of(results[index + 1][0].transpose(0, 1))
    assert torch.equal(last, results[-1][0].transpose(0, 1)) and torch.allclose(final, last)
    state = checkpoint["model"]
    if "predictor.weight" in state:
        out["logits"] = torch.nn.functional.linear(final, state["predictor.weight"], state["predictor.bias"]).mean(dim=1)
    return out


def noise(samples: int, rows: int = 1, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((rows, samples))).astype(np.float32)
