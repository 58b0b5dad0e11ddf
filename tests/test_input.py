"""Bad input, answered clearly (issue 11): containers soundfile cannot read decode through PyAV;
absurd samples and geometry are refused or bounded; the Python API never guesses a sample rate
and scales PCM integers; the CLI refuses bad devices and sweep values before any work; list knobs
read the same whether comma- or space-separated.

Test files are made here: PyAV encodes a chirp to m4a/aac/mp4/webm/mka/opus, soundfile and hand-made
headers give the broken WAV files."""

from __future__ import annotations

import struct
import tracemalloc
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from embedzoo import hear
from embedzoo.audio import (
    AUDIO_EXTENSIONS,
    MAX_CHANNELS,
    PYAV_EXTENSIONS,
    AudioWarning,
    ClippingWarning,
    as_float_samples,
    audio_info,
    load_audio,
    stream_audio,
)
from embedzoo.cli import main, sweep_grid
from embedzoo.errors import AudioError, ConfigError
from embedzoo.inputs import collect_inputs
from embedzoo.knobs import resolve_knobs, split_names
from embedzoo.pipeline import embed_files
from embedzoo.spec import ModelSpec
from toymodel import TOY_CARD, ToyExtractor

av = pytest.importorskip("av")


def chirp(seconds: float, rate: int, f0: float = 200.0, f1: float = 4000.0, amplitude: float = 0.4) -> np.ndarray:
    """A rising tone with 20 ms fades: no two stretches alike, so a misalignment cannot hide."""
    t = np.arange(int(round(seconds * rate))) / rate
    x = amplitude * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    return (x * fade).astype(np.float32)


def encode(path: Path, x: np.ndarray, rate: int, codec: str, container: str | None = None) -> Path:
    """Encode (frames,) or (frames, channels) float32 with PyAV; frames carry timestamps, so the
    muxer records the encoder's delay (priming samples) where the container can say it."""
    data = x if x.ndim == 2 else x[:, None]
    layout = {1: "mono", 2: "stereo"}[data.shape[1]]
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if codec in ("aac", "libopus"):
            stream.bit_rate = 192000  # PyAV's default (69 kb/s for mono AAC) is audibly lossy
        for start in range(0, len(data), 4096):
            block = np.ascontiguousarray(data[start : start + 4096].reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(block, format="flt", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


# name, codec, container, rate, channels, priming samples left in by the format, tolerance
CONTAINERS = [
    ("tone.m4a", "aac", None, 44100, 1, 0, 0.02),
    ("stereo.m4a", "aac", None, 48000, 2, 0, 0.02),
    ("tone.mp4", "aac", None, 32000, 1, 0, 0.02),
    ("tone.aac", "aac", "adts", 44100, 1, 1024, 0.02),  # raw ADTS cannot signal AAC's 1024-sample priming
    ("tone.webm", "libopus", None, 48000, 1, 0, 0.02),
    ("tone.opus", "libopus", None, 48000, 2, 0, 0.02),  # Ogg Opus: libsndfile reads it; PyAV encoded it
    ("tone.mka", "flac", None, 22050, 1, 0, 1e-4),  # lossless: the int -> float scaling is exact
]


@pytest.mark.parametrize(("name", "codec", "container", "rate", "channels", "priming", "tolerance"), CONTAINERS, ids=[c[0] for c in CONTAINERS])
def test_containers_soundfile_cannot_read_decode_like_the_source(tmp_path, name, codec, container, rate, channels, priming, tolerance):
    x = chirp(1.5, rate)
    source = np.stack([x, np.zeros_like(x)], axis=1) if channels == 2 else x  # stereo: the mean is x / 2
    path = encode(tmp_path / name, source, rate, codec, container)
    expected = x / 2 if channels == 2 else x
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)
        y, got_rate = load_audio(path)
        at16, _ = load_audio(path, 16000)
        streamed = np.concatenate(list(stream_audio(path, 16000, block_seconds=0.1)))
    assert got_rate == rate and y.dtype == np.float32 and y.ndim == 1
    assert len(x) <= len(y) - priming <= len(x) + 2048  # codecs pad the last frame
    assert rel_rms(y[priming : priming + len(x)], expected) < tolerance
    assert len(streamed) == len(at16) and np.abs(streamed - at16).max() < 1e-6
    assert abs(len(at16) - len(y) * 16000 / rate) <= 1
    info = audio_info(path)
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert abs(info.duration - len(x) / rate) < 0.1


def test_pyav_containers_are_collected_and_embedded(tmp_path):
    """Folders pick the PyAV containers (inputs.py reads AUDIO_EXTENSIONS) and a job embeds them."""
    assert set(PYAV_EXTENSIONS) <= set(AUDIO_EXTENSIONS)
    folder = tmp_path / "clips"
    folder.mkdir()
    x = chirp(0.5, 16000)
    encode(folder / "a.m4a", x, 16000, "aac")
    encode(folder / "b.webm", chirp(0.5, 48000), 48000, "libopus")
    encode(folder / "c.aac", x, 16000, "aac", "adts")
    encode(folder / "d.mp4", x, 16000, "aac")
    encode(folder / "e.mka", x, 16000, "flac")
    sf.write(folder / "f.wav", x, 16000)
    files = collect_inputs([folder])
    assert sorted(f.path.suffix for f in files) == [".aac", ".m4a", ".mka", ".mp4", ".wav", ".webm"]
    toy = ToyExtractor().eval()
    summary = embed_files(toy, files, tmp_path / "out", workers=0)
    assert summary.done == 6 and not summary.failed, summary.failed
    scene = np.load(tmp_path / "out" / "scene" / f"{next(f.name for f in files if f.path.suffix == '.mka')}.embedding.npy")
    want = toy.embed([load_audio(folder / "e.mka", 16000)[0]], 16000)[0].scene.numpy()
    np.testing.assert_allclose(scene, want, rtol=1e-5, atol=1e-6)


def test_a_broken_container_is_an_error_naming_it(tmp_path):
    good = encode(tmp_path / "good.m4a", chirp(1.0, 16000), 16000, "aac")
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    junk = tmp_path / "junk.webm"
    junk.write_bytes(b"not a webm file at all\n" * 40)
    playlist = tmp_path / "list.m4a"  # an HLS playlist that would read another file: no such demuxer is allowed
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile://{good}\n#EXT-X-ENDLIST\n")
    for path in (cut, junk, playlist):
        with pytest.raises(AudioError, match="cannot decode") as error:
            load_audio(path, 16000)
        assert str(path) in str(error.value) and error.value.path == str(path) and "re-encode" in error.value.hint


def test_a_file_name_is_never_an_ffmpeg_protocol(tmp_path):
    """PyAV reads a file object: 'concat:a|b' or 'pipe:0' are names like any other."""
    x = chirp(0.5, 16000)
    for name in ("concat:x.m4a", "pipe:0.m4a"):
        path = encode(tmp_path / "plain.m4a", x, 16000, "aac").rename(tmp_path / name)
        y, rate = load_audio(path)
        assert rate == 16000 and rel_rms(y[: len(x)], x) < 0.05


def test_non_finite_and_huge_samples_in_a_pyav_container_are_refused(tmp_path):
    x = chirp(1.0, 16000)
    x[8000] = np.nan
    nan_path = encode(tmp_path / "nan.mka", x, 16000, "pcm_f32le")
    with pytest.raises(AudioError, match=r"NaN or Inf.*0\.500 s"):
        load_audio(nan_path)
    x[8000] = 3e38
    with pytest.raises(AudioError, match=r"magnitude 3e\+38 at 0\.500 s"):
        load_audio(encode(tmp_path / "huge.mka", x, 16000, "pcm_f32le"), 22050)


# --- huge samples and absurd geometry -----------------------------------------------------------


@pytest.mark.parametrize(("channels", "subtype", "value"), [(1, "FLOAT", 3e38), (2, "FLOAT", 3e38), (1, "DOUBLE", 1e300), (2, "FLOAT", -1e9)])
def test_huge_samples_are_refused_with_the_time(tmp_path, channels, subtype, value):
    """3e38 is finite but overflows every computation (the down-mix, soxr, a power spectrum):
    refused like NaN, with the time, never turned into a NaN 'success'."""
    x = np.stack([chirp(2.0, 16000)] * channels, axis=1).astype(np.float64)
    x[24000:, channels - 1] = value
    path = tmp_path / "huge.wav"
    sf.write(path, x, 16000, subtype=subtype)
    for resample_to in (None, 16000, 22050):
        with pytest.raises(AudioError, match=r"magnitude .* at 1\.500 s") as error:
            load_audio(path, resample_to)
        assert str(path) in str(error.value) and "rescale" in error.value.hint
    with pytest.raises(AudioError, match="magnitude"):
        list(stream_audio(path, 22050, block_seconds=0.25))


def test_loud_but_sane_float_files_are_kept_as_they_are(tmp_path):
    """int24-scale floats (a common export mistake) are within the limit: warned about, unchanged."""
    x = chirp(0.5, 16000) * 2**23
    path = tmp_path / "int24_scale.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.warns(ClippingWarning, match="peak 3.36e"):
        y, _ = load_audio(path)
    np.testing.assert_array_equal(y, x)
    with pytest.warns(ClippingWarning):
        assert np.isfinite(load_audio(path, 44100)[0]).all()


def wav_header(path: Path, rate: int, channels: int, data: bytes) -> Path:
    """A PCM-16 WAV written by hand, so its header can say what no writer would."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * channels * 2) & 0xFFFFFFFF, channels * 2, 16)
    body = b"WAVE" + struct.pack("<4sI", b"fmt ", 16) + fmt + struct.pack("<4sI", b"data", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_a_thousand_channels_decode_in_bounded_memory(tmp_path):
    """A header declaring 1,024 channels: read in blocks of bounded bytes, down-mixed to the mean."""
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((3200, MAX_CHANNELS))).astype(np.float32)
    path = tmp_path / "many.wav"
    sf.write(path, x, 16000, subtype="PCM_16")
    reference = sf.read(path, dtype="float32")[0].mean(axis=1)
    tracemalloc.start()
    try:
        y, _ = load_audio(path)
        streamed = np.concatenate(list(stream_audio(path, 16000)))  # 30 s blocks asked for
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(y, reference, atol=1e-6)
    np.testing.assert_allclose(streamed, reference, atol=1e-6)
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB for a {path.stat().st_size / 2**20:.0f} MiB file"


@pytest.mark.parametrize("rate", [1, 999, 2**31 - 1])
def test_an_absurd_sample_rate_is_refused(tmp_path, rate):
    """1 Hz would turn 20 kB into hours of audio at 16 kHz; 2 GHz is a broken header."""
    path = wav_header(tmp_path / "rate.wav", rate, 1, bytes(20000))
    for attempt in (lambda: load_audio(path, 16000), lambda: list(stream_audio(path, 16000)), lambda: audio_info(path)):
        with pytest.raises(AudioError, match=f"sample rate of {rate} Hz") as error:
            attempt()
        assert error.value.path == str(path) and error.value.hint


# --- the Python API -----------------------------------------------------------------------------


@pytest.fixture
def toy() -> ToyExtractor:
    return ToyExtractor().eval()


def test_the_python_api_needs_the_sample_rate(toy):
    audio = np.random.default_rng(0).standard_normal((2, 800)).astype(np.float32)
    for call in (lambda: toy.embed(audio), lambda: toy.scene_embeddings(audio), lambda: toy.timestamp_embeddings(audio)):
        with pytest.raises(TypeError, match="sample_rate"):
            call()
    with pytest.raises(AudioError, match="sample rate is missing") as error:
        toy.embed(audio, None)
    assert "16000" in error.value.hint and "model.sample_rate" in error.value.hint
    for bad in (0, -16000, 16000.5, "16000", True):
        with pytest.raises(AudioError, match="positive integer"):
            toy.scene_embeddings(audio, bad)
    assert torch.equal(toy.scene_embeddings(audio, 16000.0), toy.scene_embeddings(audio, 16000))


def test_hear_and_module_calls_take_audio_at_model_sample_rate(toy):
    audio = torch.randn(2, 800, generator=torch.Generator().manual_seed(1))
    assert torch.equal(toy(audio), toy.scene_embeddings(audio, 16000))
    assert torch.equal(hear.get_scene_embeddings(audio, toy), toy.scene_embeddings(audio, 16000))
    emb, times = hear.get_timestamp_embeddings(audio, toy)
    ours, our_times = toy.timestamp_embeddings(audio, 16000)
    assert torch.equal(emb, ours) and torch.equal(times, our_times)
    at8k = toy.with_knobs({"input_rate": 8000})  # as hear.load_model presents 32 kHz models at 48 kHz
    assert at8k.sample_rate == 8000
    assert torch.equal(at8k(audio), toy.scene_embeddings(audio, 8000))
    assert torch.equal(hear.get_scene_embeddings(audio, at8k), toy.scene_embeddings(audio, 8000))
    assert not torch.equal(at8k(audio), toy(audio))


def test_pcm_integers_are_scaled_to_unit_range(toy):
    x = np.clip(chirp(0.2, 16000, amplitude=0.9), -1, 1 - 2**-15)
    as_float = toy.scene_embeddings(x[None], 16000)
    for dtype, scale in ((np.int16, 2**15), (np.int32, 2**31), (np.int8, 2**7)):
        pcm = np.round(x.astype(np.float64) * scale).astype(dtype)
        exact = (pcm / scale).astype(np.float32)
        assert torch.allclose(toy.scene_embeddings(pcm[None], 16000), toy.scene_embeddings(exact[None], 16000), atol=1e-6)
        assert torch.allclose(toy.scene_embeddings(torch.from_numpy(pcm)[None], 16000), toy.scene_embeddings(exact[None], 16000), atol=1e-6)
        assert torch.allclose(toy.scene_embeddings(exact[None], 16000), as_float, atol=0.05)
    unsigned = np.round(x * 127 + 128).astype(np.uint8)  # 8-bit WAV: offset binary
    np.testing.assert_allclose(as_float_samples(unsigned), (unsigned.astype(np.float32) - 128) / 128)
    assert as_float_samples(np.array([-32768, 0, 16384], np.int16)).tolist() == [-1.0, 0.0, 0.5]


@pytest.mark.parametrize(
    ("audio", "match"),
    [
        (np.zeros((2, 100), np.int64), "int64 integers"),
        (torch.zeros(2, 100, dtype=torch.int64), "int64 integers"),
        (np.zeros((2, 100), np.uint16), "uint16 integers"),
        (np.zeros((2, 100), bool), "booleans"),
        (np.zeros((2, 100), np.complex64), "complex"),
        (np.zeros((2, 2, 100), np.float32), r"\(samples,\) or \(batch, samples\), got shape \(2, 2, 100\)"),
        (torch.zeros(1, 100, 2), r"got shape \(1, 100, 2\)"),
        ([np.zeros((100, 2), np.float32)], r"clip 0 must be 1-d"),
        ([np.zeros(100, np.float32), np.zeros(())], r"clip 1 must be 1-d"),
        ("clip.wav", "got str"),
        (np.full((1, 400), 3e38, np.float32), "magnitude 3e\\+38"),
        (np.full((1, 400), 1e300), "magnitude 1e\\+300"),
        ([np.r_[np.zeros(8000), np.inf]], r"NaN or Inf.*0\.500 s"),
    ],
    ids=["int64", "torch-int64", "uint16", "bool", "complex", "3-d", "torch-3-d", "stereo-clip", "scalar-clip", "path", "3e38", "1e300", "inf"],
)
def test_unusable_arrays_are_clear_errors(toy, audio, match):
    with pytest.raises(AudioError, match=match) as error:
        toy.embed(audio, 16000)
    assert error.value.hint


def test_huge_arrays_never_become_nan_embeddings_after_resampling(toy):
    """Finite at the caller's rate, Inf after soxr: refused before resampling."""
    with pytest.raises(AudioError, match="magnitude"):
        toy.embed([np.full(1000, 1e38, np.float32)], 8000)


# --- the command line -----------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_one_clear_error(result, *words: str) -> None:
    """Exit 1, no traceback (the exception is the SystemExit of a handled error), one error line and a hint."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("  hint: "), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    """A real HEAR-layout task, so that a check that came late would find work to start."""
    from embedzoo.eval.tasks import make_task

    folder = tmp_path_factory.mktemp("task") / "pitch"
    make_task("pitch", folder, size="tiny")
    return folder


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "clip.wav"
    sf.write(path, chirp(0.5, 16000), 16000)
    return path


@pytest.mark.parametrize("device", ["gpu", "cuda:99", "tpu", "cuda" if not torch.cuda.is_available() else "cuda:98"])
@pytest.mark.parametrize("command", ["embed", "embed-task", "validate", "eval", "sweep"])
def test_bad_devices_are_one_line_before_any_work(tmp_path, clip, task, command, device):
    out = tmp_path / "out"
    args = {
        "embed": ["embed", "crepe-tiny?weights=random", str(clip), "-o", str(out)],
        "embed-task": ["embed-task", "crepe-tiny?weights=random", str(task), "-o", str(out)],
        "validate": ["validate", "crepe-tiny?weights=random", "--no-hear-validator"],
        "eval": ["eval", "crepe-tiny?weights=random", str(task), "-o", str(out / "r.json")],
        "sweep": ["sweep", "crepe-tiny?weights=random", str(task), "--hop-ms", "10", "-o", str(out)],
    }[command]
    result = invoke(*args, "--device", device)
    assert_one_clear_error(result, repr(device), "cpu")
    assert not out.exists()


def test_every_device_option_is_checked():
    """A command added later gets the same check: every --device option carries the callback."""
    import click

    from embedzoo import cli

    def commands(group: click.Group):
        for command in group.commands.values():
            yield from commands(command) if isinstance(command, click.Group) else [command]

    options = [(c.name, p) for c in commands(cli.main) for p in c.params if p.name == "device"]
    assert len(options) >= 5 and all(p.callback is cli._check_device for _, p in options), [n for n, p in options if p.callback is not cli._check_device]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--hop-ms", "10,abc"], ["--hop-ms", "'abc' is not a number"]),
        (["--window-ms", "25 nan"], ["--window-ms", "'nan'"]),
        (["--mode", "window,sideways"], ["--mode", "'sideways'", "window, frame"]),
        (["--layers", "conv9"], ["--layers conv9", "no layer 'conv9'", "conv4"]),
        (["--layers", "conv4", "--layers", "conv5 conv9"], ["--layers conv5,conv9", "no layer 'conv9'"]),
        (["--layers", "conv4", "--window-ms", "64,99999"], ["--window-ms 99999", "exceeds the longest input"]),
        (["--layers", ","], ["--layers", "empty choice"]),
    ],
)
def test_bad_sweep_values_are_one_line_before_any_work(tmp_path, task, options, words):
    out = tmp_path / "sweep"
    result = invoke("sweep", "crepe-tiny?weights=random", str(task), *options, "-o", str(out))
    assert_one_clear_error(result, *words)
    assert not out.exists()


def test_list_knobs_read_the_same_with_commas_or_spaces():
    assert split_names("a,b") == split_names("a b") == split_names(" a, b ") == split_names("a,,b\t") == ["a", "b"]
    for given in ("frames energy", "frames,energy", "frames, energy", ["frames", "energy"], ["frames energy"]):
        assert resolve_knobs(TOY_CARD, {"layers": given}).layers == ("frames", "energy"), given
    spec = ModelSpec.parse("toy-model?layers=frames energy")
    assert resolve_knobs(TOY_CARD, spec.overrides()).layers == ("frames", "energy")
    spaced = sweep_grid({"sweep_layers": ("frames energy", "energy"), "sweep_hop_ms": ("5 10",), "sweep_window_ms": (), "sweep_mode": ()})
    commas = sweep_grid({"sweep_layers": ("frames,energy", "energy"), "sweep_hop_ms": ("5,10",), "sweep_window_ms": (), "sweep_mode": ()})
    assert spaced == commas == {"layers": ["frames,energy", "energy"], "hop_ms": [5.0, 10.0]}


@pytest.mark.parametrize(("knob", "value"), [("hop_ms", "fast"), ("batch_size", "2.5"), ("batch_size", 2.5), ("hop_ms", True), ("layers", 3)])
def test_knob_values_of_the_wrong_kind_are_named(knob, value):
    with pytest.raises(ConfigError, match=f"knob {knob} must be"):
        resolve_knobs(TOY_CARD, {knob: value})
