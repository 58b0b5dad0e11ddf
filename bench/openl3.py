"""Benchmark: embedzoo's OpenL3 against `torchopenl3.get_audio_embedding`, same files, same weights.

No machine here can download the released weights, so both sides use one random-weight model:
torchopenl3's `PytorchOpenl3` saved as its `.pth.tar`, converted by embedzoo (timing does not depend
on the values). Generated 48 kHz files (noise + chirps). The reference reads each file with
soundfile and calls `torchopenl3.get_audio_embedding` (center=True, hop 0.1 s, batch 32, as its
defaults); embedzoo embeds the same decoded clips with `model.embed(..., scene=False)` at hop 100 ms,
in each memory format (contiguous / channels_last: the strided path's, so on the CPU in float32,
where the conv blocks run on oneDNN tensors, they are the same run) and batch size asked for. Both are float32 on
the CPU by default. Runs are interleaved and repeated; the best wall and CPU (process) times are
printed and the CPU times compared: the development machine is shared, and process time is what
other engineers' jobs disturb least. embedzoo follows HEAR's timestamp count (centres up to the clip's end), which is
5 windows per file more than torchopenl3's at 0.1 s; windows/s is printed next to the totals.

    python bench/openl3.py [--model openl3-mel256-music-6144] [--files 3] [--seconds 3]
                           [--batch-sizes 8,32] [--formats contiguous,channels_last] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SR = 48000


def make_files(folder: Path, count: int, seconds: float) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        t = np.arange(int(seconds * SR)) / SR
        f0 = 100 * 2 ** (rng.integers(0, 48) / 12)
        x = 0.3 * np.sin(2 * np.pi * f0 * (1 + 0.5 * t) * t) + 0.05 * rng.standard_normal(len(t))
        path = folder / f"clip{i:03d}.wav"
        sf.write(path, x.astype(np.float32), SR)
        paths.append(path)
    return paths


def reference_and_weights(card, device: str, folder: Path) -> tuple[torch.nn.Module, Path]:
    """torchopenl3's random-weight `PytorchOpenl3` for the card, and those weights saved as its
    `.pth.tar` and converted by embedzoo (a safetensors file `embedzoo.load(weights=...)` takes)."""
    from safetensors.torch import save_file
    from torchopenl3.models import PytorchOpenl3

    from embedzoo.weights import convert_checkpoint

    config = card.config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = PytorchOpenl3(config["content_type"], config["input_repr"], config["embedding_size"]).eval().to(device)
    original = folder / Path(card.sources[0].url).name
    torch.save(ref.state_dict(), original)
    weights = folder / f"{card.id}.safetensors"
    save_file(convert_checkpoint(card, original), str(weights))
    return ref, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="openl3-mel256-music-6144")
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--formats", default="contiguous,channels_last")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torchopenl3
    from safetensors.torch import save_file
    from torchopenl3.models import PytorchOpenl3

    import embedzoo
    from embedzoo.weights import convert_checkpoint
    from embedzoo.registry import get_card

    card = get_card(args.model)
    config = card.config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = PytorchOpenl3(config["content_type"], config["input_repr"], config["embedding_size"]).eval().to(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        original = Path(tmp) / Path(card.sources[0].url).name
        torch.save(ref.state_dict(), original)
        weights = Path(tmp) / f"{card.id}.safetensors"
        save_file(convert_checkpoint(card, original), str(weights))
        paths = make_files(Path(tmp) / "audio", args.files, args.seconds)

        clips = [sf.read(p, dtype="float32")[0] for p in paths]

        def reference() -> int:
            windows = 0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for path in paths:  # as a user would: read, embed, one file at a time
                    audio, rate = sf.read(path, dtype="float32")
                    emb, _ = torchopenl3.get_audio_embedding(audio, rate, model=ref, center=True, hop_size=0.1, batch_size=32, verbose=False)
                    windows += emb.shape[1]
            return windows

        runs = {"torchopenl3": reference}
        for fmt in args.formats.split(","):
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                model = embedzoo.load(card.id, weights=weights, device=args.device, hop_ms=100, batch_size=batch)
                model.memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
                model.embed([clips[0][:SR]], SR, scene=False)  # warm-up

                def ours(model=model) -> int:
                    return sum(r.timestamp.shape[0] for r in model.embed(clips, SR, scene=False))

                runs[f"embedzoo {fmt} batch {batch}"] = ours
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        windows: dict[str, int] = {}
        for _ in range(args.repeats):  # interleaved, so that load from other processes hits all alike
            for name, run in runs.items():
                start, cpu = time.perf_counter(), time.process_time()
                windows[name] = run()
                times[name].append((time.perf_counter() - start, time.process_time() - cpu))

    n = len(paths)
    print(f"{card.id}: {n} files x {args.seconds:g} s at 48 kHz, hop 100 ms, device {args.device}, "
          f"torch threads {torch.get_num_threads()}; best of {args.repeats} interleaved runs, wall and CPU (process) time")
    base = min(cpu for _, cpu in times["torchopenl3"])
    base_rate = windows["torchopenl3"] / base
    for name, values in times.items():
        wall, cpu = min(w for w, _ in values), min(c for _, c in values)
        line = f"{name:36s} wall {wall:6.1f} s  CPU {cpu:6.1f} s  {windows[name]:4d} windows  {windows[name] / cpu:5.2f} windows/CPU-s"
        if name != "torchopenl3":
            line += f"  CPU ratio {base / cpu:.2f}x (per window {windows[name] / cpu / base_rate:.2f}x)"
        print(line)

if __name__ == "__main__":
    main()
