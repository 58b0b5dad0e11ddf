"""Benchmark: embedzoo's EfficientAT against the reference network (ssondo's copy of EfficientAT's
`models/mn`) + hear21passt's AugmentMelSTFT looping over files, same weights, same inputs, one run.

Random weights (EfficientAT's release format, converted by the plugin) so nothing is downloaded;
generated 10 s files at 32 kHz (no resampling on either side). Two jobs:
- `scene`: the pooled `features` of each whole file. Reference: per file, soundfile -> mel -> net.
  embedzoo: the pipeline (`embed_files`, scene only, npy outputs written, 0 decoding workers);
- `hear`: timestamp embeddings of the authors' HEAR recipe ([logits, features] of 160 ms windows
  every 50 ms, reflect padding). Reference: the authors' MNHearWrapper loop, file by file (unfold
  the padded file, one forward per window position: batches of one, as the wrapper batches only
  over the sounds it is given); embedzoo: preset `hear`, windows of all files packed in batches.
Both jobs check that the two sides agree (relative error) before timing counts.

Then a sweep of embedzoo's settings on the `hear` job: channels_last (model setting) x
batch_seconds (knob); the fastest is what the plugin ships (see bench/RESULTS.md).

    python bench/efficientat.py [--model efficientat-mn10-as] [--files 16] [--hear-files 4] [--sweep-files 2 (0: no sweep)] [--repeat 3] [--threads 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from hear21passt.models.preprocess import AugmentMelSTFT
from ssondo.models.MobileNetV3.model import get_model as ssondo_mn

from embedzoo.inputs import collect_inputs
from embedzoo.pipeline import embed_files
from embedzoo.registry import get_card
from embedzoo_efficientat.model import checkpoint_filter_fn, create_model
import harness
from harness import clock, describe, make_files, rel, sweep_settings, use_device, wall

RATE = 32000


def reference_network(width: float) -> torch.nn.Module:
    """ssondo's EfficientAT MobileNetV3 with random weights and BatchNorm statistics."""
    torch.manual_seed(0)
    net = ssondo_mn(width_mult=width, classification_head=True)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
            elif isinstance(m, torch.nn.Linear):
                m.weight.normal_(0, 1 / math.sqrt(m.in_features))
    return net.eval()


def reference_frontend() -> torch.nn.Module:
    """hear21passt's AugmentMelSTFT with EfficientAT's settings (eval: no augmentation)."""
    return AugmentMelSTFT(n_mels=128, sr=RATE, win_length=800, hopsize=320, n_fft=1024, fmin_aug_range=10, fmax_aug_range=2000).eval()


def release_format(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """ssondo's head keys classifier.0/3 are EfficientAT's classifier.2/5."""
    return {k.replace("classifier.0.", "classifier.2.").replace("classifier.3.", "classifier.5."): v for k, v in net.state_dict().items()}


def build_ours(card_id: str, release: dict[str, torch.Tensor], channels_last: bool):
    card = get_card(card_id)
    card = dataclasses.replace(card, config={**card.config, "channels_last": channels_last})
    model = create_model(card)
    model.load_state_dict(checkpoint_filter_fn(release, model), strict=True)
    return model.to(harness.DEVICE)


def read(path: Path) -> torch.Tensor:
    return torch.from_numpy(sf.read(path, dtype="float32")[0])[None].to(harness.DEVICE)


def reference_scene(net, mel, paths: list[Path]) -> tuple[float, torch.Tensor]:
    first = None
    with clock() as timing, torch.inference_mode():
        for path in paths:
            _, features = net(mel(read(path))[:, None])
            first = features.reshape(-1) if first is None else first
    return timing.wall, first


def reference_hear(net, mel, paths: list[Path], window: int = 5120, hop: int = 1600) -> tuple[float, torch.Tensor]:
    """The authors' MNHearWrapper.get_timestamp_embeddings, file by file."""
    first = None
    with clock() as timing, torch.inference_mode():
        for path in paths:
            audio = read(path)
            padded = torch.nn.functional.pad(audio[:, None], (window // 2, window // 2), mode="reflect")
            segments = torch.nn.functional.unfold(padded[:, None], kernel_size=(1, window), stride=(1, hop)).transpose(-1, -2).transpose(0, 1)
            rows = []
            for segment in segments:
                logits, features = net(mel(segment)[:, None])
                rows.append(torch.cat([logits.reshape(1, -1), features.reshape(1, -1)], dim=1))
            first = torch.cat(rows) if first is None else first
    return timing.wall, first


def ours_pipeline(model, paths: list[Path], out: Path, scene: bool) -> tuple[float, np.ndarray]:
    files = collect_inputs([paths[0].parent])[: len(paths)]
    with clock() as timing:
        embed_files(model, files, out, scene=scene, timestamp=not scene, workers=0, overwrite=True)
    kind = "scene" if scene else "timestamp"
    return timing.wall, np.load(out / kind / f"{files[0].name}.embedding.npy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientat-mn10-as")
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--hear-files", type=int, default=4, help="files for the hear job (its reference loop is slow)")
    parser.add_argument("--sweep-files", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N: both sides run there")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = use_device(args.device)

    card = get_card(args.model)
    net = reference_network(card.config["width_mult"])
    mel = reference_frontend().to(device)
    release = {k: v.clone() for k, v in release_format(net).items()}
    net.to(device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(Path(tmp) / "audio", args.files, args.seconds, RATE)
        print(f"{args.model}: {args.files} files x {args.seconds:g} s at 32 kHz, {describe(args.threads)}")

        # the settings sweep first, on a few files: channels_last x batch_seconds, for timestamps of
        # the `hear` preset (160 ms windows) and of the card's defaults (1 s windows every 250 ms). The
        # machine is shared: configurations are interleaved and each keeps its best of --repeat.
        if args.sweep_files:
            few, out = paths[: args.sweep_files], Path(tmp) / "sweep"
            jobs = {"hear": {"preset": "hear"}, "default": {}}
            best, times = sweep_settings(
                lambda channels_last: build_ours(args.model, release, channels_last),
                {job: lambda model: harness.ours_pipeline(model, few, out, scene=False, timestamp=True)[0] for job in jobs},
                knobs=jobs, repeat=args.repeat, interleave=True, metric=wall,
            )
            for job in jobs:
                for (channels_last, batch_seconds), timing in times.items():
                    print(f"  sweep {job:7}: channels_last={channels_last!s:5} batch_seconds={batch_seconds:5.0f}: "
                          f"{timing[job].wall:6.2f} s wall, {timing[job].cpu:6.2f} s CPU (best of {args.repeat})")  # fmt: skip
        else:  # --sweep-files 0: the shipped settings (channels_last is on by default: geometry.py)
            best = harness.shipped_setting(get_card(args.model), True)
        print(f"  {'fastest over both jobs' if args.sweep_files else 'shipped settings'}: channels_last={best[0]}, batch_seconds={best[1]:g}")

        ours = build_ours(args.model, release, best[0]).configure(batch_seconds=best[1])
        theirs_s, theirs_first = reference_scene(net, mel, paths)
        ours_s, ours_first = ours_pipeline(ours, paths, Path(tmp) / "scene", scene=True)
        print(f"scene on {len(paths)} files (pooled features, one forward per file): reference loop {theirs_s:6.1f} s, embedzoo {ours_s:6.1f} s, "
              f"ratio {theirs_s / ours_s:.2f}x  (max rel. difference {rel(ours_first, theirs_first):.1e})")  # fmt: skip

        ours.configure(preset="hear", batch_seconds=best[1])
        few = paths[: args.hear_files]
        theirs_t, theirs_first = reference_hear(net, mel, few)
        ours_t, ours_first = ours_pipeline(ours, few, Path(tmp) / "hear", scene=False)
        print(f"hear timestamps on {len(few)} files ([logits, features] of 160 ms every 50 ms): reference loop {theirs_t:6.1f} s, embedzoo {ours_t:6.1f} s, "
              f"ratio {theirs_t / ours_t:.2f}x  (max rel. difference {rel(ours_first, theirs_first):.1e})")  # fmt: skip


if __name__ == "__main__":
    main()
