"""A speech SSL model pulled from the Hub for real, offline: its repo files as `save_pretrained`
writes them (model.safetensors, config.json, preprocessor_config.json), served by a mirror folder,
by a pre-populated Hugging Face cache with HF_HUB_OFFLINE=1 (the user's own, used where it is),
and by a fake hub endpoint on 127.0.0.1 for a card on a branch -- each pull converted, checked
against the card and loaded into a model that computes what transformers computes."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import threading
from pathlib import Path
from typing import Iterator

import huggingface_hub.constants
import pytest
import torch
import yaml

import embedzoo
from embedzoo import weights
from embedzoo.registry import get_registry
from embedzoo.testing import rel_err

transformers = pytest.importorskip("transformers")

COMMIT = "4c66d4806a428f2e922ccfa1a962776e232d487b"  # wavlm-base-plus, as its card pins it
HEAD = "0f0e0d0c0b0a09080706050403020100f0e0d0c0"  # the fake hub's head of wav2vec2-base's main
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37,
         "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}  # fmt: skip


def twin(card_id: str) -> dict:
    """The card's catalog entry at test width, with the card's own hub sources."""
    card = get_registry().get(card_id)
    sources = [{k: v for k, v in vars(s).items() if v not in ("", None, (), [])} for s in card.sources]
    for source in sources:
        source["files"] = list(source.get("files", ()))
    return {"id": f"{card_id}-hubtest", "family": "ssl", "config": {**card.config, **SMALL}, "sources": sources}


@pytest.fixture(autouse=True)
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Own caches, no inherited hub settings, and the two twins in the catalog."""
    for name in ("EMBEDZOO_MIRROR", "EMBEDZOO_OFFLINE", "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EMBEDZOO_CACHE", str(tmp_path / "embedzoo-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    catalog = tmp_path / "twins.yaml"
    catalog.write_text(yaml.safe_dump({"models": [twin("wavlm-base-plus"), twin("wav2vec2-base")]}))
    monkeypatch.setenv("EMBEDZOO_REGISTRY", os.pathsep.join(filter(None, [os.environ.get("EMBEDZOO_REGISTRY"), str(catalog)])))
    get_registry.cache_clear()
    yield
    get_registry.cache_clear()


def hub_repo(folder: Path, model_class: str, config_class: str, do_normalize: bool, seed: int = 0) -> torch.nn.Module:
    """A repo as the Hub holds it: the model's save_pretrained and the feature extractor's."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, model_class)(getattr(transformers, config_class)(**SMALL)).eval()
    model.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=do_normalize).save_pretrained(folder)
    return model


def same_as_transformers(model_id: str, reference: torch.nn.Module, **load: object) -> None:
    model = embedzoo.load(model_id, device="cpu", quiet=True, **load)
    audio = torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden = reference(audio, output_hidden_states=True).hidden_states
        ours = model.forward_layers(audio, ["embed", "block1", "block2"])
    for layer, (mine, theirs) in enumerate(zip(ours, hidden)):
        assert rel_err(mine, theirs) < 1e-5, f"hidden_states[{layer}]"


def test_pull_from_a_mirror_folder_laid_out_like_the_hub(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    reference = hub_repo(mirror / "microsoft" / "wavlm-base-plus", "WavLMModel", "WavLMConfig", do_normalize=False)
    card = get_registry().get("wavlm-base-plus-hubtest")
    path = weights.pull(card, mirror=mirror, offline=True, quiet=True)
    meta = json.loads((path.parent / "meta.json").read_text())
    assert meta["revision"] == COMMIT and set(meta["repo_files"]) == {"config.json", "preprocessor_config.json"}
    same_as_transformers(card.id, reference, mirror=mirror, offline=True)


def test_a_repo_of_another_frontend_is_refused_naming_the_key(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    hub_repo(mirror / "microsoft" / "wavlm-base-plus", "WavLMModel", "WavLMConfig", do_normalize=True)  # the card says false
    with pytest.raises(embedzoo.errors.WeightsError, match="do_normalize"):
        weights.pull(get_registry().get("wavlm-base-plus-hubtest"), mirror=mirror, offline=True, quiet=True)


def blob_cache(root: Path, repo: str, commit: str, files: Path) -> Path:
    """huggingface_hub's cache layout: blobs/<sha256>, snapshots/<commit>/<file> -> blob, refs/main."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    for file in files.iterdir():
        data = file.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo_dir / "snapshots" / commit / file.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return repo_dir


def test_pull_from_the_users_own_hf_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = hub_repo(tmp_path / "repo", "WavLMModel", "WavLMConfig", do_normalize=False)
    repo_dir = blob_cache(tmp_path / "users-hf-cache", "microsoft/wavlm-base-plus", COMMIT, tmp_path / "repo")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "users-hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = weights.pull(get_registry().get("wavlm-base-plus-hubtest"), quiet=True)
    meta = json.loads((path.parent / "meta.json").read_text())
    assert Path(meta["original_path"]).parent == repo_dir / "snapshots" / COMMIT  # used where it is, not copied
    assert not (tmp_path / "embedzoo-cache" / "hf").exists()
    same_as_transformers("wavlm-base-plus-hubtest", reference)


class FakeHub:
    """The hub's resolve endpoint for one repo: /<org>/<name>/resolve/<revision>/<file>; a branch
    answers with its head commit, a commit with itself."""

    def __init__(self, repo: str, files: Path) -> None:
        contents = {f.name: f.read_bytes() for f in files.iterdir()}
        self.asked: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, body: bool) -> None:
                hub.asked.append(self.path)
                match = re.fullmatch(rf"/{re.escape(repo)}/resolve/([^/]+)/(.+)", self.path)
                data = contents.get(match[2]) if match else None
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", match[1] if re.fullmatch(r"[0-9a-f]{40}", match[1]) else HEAD)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._answer(False)

            def do_GET(self) -> None:
                self._answer(True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_pull_of_a_branch_card_through_a_hub_endpoint_is_held_to_its_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = hub_repo(tmp_path / "repo", "Wav2Vec2Model", "Wav2Vec2Config", do_normalize=True, seed=2)
    hub = FakeHub("facebook/wav2vec2-base", tmp_path / "repo")
    try:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        card = get_registry().get("wav2vec2-base-hubtest")
        assert not card.pinned
        path = weights.pull(card, quiet=True)
        meta = json.loads((path.parent / "meta.json").read_text())
        assert meta["revision"] == HEAD and weights.recorded_pin(card.sources[0]) == HEAD
        assert any("/resolve/main/model.safetensors" in p for p in hub.asked)
        assert any(f"/resolve/{HEAD}/config.json" in p for p in hub.asked)  # repo files at the commit the weights came from
        same_as_transformers(card.id, reference)
    finally:
        hub.server.shutdown()
        hub.server.server_close()
