"""Benchmark: embedzoo's CNN14 against panns_hear (the reference: `panns_hear.models.Cnn14` and its
HEAR functions), same random weights, same generated 10 s clips at 32 kHz, measured in one run.

Random weights in the authors' `{'model': state_dict}` format, converted by the plugin, so nothing
is downloaded and both sides hold the same tensors. Three jobs, each timed on both sides:
- `scene`: the 2048-d embedding of each whole file. Reference: per file, soundfile ->
  `panns_hear.get_scene_embeddings` (one forward). embedzoo: the pipeline (`embed_files`, scene
  only, npy outputs written, 0 decoding workers): the same one forward per 10 s file, in batches;
- `timestamps`: embedzoo's default timestamp recipe (the embedding of the 1 s window centred on
  every 250 ms, zero padding at the ends). Reference: per file, the padded file unfolded into its
  41 windows, one batched forward of panns_hear's Cnn14. embedzoo: the pipeline, timestamps only;
- `sed`: the reference's own `get_timestamp_embeddings` (one forward per file, block 6's
  frequency-averaged frames, 320 ms apart, repeated to a 10 ms grid) against embedzoo's preset
  `sed` (frame mode: the same frames, chunked at the card's `batch_seconds`; the pipeline, timestamps
  only). They agree wherever a frame's field lies inside the file (the reference pads its
  convolutions with zeros at the ends); the difference is measured on those frames.
Every compared job checks that the two sides agree (max relative difference) before timing counts.

First, a sweep of embedzoo's settings on a few files: channels_last (the plugin's model setting)
x batch_seconds (the knob); the fastest is what the plugin and the card ship (bench/RESULTS.md).
On the CPU in float32 the conv blocks run on oneDNN tensors whatever channels_last says (it is the
layout of the strided path: `--device cuda`), so there only batch_seconds moves the figures.

    python bench/panns.py [--model panns-cnn14] [--files 16] [--sweep-files 2 (0: no sweep)] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import soundfile as sf
import torch
import torch.nn.functional as F
from panns_hear import get_scene_embeddings, get_timestamp_embeddings
from panns_hear.models import Cnn14 as RefCnn14

from embedzoo.registry import get_card
from embedzoo_panns.model import checkpoint_filter_fn, create_model
import harness
from harness import Timing, clock, describe, load, make_files, ours_pipeline, rel, sweep_settings, use_device

REF_ARGS = {
    "panns-cnn14": dict(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000, classes_num=527),
    "panns-cnn14-16k": dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000, classes_num=527),
}


def reference_network(card_id: str) -> RefCnn14:
    """panns_hear's Cnn14 with random weights and BatchNorm statistics (dB inputs centred as trained)."""
    torch.manual_seed(0)
    net = RefCnn14(**REF_ARGS[card_id])
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d) and name == "bn0":
                m.running_mean.normal_(-40.0, 5.0)
                m.running_var.uniform_(300.0, 350.0)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def build_ours(card_id: str, release: dict, channels_last: bool):
    card = get_card(card_id)
    card = dataclasses.replace(card, config={**card.config, "channels_last": channels_last})
    model = create_model(card)
    model.load_state_dict(checkpoint_filter_fn(release, model), strict=True)
    return model.to(harness.DEVICE)


def read(path: Path) -> torch.Tensor:
    return torch.from_numpy(sf.read(path, dtype="float32")[0])[None].to(harness.DEVICE)


def reference_scene(net, paths: list[Path]) -> tuple[Timing, torch.Tensor]:
    first = None
    with clock() as timing, torch.inference_mode():
        for path in paths:
            emb = get_scene_embeddings(read(path), net)
            first = emb[0] if first is None else first
    return timing, first


def reference_windows(net, paths: list[Path], window: int, hop: int) -> tuple[Timing, torch.Tensor]:
    """embedzoo's timestamp recipe done with the reference: every window of a file in one forward."""
    first = None
    with clock() as timing, torch.inference_mode():
        for path in paths:
            audio = read(path)
            padded = F.pad(audio, (window // 2, window // 2))
            windows = padded[0].unfold(0, window, hop)[: 1 + audio.shape[1] // hop]
            emb = net(windows)["embedding"]
            first = emb if first is None else first
    return timing, first


def reference_own_timestamps(net, paths: list[Path]) -> tuple[Timing, torch.Tensor]:
    first = None
    with clock() as timing, torch.inference_mode():
        for path in paths:
            emb, _ = get_timestamp_embeddings(read(path), net)
            first = emb[0] if first is None else first
    return timing, first


def inside_frames(model, samples: int) -> list[int]:
    """The 10 ms steps whose block-6 frame is computed from the file's own samples only."""
    from embedzoo_panns.geometry import spans  # the family's receptive-field arithmetic

    span, hop, half = spans(model.cfg.head)["block6"], model.cfg.hop, model.cfg.n_fft // 2
    return [k for k in range(1 + samples // hop)
            if (span.first + span.jump * (k // 32)) * hop >= half and (span.last + span.jump * (k // 32)) * hop + half <= samples]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="panns-cnn14", choices=sorted(REF_ARGS))
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--sweep-files", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N: both sides run there")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = use_device(args.device)

    card = get_card(args.model)
    rate = card.sample_rate
    net = reference_network(args.model)
    release = {"model": {k: v.clone() for k, v in net.state_dict().items()}}
    net.to(device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(Path(tmp) / "audio", args.files, args.seconds, rate)
        print(f"{args.model}: {args.files} files x {args.seconds:g} s at {rate} Hz, {describe(args.threads)}; {load()}")

        # the settings sweep first, on a few files: channels_last x batch_seconds, both jobs (each its best of 2; fastest by `cost`)
        best = (True, float(card.defaults.get("batch_seconds", 128)))  # the shipped settings, when not swept
        if args.sweep_files:
            few, out = paths[: args.sweep_files], Path(tmp) / "sweep"
            best, _ = sweep_settings(
                lambda channels_last: build_ours(args.model, release, channels_last),
                {"scene": lambda model: ours_pipeline(model, few, out, True, False)[0],
                 "timestamps": lambda model: ours_pipeline(model, few, out, False, True)[0]},
                line=lambda setting, t: f"  sweep: channels_last={setting[0]!s:5} batch_seconds={setting[1]:5.0f}: scene {t['scene']}, "
                                        f"timestamps {t['timestamps']}; {load()}",
            )  # fmt: skip
        print(f"  {'fastest (scene + timestamps)' if args.sweep_files else 'shipped settings'}: channels_last={best[0]}, batch_seconds={best[1]:g}")

        ours = build_ours(args.model, release, best[0]).configure(batch_seconds=best[1])
        theirs_s, theirs_first = reference_scene(net, paths)
        ours_s, ours_first = ours_pipeline(ours, paths, Path(tmp) / "scene", scene=True, timestamp=False)
        print(f"scene (embedding of each whole file): panns_hear {theirs_s}, embedzoo {ours_s}: {theirs_s.ratio(ours_s)}  "
              f"(max rel. difference {rel(ours_first, theirs_first):.1e}); {load()}")  # fmt: skip

        window, hop = ours.window_samples, ours.hop_samples
        theirs_t, theirs_first = reference_windows(net, paths, window, hop)
        ours_t, ours_first = ours_pipeline(ours, paths, Path(tmp) / "timestamps", scene=False, timestamp=True)
        print(f"timestamps (embedding of the {window / rate:g} s window every {1000 * hop / rate:g} ms): panns_hear Cnn14 per file "
              f"{theirs_t}, embedzoo {ours_t}: {theirs_t.ratio(ours_t)}  (max rel. difference {rel(ours_first, theirs_first):.1e}); "
              f"{load()}")  # fmt: skip

        theirs_sed, theirs_first = reference_own_timestamps(net, paths)
        ours.configure(preset="sed")
        ours_sed, ours_first = ours_pipeline(ours, paths, Path(tmp) / "sed", scene=False, timestamp=True)
        keep = inside_frames(ours, int(args.seconds * rate))
        print(f"sed (panns_hear.get_timestamp_embeddings: block 6 every 10 ms) vs embedzoo preset sed (frame mode): "
              f"panns_hear {theirs_sed}, embedzoo {ours_sed}: {theirs_sed.ratio(ours_sed)}  (max rel. difference "
              f"{rel(ours_first[keep], theirs_first[keep]):.1e} on the {len(keep)} of {len(ours_first)} steps inside the file); "
              f"{load()}")  # fmt: skip


if __name__ == "__main__":
    main()
