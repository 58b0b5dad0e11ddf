"""What the Dasheng tests share: the small twins, the reference (the `dasheng` package's Dasheng with
random weights, saved in the authors' Zenodo layout and as a Hub-style safetensors file), and the
reference's layers read through hooks.

The real cards are registry.yaml's; the `-small` twins are entries of a temporary catalog (through
EMBEDZOO_REGISTRY): 32 wide, 2 blocks, and a 40-frame (10-token, 0.4 s) reference chunk so the
reference's chunking runs on short clips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from embedzoo.testing import extra_catalog

SR = 16000
TOLERANCE = 1e-5
CARDS = ("dasheng-base", "dasheng-0.6b", "dasheng-1.2b")
SIZES = {"dasheng-base": (768, 12, 12), "dasheng-0.6b": (1280, 32, 16), "dasheng-1.2b": (1536, 40, 24)}
SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2, "target_length": 40, "chunks": 3}  # 10 tokens a chunk, 1.2 s a forward
TWIN = "dasheng-base-small"


@pytest.fixture(scope="module")
def dasheng_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The small twin in the catalog, for a module."""
    twin = {"id": TWIN, "family": "dasheng", "config": SMALL,
            "sources": [{"kind": "url", "url": "https://example.invalid/dasheng_small.pt", "format": "torch"}]}  # fmt: skip
    with extra_catalog([twin], tmp_path_factory.mktemp("catalog"), "dasheng-small"):
        yield


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random and O(1)-scaled (LayerNorms off the identity, biases non-zero), and
    random BatchNorm statistics: nothing is trivially zero or one."""
    from embedzoo.testing import randomise_batchnorm

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if ("norm" in name and name.endswith("weight")) or name.startswith("init_bn"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            elif name.endswith("pos_embed"):
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)
    randomise_batchnorm(module, seed)
    with torch.no_grad():  # the running mean near the dB spectrogram's level, the variance its spread
        module.init_bn[1].running_mean.add_(-20.0)
        module.init_bn[1].running_var.mul_(400.0)
    return module.eval()


def reference(embed_dim: int, depth: int, num_heads: int, target_length: int = 1008, seed: int = 0) -> Any:
    """The `dasheng` package's Dasheng (what dasheng_base() builds before loading), random weights."""
    from dasheng.pretrained.pretrained import Dasheng

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Dasheng(embed_dim=embed_dim, depth=depth, num_heads=num_heads, target_length=target_length)
    return randomise(model, seed)


def zenodo_file(model: Any, config: dict[str, Any], path: Path) -> Path:
    """The authors' layout: torch.save({'model': state_dict, 'config': constructor kwargs})."""
    torch.save({"model": model.state_dict(), "config": config}, path)
    return path


def hub_state(model: Any) -> dict[str, torch.Tensor]:
    """The Hub copies' layout: `encoder.` + the reference's keys, without the front-end buffers."""
    return {f"encoder.{k}": v.clone() for k, v in model.state_dict().items() if not k.startswith("front_end.")}


def reference_layers(model: Any, clips: np.ndarray) -> dict[str, torch.Tensor]:
    """patch, block1..N, norm of `clips` as the reference computes them (its own forward, chunking
    included): hooks on its blocks' input, each block and the final norm, one call per chunk,
    concatenated in time as the reference concatenates its output."""
    seen: dict[str, list[torch.Tensor]] = {}

    def grab(name: str):
        def hook(_module, args, output=None):
            seen.setdefault(name, []).append((args[0] if output is None else output).detach().clone())
        return hook

    handles = [model.blocks.register_forward_pre_hook(grab("patch"))]
    handles += [block.register_forward_hook(grab(f"block{i + 1}")) for i, block in enumerate(model.blocks)]
    handles.append(model.norm.register_forward_hook(grab("norm")))
    try:
        with torch.inference_mode():
            final = model(torch.from_numpy(clips))
    finally:
        for handle in handles:
            handle.remove()
    out = {name: torch.cat(parts, dim=1) for name, parts in seen.items()}
    assert torch.equal(out["norm"], final)
    return out


def noise(samples: int, rows: int = 1, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((rows, samples))).astype(np.float32)
