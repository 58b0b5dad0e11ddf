"""What the CED tests share: the cards' small twins, the reference and its layers read the way
embedzoo reads them.

The reference is `dasheng` 0.0.9's `Dasheng` (dasheng.pretrained.pretrained, an
AudioTransformerMAE_Encoder) configured as CED -- patch_size = patch_stride = 16, CED's
target_length, embed_dim, depth, num_heads, qkv_bias, mlp_ratio 4, no LayerScale. For an input of
at most one chunk its maths are the authors' `AudioTransformer.forward_features` (the same
front end, `init_bn`, patch conv, separable positions cut to the input's columns, pre-norm ViT
blocks with eps 1e-6 LayerNorms, final norm) and its state dict keys are the authors' (the Zenodo
files'): `front_end.0.*`, `init_bn.1.*`, `patch_embed.proj.*`, `time_pos_embed`,
`freq_pos_embed`, `blocks.N.*`, `norm.*`. It has no head: CED's `outputlayer` (LayerNorm eps 1e-5
+ Linear, on the mean over patches, read before the sigmoid) is built beside it here with random
weights and saved in the same file, as the authors' checkpoints hold it.

The real cards are registry.yaml's; their `-small` twins (32 wide, 2 blocks, 160-frame chunks) come
through a temporary catalog file (EMBEDZOO_REGISTRY).
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
CARDS = ("ced-tiny", "ced-mini", "ced-small", "ced-base")
# 2 blocks of 32, 160-frame chunks (10 columns, 1.59 s): cheap forwards
SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2, "target_length": 160, "outputdim": 7}
SMALL_PRESETS = {"frames": {"layers": ["block2"], "mode": "frame", "readout": "mean"}}


def small_id(card_id: str) -> str:
    return f"{card_id}-small"


def small_entry(card_id: str) -> dict[str, Any]:
    card = get_registry().get(card_id)
    hub = [{"kind": "hf", "repo": s.repo, "revision": s.revision, "filename": s.filename, "format": s.format, "files": list(s.files)}
           for s in card.sources if s.kind == "hf"]  # fmt: skip  (so weights=FOLDER finds a Hub-like folder)
    return {"id": small_id(card_id), "family": "ced", "config": {**dict(card.config), **SMALL}, "sources": hub, "presets": SMALL_PRESETS}


@pytest.fixture(scope="module")
def ced_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The `-small` twins of the CED cards in the catalog, for a module."""
    with extra_catalog(lambda: [small_entry(card_id) for card_id in CARDS], tmp_path_factory.mktemp("catalog"), "ced-small"):
        yield


# ---- the reference ------------------------------------------------------------------------------


class Reference(torch.nn.Module):
    """dasheng's encoder configured as CED, plus CED's head (`outputlayer`)."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        from dasheng.pretrained.pretrained import Dasheng

        self.encoder = Dasheng(
            patch_size=(cfg["patch_size"],) * 2, patch_stride=(cfg["patch_stride"],) * 2, target_length=cfg["target_length"],
            embed_dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"],
            qkv_bias=cfg["qkv_bias"], n_mels=cfg["n_mels"], n_fft=cfg["n_fft"], win_size=cfg["win_size"],
            hop_size=cfg["hop_size"], f_min=int(cfg["f_min"]), f_max=int(cfg["f_max"]),
        )  # fmt: skip
        self.outputlayer = torch.nn.Sequential(torch.nn.LayerNorm(cfg["embed_dim"]), torch.nn.Linear(cfg["embed_dim"], cfg["outputdim"]))

    def original_state(self) -> dict[str, torch.Tensor]:
        """The authors' checkpoint layout (Zenodo audiotransformer_*.pt's 'model')."""
        state = {k: v.clone() for k, v in self.encoder.state_dict().items()}
        state.update({f"outputlayer.{k}": v.clone() for k, v in self.outputlayer.state_dict().items()})
        return state

    def hub_state(self) -> dict[str, torch.Tensor]:
        """The Hub layout (mispeech/ced-*'s model.safetensors): `encoder.` + keys, `init_bn.1.` -> `init_bn.`,
        no front end, the head unprefixed."""
        out = {}
        for key, value in self.original_state().items():
            if key.startswith("front_end."):
                continue
            if not key.startswith("outputlayer."):
                key = "encoder." + key.replace("init_bn.1.", "init_bn.")
            out[key] = value.contiguous()
        return out


def randomise(module: Reference, seed: int) -> Reference:
    """Every parameter random and O(1)-scaled (LayerNorms, biases, positions and the BatchNorm's
    statistics too), so nothing is trivially zero or one."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim == 1 and name.endswith("weight"):  # LayerNorm / BatchNorm scales
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            elif name.endswith("pos_embed"):
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)
        bn = module.encoder.init_bn[1]
        bn.running_mean.copy_(-20.0 + 5.0 * torch.randn(bn.running_mean.shape, generator=generator))
        bn.running_var.copy_((15.0 + 5.0 * torch.rand(bn.running_var.shape, generator=generator)) ** 2)
        bn.num_batches_tracked.fill_(1000)
    return module.eval()


def reference(card_id: str, seed: int = 0) -> Reference:
    from embedzoo_ced.geometry import settings

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Reference(settings(get_registry().get(card_id).config))
    return randomise(model, seed)


def save_original(model: Reference, path: Path) -> Path:
    """The authors' Zenodo format: a torch.save'd {'model': state_dict} (plus a plain config dict)."""
    torch.save({"model": model.original_state(), "config": {"embed_dim": model.encoder.embed_dim}}, path)
    return path


def save_hub(model: Reference, folder: Path, cfg: dict[str, Any]) -> Path:
    """The Hub layout: model.safetensors and a config.json as CedConfig writes it."""
    import json

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(model.hub_state(), str(folder / "model.safetensors"))
    config = {"architectures": ["CedForAudioClassification"], "model_type": "ced", "embed_dim": cfg["embed_dim"], "depth": cfg["depth"],
              "num_heads": cfg["num_heads"], "mlp_ratio": cfg["mlp_ratio"], "outputdim": cfg["outputdim"], "patch_size": 16,
              "patch_stride": 16, "pooling": "mean", "qkv_bias": True, "target_length": cfg["target_length"], "eval_avg": "mean",
              "center": True, "f_max": 8000, "f_min": 0, "hop_size": 160, "n_fft": 512, "n_mels": 64, "win_size": 512, "pad_last": True}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def columns_of(sequence: torch.Tensor, bands: int) -> torch.Tensor:
    """A reference sequence (batch, F * T, D), frequency-major, read as embedzoo reads it: one frame
    per column, the mean over its F frequency patches (written out here, not with embedzoo.layers)."""
    batch, rows, dim = sequence.shape
    return sequence.reshape(batch, bands, rows // bands, dim).mean(dim=1)


def reference_layers(model: Reference, clips: np.ndarray) -> dict[str, torch.Tensor]:
    """Every embedzoo layer of `clips` (batch, samples), each clip run alone through the reference
    (torchaudio's AmplitudeToDB floors a batch at the whole batch's maximum minus top_db)."""
    encoder = model.encoder
    bands = encoder.patch_embed.grid_size[0]
    depth = len(encoder.blocks)
    names = ["patch", *(f"block{i + 1}" for i in range(depth)), "norm", "features", "logits"]
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for clip in clips:
        captured: list[torch.Tensor] = []
        hooks = [encoder.blocks.register_forward_pre_hook(lambda module, args: captured.append(args[0]))]
        hooks += [block.register_forward_hook(lambda module, args, output: captured.append(output)) for block in encoder.blocks]
        try:
            with torch.inference_mode():
                final = encoder(torch.from_numpy(clip)[None])  # (1, F * T, D) after the final norm
                logits = model.outputlayer(final.mean(1))
        finally:
            for hook in hooks:
                hook.remove()
        assert len(captured) == depth + 1
        for name, hidden in zip(names, captured):
            rows[name].append(columns_of(hidden, bands))
        rows["norm"].append(columns_of(final, bands))
        rows["features"].append(final.mean(1))
        rows["logits"].append(logits)
    return {name: torch.cat(values) for name, values in rows.items()}


def noise(samples: int, rows: int = 1, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((rows, samples))).astype(np.float32)
