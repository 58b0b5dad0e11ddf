"""Benchmark: every family's clips/s against its reference on one device, its FLOP utilisation, and
the host pipeline's own ceiling -- one table, under 5 minutes on one GPU, unchanged on the CPU.

For each family (`--families`), the same random weights on both sides (the references the other
bench/*.py scripts build: hear21passt, panns_hear, transformers' AST), `--clips` clips of the
family's scene length (10 s) embedded as scene vectors by the reference's public call and by
`model.scene_embeddings`, best of `--repeat` after a warm-up each. FLOPs per clip are counted once
with torch.utils.flop_counter.FlopCounterMode on embedzoo's forward; against them:
- on a GPU, MFU: achieved FLOP/s over the device's dense bf16 peak (`PEAK_BF16`, else a measured
  bf16 matmul rate);
- on the CPU, the roofline: achieved FLOP/s over this CPU's measured float32 matmul rate
  (torch.mm of 2048 x 2048 matrices at the job's torch threads) -- how far each family is from it.
Then the host pipeline, for the first family: decoding `--files` 44.1 kHz stereo wav files to the
model's rate (files/s, with embedzoo's down-mix and with numpy's mean as before issue 15), the
device alone on decoded clips, and end to end from the files (`embed_files`, `--workers`).
`--sweep 64,128,256` times embedzoo at each batch budget (gpu_batch_seconds on a GPU,
batch_seconds on the CPU): the measurement cards' budgets come from.

    python bench/gpu.py [--device auto] [--families passt,panns,ast] [--clips N] [--files N]
                        [--seconds 10] [--repeat N] [--dtype auto] [--workers N] [--threads N] [--sweep A,B]

Defaults: on a GPU 64 clips, 256 files, 3 repeats, bfloat16 (`--dtype auto`); on the CPU 2 clips,
4 files, 1 repeat, float32.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scripts' references
from harness import best_time, rel  # noqa: E402

# dense bf16 tensor-core peaks, FLOP/s (NVIDIA's datasheets; the SXM parts unless the name says PCIe)
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "A100": 312e12}


@dataclass
class Pair:
    """One family's two sides on one device: scene embeddings of a (clips, samples) batch."""

    family: str
    card: str
    rate: int
    ours: torch.nn.Module
    reference: Callable[[torch.Tensor], torch.Tensor]


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()


def passt_pair(device: torch.device, dtype: str, tmp: Path) -> Pair:
    import embedzoo
    import passt
    from hear21passt import base

    warnings.filterwarnings("ignore", message="Input image size")
    reference = passt.reference_model(str(device))
    checkpoint = tmp / "passt-s-f128-p16-s10-ap.476-swa.pt"
    torch.save({k: v.cpu() for k, v in reference.net.state_dict().items()}, checkpoint)
    ours = embedzoo.load(passt.CARD, weights=checkpoint, device=str(device), preset="base", dtype=dtype)

    def scene(audio: torch.Tensor) -> torch.Tensor:
        with _autocast(device, dtype), contextlib.redirect_stdout(io.StringIO()):  # it prints shapes
            return base.get_scene_embeddings(audio.to(device), reference)

    return Pair("passt", passt.CARD, passt.SR, ours, scene)


def panns_pair(device: torch.device, dtype: str, tmp: Path) -> Pair:
    import harness
    import panns
    from panns_hear import get_scene_embeddings

    from embedzoo.registry import get_card

    card = "panns-cnn14-16k"
    harness.use_device(str(device))
    reference = panns.reference_network(card)
    release = {"model": {k: v.clone() for k, v in reference.state_dict().items()}}
    channels_last, _ = harness.shipped_setting(get_card(card), True)
    ours = panns.build_ours(card, release, channels_last).configure(dtype=dtype).eval()
    reference.to(device)

    def scene(audio: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), _autocast(device, dtype):
            return get_scene_embeddings(audio.to(device), reference)

    return Pair("panns", card, get_card(card).sample_rate, ours, scene)


def ast_pair(device: torch.device, dtype: str, tmp: Path) -> Pair:
    import ast_model
    import embedzoo
    from embedzoo.registry import get_card

    card = get_card("ast-audioset-10-10-0.4593")
    extractor, model = ast_model.reference(dict(card.config), device)
    model.save_pretrained(tmp / "ast")
    extractor.save_pretrained(tmp / "ast")
    ours = embedzoo.load(card.id, weights=tmp / "ast", device=str(device), dtype=dtype)

    @torch.inference_mode()
    def scene(audio: torch.Tensor) -> torch.Tensor:
        inputs = extractor(list(audio.numpy()), sampling_rate=ast_model.SR, return_tensors="pt").input_values.to(device)
        with _autocast(device, dtype):
            return model.audio_spectrogram_transformer(inputs).pooler_output

    return Pair("ast", card.id, ast_model.SR, ours, scene)


PAIRS = {"passt": passt_pair, "panns": panns_pair, "ast": ast_pair}


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, repeat: int = 3) -> float:
    """FLOP/s of torch.mm on n x n matrices (best of `repeat`), at this process's torch threads."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    torch.mm(a, b)
    seconds, _ = best_time(lambda: torch.mm(a, b), str(device), repeat)
    return 2.0 * n**3 / seconds


def device_peak(device: torch.device) -> tuple[float, str]:
    """The peak the table divides by, and where it comes from."""
    if device.type != "cuda":
        return matmul_rate(device, torch.float32, 2048), f"measured fp32 torch.mm, {torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():
        if key in name:
            return peak, f"{key} dense bf16 datasheet"
    return matmul_rate(device, torch.bfloat16, 8192), "measured bf16 torch.mm"


def _mkldnn_conv_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """The FLOPs of oneDNN's convolution, which CPU plugins (PANNs) call directly and torch's
    counter does not know: those of the convolution it is."""
    return conv_flop_count(list(x_shape), list(w_shape), list(out_shape), transposed=False)


def flops_per_clip(pair: Pair, clip: torch.Tensor) -> float:
    """FLOPs of embedzoo's scene embedding of one clip (matmuls, convolutions, attention)."""
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.mkldnn_convolution: _mkldnn_conv_flops})
    with counter:
        pair.ours.scene_embeddings(clip[None], pair.rate)
    return float(counter.get_total_flops())


def stereo_files(folder: Path, count: int, seconds: float, rate: int = 44100) -> list[Path]:
    """`count` 16-bit stereo wav files: a tone per channel in a little noise."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    paths = []
    for i in range(count):
        left, right = (0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(len(t)) for f in (200 + 50 * i, 330 + 40 * i))
        paths.append(folder / f"clip{i:03d}.wav")
        sf.write(paths[-1], np.stack([left, right], axis=1).astype(np.float32), rate, subtype="PCM_16")
    return paths


def decode_rate(paths: list[Path], rate: int, plain_mean: bool = False) -> float:
    """Files/s of `stream_audio` to `rate`; with `plain_mean`, numpy's mean as the down-mix (before issue 15)."""
    from embedzoo import audio

    fast = audio.to_mono
    if plain_mean:
        audio.to_mono = lambda x: x if x.ndim == 1 else x.mean(axis=1, dtype=np.float32)
    try:
        start = time.perf_counter()
        for path in paths:
            for _ in audio.stream_audio(path, rate):
                pass
        return len(paths) / (time.perf_counter() - start)
    finally:
        audio.to_mono = fast


def end_to_end(pair: Pair, paths: list[Path], out: Path, workers: int) -> float:
    """Files/s of `embed_files` (decode workers, Session, writing npy) from the files."""
    from embedzoo.inputs import collect_inputs
    from embedzoo.pipeline import embed_files

    files = collect_inputs([paths[0].parent])
    seconds, _ = best_time(lambda: embed_files(pair.ours, files, out, scene=True, timestamp=False, workers=workers, overwrite=True), "cpu", 1)
    return len(files) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1")
    parser.add_argument("--families", default=",".join(PAIRS), help=f"comma-separated, of: {', '.join(PAIRS)}")
    parser.add_argument("--clips", type=int, default=None, help="clips per timed call (GPU 64, CPU 2)")
    parser.add_argument("--files", type=int, default=None, help="files of the host-pipeline rows (GPU 256, CPU 4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip and file length")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls per measurement, best counts (GPU 3, CPU 1)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="auto: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--workers", type=int, default=None, help="decode workers end to end (GPU: CPU cores - 1, CPU: 0)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--sweep", default="", help="batch budgets (s) to time embedzoo at, comma-separated")
    args = parser.parse_args()
    from embedzoo.extractor import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    gpu = device.type == "cuda"
    clips = args.clips or (64 if gpu else 2)
    files = args.files or (256 if gpu else 4)
    repeat = args.repeat or (3 if gpu else 1)
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if gpu else "float32")
    workers = args.workers if args.workers is not None else (max(1, (os.cpu_count() or 2) - 1) if gpu else 0)
    families = [name.strip() for name in args.families.split(",") if name.strip()]
    unknown = [name for name in families if name not in PAIRS]
    if unknown:
        raise SystemExit(f"--families: unknown {unknown}; choose from {', '.join(PAIRS)}")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    with contextlib.suppress(ImportError):  # save_pretrained's progress bars
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

    peak, source = device_peak(device)
    where = torch.cuda.get_device_name(device) if gpu else f"CPU ({os.cpu_count()} cores)"
    load_before = os.getloadavg()[0]
    print(f"device {device}: {where}; {dtype}; torch threads {torch.get_num_threads()}; {clips} clips x {args.seconds:g} s; "
          f"peak {peak / 1e12:.3g} TFLOP/s ({source}); load average {load_before:.1f}")
    print()
    header = ("family", "card", "reference clips/s", "embedzoo clips/s", "ratio", "rel. err", "GFLOP/clip", "TFLOP/s", "% of peak")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    first: Pair | None = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in families:
            pair = PAIRS[name](device, dtype, tmp)
            first = first or pair
            audio = 0.3 * torch.randn(clips, int(args.seconds * pair.rate), generator=torch.Generator().manual_seed(1))
            pair.reference(audio[:1])  # warm-up: first calls allocate, and cuDNN picks its kernels
            pair.ours.scene_embeddings(audio[:1], pair.rate)
            t_ref, theirs = best_time(lambda: pair.reference(audio), str(device), repeat)
            t_ours, mine = best_time(lambda: pair.ours.scene_embeddings(audio, pair.rate), str(device), repeat)
            error = rel(mine, theirs) if tuple(mine.shape) == tuple(theirs.shape) else float("nan")
            flops = flops_per_clip(pair, audio[0])
            achieved = flops * clips / t_ours
            print(f"| {name} | {pair.card} | {clips / t_ref:.3g} | {clips / t_ours:.3g} | {t_ref / t_ours:.2f}x | {error:.1e} "
                  f"| {flops / 1e9:.3g} | {achieved / 1e12:.3g} | {100 * achieved / peak:.2g} |")
            for budget in [float(v) for v in args.sweep.split(",") if v.strip()]:
                knob = "gpu_batch_seconds" if gpu else "batch_seconds"
                swept = pair.ours.with_knobs({knob: budget})
                t_swept, _ = best_time(lambda: swept.scene_embeddings(audio, pair.rate), str(device), repeat)
                print(f"|   {knob}={budget:g} | | | {clips / t_swept:.3g} | | | | | |")
        assert first is not None
        paths = stereo_files(tmp / "files", files, args.seconds)
        decoded = decode_rate(paths, first.rate)
        before = decode_rate(paths, first.rate, plain_mean=True)
        clip_audio = 0.3 * torch.randn(clips, int(args.seconds * first.rate), generator=torch.Generator().manual_seed(2))
        t_device, _ = best_time(lambda: first.ours.scene_embeddings(clip_audio, first.rate), str(device), repeat)
        e2e = end_to_end(first, paths, tmp / "out", workers)
    print()
    print(f"host pipeline ({first.family}, {files} stereo 44.1 kHz wav files of {args.seconds:g} s, {workers} decode workers):")
    print("| stage | files/s |")
    print("|---|---|")
    print(f"| decode + resample (embedzoo's down-mix) | {decoded:.3g} |")
    print(f"| decode + resample (numpy's mean down-mix) | {before:.3g} |")
    print(f"| device only (decoded clips) | {clips / t_device:.3g} |")
    print(f"| end to end from files | {e2e:.3g} |")
    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
