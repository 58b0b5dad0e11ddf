"""Benchmark: embedzoo's YAMNet against torch-vggish-yamnet looping over files, same weights, same
inputs, one run.

Random weights (the reference's `YAMNet`, BatchNorm randomised, saved in the layout of w-hc's
`yamnet.pth` and converted by the plugin), so nothing is downloaded; generated 10 s files at 16 kHz
(no resampling on either side). Two jobs, both the 1024-d `embedding` of 0.975 s windows:
- `tf`: TF YAMNet's recipe, a window every 480 ms (embedzoo's defaults). Reference: per file,
  soundfile -> its log-mel of the whole clip (`WaveformToInput.mel_trans_ope`) -> 96-frame patches
  every 48 frames -> one batched forward;
- `patches`: the reference's own whole-clip path (`WaveformToInput()(clip)`: non-overlapping patches,
  one every 960 ms) against embedzoo at `hop_ms=960`.
The reference runs on the clip delayed by 7600 zero samples: its patch k then sees exactly
embedzoo's window k (timestamps k x hop, zero padding), and both jobs check that the two sides agree
(relative error) before the times count. embedzoo runs its pipeline (`embed_files`, npy outputs
written, 0 decoding workers). Each time is the best of `--repeat` runs (the machine is shared).

Then a sweep of embedzoo's settings on the `tf` job: channels_last (card config) x batch_seconds
(knob); the fastest is what the plugin ships (see bench/RESULTS.md).

    python bench/yamnet.py [--files 16] [--sweep-files 4 (0: no sweep)] [--threads 2] [--repeat 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch
from torch_vggish_yamnet import yamnet as reference
from torch_vggish_yamnet.input_proc import WaveformToInput

from embedzoo.inputs import collect_inputs
from embedzoo.pipeline import embed_files
from embedzoo.registry import get_card
from embedzoo_vggish.yamnet import CHANNELS_LAST, checkpoint_filter_fn, create_model
import harness
from harness import clock, describe, make_files, ours_pipeline, rel, sweep_settings, use_device, wall

RATE = 16000
DELAY = 7600  # the reference's patch k is centred 7600 samples after k x 15360 (its STFT is centred)


def reference_network() -> torch.nn.Module:
    """torch-vggish-yamnet's YAMNet with random weights and BatchNorm statistics."""
    torch.manual_seed(0)
    net = reference.yamnet(pretrained=False)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def build_ours(release: dict[str, torch.Tensor], channels_last: bool):
    card = get_card("yamnet")
    model = create_model(dataclasses.replace(card, config={**card.config, "channels_last": channels_last}))
    model.load_state_dict(checkpoint_filter_fn(release, model), strict=True)
    return model.to(harness.DEVICE)


def reference_job(net, paths: list[Path], patch_hop: int) -> tuple[float, np.ndarray]:
    """Embeddings of every file's patches (96 frames every `patch_hop` frames), file by file."""
    device = harness.DEVICE
    front = WaveformToInput().to(device)
    first = None
    with clock() as timing, torch.inference_mode():
        for path in paths:
            audio = torch.from_numpy(sf.read(path, dtype="float32")[0]).to(device)
            count = len(audio) // (patch_hop * 160) + 1  # as many as embedzoo's windows
            delayed = torch.cat([torch.zeros(DELAY, device=device), audio, torch.zeros(16000, device=device)])[None]
            if patch_hop == 96:
                patches = front(delayed, RATE)[:count]  # the reference's own path: (N, 1, 96, 64)
            else:
                mel = front.mel_trans_ope(delayed)[0].T  # (frames, 64)
                patches = mel.unfold(0, 96, patch_hop).transpose(1, 2)[:count, None]
            embedding, _ = net(patches)
            first = embedding.flatten(1).cpu().numpy() if first is None else first
    return timing.wall, first


def ours_job(model, paths: list[Path], out: Path) -> tuple[float, np.ndarray]:
    files = collect_inputs([paths[0].parent])[: len(paths)]
    with clock() as timing:
        embed_files(model, files, out, scene=False, timestamp=True, workers=0, overwrite=True)
    return timing.wall, np.load(out / "timestamp" / f"{files[0].name}.embedding.npy")


def best_of(repeat: int, job: Callable[[], tuple[float, np.ndarray]]) -> tuple[float, np.ndarray]:
    runs = [job() for _ in range(repeat)]
    return min(r[0] for r in runs), runs[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--sweep-files", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N: both sides run there")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = use_device(args.device)

    net = reference_network()
    release = {k: v.clone() for k, v in net.state_dict().items()}
    net.to(device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(Path(tmp) / "audio", args.files, args.seconds, RATE)
        print(f"yamnet: {args.files} files x {args.seconds:g} s at 16 kHz, {describe(args.threads)}, best of {args.repeat}")

        if args.sweep_files:
            few, out = paths[: args.sweep_files], Path(tmp) / "sweep"
            best, _ = sweep_settings(
                lambda channels_last: build_ours(release, channels_last),
                {"tf": lambda model: ours_pipeline(model, few, out, scene=False, timestamp=True)[0]},
                repeat=args.repeat, metric=wall,
                line=lambda setting, t: f"  sweep tf: channels_last={setting[0]!s:5} batch_seconds={setting[1]:5.0f}: {t['tf'].wall:6.2f} s",
            )  # fmt: skip
        else:  # --sweep-files 0: the shipped settings
            best = harness.shipped_setting(get_card("yamnet"), CHANNELS_LAST)
        print(f"  {'fastest' if args.sweep_files else 'shipped settings'}: channels_last={best[0]}, batch_seconds={best[1]:g}")

        ours = build_ours(release, best[0])
        for job, hop_ms, patch_hop in (("tf (480 ms hop)", 480, 48), ("patches (960 ms hop)", 960, 96)):
            ours.configure(batch_seconds=best[1], hop_ms=hop_ms)
            theirs_s, theirs_first = best_of(args.repeat, lambda: reference_job(net, paths, patch_hop))
            ours_s, ours_first = best_of(args.repeat, lambda: ours_job(ours, paths, Path(tmp) / "out"))
            print(f"{job}: reference loop {theirs_s:6.2f} s, embedzoo {ours_s:6.2f} s, ratio {theirs_s / ours_s:.2f}x "
                  f"(max rel. difference {rel(ours_first, theirs_first):.1e})")  # fmt: skip


if __name__ == "__main__":
    main()
