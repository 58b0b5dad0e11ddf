"""Benchmark: embedzoo's AST against the pipeline a user writes with transformers
(ASTFeatureExtractor + ASTForAudioClassification), same weights, same clips, one run.

Random weights (the card's architecture, saved with save_pretrained as a Hub repo folder and loaded
with `embedzoo.load(id, weights=folder)`), so nothing is downloaded; random clips at 16 kHz (no
resampling). Three jobs:
- `scene`: ASTModel's pooler_output ((cls + dist) / 2) of each clip (clips up to max_window, 10.24 s
  for the AudioSet cards: every forward is max_length frames on both sides). Reference: per clip
  and batched (`--batch` clips per call); embedzoo: the defaults, `model.embed(clips, timestamp=False)`.
  The outputs must agree (relative error printed);
- `timestamps`: the same embedding of 1 s windows every `--hop-ms` (the family's default recipe at a
  coarser hop), each window padded to max_length frames. Reference: the same windows (the clip
  zero-padded by half a window at both ends), `--batch` per call; embedzoo: the defaults with
  hop_ms. Agreement printed;
- `frames`: block12's patch columns (one frame every time_stride x 10 ms). Reference: hidden_states[12]
  of each clip, each column the mean over its frequency patches, batched; embedzoo: preset `frames`
  at the column hop (frame mode: chunks of whole columns, the clip padded by half a column's field
  in front), so only the frame counts are compared.

    python bench/ast_model.py [--model ast] [--clips 4] [--seconds 10] [--batch 4] [--hop-ms 250] [--threads N] [--device cuda] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

import embedzoo
from embedzoo.registry import get_card
from harness import clock, describe, load, ratio_table, rel, use_device

SR = 16000
# the card's config keys that are ASTConfig's (mean and std are the feature extractor's)
MODEL_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
              "frequency_stride", "time_stride", "max_length", "num_mel_bins", "layer_norm_eps")  # fmt: skip


def reference(card_config: dict, device: torch.device) -> tuple[ASTFeatureExtractor, ASTForAudioClassification]:
    """The card's feature extractor and model (ASTConfig's defaults where the card says nothing),
    random weights at unit gain."""
    torch.manual_seed(0)
    config = ASTConfig(**{k: card_config[k] for k in MODEL_KEYS if k in card_config}, num_labels=card_config.get("num_labels", 527))
    model = ASTForAudioClassification(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0, 1 / math.sqrt(p[0].numel()))
    stats = {k: card_config[k] for k in ("mean", "std") if k in card_config}
    extractor = ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length, **stats)
    return extractor, model.to(device).eval()


def windows_of(clip: np.ndarray, window: int, hop: int) -> list[np.ndarray]:
    """Windows centred every `hop` over the clip zero-padded by window // 2 at both ends (HEAR's cut)."""
    padded = np.pad(clip, (window // 2, window // 2))
    return [padded[k * hop : k * hop + window] for k in range((len(padded) - window) // hop + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ast")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=4, help="inputs per reference call (batched reference) and embedzoo's batch_size")
    parser.add_argument("--hop-ms", type=float, default=250.0, help="timestamp hop of the `timestamps` job (1 s windows)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = use_device(args.device)

    card = get_card(args.model)
    extractor, model = reference(dict(card.config), device)
    knobs = {"device": args.device, "batch_size": args.batch, "dtype": args.dtype}
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        extractor.save_pretrained(tmp)
        ours = embedzoo.load(card.id, weights=Path(tmp), hop_ms=args.hop_ms, **knobs)
        frames_model = embedzoo.load(card.id, weights=Path(tmp), preset="frames", hop_ms=card.samples_to_ms(card.frame_hop), **knobs)

    rng = np.random.default_rng(1)
    seconds = min(args.seconds, card.max_window / SR)
    clips = [(0.3 * rng.standard_normal(int(seconds * SR))).astype(np.float32) for _ in range(args.clips)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    @torch.inference_mode()
    def ref_forward(batch: list[np.ndarray]):
        inputs = extractor(batch, sampling_rate=SR, return_tensors="pt").input_values.to(device)
        with autocast:
            return model.audio_spectrogram_transformer(inputs, output_hidden_states=True)

    def ref_pooled(inputs: list[np.ndarray], batch_size: int) -> torch.Tensor:
        return torch.cat([ref_forward(inputs[i : i + batch_size]).pooler_output.float().cpu() for i in range(0, len(inputs), batch_size)])

    def ref_timestamps() -> list[torch.Tensor]:
        hop = card.ms_to_samples(args.hop_ms)
        return [ref_pooled(windows_of(clip, SR, hop), args.batch) for clip in clips]

    config = model.config
    bands = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1

    def ref_frames() -> list[torch.Tensor]:
        out = []
        for start in range(0, len(clips), args.batch):
            hidden = ref_forward(clips[start : start + args.batch]).hidden_states[12 if config.num_hidden_layers >= 12 else -1]
            grid = hidden[:, 2:].unflatten(1, (bands, -1)).mean(dim=1).float().cpu()
            for clip, columns in zip(clips[start : start + args.batch], grid):
                frames = 1 + (len(clip) - 400) // 160
                out.append(columns[: max(1, (frames - config.patch_size) // config.time_stride + 1)])
        return out

    ref_forward(clips[:1])  # warm-up, both sides
    ours.embed(clips[:1], SR, timestamp=False)
    frames_model.embed(clips[:1], SR, scene=False)

    with clock() as t_ref_clip:
        r_clip = ref_pooled(clips, 1)
    with clock() as t_ref_batch:
        r_batch = ref_pooled(clips, args.batch)
    with clock() as t_ours_scene:
        o_scene = torch.stack([r.scene for r in ours.embed(clips, SR, timestamp=False)])
    with clock() as t_ref_ts:
        r_ts = ref_timestamps()
    with clock() as t_ours_ts:
        o_ts = [r.timestamp for r in ours.embed(clips, SR, scene=False)]
    with clock() as t_ref_frames:
        r_frames = ref_frames()
    with clock() as t_ours_frames:
        o_frames = [r.timestamp for r in frames_model.embed(clips, SR, scene=False)]

    print(f"{card.id}, random weights: transformers (ASTFeatureExtractor + ASTForAudioClassification) vs embedzoo; "
          f"{args.clips} clips x {seconds:g} s at 16 kHz, every forward {config.max_length} frames; {args.dtype}; "
          f"{describe(torch.get_num_threads())}; {load()}")
    print(f"scene agreement: per clip {rel(o_scene, r_clip):.1e}, batched {rel(o_scene, r_batch):.1e}")
    print(f"timestamp agreement (1 s windows every {args.hop_ms:g} ms, {len(r_ts[0])} per clip): "
          f"{max(rel(o, r) for o, r in zip(o_ts, r_ts)):.1e}")
    print(f"frames per clip: reference {[len(f) for f in r_frames][:4]}, embedzoo frame mode {[len(f) for f in o_frames][:4]} "
          "(reference: the clip's whole columns; frame mode at the column hop: 1 + samples // hop)")
    ratio_table([
        ("scene, reference per clip", t_ref_clip, t_ours_scene),
        (f"scene, reference batched ({args.batch})", t_ref_batch, t_ours_scene),
        (f"timestamps, reference batched ({args.batch})", t_ref_ts, t_ours_ts),
        (f"frames, reference batched ({args.batch})", t_ref_frames, t_ours_frames),
    ])

if __name__ == "__main__":
    main()
