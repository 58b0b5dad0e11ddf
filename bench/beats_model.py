"""Benchmark: embedzoo's BEATs against the reference package's own inference path (openbeats'
BeatsEncoder, the ESPnet port of Microsoft's BEATs: waveform in, its fbank one clip at a time,
its attention with the relative bias added to explicit scores), same weights, same clips, one run.

Random weights (the card's architecture, saved as Microsoft's `{'cfg', 'model'}` pickle and loaded
with `embedzoo.load(id, weights=FILE)`), so nothing is downloaded; random clips at 16 kHz. Jobs:
- `scene`: the mean of the last block over each clip (clips up to 10 s, one forward each).
  Reference: per clip, and batched (`--batch` clips per call, equal lengths); embedzoo: window mode
  with a 10 s window, `model.embed(clips, timestamp=False)`. Agreement printed;
- `frames`: the family default (frame mode, block12, one frame per 160 ms patch column; 10 s chunks,
  the clip padded by half a column's field in front): timings and frame counts only (the reference
  has no frame-mode padding).

    python bench/beats_model.py [--model beats] [--clips 4] [--seconds 10] [--batch 4] [--threads N]
                                [--device cuda] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from openbeats.beats_encoder import BeatsEncoder

import embedzoo
from embedzoo.registry import get_card
from harness import clock, describe, load, ratio_table, rel, use_device

SR = 16000


def reference(card_config: dict, device: torch.device) -> tuple[BeatsEncoder, dict]:
    """openbeats' encoder for the card's config with random weights at unit gain, and the
    checkpoint (Microsoft's layout: layer 0's position table only, no padding convs)."""
    from embedzoo_beats.geometry import ARCH_KEYS, settings

    cfg = settings(card_config)
    beats_cfg = {**{k: cfg[k] for k in ARCH_KEYS}, "dropout": 0.0, "attention_dropout": 0.0, "dropout_input": 0.0}
    torch.manual_seed(0)
    model = BeatsEncoder(input_size=0, beats_config=beats_cfg, is_pretraining=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1 and "_pad" not in name:
                p.normal_(0, 1 / math.sqrt(p[0].numel()))
    state = {k: v for k, v in model.state_dict().items()
             if "_pad" not in k and not (".relative_attention_bias." in k and not k.startswith("encoder.layers.0."))}  # fmt: skip
    if cfg["finetuned_model"]:
        state["predictor.weight"] = torch.randn(cfg["predictor_class"], cfg["encoder_embed_dim"]) / cfg["encoder_embed_dim"] ** 0.5
        state["predictor.bias"] = torch.zeros(cfg["predictor_class"])
    return model.to(device).eval(), {"cfg": beats_cfg, "model": state}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="beats")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=4, help="clips per reference call (batched reference) and embedzoo's batch_size")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = use_device(args.device)

    card = get_card(args.model)
    model, checkpoint = reference(dict(card.config), device)
    knobs = {"device": args.device, "batch_size": args.batch, "dtype": args.dtype}
    seconds = min(args.seconds, card.max_window / SR)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(checkpoint, path)
        window = {"mode": "window", "window_ms": seconds * 1000, "scene_window_ms": seconds * 1000}
        ours = embedzoo.load(card.id, weights=str(path), layers=["block12"], **window, **knobs)
        frames_model = embedzoo.load(card.id, weights=str(path), **knobs)

    rng = np.random.default_rng(1)
    clips = [(0.3 * rng.standard_normal(int(seconds * SR))).astype(np.float32) for _ in range(args.clips)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    @torch.inference_mode()
    def ref_scene(batch_size: int) -> torch.Tensor:
        out = []
        for start in range(0, len(clips), batch_size):
            wav = torch.from_numpy(np.stack(clips[start : start + batch_size])).to(device)
            with autocast:
                hidden, _, _ = model(wav, torch.full((wav.shape[0],), wav.shape[1], device=device))
            out.append(hidden.float().mean(dim=1).cpu())
        return torch.cat(out)

    ref_scene(1)  # warm-up, both sides
    ours.embed(clips[:1], SR, timestamp=False)
    frames_model.embed(clips[:1], SR)

    with clock() as t_ref_clip:
        r_clip = ref_scene(1)
    with clock() as t_ref_batch:
        r_batch = ref_scene(args.batch)
    with clock() as t_ours_scene:
        o_scene = torch.stack([r.scene for r in ours.embed(clips, SR, timestamp=False)])
    with clock() as t_ours_frames:
        o_frames = [r.timestamp for r in frames_model.embed(clips, SR, scene=False)]

    print(f"{card.id}, random weights: openbeats BeatsEncoder vs embedzoo; {args.clips} clips x {seconds:g} s at 16 kHz; "
          f"{args.dtype}; {describe(torch.get_num_threads())}; {load()}")
    print(f"scene agreement (mean of block12): per clip {rel(o_scene, r_clip):.1e}, batched {rel(o_scene, r_batch):.1e}")
    print(f"frames per clip (frame mode, 160 ms): {[len(f) for f in o_frames][:4]}")
    ratio_table([
        ("scene, reference per clip", t_ref_clip, t_ours_scene),
        (f"scene, reference batched ({args.batch})", t_ref_batch, t_ours_scene),
        ("frames (embedzoo) vs reference batched scene", t_ref_batch, t_ours_frames),
    ], theirs="openbeats")


if __name__ == "__main__":
    main()
