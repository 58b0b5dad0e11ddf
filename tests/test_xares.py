"""embedzoo.xares: every model family as an X-ARES encoder, checked by X-ARES's own
`check_audio_encoder` (xares 0.1.3) on random weights, and loaded the way `xares.run` loads one."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("xares.audio_encoder_checker", reason="xares is installed by scripts/test.sh (pip install --no-deps xares==0.1.3)")

from xares.audio_encoder_checker import check_audio_encoder  # noqa: E402
from xares.utils import attr_from_py_path  # noqa: E402

from embedzoo.errors import ConfigError  # noqa: E402
from embedzoo.xares import EmbedzooEncoder, class_name, encoder_class  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "embedzoo-passt" / "tests"))
from passt_small import small_catalog  # noqa: E402,F401  (fixture: PaSST's 2-block twins in the catalog)

# one small model per family (PaSST: the base card's 2-block twin; the recipe, not the width, is tested)
FAMILIES = {
    "crepe": "crepe-tiny",
    "passt": "passt-s-ap476-small",
    "panns": "panns-cnn14-16k",
    "vggish": "vggish",
    "yamnet": "yamnet",
    "efficientat": "efficientat-mn04-as",
    "openl3": "openl3-mel128-env-512",
}


# the transformer families: a test-width twin of one card each (tests/test_models.py's TEST_WIDTH)
TWINNED = {
    "ast": "ast-speech-commands-v2",
    "ssl": "wavlm-base-plus",
    "whisper": "whisper-tiny",
    "clap": "clap-htsat-unfused",
    "dasheng": "dasheng-base",
    "ced": "ced-tiny",
    "beats": "beats-iter3-plus-as2m",
}
FAMILIES.update({family: f"{card}-twin" for family, card in TWINNED.items()})

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small models, one torch thread


@pytest.fixture(scope="module")
def twin_catalog(tmp_path_factory: pytest.TempPathFactory):
    """The TWINNED cards at test width, in the catalog for this module."""
    from embedzoo.registry import get_registry
    from embedzoo.testing import extra_catalog
    from test_models import TEST_WIDTH

    def entries() -> list[dict]:
        registry = get_registry()
        listed = []
        for family, card_id in TWINNED.items():
            card = registry.get(card_id)
            presets = {name: {"layers": ["all"]} for name, preset in card.presets.items() if "layers" in preset}
            defaults = {**card.defaults, "layers": ["all"]}  # the twin has 2 blocks: its hidden states, concatenated
            listed.append({"id": f"{card_id}-twin", "family": family, "config": {**card.config, **TEST_WIDTH[family]},
                           "defaults": defaults, "presets": presets})
        return listed

    with extra_catalog(entries, tmp_path_factory.mktemp("twins"), "xares-twins"):
        yield


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_passes_the_xares_checker(family, request):
    if family == "passt":
        request.getfixturevalue("small_catalog")
    if family in TWINNED:
        request.getfixturevalue("twin_catalog")
    encoder = EmbedzooEncoder(FAMILIES[family], weights="random")
    assert type(encoder).__name__.endswith("Encoder")
    assert check_audio_encoder(encoder) is True
    # the frames are the model's timestamp embeddings, every hop_size_in_ms, at sampling_rate
    rate = encoder.sampling_rate
    assert rate == encoder.extractor.card.sample_rate
    audio = torch.randn(1, int(1.5 * rate), generator=torch.Generator().manual_seed(0))
    frames = encoder(audio)
    expected, stamps = encoder.extractor.timestamp_embeddings(audio, rate)
    assert frames.dtype == torch.float32 and frames.shape == (1, stamps.shape[1], encoder.output_dim)
    torch.testing.assert_close(frames, expected)
    assert torch.allclose(torch.diff(stamps[0].double()), torch.tensor(encoder.hop_size_in_ms, dtype=torch.float64), atol=1e-3)
    assert encoder(audio[0]).shape == frames.shape  # one clip without a batch axis, as X-ARES's examples allow
    with torch.inference_mode():  # as X-ARES encodes; a frozen model whatever mode it is put in
        torch.testing.assert_close(encoder.train()(audio), frames)


def test_encoder_classes_build_without_arguments_and_load_as_xares_does(tmp_path, monkeypatch):
    source = tmp_path / "embedzoo_crepe_encoder.py"  # the file a user hands to `python -m xares.run`
    source.write_text("from embedzoo.xares import encoder_class\nCrepeTinyEncoder = encoder_class('crepe-tiny?hop_ms=20', 'CrepeTinyEncoder', weights='random')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = attr_from_py_path("embedzoo_crepe_encoder.py", endswith="Encoder")
    encoder = cls()  # what xares.run does
    assert check_audio_encoder(encoder) is True
    assert encoder.hop_size_in_ms == 20.0 and encoder.extractor.weights_identity.startswith("random")
    # bound to its own name, the class pickles (X-ARES hands encoders to worker processes)
    assert type(pickle.loads(pickle.dumps(encoder))).__name__ == "CrepeTinyEncoder"


def test_class_names_keep_models_and_settings_apart():
    # X-ARES names its output folders by the encoder's class name
    assert class_name("crepe-tiny") == "CrepeTinyEncoder"
    assert class_name("efficientat-mn04-as") == "EfficientatMn04AsEncoder"
    names = {class_name(spec) for spec in ("crepe-tiny", "crepe-tiny?hop_ms=20", "crepe-tiny?hop_ms=25", "crepe-tiny?weights=random", "crepe-full")}
    assert len(names) == 5 and all(n.endswith("Encoder") and n.isidentifier() for n in names)
    assert encoder_class("crepe-tiny?hop_ms=20").__name__ == class_name("crepe-tiny?hop_ms=20")
    with pytest.raises(ConfigError, match="ending in 'Encoder'"):
        encoder_class("crepe-tiny", "Crepe")
    with pytest.raises(ConfigError, match="names no model"):
        encoder_class("?hop_ms=20")
    encoder = EmbedzooEncoder("crepe-tiny", weights="random")
    with pytest.raises(ConfigError, match=r"\(batch, samples\)"):
        encoder(torch.zeros(1, 2, 16000))
