"""Cut clips that arrive in chunks into the segments a model forwards, in bounded memory.

Three cuts, all defined on the clip padded at both ends (zeros or reflection):
- `WindowFramer`: windows of `window` samples every `hop`, centred on t = k*hop -- the HEAR
  timestamp recipe, and the scene recipe for clips longer than the scene window;
- `WholeFramer`: a clip no longer than the scene window, forwarded whole;
- `ChunkFramer`: frame mode, consecutive chunks whose native frames tile the clip without gaps
  (on the layer's own frame grid: frame j centred on frame_offset + j*frame_hop).
Windows are numpy views into a sliding buffer, so an hour of audio never sits in memory at once.
The counts follow `torch.nn.functional.unfold` over the padded clip, as the HEAR baselines do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def pad_signal(x: np.ndarray, left: int, right: int, mode: str) -> np.ndarray:
    """Pad a 1-d clip; reflection repeats for pads longer than the clip, and is zeros for 1 sample."""
    if left == 0 and right == 0:
        return x
    if mode == "reflect" and len(x) > 1:
        return np.pad(x, (left, right), mode="reflect")
    return np.pad(x, (left, right), mode="constant")


class SlidingSignal:
    """A clip arriving in chunks, readable in windows of its padded form with rising starts."""

    def __init__(self, pad_left: int, pad_right: int, pad_mode: str):
        self.pad_left, self.pad_right, self.pad_mode = pad_left, pad_right, pad_mode
        self._chunks: list[np.ndarray] = []
        self._buffer = np.zeros(0, dtype=np.float32)
        self._start = 0  # padded coordinate of _buffer[0]
        self._head = np.zeros(0, dtype=np.float32)  # first pad_left+1 samples, for reflection
        self._tail = np.zeros(0, dtype=np.float32)  # last pad_right+1 samples, for reflection
        self._left_done = False
        self.length = 0
        self.closed = False

    def push(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if not len(chunk):
            return
        self.length += len(chunk)
        need_head = self.pad_left + 1 - len(self._head)
        if need_head > 0:
            self._head = np.concatenate([self._head, chunk[:need_head]])
        keep = self.pad_right + 1
        # a copy: a view of the last samples would keep the whole chunk alive
        self._tail = np.concatenate([self._tail, chunk[-keep:]])[-keep:].copy()
        self._chunks.append(chunk)
        self._settle_left()

    def close(self) -> None:
        self.closed = True
        self._settle_left()
        if self.pad_right:
            if self.pad_mode == "reflect" and self._everything_buffered():
                whole = self._materialise()[self.pad_left :]
                right = pad_signal(whole, 0, self.pad_right, "reflect")[len(whole) :]
            elif self.pad_mode == "reflect" and len(self._tail) > self.pad_right:
                right = pad_signal(self._tail, 0, self.pad_right, "reflect")[len(self._tail) :]
            else:
                right = np.zeros(self.pad_right, dtype=np.float32)
            self._chunks.append(right.astype(np.float32))

    def _everything_buffered(self) -> bool:
        return self._start == 0 and self._left_done

    def _settle_left(self) -> None:
        """Prepend the left pad once the samples it reflects are known."""
        if self._left_done:
            return
        if self.pad_mode == "reflect" and len(self._head) <= self.pad_left and not self.closed:
            return
        if self.pad_left:
            if self.pad_mode == "reflect":
                left = pad_signal(self._head, self.pad_left, 0, "reflect")[: self.pad_left]
            else:
                left = np.zeros(self.pad_left, dtype=np.float32)
            self._chunks.insert(0, left.astype(np.float32))
        self._left_done = True

    def _materialise(self) -> np.ndarray:
        if self._chunks:
            self._buffer = np.concatenate([self._buffer, *self._chunks]) if len(self._buffer) else np.concatenate(self._chunks)
            self._chunks = []
        return self._buffer

    @property
    def available(self) -> int:
        """Padded coordinate up to which samples can be read now."""
        if not self._left_done:
            return 0
        return self.pad_left + self.length + (self.pad_right if self.closed else 0)

    @property
    def padded_length(self) -> int:
        return self.pad_left + self.length + self.pad_right

    def windows(self, starts: np.ndarray, size: int) -> np.ndarray:
        """Windows [s, s+size) for each start (rising, all readable): an (n, size) view."""
        buffer = self._materialise()
        first = int(starts[0]) - self._start
        if first < 0:
            raise RuntimeError("SlidingSignal: window starts before the released part of the buffer")
        end = int(starts[-1]) - self._start + size
        if end > len(buffer):
            raise RuntimeError("SlidingSignal: window ends beyond the samples received")
        if len(starts) > 1 and np.all(np.diff(starts) == starts[1] - starts[0]) and starts[1] > starts[0]:
            step = int(starts[1] - starts[0])
            view = np.lib.stride_tricks.sliding_window_view(buffer[first:end], size)[::step]
            return view[: len(starts)]
        return np.stack([buffer[int(s) - self._start : int(s) - self._start + size] for s in starts])

    def read(self, start: int, size: int) -> np.ndarray:
        return self.windows(np.array([start]), size)[0]

    def release(self, before: int) -> None:
        """Forget samples before padded coordinate `before` (no later window will need them)."""
        if not self._left_done:
            return
        buffer = self._materialise()
        drop = min(max(0, before - self._start), len(buffer))
        if drop:
            self._buffer = buffer[drop:].copy()
            self._start += drop


@dataclass
class Segments:
    """A run of equal-length segments of one clip: indices k0..k0+n-1, data (n, size)."""

    first_index: int
    data: np.ndarray


class WindowFramer:
    """Windows of `window` samples every `hop`, centred on k*hop (padded by window//2 each side)."""

    def __init__(self, window: int, hop: int, pad_mode: str, min_length: int = 1):
        self.window, self.hop = window, hop
        self.pad = window // 2
        self.signal = SlidingSignal(self.pad, self.pad, pad_mode)
        self.next_index = 0
        self.count: int | None = None

    def _emit_until(self, limit: int) -> list[Segments]:
        """Emit windows k < limit whose samples are all readable."""
        readable = (self.signal.available - self.window) // self.hop + 1 if self.signal.available >= self.window else 0
        stop = min(limit, readable)
        out: list[Segments] = []
        if stop > self.next_index:
            starts = np.arange(self.next_index, stop) * self.hop
            out.append(Segments(self.next_index, self.signal.windows(starts, self.window)))
            self.next_index = stop
        return out

    def push(self, chunk: np.ndarray) -> list[Segments]:
        self.signal.push(chunk)
        # Before the end is known, only windows that lie inside the received audio are certain.
        real_end = self.signal.pad_left + self.signal.length
        safe = (real_end - self.window) // self.hop + 1 if real_end >= self.window else 0
        out = self._emit_until(safe)
        self._release()
        return out

    def close(self) -> list[Segments]:
        self.signal.close()
        total = self.signal.padded_length
        self.count = (total - self.window) // self.hop + 1 if total >= self.window else 0
        out = self._emit_until(self.count)
        self._release()
        return out

    def _release(self) -> None:
        self.signal.release(self.next_index * self.hop)


class ChunkFramer:
    """Frame mode: chunks of at most `chunk` samples whose native frames (hop `frame_hop`, each
    `frame_field` samples) continue each other. Inside a chunk, frame i is centred on
    frame_field//2 + i*frame_hop; the clip is padded by frame_field//2 - frame_offset at the start,
    so its frame j is centred on clip sample frame_offset + j*frame_hop. The clip has
    1 + (length - frame_offset)//frame_hop frames (at least one)."""

    def __init__(self, chunk: int, frame_hop: int, frame_field: int, pad_mode: str, frame_offset: int = 0):
        if not 0 <= frame_offset <= frame_field // 2:
            raise ValueError(f"frame_offset {frame_offset} must lie in [0, frame_field // 2 = {frame_field // 2}]")
        self.frame_hop, self.frame_field, self.frame_offset = frame_hop, frame_field, frame_offset
        self.frames_per_chunk = max(1, (chunk - frame_field) // frame_hop + 1)
        self.chunk = (self.frames_per_chunk - 1) * frame_hop + frame_field
        self.step = self.frames_per_chunk * frame_hop
        self.signal = SlidingSignal(frame_field // 2 - frame_offset, frame_field, pad_mode)
        self.next_index = 0
        self.frame_count: int | None = None

    def push(self, chunk: np.ndarray) -> list[Segments]:
        self.signal.push(chunk)
        real_end = self.signal.pad_left + self.signal.length
        out: list[Segments] = []
        stop = (real_end - self.chunk) // self.step + 1 if real_end >= self.chunk else 0
        if stop > self.next_index:
            starts = np.arange(self.next_index, stop) * self.step
            out.append(Segments(self.next_index, self.signal.windows(starts, self.chunk)))
            self.next_index = stop
        self.signal.release(self.next_index * self.step)
        return out

    def close(self) -> list[Segments]:
        self.signal.close()
        self.frame_count = 1 + max(0, self.signal.length - self.frame_offset) // self.frame_hop
        out: list[Segments] = []
        while self.next_index * self.frames_per_chunk < self.frame_count:
            frames = min(self.frames_per_chunk, self.frame_count - self.next_index * self.frames_per_chunk)
            size = (frames - 1) * self.frame_hop + self.frame_field
            start = self.next_index * self.step
            out.append(Segments(self.next_index, self.signal.windows(np.array([start]), size)))
            self.next_index += 1
        return out

    def frames_in(self, index: int) -> int:
        """How many native frames chunk `index` contributes (the last one may be short)."""
        assert self.frame_count is not None
        return min(self.frames_per_chunk, self.frame_count - index * self.frames_per_chunk)


class WholeFramer:
    """Scene embeddings in window mode: a clip up to `limit` samples is forwarded whole; a longer
    one falls back to windows of `limit` every `hop` (mean of those, as hear21passt does). With
    `fallback=False` a longer clip yields nothing (`overflowed`): the caller already has those
    windows from its timestamp track and averages them instead of computing them twice."""

    def __init__(self, limit: int, hop: int, pad_mode: str, fallback: bool = True):
        self.limit, self.hop, self.pad_mode, self.fallback = limit, hop, pad_mode, fallback
        self._pending: list[np.ndarray] = []
        self._length = 0
        self.overflowed = False
        self.windowed: WindowFramer | None = None

    @property
    def reuses_timestamps(self) -> bool:
        """The clip outgrew the limit without a fallback: its scene is the mean of the timestamp windows."""
        return self.overflowed and not self.fallback

    def push(self, chunk: np.ndarray) -> list[Segments]:
        if self.overflowed:
            return self.windowed.push(chunk) if self.windowed is not None else []
        self._pending.append(np.asarray(chunk, dtype=np.float32).reshape(-1))
        self._length += len(self._pending[-1])
        if self._length <= self.limit:
            return []
        self.overflowed = True
        pending, self._pending = np.concatenate(self._pending), []
        if not self.fallback:
            return []
        self.windowed = WindowFramer(self.limit, self.hop, self.pad_mode)
        return self.windowed.push(pending)

    def close(self) -> list[Segments]:
        if self.overflowed:
            return self.windowed.close() if self.windowed is not None else []
        if not self._pending:
            return []
        whole = np.concatenate(self._pending)
        self._pending = []
        return [Segments(0, whole[None, :])]
