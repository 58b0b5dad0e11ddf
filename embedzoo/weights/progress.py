"""Progress on stderr for the long steps of getting weights: downloads (bytes and rate) and conversion.

On a terminal one line is redrawn in place, at most every `REDRAW` seconds. Anywhere else (a log
file, a CI job, `nohup`) whole lines are printed: when a step starts, at least every `EVERY` seconds
while it runs, and when it ends -- logs stay readable and a stalled job shows that it is alive.

Torch-free. The clock is a parameter so that tests can step it without sleeping.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import Callable, TextIO

__all__ = ["EVERY", "REDRAW", "ByteProgress", "Working", "human_size"]

EVERY = 5.0
"""Seconds between lines when stderr is not a terminal."""
REDRAW = 0.2
"""Seconds between redraws of the line on a terminal."""


def human_size(n: float) -> str:
    """1536 -> '1.5 KB' (binary units, as `embedzoo list` and `cache ls` show sizes)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Line:
    """One status line on `stream`: redrawn on a terminal, appended as whole lines elsewhere."""

    def __init__(self, stream: TextIO | None, every: float, clock: Callable[[], float]) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _is_tty(self.stream)
        self.every = every if not self.tty else REDRAW
        self.clock = clock
        self.last = float("-inf")
        self.open = False  # a redrawn line without its newline yet

    def show(self, text: str, *, force: bool = False, final: bool = False) -> None:
        now = self.clock()
        if not (force or final or now - self.last >= self.every):
            return
        self.last = now
        try:
            if self.tty:
                self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
                self.open = not final
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not break a pull
            pass


class ByteProgress:
    """A `Progress` callback -- (bytes done, total or None) -- that shows one file's download.

    `close()` prints the final line (size, time, mean rate) when any bytes were reported."""

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.line = _Line(stream, every, clock)
        self.clock = clock
        self.start: float | None = None
        self.first = 0  # bytes already there when this run began (a resumed download)
        self.done = 0
        self.total: int | None = None

    def rate(self) -> float:
        """Mean bytes per second of this run (resumed bytes excluded)."""
        elapsed = self.clock() - self.start if self.start is not None else 0.0
        return (self.done - self.first) / elapsed if elapsed > 0 else 0.0

    def text(self) -> str:
        have = human_size(self.done)
        if self.total:
            have = f"{have} of {human_size(self.total)} ({100 * self.done / self.total:.0f}%)"
        return f"{self.label}: downloading {have}, {human_size(self.rate())}/s"

    def __call__(self, done: int, total: int | None) -> None:
        starting = self.start is None
        if starting:
            self.start, self.first = self.clock(), done
        self.done, self.total = done, total
        self.line.show(self.text(), force=starting)

    def close(self) -> None:
        if self.start is None:
            return  # nothing was downloaded (a mirror, a package, a cached file)
        elapsed = self.clock() - self.start
        self.line.show(
            f"{self.label}: downloaded {human_size(self.done)} in {elapsed:.1f} s ({human_size(self.rate())}/s)", final=True
        )
        self.start = None


class Working:
    """A long step without a byte count (converting a checkpoint): a line when it starts, the time
    spent so far while it runs (a thread ticks every `every` seconds), and a line when it ends.

        with Working("tiny-test: converting tiny.pth"):
            ...
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
        thread: bool = True,
    ) -> None:
        self.label = label
        self.line = _Line(stream, every, clock)
        self.clock = clock
        self.start = 0.0
        self.thread = thread
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def tick(self) -> None:
        """Show the time spent so far (if a line is due)."""
        self.line.show(f"{self.label} ... {self.clock() - self.start:.0f} s")

    def _run(self) -> None:
        while not self._stop.wait(min(self.line.every, 1.0)):
            self.tick()

    def __enter__(self) -> "Working":
        self.start = self.clock()
        self.line.show(f"{self.label} ...", force=True)
        if self.thread:
            self._ticker = threading.Thread(target=self._run, name="embedzoo-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        elapsed = self.clock() - self.start
        self.line.show(f"{self.label}: {'failed' if kind else 'done'} in {elapsed:.1f} s", final=True)
