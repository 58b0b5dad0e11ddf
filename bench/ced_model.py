"""Benchmark: embedzoo's CED against the pipeline a user can run from PyPI -- `dasheng`'s
encoder configured as CED (patch 16 x 16, CED's target_length, width, depth, heads) plus CED's
head -- same weights, same clips, one run. (There is no CED package on PyPI; the authors' own code
is not packaged.)

Random weights (the card's architecture, saved in the authors' Zenodo layout and loaded with
`embedzoo.load(id, weights=file)`), so nothing is downloaded; random clips at 16 kHz. Three jobs:
- `scene`: the mean of the final norm over each clip (clips up to one chunk, 10.11 s). Reference:
  per clip and batched (`--batch` clips per call; torchaudio's AmplitudeToDB floors a batch at the
  batch's maximum, so batched numbers may differ where top_db bites); embedzoo: the defaults,
  `model.embed(clips, timestamp=False)`. Agreement printed;
- `timestamps`: the same embedding of 480 ms windows every `--hop-ms` (the family's recipe at a
  coarser hop). Reference: the same windows (the clip zero-padded by half a window at both ends),
  `--batch` per call; embedzoo: the defaults with hop_ms and `--batch` windows a forward; then
  embedzoo as a user runs it (windows per forward from the card's batch_seconds: 133 for 480 ms)
  against the reference at `--batch` and at that same count (the gain is the batching: at equal
  batches both run the same timm blocks);
- `frames`: the last block's patch columns (one frame per 160 ms). Reference: the blocks' output of
  each clip, each column the mean over its frequency patches, batched; embedzoo: preset `frames`
  (frame mode, chunks of one CED chunk); only the frame counts are compared.

    python bench/ced_model.py [--model ced-mini] [--clips 4] [--seconds 10] [--batch 4] [--hop-ms 250] [--threads N] [--device cuda] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from dasheng.pretrained.pretrained import Dasheng

import embedzoo
from embedzoo.registry import get_card
from harness import clock, describe, load, ratio_table, rel, use_device

SR = 16000
BASE = {"mlp_ratio": 4.0, "target_length": 1012, "outputdim": 527}


class Reference(torch.nn.Module):
    """dasheng's encoder as CED, and CED's head (LayerNorm + Linear on the mean over patches)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.encoder = Dasheng(patch_size=(16, 16), patch_stride=(16, 16), target_length=cfg["target_length"], embed_dim=cfg["embed_dim"],
                               depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"], qkv_bias=True)  # fmt: skip
        self.outputlayer = torch.nn.Sequential(torch.nn.LayerNorm(cfg["embed_dim"]), torch.nn.Linear(cfg["embed_dim"], cfg["outputdim"]))


def reference(card_config: dict, device: torch.device) -> Reference:
    torch.manual_seed(0)
    model = Reference({**BASE, "depth": 12, **card_config})
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0, 1 / math.sqrt(p[0].numel()))
    return model.to(device).eval()


def checkpoint(model: Reference) -> dict:
    """The reference's weights in the authors' Zenodo layout ({'model': encoder + outputlayer})."""
    state = {k: v.cpu() for k, v in model.encoder.state_dict().items()}
    state.update({f"outputlayer.{k}": v.cpu() for k, v in model.outputlayer.state_dict().items()})
    return {"model": state}


def windows_of(clip: np.ndarray, window: int, hop: int) -> list[np.ndarray]:
    padded = np.pad(clip, (window // 2, window // 2))
    return [padded[k * hop : k * hop + window] for k in range((len(padded) - window) // hop + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ced-mini")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--hop-ms", type=float, default=250.0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = use_device(args.device)

    card = get_card(args.model)
    model = reference(dict(card.config), device)
    knobs = {"device": args.device, "batch_size": args.batch, "dtype": args.dtype}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audiotransformer.pt"
        torch.save(checkpoint(model), path)
        ours = embedzoo.load(card.id, weights=path, hop_ms=args.hop_ms, **knobs)
        # the same, batched as a user gets it: windows per forward from the card's batch_seconds
        ours_default = embedzoo.load(card.id, weights=path, hop_ms=args.hop_ms, device=args.device, dtype=args.dtype)
        frames_model = embedzoo.load(card.id, weights=path, preset="frames", hop_ms=card.samples_to_ms(card.frame_hop), **knobs)

    rng = np.random.default_rng(1)
    seconds = min(args.seconds, card.max_window / SR)
    clips = [(0.3 * rng.standard_normal(int(seconds * SR))).astype(np.float32) for _ in range(args.clips)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    blocks = model.encoder.blocks
    bands = model.encoder.patch_embed.grid_size[0]

    @torch.inference_mode()
    def ref_forward(batch: list[np.ndarray]) -> torch.Tensor:
        with autocast:
            return model.encoder(torch.from_numpy(np.stack(batch)).to(device))

    def ref_pooled(inputs: list[np.ndarray], batch_size: int) -> torch.Tensor:
        return torch.cat([ref_forward(inputs[i : i + batch_size]).mean(1).float().cpu() for i in range(0, len(inputs), batch_size)])

    def ref_timestamps(batch_size: int) -> list[torch.Tensor]:
        hop = card.ms_to_samples(args.hop_ms)
        return [ref_pooled(windows_of(clip, 480 * SR // 1000, hop), batch_size) for clip in clips]

    per_forward = int(ours_default.knobs.batch_seconds * 1000 // ours_default.knobs.window_ms)  # embedzoo's windows per forward

    def ref_frames() -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        hook = blocks[-1].register_forward_hook(lambda module, inputs, output: out.extend(output.unflatten(1, (bands, -1)).mean(1).float().cpu()))
        try:
            for start in range(0, len(clips), args.batch):
                ref_forward(clips[start : start + args.batch])
        finally:
            hook.remove()
        return out

    ref_forward(clips[:1])  # warm-up, both sides
    ours.embed(clips[:1], SR, timestamp=False)
    frames_model.embed(clips[:1], SR, scene=False)

    with clock() as t_ref_clip:
        r_clip = ref_pooled(clips, 1)
    with clock() as t_ref_batch:
        r_batch = ref_pooled(clips, args.batch)
    with clock() as t_ours_scene:
        o_scene = torch.stack([r.scene for r in ours.embed(clips, SR, timestamp=False)])
    with clock() as t_ref_ts:
        r_ts = ref_timestamps(args.batch)
    with clock() as t_ours_ts:
        o_ts = [r.timestamp for r in ours.embed(clips, SR, scene=False)]
    ours_default.embed(clips[:1], SR, scene=False)
    with clock() as t_ref_ts_wide:
        ref_timestamps(per_forward)
    with clock() as t_ours_ts_default:
        o_ts_default = [r.timestamp for r in ours_default.embed(clips, SR, scene=False)]
    with clock() as t_ref_frames:
        r_frames = ref_frames()
    with clock() as t_ours_frames:
        o_frames = [r.timestamp for r in frames_model.embed(clips, SR, scene=False)]

    print(f"{card.id}, random weights: dasheng's encoder as CED vs embedzoo; {args.clips} clips x {seconds:g} s at 16 kHz; "
          f"{args.dtype}; {describe(torch.get_num_threads())}; {load()}")
    print(f"scene agreement: per clip {rel(o_scene, r_clip):.1e}, batched {rel(o_scene, r_batch):.1e}")
    print(f"timestamp agreement (480 ms windows every {args.hop_ms:g} ms, {len(r_ts[0])} per clip): "
          f"{max(rel(o, r) for o, r in zip(o_ts, r_ts)):.1e} (batched, torchaudio floors every window at the batch's peak - 120 dB; "
          "embedzoo floors each window at its own, the reference's numbers for one window: --batch 1 agrees to 1e-7); "
          f"embedzoo's own batching ({per_forward} windows a forward) equals its --batch run to {max(rel(o, r) for o, r in zip(o_ts_default, o_ts)):.1e}")
    print(f"frames per clip: reference {[len(f) for f in r_frames][:4]}, embedzoo frame mode {[len(f) for f in o_frames][:4]} "
          "(reference: the clip's whole columns; frame mode at the column hop: 1 + samples // hop)")
    ratio_table([
        ("scene, reference per clip", t_ref_clip, t_ours_scene),
        (f"scene, reference batched ({args.batch})", t_ref_batch, t_ours_scene),
        (f"timestamps, reference batched ({args.batch})", t_ref_ts, t_ours_ts),
        (f"timestamps, embedzoo's batching vs ref ({args.batch})", t_ref_ts, t_ours_ts_default),
        (f"timestamps, both {per_forward} windows a call", t_ref_ts_wide, t_ours_ts_default),
        (f"frames, reference batched ({args.batch})", t_ref_frames, t_ours_frames),
    ], theirs="dasheng")


if __name__ == "__main__":
    main()
