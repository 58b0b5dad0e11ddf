"""Benchmark: embedzoo's speech SSL family (`ssl`) against the transformers pipeline a user writes, in one run.

(Named speech_ssl.py, not ssl.py: a script's folder comes first on sys.path, and bench/ssl.py would
shadow the standard library's `ssl` module for every import of asyncio, urllib, ...)

The same random weights on both sides (embedzoo's `?weights=random` model, its state dict loaded
into transformers' own `Wav2Vec2Model` / `HubertModel` / `WavLMModel` / `Data2VecAudioModel`).
The same clips at 16 kHz (10 s + 80 samples by default: 320 q + 400 samples, so the frame grid
covers each clip exactly and both sides see the same samples) go through
- the reference, per clip: `Wav2Vec2FeatureExtractor(clip)`, then the model with
  output_hidden_states=True; the scene is the mean of the layer's frames, the timestamps every
  50 ms the nearest frame (the frame centred on 200 + 320 j);
- the reference, batched: the feature extractor on all clips at once (equal lengths: no padding),
  one forward;
- embedzoo: `model.embed(clips, 16000)` in the family's default frame mode (scene + timestamps).
Public calls end to end, after one warm-up call each. embedzoo stops after the layer it reads;
the reference runs every layer, as a user of output_hidden_states does (`--layer last`, the card's
last_hidden_state, makes the work equal). Prints the agreement, the times (best of
--repeat) and the ratios.

    python bench/speech_ssl.py [--model wav2vec2-base] [--layer block6] [--clips 4] [--seconds 10]
                        [--device cpu|cuda] [--dtype float32|bfloat16] [--repeat 1] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import os

import numpy as np
import torch

from harness import best_time, rel

SR = 16000
HOP, OFFSET = 320, 200


def reference_model(ours: torch.nn.Module) -> torch.nn.Module:
    """transformers' own class for the card's model_type, holding `ours`'s weights (embedzoo's random model)."""
    import transformers
    from embedzoo_ssl.model import CLASSES, hf_config

    reference = getattr(transformers, CLASSES[ours.card.config["model_type"]][1])(hf_config(ours.card.config))
    reference.load_state_dict({k.removeprefix("model."): v for k, v in ours.state_dict().items()})
    return reference.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wav2vec2-base", help="an ssl card id")
    parser.add_argument("--layer", default=None, help="the layer read (default: the card's default layer; 'last': last_hidden_state)")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (rounded to 320 q + 400 samples)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeat", type=int, default=1, help="timed calls per measurement (the best counts)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    import embedzoo

    ours = embedzoo.load(f"{args.model}?weights=random", device=args.device, dtype=args.dtype, quiet=True)
    if args.layer == "last":
        ours.configure(preset="last")
    elif args.layer:
        ours.configure(layers=[args.layer])
    card, (layer,) = ours.card, ours.knobs.layers
    reference = reference_model(ours).to(args.device)
    names = [spec.name for spec in card.layers]
    index = None if layer in ("features", "norm") else ["embed", *names[2:]].index(layer)  # hidden_states index
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=bool(card.config.get("do_normalize", True)))
    autocast = (
        torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)
        if args.dtype == "bfloat16"
        else contextlib.nullcontext()
    )

    frames = max(1, round((args.seconds * SR - 400) / HOP) + 1)
    samples = (frames - 1) * HOP + 400
    rng = np.random.default_rng(1)
    clips = [(0.3 * rng.standard_normal(samples)).astype(np.float32) for _ in range(args.clips)]
    centres = np.arange(1 + samples // 800) * 800  # timestamps every 50 ms
    nearest = torch.from_numpy(np.clip(np.rint((centres - OFFSET) / HOP).astype(np.int64), 0, frames - 1))

    def reference_frames(batch: list[np.ndarray]) -> torch.Tensor:
        values = extractor(batch, sampling_rate=SR, return_tensors="pt").input_values.to(args.device)
        with torch.inference_mode(), autocast:
            if layer == "features":
                return reference.feature_extractor(values).transpose(1, 2).float()
            out = reference(values, output_hidden_states=index is not None)
            return (out.last_hidden_state if index is None else out.hidden_states[index]).float()

    def per_clip() -> tuple[torch.Tensor, torch.Tensor]:
        results = [reference_frames([clip])[0].cpu() for clip in clips]
        return torch.stack([r.mean(dim=0) for r in results]), torch.stack([r[nearest] for r in results])

    def batched() -> tuple[torch.Tensor, torch.Tensor]:
        result = reference_frames(clips).cpu()
        return result.mean(dim=1), result[:, nearest]

    def embedzoo_run() -> tuple[torch.Tensor, torch.Tensor]:
        results = ours.embed(clips, SR)
        return torch.stack([r.scene for r in results]), torch.stack([r.timestamp for r in results])

    for fn in (per_clip, batched, embedzoo_run):  # warm-up
        fn()
    load = os.getloadavg()[0]
    t_clip, (clip_scene, clip_ts) = best_time(per_clip, args.device, args.repeat)
    t_batch, (batch_scene, batch_ts) = best_time(batched, args.device, args.repeat)
    t_ours, (our_scene, our_ts) = best_time(embedzoo_run, args.device, args.repeat)
    load_after = os.getloadavg()[0]

    print(f"{card.id} ({card.config['model_type']}), random weights, layer {layer}, frame mode; {args.clips} clips x "
          f"{samples / SR:.3f} s at 16 kHz; device {args.device}, {args.dtype}, torch threads {torch.get_num_threads()} "
          f"of {os.cpu_count()} cores, load average {load:.1f} -> {load_after:.1f}")
    print(f"agreement with the per-clip reference: scene rel. err {rel(our_scene, clip_scene):.1e}, "
          f"timestamps rel. err {rel(our_ts, clip_ts):.1e} (batched reference: {rel(batch_ts, clip_ts):.1e})")
    print(f"{'':34s} {'time':>9s}   embedzoo is")
    for name, seconds in [("transformers, one clip a forward", t_clip), ("transformers, batched", t_batch)]:
        print(f"{name:34s} {seconds:7.2f} s   {seconds / t_ours:.2f}x {'faster' if t_ours < seconds else 'SLOWER'}")
    print(f"{'embedzoo (scene + timestamps)':34s} {t_ours:7.2f} s")


if __name__ == "__main__":
    main()
