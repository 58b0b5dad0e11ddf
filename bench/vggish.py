"""Benchmark: embedzoo's VGGish against torchvggish (the reference: `vggish_input.wavfile_to_examples`
then its VGG), same random weights, same generated 10 s clips at 16 kHz, measured in one run.

Random weights in torchvggish's own state-dict layout, converted by the plugin, so nothing is
downloaded. The reference is used as its README shows: per file, `wavfile_to_examples` (soundfile,
numpy float64 log-mel, 0.96 s examples) and one forward of all the file's examples, which gives
both of embedzoo's outputs at once:
- `timestamps`: one 128-d embedding per 0.96 s. Reference: the per-example embeddings. embedzoo:
  the pipeline (`embed_files`, timestamps only, npy outputs written, 0 decoding workers), its
  default recipe: the example centred on every k * 960 ms (HEAR's convention; zero padding at the
  ends, so a 10 s clip gets 11 windows where the reference cuts 10);
- `scene`: the mean of those embeddings. Reference: the mean of its examples' embeddings.
  embedzoo: the pipeline, scene only (the mean over the same centred windows);
- both at once (`--both`), as the reference gives them.
Agreement is checked against the reference on the same zero-padded clip (not timed).

First, a sweep of embedzoo's settings on a few files: channels_last (the plugin's model setting)
x batch_seconds (the knob); the fastest is what the plugin and the card ship (bench/RESULTS.md).

    python bench/vggish.py [--files 32] [--sweep-files 4 (0: no sweep)] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torchvggish import torchvggish as tv
from torchvggish import vggish_input

from embedzoo.registry import get_card
from embedzoo_vggish.model import CHANNELS_LAST, EXAMPLE_HOP, EXAMPLE_SAMPLES, checkpoint_filter_fn, create_model
import harness
from harness import Timing, clock, describe, load, make_files, ours_pipeline, rel, sweep_settings, use_device

RATE = 16000


def reference_network() -> tv.VGG:
    """torchvggish's VGG (no postprocessor: it would download) with He-scaled random weights."""
    torch.manual_seed(0)
    net = tv._vgg(postprocess=False)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.normal_(0.0, (2.0 / m.weight[0].numel()) ** 0.5)
                m.bias.uniform_(-0.1, 0.1)
    return net.eval()


def build_ours(release: dict, channels_last: bool):
    card = get_card("vggish")
    card = dataclasses.replace(card, config={**card.config, "channels_last": channels_last})
    model = create_model(card)
    model.load_state_dict(checkpoint_filter_fn(release, model), strict=True)
    return model.to(harness.DEVICE)


def reference(net, paths: list[Path]) -> tuple[Timing, torch.Tensor]:
    """Per file: examples -> embeddings (the timestamps) and their mean (the scene)."""
    first = None
    with clock() as timing, torch.inference_mode():
        for path in paths:
            emb = net(vggish_input.wavfile_to_examples(str(path)).detach().to(harness.DEVICE))
            emb.mean(dim=0)
            first = emb if first is None else first
    return timing, first


def reference_centred(net, path: Path, count: int) -> torch.Tensor:
    """The reference on embedzoo's windows: the clip with half an example of zeros in front."""
    audio = sf.read(path, dtype="float64")[0]
    padded = np.zeros(EXAMPLE_SAMPLES // 2 + (count - 1) * EXAMPLE_HOP + EXAMPLE_SAMPLES)
    padded[EXAMPLE_SAMPLES // 2 : EXAMPLE_SAMPLES // 2 + len(audio)] = audio
    with torch.inference_mode():
        return net(vggish_input.waveform_to_examples(padded, RATE).detach()[:count].to(harness.DEVICE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--sweep-files", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N: both sides run there")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = use_device(args.device)

    net = reference_network()
    release = {k: v.clone() for k, v in net.state_dict().items()}
    net.to(device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(Path(tmp) / "audio", args.files, args.seconds, RATE, subtype="PCM_16")
        print(f"vggish: {args.files} files x {args.seconds:g} s at 16 kHz, {describe(args.threads)}; {load()}")

        # the settings sweep first, on a few files: channels_last x batch_seconds, both jobs (each its best of 2; fastest by `cost`)
        if args.sweep_files:
            few, out = paths[: args.sweep_files], Path(tmp) / "sweep"
            best, _ = sweep_settings(
                lambda channels_last: build_ours(release, channels_last),
                {"scene": lambda model: ours_pipeline(model, few, out, True, False)[0],
                 "timestamps": lambda model: ours_pipeline(model, few, out, False, True)[0]},
                line=lambda setting, t: f"  sweep: channels_last={setting[0]!s:5} batch_seconds={setting[1]:5.0f}: scene {t['scene']}, "
                                        f"timestamps {t['timestamps']}; {load()}",
            )  # fmt: skip
        else:  # --sweep-files 0: the shipped settings
            best = harness.shipped_setting(get_card("vggish"), CHANNELS_LAST)
        print(f"  {'fastest (scene + timestamps)' if args.sweep_files else 'shipped settings'}: channels_last={best[0]}, batch_seconds={best[1]:g}")

        ours = build_ours(release, best[0]).configure(batch_seconds=best[1])
        theirs, theirs_ts = reference(net, paths)
        ours_s, ours_scene = ours_pipeline(ours, paths, Path(tmp) / "scene", scene=True, timestamp=False)
        ours_t, ours_ts = ours_pipeline(ours, paths, Path(tmp) / "timestamps", scene=False, timestamp=True)
        ours_both, _ = ours_pipeline(ours, paths, Path(tmp) / "both", scene=True, timestamp=True)
        centred = reference_centred(net, paths[0], len(ours_ts))
        print(f"torchvggish (wavfile_to_examples + VGG, per file; gives both): {theirs}; {load()}")
        print(f"scene (mean embedding): embedzoo {ours_s}: {theirs.ratio(ours_s)}  "
              f"(max rel. difference to the reference on the same windows {rel(ours_scene, centred.mean(dim=0)):.1e})")  # fmt: skip
        print(f"timestamps (an embedding every 0.96 s; embedzoo {len(ours_ts)} centred windows per file, the reference "
              f"{len(theirs_ts)}): embedzoo {ours_t}: {theirs.ratio(ours_t)}  "
              f"(max rel. difference to the reference on the same windows {rel(ours_ts, centred):.1e})")  # fmt: skip
        print(f"both in one run (embedzoo --both): {ours_both}: {theirs.ratio(ours_both)}; {load()}")

if __name__ == "__main__":
    main()
