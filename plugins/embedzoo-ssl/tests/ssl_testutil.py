"""What the ssl tests share: the small twins (one per model type and norm style, 32 wide, 2 layers,
16-channel conv encoder) added to the catalog through EMBEDZOO_REGISTRY, and the reference --
transformers' own model with random weights, saved with `save_pretrained` in the layout of a Hub
repo (bare model, ForPreTraining or ForCTC), and Wav2Vec2FeatureExtractor.

Each twin is what a new checkpoint is: a catalog entry (id, family, config); the family's geometry
derives its layers (`features`, `embed`, `block1`, `block2`[, `norm`]) and frame grid.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
import yaml

from embedzoo.testing import extra_catalog

SR = 16000
TOLERANCE = 1e-5

SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "conv_dim": [16] * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}
STABLE = {"feat_extract_norm": "layer", "do_stable_layer_norm": True}
# twin id -> (card config, the transformers wrapper whose checkpoint layout its test saves)
TWINS: dict[str, tuple[dict[str, Any], str]] = {
    "ssl-wav2vec2-group-small": ({"model_type": "wav2vec2", **SMALL, "do_normalize": True}, "Wav2Vec2ForPreTraining"),
    "ssl-wav2vec2-stable-small": ({"model_type": "wav2vec2", **SMALL, **STABLE, "conv_bias": True, "do_normalize": True}, "Wav2Vec2ForCTC"),
    "ssl-hubert-group-small": ({"model_type": "hubert", **SMALL, "do_normalize": False}, "HubertModel"),
    "ssl-hubert-stable-small": ({"model_type": "hubert", **SMALL, **STABLE, "do_normalize": True}, "HubertForCTC"),
    "ssl-wavlm-group-small": ({"model_type": "wavlm", **SMALL, "do_normalize": False}, "WavLMModel"),
    "ssl-wavlm-stable-small": ({"model_type": "wavlm", **SMALL, **STABLE, "do_normalize": True}, "WavLMForCTC"),
    "ssl-data2vec-audio-small": (
        {"model_type": "data2vec-audio", **SMALL, "num_conv_pos_embeddings": 2, "conv_pos_kernel_size": 8, "conv_bias": True, "do_normalize": True},
        "Data2VecAudioForCTC",
    ),
}
BARE = {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel", "wavlm": "WavLMModel", "data2vec-audio": "Data2VecAudioModel"}
CONFIGS = {"wav2vec2": "Wav2Vec2Config", "hubert": "HubertConfig", "wavlm": "WavLMConfig", "data2vec-audio": "Data2VecAudioConfig"}
PREFIX = {"wav2vec2": "wav2vec2", "hubert": "hubert", "wavlm": "wavlm", "data2vec-audio": "data2vec_audio"}


TWIN_ENTRIES = [{"id": twin, "family": "ssl", "config": config} for twin, (config, _) in TWINS.items()]


def write_twins(path: Path) -> Path:
    """The twins' catalog file (the real ssl cards are registry.yaml's)."""
    path.write_text(yaml.safe_dump({"models": TWIN_ENTRIES}))
    return path


@pytest.fixture(scope="module")
def ssl_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The small twins added to the catalog (EMBEDZOO_REGISTRY) for this module."""
    with extra_catalog(TWIN_ENTRIES, tmp_path_factory.mktemp("catalog"), "ssl-small"):
        yield


def catalog_env(tmp_path: Path) -> dict[str, str]:
    """EMBEDZOO_REGISTRY for a subprocess (hear-validator): the twins' catalog file added."""
    path = write_twins(tmp_path / "ssl-small.yaml")
    return {"EMBEDZOO_REGISTRY": os.pathsep.join(filter(None, [os.environ.get("EMBEDZOO_REGISTRY"), str(path)]))}


def arch(config: dict[str, Any]) -> dict[str, Any]:
    """The transformers config keys of a card config (everything but the frontend's)."""
    return {k: v for k, v in config.items() if k not in ("model_type", "do_normalize")}


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every LayerNorm/GroupNorm scale, every bias and WavLM's gate constants random, so nothing is
    trivially 0 or 1; weight matrices keep transformers' random initialisation."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("gru_rel_pos_const") or (p.ndim == 1 and "norm" in name and name.endswith("weight")):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
    return module.eval()


def reference(twin_or_config: str | dict[str, Any], wrapper: str | None = None, seed: int = 0) -> torch.nn.Module:
    """transformers' model of a twin (the wrapper class its checkpoint is saved from), random weights."""
    import transformers

    if isinstance(twin_or_config, str):
        config, default_wrapper = TWINS[twin_or_config]
    else:
        config, default_wrapper = twin_or_config, BARE[twin_or_config["model_type"]]
    config_class = getattr(transformers, CONFIGS[config["model_type"]])
    extra = {"vocab_size": 11} if (wrapper or default_wrapper).endswith("ForCTC") else {}
    if (wrapper or default_wrapper).endswith("ForPreTraining"):
        extra = {"codevector_dim": 16, "proj_codevector_dim": 8, "num_codevectors_per_group": 5}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, wrapper or default_wrapper)(config_class(**arch(config), **extra))
    return randomise(model, seed)


def bare(model: torch.nn.Module) -> torch.nn.Module:
    """The bare encoder inside a transformers wrapper (or the model itself)."""
    prefix = PREFIX[model.config.model_type]
    return getattr(model, prefix, model)


def save(model: torch.nn.Module, folder: Path) -> Path:
    """save_pretrained, as the Hub repo holds it; the path of its model.safetensors."""
    model.save_pretrained(folder)
    return folder / "model.safetensors"


def feature_extractor(do_normalize: bool):
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=do_normalize, return_attention_mask=False)


def reference_outputs(model: torch.nn.Module, clips: np.ndarray | list[np.ndarray], do_normalize: bool) -> dict[str, Any]:
    """The reference pipeline a user writes: the feature extractor on each clip (equal lengths, so
    no padding), then the model with output_hidden_states=True; plus the conv encoder's output
    (hooked), the inputs, and the outputs object."""
    encoder = bare(model)
    values = feature_extractor(do_normalize)(list(clips), sampling_rate=SR, return_tensors="pt").input_values
    seen: dict[str, torch.Tensor] = {}
    hook = encoder.feature_extractor.register_forward_hook(lambda m, i, o: seen.__setitem__("features", o.transpose(1, 2)))
    try:
        with torch.no_grad():
            outputs = encoder(values, output_hidden_states=True)
    finally:
        hook.remove()
    return {"features": seen["features"], "hidden_states": outputs.hidden_states, "last": outputs.last_hidden_state, "outputs": outputs, "input_values": values}


def expected_layers(out: dict[str, Any], stable: bool) -> dict[str, torch.Tensor]:
    """Our layer names -> the reference tensors they must equal."""
    hidden = out["hidden_states"]
    layers = {"features": out["features"], "embed": hidden[0], **{f"block{i}": h for i, h in enumerate(hidden[1:], start=1)}}
    if stable:
        layers["norm"] = out["last"]
    return layers


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for the tiny models (faster than two threads fighting over a shared core);
    the repository's conftest has the same fixture, which a plugin-rooted run does not load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
