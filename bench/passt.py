"""Benchmark: embedzoo's PaSST against hear21passt's `base` module, measured in one run.

The same random PaSST-S weights on both sides: hear21passt's own network (built by
`hear21passt.base.load_model` without its download) is saved in the released checkpoint layout and
loaded into embedzoo with `embedzoo.load("passt-s-ap476", weights=..., preset="base")`. The same
batch of 10 s clips at 32 kHz goes through
- scene embeddings: `hear21passt.base.get_scene_embeddings` / `model.scene_embeddings`,
- timestamp embeddings (160 ms windows every 50 ms, 201 per clip):
  `hear21passt.base.get_timestamp_embeddings` / `model.timestamp_embeddings`,
public calls end to end, after one warm-up call each. Prints the agreement of the outputs, both
times (best of --repeat) and the ratios.

    python bench/passt.py [--clips 4] [--device cpu|cuda] [--dtype float32|bfloat16] [--repeat 1] [--threads N]

`--dtype bfloat16` runs both sides under torch.autocast (meant for GPUs; embedzoo's `dtype` knob,
and an autocast block around the reference calls).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import tempfile
import warnings
from pathlib import Path

import torch

from harness import best_time, rel

SR = 32000
CARD = "passt-s-ap476"


def reference_model(device: str):
    """hear21passt.base.load_model(), with a randomly initialised network instead of the download."""
    from hear21passt import base
    from hear21passt.models import passt

    original = base.get_model_passt
    base.get_model_passt = functools.partial(passt.get_model, pretrained=False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the whole network
            model = base.load_model(mode="all")
    finally:
        base.get_model_passt = original
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the reference zero-initialises its heads: make every output informative
        for p in model.net.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=generator))
    return model.to(device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=4, help="10 s clips in the batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeat", type=int, default=1, help="timed calls per measurement (the best counts)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    # the reference warns on every window shorter than 10 s, and about its deprecated stft call
    warnings.filterwarnings("ignore", message="Input image size")
    warnings.filterwarnings("ignore", category=UserWarning, module="torch.functional")
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.threads:
        torch.set_num_threads(args.threads)

    import embedzoo
    from hear21passt import base

    reference = reference_model(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "passt-s-f128-p16-s10-ap.476-swa.pt"
        torch.save({k: v.cpu() for k, v in reference.net.state_dict().items()}, checkpoint)
        ours = embedzoo.load(CARD, weights=checkpoint, device=args.device, preset="base", dtype=args.dtype)

    audio = 0.3 * torch.randn(args.clips, 10 * SR, generator=torch.Generator().manual_seed(1))
    autocast = (
        torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)
        if args.dtype == "bfloat16"
        else contextlib.nullcontext()
    )

    def ref_scene() -> torch.Tensor:
        with autocast:
            return base.get_scene_embeddings(audio.to(args.device), reference)

    def ref_timestamps() -> tuple[torch.Tensor, torch.Tensor]:
        with autocast:
            return base.get_timestamp_embeddings(audio, reference)

    warm = audio[:1, : SR]
    with contextlib.redirect_stdout(io.StringIO()), autocast:  # the reference's first forward prints shapes
        base.get_scene_embeddings(warm.to(args.device), reference)
        base.get_timestamp_embeddings(warm, reference)
    ours.scene_embeddings(warm, SR)
    ours.timestamp_embeddings(warm, SR)

    load = os.getloadavg()[0]
    t_ref_scene, r_scene = best_time(ref_scene, args.device, args.repeat)
    t_our_scene, o_scene = best_time(lambda: ours.scene_embeddings(audio, SR), args.device, args.repeat)
    t_ref_ts, (r_ts, r_times) = best_time(ref_timestamps, args.device, args.repeat)
    t_our_ts, (o_ts, o_times) = best_time(lambda: ours.timestamp_embeddings(audio, SR), args.device, args.repeat)
    load_after = os.getloadavg()[0]

    print(f"PaSST-S base, random weights: hear21passt.base vs embedzoo {CARD} (preset base); {args.clips} clips x 10 s "
          f"at 32 kHz; device {args.device}, {args.dtype}, torch threads {torch.get_num_threads()} of {os.cpu_count()} "
          f"cores, load average {load:.1f} -> {load_after:.1f}")
    print(f"agreement: scene rel. err {rel(o_scene, r_scene):.1e}, timestamps rel. err {rel(o_ts, r_ts):.1e}, "
          f"times equal: {bool(torch.allclose(o_times.double().cpu(), r_times.double().cpu()))}")
    print(f"{'':22s} {'hear21passt':>12s} {'embedzoo':>10s}   ratio")
    for name, theirs, mine in [("scene embeddings", t_ref_scene, t_our_scene), ("timestamp embeddings", t_ref_ts, t_our_ts)]:
        print(f"{name:22s} {theirs:10.2f} s {mine:8.2f} s   {theirs / mine:.2f}x {'faster' if mine < theirs else 'SLOWER'}")


if __name__ == "__main__":
    main()
