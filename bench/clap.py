"""Benchmark: embedzoo's CLAP audio tower against the pipeline a user writes with transformers
(ClapFeatureExtractor + ClapModel.get_audio_features), same weights, same clips, one run.

Random weights (a whole ClapModel of the card's audio config with a tiny text tower, saved with
save_pretrained next to the feature extractor's preprocessor_config.json, loaded with
`embedzoo.load(id, weights=folder)`), so nothing is downloaded; random clips at 48 kHz. Two jobs:
- `scene`: the 512-d `projection` of each clip of at most 10 s (one forward each; shorter clips
  repeat-padded to 10 s on both sides). Reference: per clip and batched (`--batch` clips per call);
  embedzoo: `model.embed(clips, timestamp=False)`;
- `timestamps`: the family's recipe (1-s windows centred every `--hop-ms`, each filled to 10 s by
  repeatpad). Reference: the same windows cut by hand from the clip padded by 0.5 s of zeros,
  batched `--batch` windows per call; embedzoo: `model.embed(clips, scene=False)`.
Fused cards run the reference with is_longer=False (embedzoo's default padding), since the feature
extractor would mark one random clip per batch. The outputs must agree (relative error printed).

    python bench/clap.py [--model clap-htsat-unfused] [--clips 4] [--seconds 10] [--hop-ms 250] [--batch 8] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

import embedzoo
from embedzoo.registry import get_card
from harness import clock, describe, load, ratio_table, rel, use_device

SR = 48000
AUDIO_KEYS = ("enable_fusion", "fusion_type", "patch_embeds_hidden_size", "hidden_size", "depths", "num_attention_heads")
TINY_TEXT = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 40}


def reference_model(card_config: dict, device: torch.device) -> ClapModel:
    """A whole ClapModel with the card's audio tower (a tiny text tower: only audio is timed),
    random weights at unit gain."""
    torch.manual_seed(0)
    audio = {key: card_config[key] for key in AUDIO_KEYS if key in card_config}
    model = ClapModel(ClapConfig(text_config=TINY_TEXT, audio_config=audio, projection_dim=card_config.get("projection_dim", 512)))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0, 1 / math.sqrt(p[0].numel()))
    return model.to(device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clap-htsat-unfused")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length, at most 10 s (one forward per clip)")
    parser.add_argument("--hop-ms", type=float, default=250.0, help="timestamp hop (the family default is 50 ms)")
    parser.add_argument("--batch", type=int, default=8, help="clips / windows per reference call and embedzoo's batch_size")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = use_device(args.device)
    if args.seconds > 10:
        raise SystemExit("--seconds: at most 10 (longer clips are windowed: the reference would crop them at random)")

    card = get_card(args.model)
    reference = reference_model(dict(card.config), device)
    fused = bool(card.config.get("enable_fusion"))
    extractor = ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="fusion" if fused else "rand_trunc", padding="repeatpad")
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        extractor.save_pretrained(tmp)
        model = embedzoo.load(args.model, weights=Path(tmp), device=args.device, batch_size=args.batch, hop_ms=args.hop_ms)

    rng = np.random.default_rng(1)
    clips = [(0.3 * rng.standard_normal(int(args.seconds * SR))).astype(np.float32) for _ in range(args.clips)]
    hop, window = model.card.ms_to_samples(args.hop_ms), model.card.ms_to_samples(model.knobs.window_ms)

    @torch.inference_mode()
    def ref_embed(batch: list[np.ndarray]) -> torch.Tensor:
        inputs = extractor(batch, sampling_rate=SR, return_tensors="pt")
        is_longer = torch.zeros(len(batch), 1, dtype=torch.bool) if fused else inputs["is_longer"]
        return reference.get_audio_features(inputs["input_features"].to(device), is_longer=is_longer.to(device)).pooler_output.cpu()

    def ref_scene(batch_size: int) -> torch.Tensor:
        return torch.cat([ref_embed(clips[start : start + batch_size]) for start in range(0, len(clips), batch_size)])

    def ref_timestamps() -> torch.Tensor:
        out = []
        for clip in clips:
            padded = np.pad(clip, (window // 2, window // 2))
            windows = [padded[k * hop : k * hop + window] for k in range((len(padded) - window) // hop + 1)]
            out.append(torch.cat([ref_embed(windows[s : s + args.batch]) for s in range(0, len(windows), args.batch)]))
        return torch.stack(out)

    ref_embed(clips[:1])  # warm-up, both sides
    model.embed(clips[:1], SR)

    with clock() as t_ref_clip:
        r_clip = ref_scene(1)
    with clock() as t_ref_batch:
        r_batch = ref_scene(args.batch)
    with clock() as t_ours_scene:
        o_scene = torch.stack([r.scene for r in model.embed(clips, SR, timestamp=False)])
    with clock() as t_ref_ts:
        r_ts = ref_timestamps()
    with clock() as t_ours_ts:
        o_ts = torch.stack([r.timestamp for r in model.embed(clips, SR, scene=False)])

    print(f"{args.model} audio tower, random weights: transformers (ClapFeatureExtractor + ClapModel.get_audio_features) vs embedzoo; "
          f"{args.clips} clips x {args.seconds:g} s at 48 kHz, every forward a 10 s input; {describe(torch.get_num_threads())}; {load()}")
    print(f"agreement: scene per clip {rel(o_scene, r_clip):.1e}, batched {rel(o_scene, r_batch):.1e}; "
          f"timestamps ({o_ts.shape[1]} windows of {window / SR:g} s per clip) {rel(o_ts, r_ts):.1e}")
    ratio_table([
        ("scene, reference per clip", t_ref_clip, t_ours_scene),
        (f"scene, reference batched ({args.batch})", t_ref_batch, t_ours_scene),
        (f"timestamps, reference batched ({args.batch})", t_ref_ts, t_ours_ts),
    ])


if __name__ == "__main__":
    main()
