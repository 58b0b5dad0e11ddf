"""Benchmark: embedzoo's Whisper encoder against the pipeline a user writes with transformers
(WhisperFeatureExtractor + WhisperForConditionalGeneration's encoder), same weights, same clips, one run.

Random weights (a whole WhisperForConditionalGeneration of the card's encoder size, saved with
save_pretrained as a Hub repo and loaded with `embedzoo.load(id, weights=folder)`), so nothing is
downloaded; random clips at 16 kHz (no resampling). Two jobs:
- `scene`: the mean of each clip's trimmed last hidden state (the ceil(samples / 320) frames the
  clip covers; every clip padded to 30 s, as the encoder requires). Reference: per clip (feature
  extractor + encoder, one clip at a time) and batched (`--batch` clips per call); embedzoo: preset
  `window` (scene = one forward of the whole clip), `model.embed(clips, timestamp=False)`. The
  outputs must agree (relative error printed);
- `frames`: a frame every 20 ms. Reference: the trimmed last hidden state of each clip, batched;
  embedzoo: the defaults (frame mode: chunks of up to 30 s, tokens 2.. of each). The recipes differ
  by design (frame mode pads the clip by 640 samples in front: see docs/models/whisper.md), so only
  the frame counts are compared.

    python bench/whisper.py [--model whisper-tiny] [--clips 8] [--seconds 10] [--batch 8] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

import embedzoo
from embedzoo.registry import get_card
from harness import clock, describe, load, ratio_table, rel, use_device

SR = 16000


def reference_model(card_config: dict, device: torch.device) -> WhisperForConditionalGeneration:
    """A whole WhisperForConditionalGeneration with the card's encoder (a 1-layer decoder: only the
    encoder is timed), random weights at unit gain."""
    torch.manual_seed(0)
    config = WhisperConfig(**card_config, decoder_layers=1, decoder_attention_heads=1, decoder_ffn_dim=64, vocab_size=64,
                           max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    model = WhisperForConditionalGeneration(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1 and "embed_positions" not in name:
                p.normal_(0, 1 / math.sqrt(p[0].numel()))
    return model.to(device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="whisper-tiny")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=8, help="clips per reference call (batched reference) and embedzoo's batch_size")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = use_device(args.device)

    card = get_card(args.model)
    reference = reference_model(dict(card.config), device)
    extractor = WhisperFeatureExtractor(feature_size=reference.config.num_mel_bins)
    encoder = reference.get_encoder()
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        extractor.save_pretrained(tmp)
        scene_model = embedzoo.load(args.model, weights=Path(tmp), device=args.device, preset="window", batch_size=args.batch)
        frame_model = embedzoo.load(args.model, weights=Path(tmp), device=args.device, batch_size=args.batch)

    rng = np.random.default_rng(1)
    clips = [(0.3 * rng.standard_normal(int(args.seconds * SR))).astype(np.float32) for _ in range(args.clips)]
    keep = [math.ceil(len(clip) / 320) for clip in clips]

    @torch.inference_mode()
    def ref_last(batch: list[np.ndarray]) -> torch.Tensor:
        features = extractor(batch, sampling_rate=SR, return_tensors="pt").input_features.to(device)
        return encoder(features).last_hidden_state

    def ref_scene(batch_size: int) -> torch.Tensor:
        out = []
        for start in range(0, len(clips), batch_size):
            last = ref_last(clips[start : start + batch_size])
            out += [last[i, : keep[start + i]].mean(dim=0) for i in range(len(last))]
        return torch.stack(out).cpu()

    def ref_frames() -> list[torch.Tensor]:
        out = []
        for start in range(0, len(clips), args.batch):
            last = ref_last(clips[start : start + args.batch])
            out += [last[i, : keep[start + i]].cpu() for i in range(len(last))]
        return out

    ref_last(clips[:1])  # warm-up, both sides
    scene_model.embed(clips[:1], SR, timestamp=False)
    frame_model.embed(clips[:1], SR, scene=False)

    with clock() as t_ref_clip:
        r_clip = ref_scene(1)
    with clock() as t_ref_batch:
        r_batch = ref_scene(args.batch)
    with clock() as t_ours_scene:
        o_scene = torch.stack([r.scene for r in scene_model.embed(clips, SR, timestamp=False)])
    with clock() as t_ref_frames:
        r_frames = ref_frames()
    with clock() as t_ours_frames:
        o_frames = [r.timestamp for r in frame_model.embed(clips, SR, scene=False)]

    print(f"{args.model} encoder, random weights: transformers (WhisperFeatureExtractor + encoder) vs embedzoo; "
          f"{args.clips} clips x {args.seconds:g} s at 16 kHz, every forward a 30 s input; {describe(torch.get_num_threads())}; {load()}")
    print(f"scene agreement: per clip {rel(o_scene, r_clip):.1e}, batched {rel(o_scene, r_batch):.1e}")
    print(f"frames per clip: reference {[len(f) for f in r_frames][:4]}..., embedzoo frame mode {[len(f) for f in o_frames][:4]}... (1 + samples // 320)")
    ratio_table([
        ("scene, reference per clip", t_ref_clip, t_ours_scene),
        (f"scene, reference batched ({args.batch})", t_ref_batch, t_ours_scene),
        (f"frames, reference batched ({args.batch})", t_ref_frames, t_ours_frames),
    ])


if __name__ == "__main__":
    main()
