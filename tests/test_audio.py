"""embedzoo.audio (and embedzoo.inputs) on real files written by the tests: formats, rates, channels, broken files, streaming, inputs."""

from __future__ import annotations

import functools
import os
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from embedzoo.audio import (
    AUDIO_EXTENSIONS,
    AudioWarning,
    ClippingWarning,
    TruncatedAudioWarning,
    audio_info,
    check_audio,
    load_audio,
    resample,
    stream_audio,
    to_mono,
    write_example_audio,
)
from embedzoo.errors import AudioError
from embedzoo.inputs import InputFile, collect_inputs

RATES = [8000, 11025, 16000, 22050, 44100, 48000, 96000]
CODECS = {
    "wav": dict(format="WAV", subtype="PCM_16"),
    "flac": dict(format="FLAC", subtype="PCM_16"),
    "ogg": dict(format="OGG", subtype="VORBIS"),
    "mp3": dict(format="MP3", subtype="MPEG_LAYER_III"),
}
LOSSY = {"ogg", "mp3"}


def sine(freq: float, sr: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * sr))) / sr)).astype(np.float32)


def peak_frequency(x: np.ndarray, sr: int) -> float:
    """Frequency of the strongest FFT bin (Hann window), in Hz."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


def write(path: Path, data: np.ndarray, sr: int, **kwargs) -> Path:
    sf.write(path, data, sr, **kwargs)
    return path


def concat_stream(path: Path, sr: int, block_seconds: float) -> np.ndarray:
    pieces = list(stream_audio(path, sr, block_seconds))
    for piece in pieces:
        assert piece.ndim == 1 and piece.dtype == np.float32 and piece.size > 0
    return np.concatenate(pieces)


# --- decoding every format at every rate ------------------------------------------------------


@pytest.mark.parametrize("ext", sorted(CODECS))
@pytest.mark.parametrize("sr", RATES)
def test_decodes_and_resamples_every_format_and_rate(tmp_path: Path, ext: str, sr: int) -> None:
    if ext == "mp3" and sr > 48000:
        pytest.skip("MPEG audio has no 96 kHz mode; libsndfile refuses to write it")
    x = sine(1000.0, sr, 0.5)
    path = write(tmp_path / f"tone.{ext}", x, sr, **CODECS[ext])
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)
        y, rate = load_audio(path)
        z, rate16 = load_audio(path, 16000)
    assert rate == sr and y.dtype == np.float32 and y.ndim == 1
    assert len(y) == len(x)
    if ext not in LOSSY:
        np.testing.assert_allclose(y, x, atol=1 / 2**15)
    assert abs(peak_frequency(y, sr) - 1000.0) <= 2 * sr / len(y)
    assert rate16 == 16000 and z.dtype == np.float32
    assert len(z) == round(len(y) * 16000 / sr)
    assert abs(peak_frequency(z, 16000) - 1000.0) <= 2 * 16000 / len(z)


@pytest.mark.parametrize(
    ("sr_in", "sr_out", "freq"),
    [(44100, 16000, 3000.0), (8000, 48000, 1234.0), (22050, 32000, 440.0), (96000, 16000, 5000.0), (16000, 44100, 7000.0)],
)
def test_resample_keeps_pitch_level_and_duration(sr_in: int, sr_out: int, freq: float) -> None:
    x = sine(freq, sr_in, 1.3)
    y = resample(x, sr_in, sr_out)
    assert y.dtype == np.float32
    assert len(y) == round(len(x) * sr_out / sr_in)
    assert abs(peak_frequency(y, sr_out) - freq) <= 2 * sr_out / len(y)
    middle = y[len(y) // 10 : -len(y) // 10]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)


def test_resample_removes_what_the_new_rate_cannot_hold() -> None:
    """A 12 kHz tone has no place at 16 kHz (Nyquist 8 kHz): HQ must not alias it down to 4 kHz."""
    y = resample(sine(12000.0, 48000, 1.0), 48000, 16000)
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) < 1e-4


def test_resample_same_rate_is_identity_in_float32() -> None:
    x = np.random.default_rng(0).standard_normal(1001)
    y = resample(x, 16000, 16000)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_array_equal(y, x.astype(np.float32))


@pytest.mark.parametrize("bad", [0, -16000, 16000.5])
def test_resample_rejects_impossible_rates(bad) -> None:
    with pytest.raises(AudioError, match="positive integer"):
        resample(np.zeros(10, np.float32), bad, 16000)


# --- channels ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("ext", "subtype"), [("wav", "FLOAT"), ("flac", "PCM_24")])
def test_downmix_is_the_mean_of_channels(tmp_path: Path, ext: str, subtype: str) -> None:
    x = sine(440.0, 16000, 0.25)
    zero = np.zeros_like(x)
    quantum = 1 / 2**23 if subtype == "PCM_24" else 0.0
    cases = {
        "opposite": (np.stack([x, -x], axis=1), zero),
        "left_only": (np.stack([x, zero], axis=1), x / 2),
        "six_first_only": (np.stack([x] + [zero] * 5, axis=1), x / 6),
        "six_alternating": (np.stack([x, -x] * 3, axis=1), zero),
    }
    for label, (data, expected) in cases.items():
        path = write(tmp_path / f"{label}.{ext}", data, 16000, subtype=subtype)
        y, _ = load_audio(path)
        np.testing.assert_allclose(y, expected, atol=quantum + 1e-7, err_msg=label)


def test_to_mono_shapes() -> None:
    x = np.arange(6, dtype=np.float32)
    assert to_mono(x) is x
    np.testing.assert_array_equal(to_mono(x.reshape(6, 1)), x)
    np.testing.assert_array_equal(to_mono(x.reshape(3, 2)), [0.5, 2.5, 4.5])
    with pytest.raises(AudioError, match="shape"):
        to_mono(np.zeros((2, 2, 2)))


# --- short, empty, truncated, corrupt, non-finite, clipped -------------------------------------


def test_one_sample_and_ten_millisecond_files(tmp_path: Path) -> None:
    one = write(tmp_path / "one.wav", np.array([0.25], np.float32), 16000, subtype="FLOAT")
    y, rate = load_audio(one)
    assert rate == 16000 and y.tolist() == [0.25]
    up, _ = load_audio(one, 48000)
    assert len(up) == 3
    np.testing.assert_allclose(concat_stream(one, 48000, 1.0), up, atol=1e-6)

    ten_ms = write(tmp_path / "ten_ms.flac", sine(1000.0, 44100, 0.01), 44100)
    y, _ = load_audio(ten_ms)
    assert len(y) == 441
    down, _ = load_audio(ten_ms, 16000)
    assert len(down) == 160
    np.testing.assert_allclose(concat_stream(ten_ms, 16000, 0.003), down, atol=1e-6)


def test_a_file_shorter_than_one_output_sample_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "blip.wav", np.array([0.1], np.float32), 96000)
    with pytest.raises(AudioError, match="too short") as error:
        load_audio(path, 8000)
    assert str(path) in str(error.value)
    with pytest.raises(AudioError, match="too short"):
        list(stream_audio(path, 8000))


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    assert audio_info(path).frames == 0
    for attempt in (lambda: load_audio(path), lambda: load_audio(path, 16000), lambda: list(stream_audio(path, 16000))):
        with pytest.raises(AudioError, match="no audio samples") as error:
            attempt()
        assert str(path) in str(error.value) and error.value.path == str(path) and error.value.hint


def _cut_in_half(path: Path) -> Path:
    data = path.read_bytes()
    cut = path.with_name("cut_" + path.name)
    cut.write_bytes(data[: len(data) // 2])
    return cut


@pytest.mark.parametrize("ext", ["wav", "mp3"])
def test_truncated_file_gives_what_is_there_and_warns(tmp_path: Path, ext: str) -> None:
    """Documented choice: decode as far as the data goes, with a TruncatedAudioWarning naming the file."""
    full = write(tmp_path / f"full.{ext}", sine(440.0, 16000, 2.0), 16000, **CODECS[ext])
    whole, _ = load_audio(full)
    cut = _cut_in_half(full)
    with pytest.warns(TruncatedAudioWarning, match=cut.name):
        y, rate = load_audio(cut)
    assert rate == 16000 and 0.4 * len(whole) < len(y) < 0.6 * len(whole)
    if ext == "wav":
        np.testing.assert_array_equal(y, whole[: len(y)])
    with pytest.warns(TruncatedAudioWarning, match=cut.name):
        streamed = concat_stream(cut, 16000, 0.1)
    np.testing.assert_allclose(streamed, y, atol=1e-6)


@pytest.mark.parametrize("ext", ["flac", "ogg"])
def test_truncated_file_that_cannot_be_decoded_is_an_error(tmp_path: Path, ext: str) -> None:
    """A FLAC cut mid-frame loses sync; a cut Ogg Vorbis file has no end page and yields nothing."""
    cut = _cut_in_half(write(tmp_path / f"full.{ext}", sine(440.0, 16000, 2.0), 16000, **CODECS[ext]))
    with pytest.raises(AudioError) as error:
        load_audio(cut, 16000)
    assert str(cut) in str(error.value) and error.value.hint
    with pytest.raises(AudioError):
        list(stream_audio(cut, 16000, 0.1))


@pytest.mark.parametrize("content", [b"this is not audio, just text\n" * 20, bytes(range(256)) * 8])
def test_a_non_audio_file_is_an_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "impostor.wav"
    path.write_bytes(content)
    for attempt in (lambda: load_audio(path), lambda: list(stream_audio(path, 16000)), lambda: audio_info(path)):
        with pytest.raises(AudioError, match="cannot decode") as error:
            attempt()
        assert str(path) in str(error.value) and error.value.path == str(path) and "re-encode" in error.value.hint


def test_missing_file_and_folder_are_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not found") as error:
        load_audio(tmp_path / "nowhere.wav")
    assert "nowhere.wav" in str(error.value)
    with pytest.raises(AudioError, match="folder"):
        load_audio(tmp_path)


@pytest.mark.parametrize(("value", "second"), [(np.nan, 1.5), (np.inf, 0.5), (-np.inf, 2.25)])
def test_non_finite_samples_are_an_error_with_the_time(tmp_path: Path, value: float, second: float) -> None:
    x = np.stack([sine(440.0, 16000, 3.0)] * 2, axis=1)
    x[int(second * 16000), 1] = value  # in one channel only: the down-mix must not hide it
    path = write(tmp_path / "bad.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=f"{second:.3f} s") as error:
        load_audio(path, 22050)
    assert str(path) in str(error.value) and "clean" in error.value.hint
    received = []
    with pytest.raises(AudioError, match=f"{second:.3f} s"):
        for piece in stream_audio(path, 16000, block_seconds=0.2):
            received.append(piece)
    assert sum(len(p) for p in received) == pytest.approx(second * 16000, abs=0.2 * 16000)


def test_check_audio_on_arrays() -> None:
    strided = np.linspace(-0.5, 0.5, 200, dtype=np.float64)[::2]
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)
        out = check_audio(strided, "clip 0", 16000)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, strided, rtol=1e-7)
    with pytest.raises(AudioError, match="clip 1.*no audio samples"):
        check_audio(np.zeros(0), "clip 1", 16000)
    bad = np.zeros(32000, np.float32)
    bad[24000] = np.nan
    with pytest.raises(AudioError, match=r"clip 2.*1\.500 s"):
        check_audio(bad, "clip 2", 16000)


def test_clipped_float_file_warns_and_is_kept_as_is(tmp_path: Path) -> None:
    x = sine(440.0, 16000, 2.0, amplitude=2.0)
    path = write(tmp_path / "loud.wav", x, 16000, subtype="FLOAT")
    with pytest.warns(ClippingWarning, match=r"loud\.wav.*peak 2"):
        y, _ = load_audio(path)
    np.testing.assert_array_equal(y, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        concat_stream(path, 16000, 0.1)  # twenty loud blocks
    assert [w.category for w in caught] == [ClippingWarning]
    with pytest.warns(ClippingWarning, match="peak 2"):
        check_audio(x, "loud clip", 16000)


# --- streaming --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "sr", "channels", "target", "block_seconds"),
    [
        ("wav", 44100, 2, 16000, 0.37),
        ("flac", 8000, 1, 16000, 0.1),
        ("wav", 48000, 6, 32000, 1.0),
        ("wav", 16000, 1, 16000, 0.25),
        ("mp3", 22050, 2, 16000, 0.2),
        ("mp3", 44100, 1, 16000, 0.5),
        ("ogg", 48000, 1, 16000, 0.3),
        ("opus", 48000, 2, 16000, 0.3),
    ],
)
def test_stream_equals_load(tmp_path: Path, ext: str, sr: int, channels: int, target: int, block_seconds: float) -> None:
    """Block-wise decoding (MP3 and Opus included) and incremental soxr give the one-shot result."""
    rng = np.random.default_rng(sr + channels)
    x = 0.05 * rng.standard_normal((int(4.2 * sr), channels)) + sine(523.0, sr, 4.2, amplitude=0.3)[:, None]
    kwargs = dict(format="OGG", subtype="OPUS") if ext == "opus" else CODECS[ext]
    path = write(tmp_path / f"clip.{ext}", x.astype(np.float32), sr, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)
        whole, rate = load_audio(path, target)
        pieces = list(stream_audio(path, target, block_seconds))
    assert rate == target
    assert len(pieces) > 3
    streamed = np.concatenate(pieces)
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=1e-6, rtol=0)


@functools.lru_cache(maxsize=2)
def _one_second(sr: int) -> np.ndarray:
    """One period of a stereo int16 signal made of whole-Hz tones (so it repeats exactly every second)."""
    t = np.arange(sr) / sr
    left = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.1 * np.sin(2 * np.pi * 3001.0 * t)
    right = 0.3 * np.sin(2 * np.pi * 661.0 * t + 0.5)
    return np.round(np.stack([left, right], axis=1) * 32767).astype(np.int16)


def _long_signal(start: int, stop: int, sr: int) -> np.ndarray:
    """Samples start..stop of the endless test signal: any stretch can be regenerated cheaply."""
    return _one_second(sr)[np.arange(start, stop) % sr]


def _write_long(path: Path, sr: int, seconds: float, chunk_seconds: float = 60.0) -> int:
    total = int(seconds * sr)
    with sf.SoundFile(path, "w", samplerate=sr, channels=2, subtype="PCM_16") as f:
        for start in range(0, total, int(chunk_seconds * sr)):
            f.write(_long_signal(start, min(total, start + int(chunk_seconds * sr)), sr))
    return total


def test_stream_of_twenty_minutes_uses_bounded_memory(tmp_path: Path) -> None:
    sr, target, minutes = 44100, 16000, 20
    long_path, short_path = tmp_path / "long.wav", tmp_path / "short.wav"
    frames = _write_long(long_path, sr, minutes * 60)
    _write_long(short_path, sr, 60)
    reference, _ = load_audio(short_path, target)
    compare = len(reference) - target // 10  # the short file's end is flushed; 0.1 s covers the filter's reach
    decoded_bytes = frames * 2 * 4  # what decoding the whole file to float32 would take
    try:
        head, total = [], 0
        tracemalloc.start()
        try:
            for piece in stream_audio(long_path, target):
                if total < compare:
                    head.append(piece)
                total += len(piece)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        long_path.unlink()
    assert total == round(frames * target / sr)
    np.testing.assert_allclose(np.concatenate(head)[:compare], reference[:compare], atol=1e-6, rtol=0)
    assert peak < decoded_bytes / 10, f"peak {peak / 2**20:.1f} MiB while streaming a {decoded_bytes / 2**20:.0f} MiB file"


def test_stream_rejects_nonpositive_blocks(tmp_path: Path) -> None:
    path = write(tmp_path / "a.wav", sine(440.0, 16000, 0.1), 16000)
    with pytest.raises(AudioError, match="block_seconds"):
        list(stream_audio(path, 16000, 0))


# --- audio_info ---------------------------------------------------------------------------------


def test_audio_info_reads_the_header(tmp_path: Path) -> None:
    path = write(tmp_path / "stereo.wav", np.zeros((22050, 2), np.float32), 44100)
    info = audio_info(path)
    assert (info.sample_rate, info.samplerate, info.channels, info.frames) == (44100, 44100, 2, 22050)
    assert info.duration == pytest.approx(0.5) and info.format == "WAV" and info.path == path


# --- collect_inputs -------------------------------------------------------------------------------


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")  # collect_inputs never decodes


def _assert_unique(files: list[InputFile]) -> None:
    names = [f.name.casefold() for f in files]
    assert len(set(names)) == len(names), names
    paths = [f.path.resolve() for f in files]
    assert len(set(paths)) == len(paths)


@pytest.fixture
def clips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    _touch(
        tmp_path,
        "clips/a.wav",
        "clips/B.FLAC",
        "clips/notes.txt",
        "clips/.hidden.wav",
        "clips/.cache/c.wav",
        "clips/sub/c.mp3",
        "clips/sub/e.wav",
        "clips/sub/deeper/d.ogg",
    )
    return tmp_path / "clips"


def test_collect_a_folder_recursively(clips: Path) -> None:
    files = collect_inputs(["clips"])
    assert [f.name for f in files] == ["B.FLAC", "a.wav", "sub/c.mp3", "sub/deeper/d.ogg", "sub/e.wav"]
    assert files[1] == InputFile(Path("clips/a.wav"), "a.wav")
    assert all(f.path.is_file() for f in files)


def test_collect_globs(clips: Path) -> None:
    assert [f.name for f in collect_inputs(["clips/**/*.wav"])] == ["a.wav", "sub/e.wav"]
    assert [f.name for f in collect_inputs(["clips/*/*.mp3"])] == ["sub/c.mp3"]
    assert [f.name for f in collect_inputs(["clips/s*"])] == ["sub/c.mp3", "sub/deeper/d.ogg", "sub/e.wav"]


def test_collect_removes_duplicates_keeping_the_first_name(clips: Path) -> None:
    os.symlink(clips / "a.wav", clips.parent / "link.wav")
    files = collect_inputs(["clips/sub", "clips", "clips/a.wav", "clips/**/*.wav", str(clips / "a.wav"), "link.wav"])
    assert [f.name for f in files] == ["c.mp3", "deeper/d.ogg", "e.wav", "B.FLAC", "a.wav"]
    _assert_unique(files)


def test_collect_takes_a_named_file_whatever_its_extension(clips: Path) -> None:
    assert collect_inputs([Path("clips/notes.txt")]) == [InputFile(Path("clips/notes.txt"), "notes.txt")]


@pytest.mark.parametrize("missing", ["nope.wav", "clips/**/*.aiff", "empty_folder"])
def test_collect_names_an_input_that_matches_nothing(clips: Path, missing: str) -> None:
    (clips.parent / "empty_folder").mkdir()
    with pytest.raises(AudioError) as error:
        collect_inputs(["clips", missing])
    assert missing in str(error.value) and error.value.path == missing and error.value.hint


def test_collect_needs_inputs() -> None:
    with pytest.raises(AudioError, match="no audio inputs"):
        collect_inputs([])


def test_collect_makes_clashing_names_unique(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names are a function of each file: a clash renames only the later file, after its content."""
    import hashlib

    monkeypatch.chdir(tmp_path)
    _touch(tmp_path, "one/x.wav", "two/x.wav", "day1/x.wav", "day2/x.wav", "day2/y.wav", "a/clips/x.wav", "b/clips/x.wav", "solo/z.wav")
    for i, name in enumerate(["two/x.wav", "day2/x.wav", "b/clips/x.wav"]):
        (tmp_path / name).write_bytes(b"other %d" % i)

    def tag(name: str) -> str:
        return hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()[:8]

    files = collect_inputs(["one/x.wav", "two/x.wav", "solo/z.wav"])
    assert [f.name for f in files] == ["x.wav", f"x~{tag('two/x.wav')}.wav", "z.wav"]

    # adding an input never renames the outputs of the others
    assert [f.name for f in collect_inputs(["day1"])] == ["x.wav"]
    assert [f.name for f in collect_inputs(["day1", "day2"])] == ["x.wav", f"x~{tag('day2/x.wav')}.wav", "y.wav"]
    assert [f.name for f in collect_inputs(["day2", "day1"])] == ["x.wav", "y.wav", f"x~{tag('day1/x.wav')}.wav"]

    everything = ["one/x.wav", "day1", "a/clips", "two/x.wav", "day2", "b/clips", "solo"]
    files = collect_inputs(everything)
    _assert_unique(files)
    assert len(files) == 8
    assert collect_inputs(everything) == files  # deterministic


def test_collect_names_differing_only_in_case_stay_apart(tmp_path: Path) -> None:
    _touch(tmp_path, "case/X.wav")
    if (tmp_path / "case/x.wav").exists():
        pytest.skip("case-insensitive file system")
    _touch(tmp_path, "case/x.wav")
    files = collect_inputs([tmp_path / "case"])
    assert len(files) == 2
    _assert_unique(files)


def test_collect_survives_a_symlink_cycle(tmp_path: Path) -> None:
    _touch(tmp_path, "loop/a.wav", "loop/sub/b.wav")
    os.symlink(tmp_path / "loop", tmp_path / "loop/sub/back")  # followed, but each real folder is walked once
    assert [f.name for f in collect_inputs([tmp_path / "loop"])] == ["a.wav", "sub/b.wav"]


# --- example clips --------------------------------------------------------------------------------


def test_write_example_audio_is_deterministic_and_loadable(tmp_path: Path) -> None:
    first = write_example_audio(tmp_path / "first", seconds=1.0)
    second = write_example_audio(tmp_path / "second", seconds=1.0)
    assert len(first) >= 5
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert {p.suffix for p in first} <= set(AUDIO_EXTENSIONS)
    infos = {p.name: audio_info(p) for p in first}
    assert any(i.channels == 2 and i.sample_rate == 44100 for i in infos.values())
    assert any(i.format == "FLAC" and i.sample_rate == 22050 for i in infos.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)
        for path in first:
            y, _ = load_audio(path, 16000)
            assert len(y) == 16000
    tone, _ = load_audio(tmp_path / "first" / "tone_440hz_16k.wav")
    assert abs(peak_frequency(tone, 16000) - 440.0) <= 2.0
    assert [f.name for f in collect_inputs([tmp_path / "first"])] == sorted(p.name for p in first)
