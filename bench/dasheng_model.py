"""Benchmark: embedzoo's Dasheng against the `dasheng` package's own inference path, in one run.

The same random weights on both sides: the package's `Dasheng` (what `dasheng_base()` builds, before
its download) is saved in the Zenodo layout ({'model', 'config'}) and loaded into embedzoo with
`embedzoo.load("dasheng-base", weights=...)`. The same 10 s clips at 16 kHz go through
- the reference as a user runs it: `model(clip[None])` per clip, and `model(batch)` batched; the
  scene is the mean over its output tokens, the frames its tokens;
- embedzoo: `model.scene_embeddings(batch, 16000)` (the final norm's tokens, mean) and
  `model.timestamp_embeddings(batch, 16000)` (frame mode, one vector per 40 ms token),
public calls end to end after one warm-up each. Prints the agreement, the times (best of --repeat)
and the ratios.

    python bench/dasheng_model.py [--card dasheng-base] [--clips 4] [--seconds 10] [--device cpu|cuda] [--dtype float32|bfloat16] [--repeat 1] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

import torch

from harness import best_time, rel

SR = 16000
SIZES = {"dasheng-base": (768, 12, 12), "dasheng-0.6b": (1280, 32, 16), "dasheng-1.2b": (1536, 40, 24)}


def reference_model(card_id: str) -> tuple[torch.nn.Module, dict]:
    """The package's `Dasheng` of the card's size with random weights, and its checkpoint in the
    Zenodo layout ({'model', 'config'}) that embedzoo loads."""
    from dasheng.pretrained.pretrained import Dasheng

    dim, depth, heads = SIZES[card_id]
    torch.manual_seed(0)
    reference = Dasheng(embed_dim=dim, depth=depth, num_heads=heads).eval()
    return reference, {"model": reference.state_dict(), "config": {"embed_dim": dim, "depth": depth, "num_heads": heads}}


def whole_tokens(samples: int) -> int:
    """A clip length of whole tokens ((n - 1) * 640 + 480 samples) near `samples`: frame mode then
    reads exactly the reference's tokens."""
    tokens = (1 + samples // 160) // 4
    return (tokens - 1) * 640 + 480


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", default="dasheng-base", choices=sorted(SIZES))
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import embedzoo

    dim = SIZES[args.card][0]
    reference, checkpoint = reference_model(args.card)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dasheng.pt"
        torch.save(checkpoint, path)
        ours = embedzoo.load(args.card, weights=str(path), device=args.device, dtype=args.dtype)
    reference = reference.to(args.device)
    audio = 0.3 * torch.randn(args.clips, whole_tokens(int(args.seconds * SR)), generator=torch.Generator().manual_seed(1))
    autocast = (
        torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)
        if args.dtype == "bfloat16"
        else contextlib.nullcontext()
    )

    def ref_per_clip() -> torch.Tensor:
        with torch.inference_mode(), autocast:
            return torch.cat([reference(clip[None].to(args.device)).float() for clip in audio])

    def ref_batched() -> torch.Tensor:
        with torch.inference_mode(), autocast:
            return reference(audio.to(args.device)).float()

    warm = audio[:1, :SR]
    with torch.inference_mode(), autocast:
        reference(warm.to(args.device))
    ours.scene_embeddings(warm, SR)
    ours.timestamp_embeddings(warm, SR)

    load = os.getloadavg()[0]
    t_ref_clip, r_frames = best_time(ref_per_clip, args.device, args.repeat)
    t_ref_batch, _ = best_time(ref_batched, args.device, args.repeat)
    t_scene, o_scene = best_time(lambda: ours.scene_embeddings(audio, SR), args.device, args.repeat)
    t_ts, (o_ts, _) = best_time(lambda: ours.timestamp_embeddings(audio, SR), args.device, args.repeat)
    load_after = os.getloadavg()[0]
    print(f"{args.card}, random weights: dasheng.Dasheng vs embedzoo; {args.clips} clips x {args.seconds:g} s at 16 kHz; "
          f"device {args.device}, {args.dtype}, torch threads {torch.get_num_threads()} of {os.cpu_count()} cores, "
          f"load average {load:.1f} -> {load_after:.1f}")
    r_frames = r_frames.reshape(args.clips, -1, dim)
    print(f"agreement (vs the reference per clip): scene rel. err {rel(o_scene, r_frames.mean(1)):.1e}, "
          f"frames rel. err {rel(o_ts, r_frames):.1e}")
    print(f"{'':34s} {'dasheng':>10s} {'embedzoo':>10s}   ratio")
    rows = [("scene, reference per clip", t_ref_clip, t_scene), ("scene, reference batched", t_ref_batch, t_scene),
            ("frames, reference per clip", t_ref_clip, t_ts), ("frames, reference batched", t_ref_batch, t_ts)]  # fmt: skip
    for name, theirs, mine in rows:
        print(f"{name:34s} {theirs:8.2f} s {mine:8.2f} s   {theirs / mine:.2f}x {'faster' if mine < theirs else 'SLOWER'}")


if __name__ == "__main__":
    main()
