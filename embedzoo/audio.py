"""Files and arrays in, clean mono float32 at the model's sample rate out.

Decoding is soundfile (libsndfile), resampling is soxr, and every problem with a file becomes an
`AudioError` that names the file, says what is wrong and what to do, so a batch job can record it
and go on with the next file. The module is torch-free: the CLI and DataLoader workers import it
without paying for torch.

Decisions worth knowing:
- Down-mixing is the plain mean over channels (what torchaudio, librosa and the HEAR recipes do).
- Resampling uses soxr quality "HQ" (see `resample`).
- Samples beyond [-1, 1] (unnormalised or clipped float files) are kept as they are and warned
  about (`ClippingWarning`): rescaling would silently change what the model sees.
- Truncated files (the header promises more audio than the file holds) are decoded as far as the
  data goes and a `TruncatedAudioWarning` is emitted: a half-copied hour of recording still has a
  usable first half. Where libsndfile cannot decode the rest at all (a FLAC stream cut mid-frame
  loses sync, a cut Ogg Vorbis file has no end page) the result is an `AudioError` as for any
  corrupt file. Detection is best effort: it relies on the frame count in the header and, for
  WAV/AIFF-style files whose count libsndfile already shortened, on libsndfile's parser log.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import soundfile as sf
import soxr

from embedzoo.errors import AudioError

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioInfo",
    "AudioWarning",
    "ClippingWarning",
    "TruncatedAudioWarning",
    "audio_info",
    "check_audio",
    "load_audio",
    "resample",
    "stream_audio",
    "to_mono",
    "write_example_audio",
]

RESAMPLE_QUALITY = "HQ"


def __getattr__(name: str) -> Any:
    """`InputFile` and `collect_inputs` moved to `embedzoo.inputs`; kept importable from here for compatibility."""
    if name in ("InputFile", "collect_inputs"):
        from embedzoo import inputs

        return getattr(inputs, name)
    raise AttributeError(f"module 'embedzoo.audio' has no attribute {name!r}")


def _readable_extensions() -> tuple[str, ...]:
    """Extensions of the containers this libsndfile build decodes (mp3 and opus need >= 1.1/1.0.29)."""
    formats = sf.available_formats()
    extensions = [".wav", ".flac", ".ogg", ".oga"]
    if "OPUS" in sf.available_subtypes("OGG"):
        extensions.append(".opus")
    if "MP3" in formats:
        extensions.append(".mp3")
    extensions += [".aiff", ".aif", ".aifc", ".au", ".caf", ".w64", ".rf64"]
    return tuple(extensions)


AUDIO_EXTENSIONS: tuple[str, ...] = _readable_extensions()
"""What folders and globs pick up (compared case-insensitively). A file named directly is always tried."""

_DECODE_HINT = "check that it is an audio file soundfile can read (" + ", ".join(AUDIO_EXTENSIONS) + "); re-encode it, e.g. `ffmpeg -i IN OUT.flac`"
_LOAD_BLOCK_FRAMES = 1 << 20  # load_audio reads in blocks too, so a bogus header cannot ask for terabytes at once


class AudioWarning(UserWarning):
    """Something about an audio file is suspicious but usable."""


class ClippingWarning(AudioWarning):
    """Samples beyond [-1, 1]: a clipped or unnormalised float file."""


class TruncatedAudioWarning(AudioWarning):
    """The file holds less audio than its header says; what is there was used."""


# ---------------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Seconds, from the header's frame count."""
        return self.frames / self.sample_rate

    @property
    def samplerate(self) -> int:
        """soundfile's spelling of `sample_rate`."""
        return self.sample_rate


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample along axis 0 with soxr, float32 out; the same array's float32 view when rates match.

    Quality "HQ": linear phase, 20-bit precision (about 120 dB stop-band rejection), flat pass band
    to about 91% of the output Nyquist. That is beyond the dynamic range of 16-bit sources and the
    log-spectrogram floors of every front end we support, and it is librosa's default ("soxr_hq"),
    so embeddings match reference pipelines that resample with librosa; "VHQ" (28-bit) costs about
    40% more time for precision below float32 rounding of typical signals.
    """
    sr_in, sr_out = _check_rate(sr_in, "sr_in"), _check_rate(sr_out, "sr_out")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    return soxr.resample(x, sr_in, sr_out, quality=RESAMPLE_QUALITY)


def to_mono(x: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) by the mean over channels; 1-d input is returned as is."""
    x = np.asarray(x)
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise AudioError(f"audio must be (frames,) or (frames, channels), got shape {x.shape}", hint="pass one clip at a time")
    if x.shape[1] == 1:
        return x[:, 0]
    return x.mean(axis=1, dtype=np.float32) if x.dtype == np.float32 else x.mean(axis=1)


def _check_rate(rate: int, what: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise AudioError(f"{what} must be a positive integer number of Hz, got {rate!r}", hint="pass e.g. 16000")
    return int(rate)


def _first_nonfinite(x: np.ndarray) -> int | None:
    """Frame index of the first NaN/Inf, or None (one fast vectorised pass when all is well)."""
    if np.isfinite(x.sum(dtype=np.float64)):  # NaN/Inf always propagate to the sum; finite overflow cannot in float64
        return None
    finite = np.isfinite(x) if x.ndim == 1 else np.isfinite(x).all(axis=1)
    return int(np.argmin(finite))


def _raise_nonfinite(name: str, frame: int, sample_rate: int) -> None:
    raise AudioError(
        f"'{name}' contains NaN or Inf samples, the first at {frame / sample_rate:.3f} s (sample {frame})",
        hint="clean the file (replace non-finite samples or re-export it from the source) or leave it out",
        path=name,
    )


def _warn_clipping(name: str, peak: float, frame: int, sample_rate: int, stacklevel: int) -> None:
    warnings.warn(
        f"'{name}' has samples beyond [-1, 1] (peak {peak:.3g} near {frame / sample_rate:.3f} s): it is clipped, "
        "an unnormalised float file or a lossy decode overshooting; it is used as is, normalise it if embeddings look off",
        ClippingWarning,
        stacklevel=stacklevel + 1,
    )


def _peak(x: np.ndarray) -> tuple[float, int]:
    """Largest |sample| and the frame where it is."""
    flat_index = int(np.argmax(np.abs(x)))
    frame = flat_index if x.ndim == 1 else flat_index // x.shape[1]
    return float(np.abs(x.flat[flat_index])), frame


def check_audio(x: np.ndarray, name: str, sample_rate: int) -> np.ndarray:
    """Refuse what no model can use (no samples, NaN/Inf), warn about |x| > 1; float32 contiguous out.

    `name` (a file name or "clip 3") goes into the messages; `sample_rate` turns sample indices into
    seconds so the user can find the bad spot in an editor.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size == 0:
        raise AudioError(f"'{name}' has no audio samples", hint="the file is empty (or cut short before its first sample); re-export it or leave it out", path=name)
    bad = _first_nonfinite(x)
    if bad is not None:
        _raise_nonfinite(name, bad, sample_rate)
    peak, frame = _peak(x)
    if peak > 1.0:
        _warn_clipping(name, peak, frame, sample_rate, stacklevel=2)
    return x


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def _open(path: Path) -> sf.SoundFile:
    """Open for reading, turning every way this can fail into an AudioError naming the file."""
    if not path.exists():
        raise AudioError(f"audio file not found: '{path}'", hint="check the path; the file may have been moved or deleted", path=str(path))
    if path.is_dir():
        raise AudioError(f"'{path}' is a folder, not an audio file", hint="pass the folder to collect_inputs / `embedzoo embed` to process the files in it", path=str(path))
    if not os.access(path, os.R_OK):
        raise AudioError(f"cannot read '{path}': permission denied", hint="check the file's permissions", path=str(path))
    try:
        return sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError, OSError) as error:
        raise AudioError(f"cannot decode '{path}': {_soundfile_reason(error)}", hint=_DECODE_HINT, path=str(path)) from error


def _soundfile_reason(error: Exception) -> str:
    message = str(error)
    # soundfile prefixes "Error opening 'PATH': "; the path is already in our message.
    return re.sub(r"^Error opening .*?: ", "", message).strip() or type(error).__name__


def audio_info(path: str | Path) -> AudioInfo:
    """Sample rate, channels, frames and duration from the file's header, without decoding it."""
    path = Path(path)
    with _open(path) as f:
        return AudioInfo(path=path, sample_rate=f.samplerate, channels=f.channels, frames=f.frames, format=f.format, subtype=f.subtype)


# libsndfile's parser log: "data : 128000 (should be 63978)" when a chunk claims more bytes than the
# file holds (WAV, AIFF, W64, ...); "junk after the last page" when an Ogg file stops mid-page.
# ("File ended unexpectedly" is no sign: libsndfile logs it at the end of complete Ogg files too.)
_CHUNK_LOG = re.compile(r"^\s*(?:data|SSND|RIFF|riff|FORM)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_CUT_NOTES = ("junk after the last page", "data chunk seems to be truncated")
_UNKNOWN_SIZES = {0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF}  # streaming writers (ffmpeg to a pipe) leave these


def _looks_truncated(f: sf.SoundFile, decoded_frames: int) -> bool:
    """Did the header promise more audio than was decoded? (best effort, see the module docstring)."""
    if f.frames > decoded_frames:
        return True
    try:
        log = f.extra_info
    except Exception:  # the log is a diagnostic; never fail a good file over it
        return False
    for claimed, present in _CHUNK_LOG.findall(log):
        if int(claimed) not in _UNKNOWN_SIZES and int(claimed) > int(present) + 1:  # +1: odd-size chunks pad a byte
            return True
    return any(note in log.lower() for note in _CUT_NOTES)


def _read_block(f: sf.SoundFile, frames: int) -> np.ndarray:
    """Up to `frames` frames as (frames, channels) float32; fewer only at the end of the file.

    Calls libsndfile directly: `SoundFile.read` seeks back to its own idea of the position after
    every call, and libsndfile 1.2's MP3 and Opus seeks are not sample-accurate, so block-wise
    reads through it decode garbage (mpg123 "part2_3_length ... too large") where one big read is
    fine. Without the seek, reading in blocks gives what one read gives.
    """
    lib, ffi, handle = getattr(sf, "_snd", None), getattr(sf, "_ffi", None), getattr(f, "_file", None)
    if lib is None or ffi is None or handle is None:  # a soundfile without these internals
        return f.read(frames, dtype="float32", always_2d=True)
    out = np.empty((frames, f.channels), dtype=np.float32)
    got = lib.sf_readf_float(handle, ffi.cast("float *", out.ctypes.data), frames)
    code = lib.sf_error(handle)
    if code:
        raise sf.LibsndfileError(code)
    return out[:got]


def _decoded_blocks(path: Path, block_seconds: float | None) -> Iterator[tuple[np.ndarray, int]]:
    """(mono float32 block, file sample rate) until the end; checks NaN/Inf per block, warns on |x|>1 once.

    Blocks are `block_seconds` long (the last may be shorter), or `_LOAD_BLOCK_FRAMES` when None.

    Raises AudioError for files that cannot be opened or decoded, and for files with no samples.
    """
    name = str(path)
    with _open(path) as f:
        rate = f.samplerate
        block_frames = _LOAD_BLOCK_FRAMES if block_seconds is None else max(1, int(round(block_seconds * rate)))
        decoded = 0
        warned_clipping = False
        while True:
            try:
                block = _read_block(f, block_frames)
            except (sf.SoundFileError, RuntimeError, ValueError, MemoryError) as error:
                where = f" beyond {decoded / rate:.3f} s" if decoded else ""
                raise AudioError(f"cannot decode '{path}'{where}: {_soundfile_reason(error)}", hint="the file is corrupt or truncated; re-encode or re-copy it, or leave it out", path=name) from error
            if len(block) == 0:
                break
            mono = np.ascontiguousarray(to_mono(block), dtype=np.float32)
            bad = _first_nonfinite(mono)
            if bad is not None:
                _raise_nonfinite(name, decoded + bad, rate)
            if not warned_clipping:
                peak, frame = _peak(mono)
                if peak > 1.0:
                    _warn_clipping(name, peak, decoded + frame, rate, stacklevel=3)
                    warned_clipping = True
            decoded += len(mono)
            yield mono, rate
        if decoded == 0:
            raise AudioError(
                f"'{path}' has no audio samples" + (f" (its header promises {f.frames} frames)" if f.frames else ""),
                hint="the file is empty, or truncated/corrupt before its first sample; re-export it or leave it out",
                path=name,
            )
        if _looks_truncated(f, decoded):
            promised = f"{f.frames / rate:.3f} s" if f.frames > decoded else "more"
            warnings.warn(
                f"'{path}' looks truncated: decoded {decoded / rate:.3f} s where its header promises {promised}; "
                "using what is there",
                TruncatedAudioWarning,
                stacklevel=3,
            )


def _too_short(path: Path, frames: int, sr_in: int, sr_out: int) -> AudioError:
    return AudioError(
        f"'{path}' is too short: {frames} sample(s) at {sr_in} Hz give no sample at {sr_out} Hz",
        hint="the clip must last at least one sample period of the model's sample rate",
        path=str(path),
    )


def load_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode a whole file to mono float32, resampled to `sample_rate` if given; returns (audio, its rate)."""
    path = Path(path)
    target = None if sample_rate is None else _check_rate(sample_rate, "sample_rate")
    blocks = []
    rate = 0
    for mono, rate in _decoded_blocks(path, None):
        blocks.append(mono)
    audio = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    if target is None or target == rate:
        return audio, rate
    resampled = resample(audio, rate, target)
    if resampled.size == 0:
        raise _too_short(path, len(audio), rate, target)
    return resampled, target


def stream_audio(path: str | Path, sample_rate: int, block_seconds: float = 30.0) -> Iterator[np.ndarray]:
    """`load_audio(path, sample_rate)[0]` in pieces, in memory bounded by `block_seconds` of audio.

    Blocks are decoded, down-mixed and checked one at a time and fed through one soxr stream, so
    the concatenation equals the one-shot result. Yielded pieces are non-empty but of varying
    length. Errors (AudioError) come when the bad block is reached; warnings as in `load_audio`.
    """
    path = Path(path)
    target = _check_rate(sample_rate, "sample_rate")
    if not block_seconds > 0:
        raise AudioError(f"block_seconds must be positive, got {block_seconds!r}", hint="pass e.g. 30.0")
    resampler: soxr.ResampleStream | None = None
    rate = decoded = produced = 0
    for mono, rate in _decoded_blocks(path, block_seconds):
        if decoded == 0 and rate != target:
            resampler = soxr.ResampleStream(rate, target, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        decoded += len(mono)
        out = mono if resampler is None else resampler.resample_chunk(mono, last=False)
        if out.size:
            produced += out.size
            yield out
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if tail.size:
            produced += tail.size
            yield tail
    if produced == 0:
        raise _too_short(path, decoded, rate, target)


# ---------------------------------------------------------------------------------------------
# Example clips for the README's demo
# ---------------------------------------------------------------------------------------------


def _faded(x: np.ndarray, sample_rate: int, fade_seconds: float = 0.01) -> np.ndarray:
    """Short linear fade in/out, so tones start and stop without clicks (broadband transients)."""
    n = min(int(fade_seconds * sample_rate), len(x) // 2)
    if n:
        ramp = np.linspace(0.0, 1.0, n, endpoint=False)
        shape = (n,) + (1,) * (x.ndim - 1)
        x[:n] *= ramp.reshape(shape)
        x[len(x) - n :] *= ramp[::-1].reshape(shape)
    return x


def write_example_audio(folder: str | Path, seconds: float = 3.0) -> list[Path]:
    """Write a few short, deterministic clips (known pitches, sweep, noise, stereo, flac) to `folder`.

    They exercise the input paths a real folder does (several rates, stereo, flac) and have content
    whose embeddings differ visibly; the same call always writes the same bytes.
    """
    if not seconds > 0:
        raise AudioError(f"seconds must be positive, got {seconds!r}", hint="pass e.g. 3.0")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def timeline(rate: int) -> np.ndarray:
        return np.arange(int(round(seconds * rate))) / rate

    def tone(hz: float, rate: int) -> np.ndarray:
        return 0.5 * np.sin(2 * np.pi * hz * timeline(rate))

    def log_chirp(f0: float, f1: float, rate: int) -> np.ndarray:
        t = timeline(rate)
        k = np.log(f1 / f0) / seconds
        return 0.5 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)

    noise_rate = 16000
    noise = 0.1 * np.random.default_rng(20210101).standard_normal(len(timeline(noise_rate)))
    clips: list[tuple[str, np.ndarray, int]] = [
        ("tone_440hz_16k.wav", tone(440.0, 16000), 16000),
        ("tone_1000hz_16k.wav", tone(1000.0, 16000), 16000),
        ("chirp_100-8000hz_32k.wav", log_chirp(100.0, 8000.0, 32000), 32000),
        ("noise_white_16k.wav", noise, noise_rate),
        ("stereo_330hz_660hz_44k.wav", np.stack([tone(330.0, 44100), tone(660.0, 44100)], axis=1), 44100),
        ("tone_880hz_22k.flac", tone(880.0, 22050), 22050),
    ]
    paths = []
    for filename, signal, rate in clips:
        path = folder / filename
        sf.write(path, _faded(signal, rate).astype(np.float32), rate, subtype="PCM_16")
        paths.append(path)
    return paths
