"""Files and arrays in, clean mono float32 at the model's sample rate out.

Decoding is soundfile (libsndfile: wav, flac, ogg, mp3, ...) and PyAV (ffmpeg, bundled in its
wheels) for the containers libsndfile cannot read (m4a, mp4, aac, webm, mka, ...); resampling is
soxr, and every problem with a file becomes an `AudioError` that names the file, says what is wrong
and what to do, so a batch job can record it and go on with the next file. The module is
torch-free: the CLI and DataLoader workers import it without paying for torch.

Decisions worth knowing:
- Down-mixing is the plain mean over channels (what torchaudio, librosa and the HEAR recipes do),
  also for files PyAV decodes (not ffmpeg's weighted down-mix matrices).
- Resampling uses soxr quality "HQ" (see `resample`).
- Samples beyond [-1, 1] (unnormalised or clipped float files) are kept as they are and warned
  about (`ClippingWarning`): rescaling would silently change what the model sees. Beyond
  `MAX_SAMPLE_MAGNITUDE` (2**24, int24-scale floats) the file is refused: such values are no
  audio level, and squared (power spectra, norms) they leave float32's range inside models.
  NaN/Inf samples are refused with the time of the first.
- Bounded geometry: decoding reads blocks of at most `_BLOCK_BYTES` of decoded samples whatever
  the channel count, so a header declaring 1,024 channels costs no more memory than a stereo file.
  Files must declare 1 to `MAX_CHANNELS` channels and a rate of `MIN_SAMPLE_RATE` to
  `MAX_SAMPLE_RATE` Hz (below 1 kHz a tiny file would stand for hours of audio after resampling).
- Arrays (`as_float_samples`): float arrays are taken as they are; int8/int16/int32 (and uint8)
  PCM is scaled to [-1, 1) by its full scale; other dtypes are refused with a hint.
- Truncated files (the header promises more audio than the file holds) are decoded as far as the
  data goes and a `TruncatedAudioWarning` is emitted: a half-copied hour of recording still has a
  usable first half. Where libsndfile cannot decode the rest at all (a FLAC stream cut mid-frame
  loses sync, a cut Ogg Vorbis file has no end page) the result is an `AudioError` as for any
  corrupt file. Detection is best effort: it relies on the frame count in the header and, for
  WAV/AIFF-style files whose count libsndfile already shortened, on libsndfile's parser log; files
  PyAV decodes are taken as far as they decode.
- PyAV opens files as Python file objects (no ffmpeg protocols, so a name like 'concat:a|b' is just
  a name) and only with the demuxers in `_PYAV_FORMATS` (no playlists that would open other files).
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import soundfile as sf
import soxr

from embedzoo.errors import AudioError

__all__ = [
    "AUDIO_EXTENSIONS",
    "MAX_CHANNELS",
    "MAX_SAMPLE_MAGNITUDE",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "PYAV_EXTENSIONS",
    "SOUNDFILE_EXTENSIONS",
    "AudioInfo",
    "AudioWarning",
    "ClippingWarning",
    "TruncatedAudioWarning",
    "as_float_samples",
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


MIN_SAMPLE_RATE = 1000
"""Lowest file sample rate read, Hz: below it a few kilobytes would resample to hours of audio."""
MAX_SAMPLE_RATE = 1_000_000
"""Highest file sample rate read, Hz (ultrasound recorders reach 1 MHz; beyond is a broken header)."""
MAX_CHANNELS = 1024
"""Most channels a file may declare (libsndfile's own limit; the PyAV path keeps to it too)."""
MAX_SAMPLE_MAGNITUDE = float(2**24)
"""Largest |sample| accepted: int24-scale float files pass (with a ClippingWarning), 3e38 does not."""

_BLOCK_BYTES = 1 << 24  # decoded samples per read, all channels together: 16 MiB whatever the geometry
_LOAD_BLOCK_FRAMES = 1 << 20  # load_audio reads in blocks too, so a bogus header cannot ask for terabytes at once

PYAV_EXTENSIONS: tuple[str, ...] = (".m4a", ".mp4", ".aac", ".webm", ".mka", ".opus", ".mp3")
"""Containers PyAV decodes (where this libsndfile cannot, or as its fallback)."""
# demuxers PyAV may use (ffmpeg names; "mov" is mov/mp4/m4a, "matroska" is mkv/mka/webm): no
# playlists (hls, concat) or image/network formats that would read other files
_PYAV_FORMATS = "mov,matroska,ogg,aac,mp3,wav,w64,flac,aiff,caf,asf,au"


def _soundfile_extensions() -> tuple[str, ...]:
    """Extensions of the containers this libsndfile build decodes (mp3 and opus need >= 1.1/1.0.29)."""
    formats = sf.available_formats()
    extensions = [".wav", ".flac", ".ogg", ".oga"]
    if "OPUS" in sf.available_subtypes("OGG"):
        extensions.append(".opus")
    if "MP3" in formats:
        extensions.append(".mp3")
    extensions += [".aiff", ".aif", ".aifc", ".au", ".caf", ".w64", ".rf64"]
    return tuple(extensions)


def _have_pyav() -> bool:
    return importlib.util.find_spec("av") is not None  # no import: discovery stays light


def _readable_extensions() -> tuple[str, ...]:
    """What folders and globs pick up: libsndfile's extensions, then PyAV's (a core dependency)."""
    extensions = _soundfile_extensions()
    if _have_pyav():
        extensions += tuple(e for e in PYAV_EXTENSIONS if e not in extensions)
    return extensions


SOUNDFILE_EXTENSIONS: tuple[str, ...] = _soundfile_extensions()
"""What libsndfile reads here; other files (and these, when libsndfile cannot open them) go to PyAV."""
AUDIO_EXTENSIONS: tuple[str, ...] = _readable_extensions()
"""What folders and globs pick up (compared case-insensitively). A file named directly is always tried."""

_DECODE_HINT = (
    "check that it is an audio file embedzoo can read (" + ", ".join(AUDIO_EXTENSIONS) + "); re-encode it, e.g. `ffmpeg -i IN OUT.flac`"
)


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
    if x.dtype.kind == "f" and x.shape[1] < 8:
        return _channel_mean(x)
    return x.mean(axis=1, dtype=np.float32) if x.dtype == np.float32 else x.mean(axis=1)


def _channel_mean(x: np.ndarray) -> np.ndarray:
    """numpy's mean over fewer than 8 float channels, to the bit (a sum from +0.0 in channel order,
    then one division), about ten times faster: column adds instead of a strided reduction, which
    was 38 % of decoding a stereo file. From 8 channels on numpy sums pairwise, so `to_mono` leaves
    those to it."""
    out = np.add(x[:, 0], x[:, 1])
    for channel in range(2, x.shape[1]):
        out += x[:, channel]
    out += 0.0  # numpy's sum starts at +0.0: -0.0 + -0.0 comes out +0.0 there
    out /= out.dtype.type(x.shape[1])
    return out


def _check_rate(rate: int, what: str) -> int:
    """A positive whole number of Hz (an int, a numpy integer or a float such as 16000.0)."""
    if isinstance(rate, (float, np.floating)) and float(rate).is_integer():
        rate = int(rate)
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise AudioError(f"{what} must be a positive integer number of Hz, got {rate!r}", hint="pass e.g. 16000")
    return int(rate)


# full scale of PCM dtypes: int16 -32768..32767 -> [-1, 1); uint8 is offset binary (8-bit WAV)
_PCM_FULL_SCALE = {np.dtype(np.int8): 2.0**7, np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31, np.dtype(np.uint8): 2.0**7}


def as_float_samples(x: Any, name: str = "audio") -> np.ndarray:
    """An array of samples as floats, PCM integers scaled to [-1, 1) in float32; anything else refused.

    Floats pass as they are (float64 stays float64, so that `check_audio` refuses values beyond
    float32's range rather than seeing them turned into Inf). int8/int16/int32 are divided by their full scale (2**7, 2**15,
    2**31) and uint8 is offset by 128 first, as WAV stores it. int64, unsigned 16/32/64-bit, bool,
    complex and object arrays have no agreed meaning as audio and raise an AudioError.
    """
    x = np.asarray(x)
    if x.dtype in _PCM_FULL_SCALE:
        scale = _PCM_FULL_SCALE[x.dtype]
        if x.dtype == np.uint8:
            return ((x.astype(np.float32) - 128.0) / scale).astype(np.float32)
        return (x.astype(np.float64) / scale).astype(np.float32)
    if x.dtype.kind == "f":
        return x if x.dtype == np.float64 else x.astype(np.float32, copy=False)  # float64 checked before narrowing
    what = {"b": "booleans", "c": "complex numbers", "i": f"{x.dtype} integers", "u": f"{x.dtype} integers"}.get(x.dtype.kind, f"dtype {x.dtype}")
    raise AudioError(
        f"{name}: audio must be float samples or int8/int16/int32 PCM, got {what}",
        hint="pass float32 in [-1, 1] (for 16-bit PCM held in a wider type: x.astype('int16') or x / 32768)",
    )


def _first_nonfinite(x: np.ndarray) -> int | None:
    """Frame index of the first NaN/Inf, or None (one fast vectorised pass when all is well)."""
    if np.isfinite(x.sum(dtype=np.float64)):  # NaN/Inf always propagate to the sum
        return None
    finite = np.isfinite(x) if x.ndim == 1 else np.isfinite(x).all(axis=1)
    if finite.all():  # a float64 sum of huge finite values can overflow by itself
        return None
    return int(np.argmin(finite))


def _raise_nonfinite(name: str, frame: int, sample_rate: int) -> None:
    raise AudioError(
        f"'{name}' contains NaN or Inf samples, the first at {frame / sample_rate:.3f} s (sample {frame})",
        hint="clean the file (replace non-finite samples or re-export it from the source) or leave it out",
        path=name,
    )


def _raise_huge(name: str, peak: float, frame: int, sample_rate: int) -> None:
    raise AudioError(
        f"'{name}' has a sample of magnitude {peak:.3g} at {frame / sample_rate:.3f} s (sample {frame}), "
        f"beyond the largest embedzoo accepts (2**24 = {MAX_SAMPLE_MAGNITUDE:.0f}): no audio level is that high",
        hint="rescale it to [-1, 1] (e.g. `sox IN --norm OUT.wav`), or leave it out",
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
    """Largest |sample| and the frame where it is (-1 when within [-1, 1]: not needed, not searched,
    so a long clip costs two passes and no copy)."""
    peak = max(float(x.max()), -float(x.min()))
    if peak <= 1.0:
        return peak, -1
    flat_index = int(np.argmax(np.abs(x)))
    return peak, flat_index if x.ndim == 1 else flat_index // x.shape[1]


def _refuse_unusable(x: np.ndarray, name: str, sample_rate: int, start: int = 0) -> tuple[float, int]:
    """Raise for NaN/Inf or samples beyond MAX_SAMPLE_MAGNITUDE (frame `start` is the block's first);
    returns the peak and its frame within `x`."""
    bad = _first_nonfinite(x)
    if bad is not None:
        _raise_nonfinite(name, start + bad, sample_rate)
    peak, frame = _peak(x)
    if peak > MAX_SAMPLE_MAGNITUDE:
        _raise_huge(name, peak, start + frame, sample_rate)
    return peak, frame


def check_audio(x: np.ndarray, name: str, sample_rate: int, warn: bool = True) -> np.ndarray:
    """Refuse what no model can use (no samples, NaN/Inf, |x| > MAX_SAMPLE_MAGNITUDE), warn about
    |x| > 1 (unless `warn` is False); float32 contiguous out. Integer PCM is scaled (`as_float_samples`).

    `name` (a file name or "clip 3") goes into the messages; `sample_rate` turns sample indices into
    seconds so the user can find the bad spot in an editor.
    """
    x = as_float_samples(x, name)
    if x.size == 0:
        raise AudioError(f"'{name}' has no audio samples", hint="the file is empty (or cut short before its first sample); re-export it or leave it out", path=name)
    peak, frame = _refuse_unusable(x, name, sample_rate)
    if warn and peak > 1.0:
        _warn_clipping(name, peak, frame, sample_rate, stacklevel=2)
    return np.ascontiguousarray(x, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


class _Decoder(Protocol):
    """An open file, read block by block: soundfile's or PyAV's."""

    rate: int
    channels: int
    frames: int  # what the header says (an estimate for compressed containers; 0: unknown)
    format: str
    subtype: str

    def read(self, frames: int) -> np.ndarray:
        """Up to `frames` frames as (frames, channels) float32 (float64 for DOUBLE files); fewer only at the end."""

    def truncated(self, decoded: int) -> bool:
        """Did the header promise more than the `decoded` frames?"""

    def close(self) -> None: ...


class _CannotOpen(Exception):
    """This decoder cannot open the file; the reason goes into the AudioError if no decoder can."""


class _SoundfileDecoder:
    def __init__(self, path: Path):
        try:
            self._file = sf.SoundFile(path)
        except (sf.SoundFileError, RuntimeError, TypeError, ValueError, OSError) as error:
            raise _CannotOpen(_soundfile_reason(error)) from error
        f = self._file
        self.rate, self.channels, self.frames, self.format, self.subtype = f.samplerate, f.channels, f.frames, f.format, f.subtype
        self._dtype = np.float64 if f.subtype == "DOUBLE" else np.float32  # so 1e300 is refused as huge, not read as Inf

    def read(self, frames: int) -> np.ndarray:
        return _read_block(self._file, frames, self._dtype)

    def truncated(self, decoded: int) -> bool:
        return _looks_truncated(self._file, decoded)

    def close(self) -> None:
        self._file.close()


class _PyAVDecoder:
    """The first audio stream of a container, through PyAV (ffmpeg), as planar float32 at the rate
    and layout of its first frame (swresample converts the sample format only; down-mixing is ours)."""

    def __init__(self, path: Path):
        try:
            import av
        except ImportError as error:
            raise _CannotOpen("reading this container needs PyAV: pip install av") from error
        self._av = av
        self._handle = open(path, "rb")
        try:
            self._container = av.open(self._handle, options={"format_whitelist": _PYAV_FORMATS}, metadata_errors="ignore")
        except Exception as error:  # ffmpeg's open errors are many (InvalidDataError, ValueError, ...)
            self._handle.close()
            raise _CannotOpen(_pyav_reason(error)) from error
        try:
            streams = self._container.streams.audio
            if not streams:
                raise _CannotOpen("the container has no audio stream")
            self._stream = streams[0]
            self._rate = 0  # set from the first frame
            self._frames = self._decode()
            first = next(self._frames, None)  # the first frame's rate and layout are the truth (HE-AAC doubles the header's rate)
        except _CannotOpen:
            self.close()
            raise
        except Exception as error:
            self.close()
            raise _CannotOpen(_pyav_reason(error)) from error
        self._pending: list[np.ndarray] = [] if first is None else [first]
        self._pending_frames = 0 if first is None else len(first)
        context = self._stream.codec_context
        self.channels = first.shape[1] if first is not None else context.channels
        self.rate = self._rate or context.sample_rate
        self.format = self._container.format.name.split(",")[0].upper()
        self.subtype = context.name.upper()
        seconds = float(self._stream.duration * self._stream.time_base) if self._stream.duration else (self._container.duration or 0) / 1e6
        self.frames = int(round(seconds * self.rate))

    def _decode(self) -> Iterator[np.ndarray]:
        resampler = None
        for frame in self._container.decode(self._stream):
            if resampler is None:
                self._rate = frame.sample_rate
                resampler = self._av.AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
            for out in resampler.resample(frame):
                yield out.to_ndarray().T
        if resampler is not None:
            for out in resampler.resample(None):
                yield out.to_ndarray().T

    def read(self, frames: int) -> np.ndarray:
        try:
            while self._pending_frames < frames:
                block = next(self._frames, None)
                if block is None:
                    break
                self._pending.append(block)
                self._pending_frames += len(block)
        except Exception as error:
            raise RuntimeError(_pyav_reason(error)) from error
        if not self._pending:
            return np.zeros((0, self.channels), np.float32)
        data = np.ascontiguousarray(np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0], dtype=np.float32)
        out, rest = data[:frames], data[frames:]
        self._pending, self._pending_frames = ([rest] if len(rest) else []), len(rest)
        return out

    def truncated(self, decoded: int) -> bool:
        return False  # container durations are estimates; see the module docstring

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
        self._handle.close()


def _pyav_reason(error: Exception) -> str:
    message = str(error)
    # PyAV adds "[Errno N] " and ": '<name>'" (the file object's name); the path is already in our message
    message = re.sub(r"^\[Errno -?\d+\]\s*", "", message)
    return re.sub(r":\s*'[^']*'\s*$", "", message).strip() or type(error).__name__


def _check_geometry(path: Path, decoder: _Decoder) -> None:
    """Refuse rates and channel counts no recording has (a corrupt or hostile header)."""
    name = str(path)
    if not MIN_SAMPLE_RATE <= decoder.rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"'{path}' declares a sample rate of {decoder.rate} Hz; embedzoo reads {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz",
            hint="the header is corrupt or the data is not audio; re-export it at its real rate, or leave it out",
            path=name,
        )
    if not 1 <= decoder.channels <= MAX_CHANNELS:
        raise AudioError(
            f"'{path}' declares {decoder.channels} channels; embedzoo reads 1 to {MAX_CHANNELS}",
            hint="the header is corrupt; down-mix or split the file first (e.g. `ffmpeg -i IN -ac 1 OUT.flac`), or leave it out",
            path=name,
        )


def _open(path: Path) -> _Decoder:
    """Open for reading with soundfile, else PyAV (PyAV first for its own containers), turning every
    way this can fail into an AudioError naming the file."""
    if not path.exists():
        raise AudioError(f"audio file not found: '{path}'", hint="check the path; the file may have been moved or deleted", path=str(path))
    if path.is_dir():
        raise AudioError(f"'{path}' is a folder, not an audio file", hint="pass the folder to collect_inputs / `embedzoo embed` to process the files in it", path=str(path))
    if not os.access(path, os.R_OK):
        raise AudioError(f"cannot read '{path}': permission denied", hint="check the file's permissions", path=str(path))
    pyav_first = path.suffix.lower() in PYAV_EXTENSIONS and path.suffix.lower() not in SOUNDFILE_EXTENSIONS
    decoders: list[type] = [_PyAVDecoder, _SoundfileDecoder] if pyav_first else [_SoundfileDecoder, _PyAVDecoder]
    reason = None
    for decoder_class in decoders:
        try:
            decoder = decoder_class(path)
        except _CannotOpen as error:
            reason = reason or str(error)  # the first decoder's reason is the one that fits the file's name
            continue
        try:
            _check_geometry(path, decoder)
        except AudioError:
            decoder.close()
            raise
        return decoder
    raise AudioError(f"cannot decode '{path}': {reason}", hint=_DECODE_HINT, path=str(path))


def _soundfile_reason(error: Exception) -> str:
    message = str(error)
    # soundfile prefixes "Error opening 'PATH': "; the path is already in our message.
    return re.sub(r"^Error opening .*?: ", "", message).strip() or type(error).__name__


def audio_info(path: str | Path) -> AudioInfo:
    """Sample rate, channels, frames and duration from the file's header (PyAV's containers: the
    first frame and the container's duration), without decoding the file."""
    path = Path(path)
    decoder = _open(path)
    try:
        return AudioInfo(path=path, sample_rate=decoder.rate, channels=decoder.channels, frames=decoder.frames, format=decoder.format, subtype=decoder.subtype)
    finally:
        decoder.close()


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


def _read_block(f: sf.SoundFile, frames: int, dtype: type = np.float32) -> np.ndarray:
    """Up to `frames` frames as (frames, channels) `dtype` (float32 or float64); fewer only at the end of the file.

    Calls libsndfile directly: `SoundFile.read` seeks back to its own idea of the position after
    every call, and libsndfile 1.2's MP3 and Opus seeks are not sample-accurate, so block-wise
    reads through it decode garbage (mpg123 "part2_3_length ... too large") where one big read is
    fine. Without the seek, reading in blocks gives what one read gives.
    """
    lib, ffi, handle = getattr(sf, "_snd", None), getattr(sf, "_ffi", None), getattr(f, "_file", None)
    double = np.dtype(dtype) == np.float64
    if lib is None or ffi is None or handle is None:  # a soundfile without these internals
        return f.read(frames, dtype="float64" if double else "float32", always_2d=True)
    out = np.empty((frames, f.channels), dtype=np.float64 if double else np.float32)
    if double:
        got = lib.sf_readf_double(handle, ffi.cast("double *", out.ctypes.data), frames)
    else:
        got = lib.sf_readf_float(handle, ffi.cast("float *", out.ctypes.data), frames)
    code = lib.sf_error(handle)
    if code:
        raise sf.LibsndfileError(code)
    return out[:got]


def _block_frames(decoder: _Decoder, block_seconds: float | None) -> int:
    """Frames per read: `block_seconds` (or `_LOAD_BLOCK_FRAMES`), capped so that a block of all
    channels stays within `_BLOCK_BYTES` -- 1,024 channels or a 1 MHz rate cost no more memory."""
    wanted = _LOAD_BLOCK_FRAMES if block_seconds is None else max(1, int(round(block_seconds * decoder.rate)))
    return max(1, min(wanted, _BLOCK_BYTES // (8 * decoder.channels)))


def _decoded_blocks(path: Path, block_seconds: float | None) -> Iterator[tuple[np.ndarray, int]]:
    """(mono float32 block, file sample rate) until the end; refuses NaN/Inf and huge samples per
    block (in any channel, before the down-mix), warns on |x|>1 once.

    Blocks are `block_seconds` long (the last may be shorter), or `_LOAD_BLOCK_FRAMES` when None,
    and never more than `_BLOCK_BYTES` of decoded samples.

    Raises AudioError for files that cannot be opened or decoded, and for files with no samples.
    """
    name = str(path)
    decoder = _open(path)
    try:
        rate = decoder.rate
        block_frames = _block_frames(decoder, block_seconds)
        decoded = 0
        warned_clipping = False
        while True:
            try:
                block = decoder.read(block_frames)
            except (sf.SoundFileError, RuntimeError, ValueError, OSError, MemoryError) as error:
                where = f" beyond {decoded / rate:.3f} s" if decoded else ""
                raise AudioError(f"cannot decode '{path}'{where}: {_soundfile_reason(error)}", hint="the file is corrupt or truncated; re-encode or re-copy it, or leave it out", path=name) from error
            if len(block) == 0:
                break
            peak, frame = _refuse_unusable(block, name, rate, start=decoded)
            if not warned_clipping and peak > 1.0:
                _warn_clipping(name, peak, decoded + frame, rate, stacklevel=3)
                warned_clipping = True
            mono = np.ascontiguousarray(to_mono(block), dtype=np.float32)
            decoded += len(mono)
            yield mono, rate
        if decoded == 0:
            raise AudioError(
                f"'{path}' has no audio samples" + (f" (its header promises {decoder.frames} frames)" if decoder.frames else ""),
                hint="the file is empty, or truncated/corrupt before its first sample; re-export it or leave it out",
                path=name,
            )
        if decoder.truncated(decoded):
            promised = f"{decoder.frames / rate:.3f} s" if decoder.frames > decoded else "more"
            warnings.warn(
                f"'{path}' looks truncated: decoded {decoded / rate:.3f} s where its header promises {promised}; "
                "using what is there",
                TruncatedAudioWarning,
                stacklevel=3,
            )
    finally:
        decoder.close()


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
