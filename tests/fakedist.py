"""Write installed-looking distributions (dist-info + modules) into a folder, for plugin tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


def make_dist(site: Path, name: str, modules: dict[str, str], entry_points: dict[str, str], version: str = "0.0.1") -> Path:
    """`modules` maps relative file paths to source; `entry_points` maps names to module paths."""
    site.mkdir(parents=True, exist_ok=True)
    for relative, source in modules.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[embedzoo]\n{lines}")
    return site


TOY_PLUGIN = {
    "toyplug/__init__.py": '''
        from embedzoo.plugin import Family, Geometry, LayerSpec, hookimpl

        def geometry(config):
            layers = (LayerSpec("frames", 6, tokens=("sum",)), LayerSpec("energy", 1))
            return Geometry(layers, frame_hop=4, frame_field=8, min_window=8, max_window=400)

        @hookimpl
        def register_families(register):
            register(Family("toyfam", "toyplug.model", geometry))

        @hookimpl
        def register_models(register):
            register({
                "id": "toy-model", "aliases": ["toy"], "family": "toyfam", "plugin": "embedzoo-toyplug",
                "sample_rate": 16000, "defaults": {"layers": ["frames"], "hop_ms": 0.5, "window_ms": 2.0},
                "license": "MIT",
            })
    ''',
    "toyplug/model.py": '''
        import torch
        from embedzoo.extractor import Extractor

        class Toy(Extractor):
            def __init__(self, card):
                super().__init__(card)
                self.proj = torch.nn.Linear(8, 6)

            def forward_layers(self, audio, layers=None):
                frames = audio.unfold(-1, 8, 4)
                out = []
                for name in layers or ["frames", "energy"]:
                    if name == "frames":
                        token = audio.sum(-1, keepdim=True).expand(-1, 6)[:, None]
                        out.append(torch.cat([token, torch.tanh(self.proj(frames))], 1))
                    else:
                        out.append((frames ** 2).mean(-1, keepdim=True))
                return out

        def create_model(card):
            return Toy(card)

        def checkpoint_filter_fn(state_dict, model):
            state_dict = state_dict.get("model", state_dict)
            return {k.removeprefix("net."): v for k, v in state_dict.items()}
    ''',
}

BROKEN_PLUGIN = {"brokenplug/__init__.py": "raise RuntimeError('this plugin is broken on purpose')\n"}
