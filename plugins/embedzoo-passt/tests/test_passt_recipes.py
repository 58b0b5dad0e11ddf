"""The other hear21passt recipes -- base20sec, base30sec, hop100base, hop160base -- through their cards.

Each hear21passt module is its own recipe: a mel hop, a number of time positions, the longest clip
one forward takes (`max_model_window`) and the hop of the windows averaged into the scene embedding
of longer clips. The reference here is each module's own `load_model()` (so every one of those
settings is the module's), with `get_model_passt` swapped for a random PaSST of the module's
geometry (arch, input_tdim, strides) but 64 wide, 2 deep, 1 head: the recipes are about cutting and
pooling, and a small network lets the reference run its one-forward-per-window loop over clips
longer than 30 s in seconds. The full-size network is proven by test_passt.py.

The weights go, in the released checkpoint layout (a plain PaSST state dict, torch.save), through
`checkpoint_filter_fn` via `embedzoo.load(..., weights=path, preset="base")` of the module's card
with the same small network (`<card>-small`, added through EMBEDZOO_REGISTRY: a catalog entry with
the card's config, the small width and depth, and the card's own presets and defaults; the
family's geometry derives its layers).

Clips: 0.1 s (shorter than the 160 ms timestamp window), 1.07 s (a batch of two), 3.74 s, 10 s,
and one longer than the model's max window. Where the reference crashes (a scene forward of fewer
than 16 mel frames, a reflection pad longer than the clip), the test shows it crashes and that
embedzoo returns what it documents instead.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Iterator

import numpy as np
import pytest
import torch

import embedzoo
from embedzoo.registry import get_registry
from embedzoo.testing import rel_err
from passt_small import RECIPES, SMALL, small_catalog  # noqa: F401  (RECIPES: module -> card, preset "base")
from test_passt import SR, TOLERANCE, randomise

from hear21passt.models.passt import PaSST as RefPaSST  # noqa: E402  (test_passt skips without hear21passt)
from hear21passt.wrapper import PasstBasicWrapper  # noqa: E402

PRESET = "base"
# the reference warns on every forward shorter than its full time extent
pytestmark = pytest.mark.filterwarnings("ignore:Input image size:UserWarning")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread for these tests: the reference runs one tiny forward per 50 ms window,
    and on a shared 2-core machine a second thread makes every op wait for a busy core (the module
    takes about half the time this way)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclasses.dataclass
class Recipe:
    module: Any  # the hear21passt module (get_scene_embeddings, get_timestamp_embeddings)
    wrapper: PasstBasicWrapper  # its load_model(), with the small random network
    geometry: dict[str, Any]  # what the module asked get_model_passt for
    model: Any  # embedzoo's extractor of the card's small twin, preset "base"


@pytest.fixture(scope="module", params=list(RECIPES))
def recipe(request: pytest.FixtureRequest, small_catalog: None, tmp_path_factory: pytest.TempPathFactory) -> Recipe:
    name = request.param
    module = importlib.import_module(f"hear21passt.{name}")
    geometry: dict[str, Any] = {}

    def small_get_model(arch: str = "", pretrained: bool = True, n_classes: int = 527, in_channels: int = 1,
                        fstride: int = 10, tstride: int = 10, input_fdim: int = 128, input_tdim: int = 998,
                        **patchout: int) -> RefPaSST:
        """hear21passt's get_model signature and geometry; random small weights instead of the download."""
        geometry.update(arch=arch, input_tdim=input_tdim, stride=(fstride, tstride), n_mels=input_fdim)
        net = RefPaSST(img_size=(input_fdim, input_tdim), patch_size=16, stride=(fstride, tstride), in_chans=in_channels,
                       num_classes=n_classes, distilled=True, **SMALL)
        randomise(net, seed=len(request.param))
        return net

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "get_model_passt", small_get_model)
        wrapper = module.load_model(mode="all").eval()
    card_id = RECIPES[name]
    path = tmp_path_factory.mktemp(name) / get_registry().get(card_id).sources[0].basename
    torch.save(wrapper.net.state_dict(), path)
    model = embedzoo.load(f"{card_id}-small", weights=path, device="cpu", preset=PRESET)
    return Recipe(module, wrapper, geometry, model)


def audio(seconds: float, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(batch, int(round(seconds * SR)), generator=torch.Generator().manual_seed(seed))


def reference_scene(recipe: Recipe, clip: torch.Tensor) -> torch.Tensor:
    return recipe.module.get_scene_embeddings(clip, recipe.wrapper)


def reference_timestamps(recipe: Recipe, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return recipe.module.get_timestamp_embeddings(clip, recipe.wrapper)


def assert_same_timestamps(recipe: Recipe, clip: torch.Tensor) -> None:
    ref_emb, ref_times = reference_timestamps(recipe, clip)
    emb, times = recipe.model.timestamp_embeddings(clip, SR)
    assert rel_err(emb, ref_emb) < TOLERANCE
    assert times.shape == ref_times.shape
    assert torch.allclose(times.double(), ref_times.double())


def test_card_is_the_modules_recipe(recipe: Recipe) -> None:
    """The card's geometry and base knobs are the module's settings (a precise message if one drifts)."""
    card, model, wrapper = recipe.model.card, recipe.model, recipe.wrapper
    assert card.config["stft_hop"] == wrapper.mel.hopsize
    assert card.config["input_tdim"] == recipe.geometry["input_tdim"]
    assert (card.config.get("stride", 10),) * 2 == recipe.geometry["stride"]
    assert card.sample_rate == wrapper.sample_rate
    assert card.max_window == model.scene_window_samples == wrapper.max_model_window
    assert model.scene_hop_samples == wrapper.scene_hop
    assert model.window_samples == wrapper.timestamp_window
    assert model.hop_samples == wrapper.timestamp_hop
    assert model.knobs.pad_mode == "reflect"
    assert model.scene_embedding_size == model.timestamp_embedding_size == 527 + SMALL["embed_dim"]


@pytest.mark.parametrize("seconds,batch", [(1.07, 2), (3.74, 1), (10.0, 1)])
def test_scene_and_timestamps(recipe: Recipe, seconds: float, batch: int) -> None:
    clip = audio(seconds, batch, seed=int(seconds * 100))
    assert rel_err(recipe.model.scene_embeddings(clip, SR), reference_scene(recipe, clip)) < TOLERANCE
    assert_same_timestamps(recipe, clip)


def test_longer_than_the_max_window(recipe: Recipe) -> None:
    """Scene = mean of max-window windows every scene hop (the reference's loop); timestamps as ever."""
    seconds = recipe.model.card.max_window / SR + 1.3
    clip = audio(seconds, seed=1)
    ref_scene = reference_scene(recipe, clip)
    assert rel_err(recipe.model.scene_embeddings(clip, SR), ref_scene) < TOLERANCE
    assert_same_timestamps(recipe, clip)


def test_shorter_than_a_timestamp_window(recipe: Recipe) -> None:
    """0.1 s: timestamps match (the reflection pad of 80 ms fits); the scene matches where the
    reference can forward the clip, and where it has fewer mel frames than a patch (hop 320) the
    reference crashes while embedzoo forwards the clip zero-padded around its centre to min_window."""
    clip = audio(0.1, seed=2)
    assert_same_timestamps(recipe, clip)
    scene = recipe.model.scene_embeddings(clip, SR)
    mel_frames = 1 + clip.shape[-1] // recipe.wrapper.mel.hopsize
    if mel_frames >= 16:
        assert rel_err(scene, reference_scene(recipe, clip)) < TOLERANCE
        return
    with pytest.raises(RuntimeError):
        reference_scene(recipe, clip)
    short = recipe.model.card.min_window - clip.shape[-1]
    padded = torch.nn.functional.pad(clip, (short // 2, short - short // 2))
    with torch.no_grad():
        expected = recipe.wrapper(padded)
    assert rel_err(scene, expected) < TOLERANCE


def test_shorter_than_the_reflection_pad(recipe: Recipe) -> None:
    """0.05 s: the reference's reflection pad (80 ms) is longer than the clip and it crashes;
    embedzoo reflects repeatedly (numpy's 'reflect') and embeds every 160 ms window of that."""
    clip = audio(0.05, seed=3)
    with pytest.raises(RuntimeError):
        reference_timestamps(recipe, clip)
    emb, times = recipe.model.timestamp_embeddings(clip, SR)
    window, hop = recipe.wrapper.timestamp_window, recipe.wrapper.timestamp_hop
    count = 1 + clip.shape[-1] // hop
    assert emb.shape == (1, count, recipe.model.timestamp_embedding_size)
    assert torch.equal(times[0], torch.arange(count, dtype=torch.float32) * hop * 1000 / SR)
    padded = torch.from_numpy(np.pad(clip[0].numpy(), window // 2, mode="reflect"))
    windows = torch.stack([padded[k * hop : k * hop + window] for k in range(count)])
    with torch.no_grad():
        expected = recipe.wrapper(windows)
    assert rel_err(emb[0], expected) < TOLERANCE
    assert torch.isfinite(recipe.model.scene_embeddings(clip, SR)).all()
