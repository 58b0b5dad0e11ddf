"""The conformance kit plugins' tests share (as numpy.testing does for numpy users).

- `rel_err`, `randomise_batchnorm`: the parity tests' measure and their BatchNorm randomisation;
- `assert_torch_free_import`, `assert_registers`: a plugin's registration is torch-free and whole;
- `run_hear_validator`: the official HEAR validator on a model spec, in a subprocess;
- `check_family(card)`: builds the model with random weights and checks every layer it returns,
  at the minimum window and at frame-mode chunk lengths, against the family's declared geometry;
- `stream_one_clip`: an hour-long clip through a Session in chunks, with its peak memory;
- `extra_catalog`: test twins (small configs of real cards) in the catalog for a block or a fixture.

`check_family` runs over every model of the catalog in the core's `tests/test_models.py`; a plugin
keeps only what is its own to prove: parity with its reference.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor

from embedzoo.card import LayerSpec, ModelCard
from embedzoo.extractor import ClipEmbeddings, Extractor, Session, as_sequence, valid_frames

__all__ = [
    "rel_err", "randomise_batchnorm", "assert_torch_free_import", "assert_registers",
    "run_hear_validator", "catalog_ids", "check_family", "stream_one_clip", "extra_catalog",
]  # fmt: skip


def rel_err(ours: Tensor, ref: Tensor) -> float:
    """max |ours - ref| / max |ref| in float64, after checking the shapes agree."""
    assert tuple(ours.shape) == tuple(ref.shape), (tuple(ours.shape), tuple(ref.shape))
    return float((ours.double() - ref.double()).abs().max() / ref.double().abs().max())


def randomise_batchnorm(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm random, well-scaled running statistics and affine parameters, so a
    parity test exercises them (fresh ones are the identity); returns the module, in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm) and bn.running_mean is not None:
                n = bn.num_features
                bn.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                if bn.affine:
                    bn.weight.copy_(1.0 + 0.1 * torch.randn(n, generator=generator))
                    bn.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return module.eval()


def _run_python(code: str, env: Mapping[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)


def assert_torch_free_import(*modules: str) -> None:
    """Importing these modules (a plugin's package and its geometry) must not import torch."""
    imports = "; ".join(f"import {module}" for module in modules)
    result = _run_python(f"import sys; {imports}; assert 'torch' not in sys.modules, 'torch was imported'")
    assert result.returncode == 0, result.stderr[-2000:]


def assert_registers(plugin: str, families: Iterable[str]) -> None:
    """The entry point `plugin` loads without error, registers exactly these families, and every
    catalog card of those families is completed by them (no card left undescribed)."""
    from embedzoo.plugins import load_plugins
    from embedzoo.registry import get_registry

    state = load_plugins()
    (info,) = [i for i in state.infos if i.name == plugin] or [None]
    assert info is not None, f"plugin {plugin} is not installed"
    assert info.ok, info.error
    assert sorted(info.families) == sorted(families), info.families
    registry = get_registry()
    for card in registry:
        if card.family in info.families:
            assert card.id not in registry.problems, registry.problems[card.id]
            assert card.complete, card.id


def run_hear_validator(spec: str, env: Mapping[str, str] | None = None, cwd: str | Path | None = None, timeout: float = 900) -> str:
    """`python -m hearvalidator.validate embedzoo.hear -m SPEC -d cpu`; asserts it passes and
    returns its stdout (for checks of the shapes it printed)."""
    result = subprocess.run(
        [sys.executable, "-m", "hearvalidator.validate", "embedzoo.hear", "-m", spec, "-d", "cpu"],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0 and "Looks good!" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def catalog_ids(*families: str) -> list[str]:
    """Ids of the catalog's completed cards (of these families; all when none), sorted: what a
    plugin's conformance test parametrizes over --

        @pytest.mark.parametrize("card_id", catalog_ids("crepe"))
        def test_conformance(card_id):
            check_family(get_card(card_id))
    """
    from embedzoo.registry import get_registry

    return sorted(card.id for card in get_registry() if card.complete and (not families or card.family in families))


def _natural(model: Extractor, audio: Tensor, names: list[str]) -> list[Tensor]:
    with torch.inference_mode():
        outputs = model.forward_layers(audio, names)
    assert isinstance(outputs, (list, tuple)) and len(outputs) == len(names), f"{model.card.id}: forward_layers returned {len(outputs)} tensors for {names}"
    return list(outputs)


def _check_window(model: Extractor, card: ModelCard, spec: LayerSpec, audio: Tensor) -> Tensor:
    """Window mode: the natural output has the declared shape (as_sequence checks it)."""
    (output,) = _natural(model, audio, [spec.name])
    sequence = as_sequence(output.float(), spec, card.id)
    assert sequence.shape[0] == audio.shape[0]
    assert torch.isfinite(sequence).all(), f"{card.id}: layer {spec.name} is not finite on noise"
    return sequence


def _check_frames(model: Extractor, card: ModelCard, spec: LayerSpec, generator: torch.Generator) -> None:
    """Frame mode: a chunk of (n - 1) * hop + field samples gives at least skip + n frames, and
    two more hops of audio give exactly two more frames (the declared hop is the layer's)."""
    hop, field = card.frame_geometry(spec)
    counts = (1, 3)
    longest = (counts[-1] - 1) * hop + field
    if longest > card.max_window:
        counts = (1,)
    sequences = {}
    for count in counts:
        audio = torch.randn(2, (count - 1) * hop + field, generator=generator)
        audio = torch.nn.functional.pad(audio, (0, spec.frame_pad))  # as embed_segments pads a frame-mode chunk
        sequence = as_sequence(_natural(model, audio, [spec.name])[0].float(), spec, card.id)
        frames = valid_frames(sequence, spec, count, card.id)
        assert frames.shape[1] == count
        natural = sequence.shape[1] - len(spec.tokens)
        assert natural >= spec.frame_skip + count, f"{card.id}: layer {spec.name} has {natural} frames for a {count}-frame chunk"
        sequences[count] = natural
    if len(counts) == 2:
        grown = sequences[counts[1]] - sequences[counts[0]]
        assert grown == counts[1] - counts[0], (
            f"{card.id}: layer {spec.name} gained {grown} frames over {(counts[1] - counts[0]) * hop} more samples; its geometry says one per {hop}"
        )


def check_family(card: ModelCard, seed: int = 0) -> Extractor:
    """Build `card`'s model with random weights and check every layer against its declared specs:
    width, tokens, bands (a map's shape), pooling, frame hop and frame-mode crop; all layers in one
    call equal each layer alone. Returns the model (eval mode) for further checks."""
    from embedzoo.loader import build_model

    assert card.complete, f"{card.id} has no layers: is its plugin installed?"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = randomise_batchnorm(build_model(card), seed)
    assert isinstance(model, Extractor) and model.card == card
    generator = torch.Generator().manual_seed(seed)
    names = [spec.name for spec in card.layers]
    window = max(card.layer_min_window(spec) for spec in card.layers)
    audio = torch.randn(2, window, generator=generator)
    together = [as_sequence(out.float(), spec, card.id) for out, spec in zip(_natural(model, audio, names), card.layers)]
    for spec, joint in zip(card.layers, together):
        alone = _check_window(model, card, spec, audio)
        assert alone.shape == joint.shape and torch.allclose(alone, joint, rtol=1e-4, atol=1e-5), f"{card.id}: layer {spec.name} differs when asked alone"
        short = torch.randn(2, card.layer_min_window(spec), generator=generator)
        _check_window(model, card, spec, short)
        if spec.frame_mode and not spec.pooled:
            _check_frames(model, card, spec, generator)
    return model


def stream_one_clip(extractor: Extractor, chunks: Iterable[np.ndarray]) -> tuple[ClipEmbeddings, int]:
    """Push one clip chunk by chunk through a Session, as a decoder or a live stream feeds it (the
    clip is never held whole): its scene and timestamp embeddings, and the peak of traced Python
    and numpy memory meanwhile, in bytes -- what an hour-long test bounds."""
    tracemalloc.start()
    try:
        session = Session(extractor)
        session.open("clip")
        for chunk in chunks:
            session.push("clip", chunk)
        session.close("clip")
        session.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ((key, result),) = session.take()
    assert key == "clip" and session.pending == 0
    return result, peak


@contextlib.contextmanager
def extra_catalog(entries: list[dict[str, Any]] | Callable[[], list[dict[str, Any]]], folder: Path, name: str = "twins") -> Iterator[Any]:
    """Catalog entries (test twins) added through EMBEDZOO_REGISTRY for the duration of the block.

    `entries` (or a function giving them, called once the catalog is fresh, for twins built from
    real cards) are written to `folder/<name>.yaml`; every path in EMBEDZOO_REGISTRY is made
    absolute (hear-validator runs in another folder); an entry that does not build is refused
    with its problem. Yields the registry; restores the variable and the cache after."""
    import yaml

    from embedzoo.registry import get_registry

    before = os.environ.get("EMBEDZOO_REGISTRY")
    get_registry.cache_clear()
    listed = entries() if callable(entries) else entries
    path = Path(folder).resolve() / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"models": listed}))
    kept = [str(Path(p).resolve()) for p in before.split(os.pathsep) if p] if before else []
    os.environ["EMBEDZOO_REGISTRY"] = os.pathsep.join([*kept, str(path)])
    get_registry.cache_clear()
    try:
        registry = get_registry()
        ids = {entry["id"] for entry in listed}
        problems = {k: v for k, v in registry.problems.items() if k in ids}
        assert not problems, problems
        yield registry
    finally:
        if before is None:
            os.environ.pop("EMBEDZOO_REGISTRY", None)
        else:
            os.environ["EMBEDZOO_REGISTRY"] = before
        get_registry.cache_clear()
