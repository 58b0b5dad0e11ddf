"""Progress on stderr for embedzoo's long steps, one mechanism for all of them.

Where stderr is a terminal a display is live: one line redrawn in place (downloads, conversion) or
a rich bar (`eval`, `sweep`, `validate`, `embed-task`, `embed`). Anywhere else (a log file, a pipe,
CI, `nohup`) a live display prints nothing readable, so whole lines are written instead: when a
step starts and ends, and while it runs at least one every `interval` seconds -- a heartbeat
thread repeats the current state when nothing else was written -- never more often than that for
a step's items, so a log stays readable and a stalled job shows that it is alive. The interval is
$EMBEDZOO_PROGRESS_SECONDS (0: a line per update), else `DEFAULT_INTERVAL`.

The mechanics: `Line` (one stream, terminal or log, throttled, the injectable `clock` tests step
without sleeping) and `Display` (a `Line`, the heartbeat thread and the live bar, as a context
manager). The displays on top of them:

- `ByteProgress` -- a download: bytes, total, rate (`embedzoo.weights.fetch.Progress` callback);
- `Working`      -- a step without a count (converting a checkpoint): elapsed seconds;
- `Reporter`     -- stages and items (`embedzoo.eval` Progress callback), and permanent lines;
- `EmbedProgress`-- `embed`'s files, seconds of audio and the current file (`JobProgress.on_change`).

Torch-free; rich is imported only when a bar is shown.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import TracebackType
from typing import IO, Any, Callable

__all__ = [
    "DEFAULT_INTERVAL", "REDRAW", "ENV", "progress_interval", "is_terminal", "human_size", "format_seconds",
    "Line", "Display", "ByteProgress", "Working", "Reporter", "EmbedProgress",
]  # fmt: skip

Clock = Callable[[], float]

ENV = "EMBEDZOO_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 5.0
"""Seconds between lines when stderr is not a terminal (unless $EMBEDZOO_PROGRESS_SECONDS says)."""
REDRAW = 0.2
"""Seconds between redraws of a line on a terminal."""


def progress_interval(interval: float | None = None) -> float:
    """`interval` if given, else $EMBEDZOO_PROGRESS_SECONDS (at least 0), else `DEFAULT_INTERVAL`."""
    if interval is not None:
        return interval
    try:
        return max(0.0, float(os.environ.get(ENV) or DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def human_size(n: float) -> str:
    """1536 -> '1.5 KB' (binary units, as `embedzoo list` and `cache ls` show sizes)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def format_seconds(seconds: float) -> str:
    """A duration as a clock: 75 -> '1:15', 3725 -> '1:02:05'."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class Line:
    """Progress text on one stream (default stderr): whole lines, or -- with `redraw` on a terminal --
    one line redrawn in place. `show` writes at most every `every` seconds (`interval`, or `REDRAW`
    when redrawing) unless forced; `lock` (re-entrant) guards a display's state and its writes."""

    def __init__(self, stream: IO[str] | None = None, *, interval: float | None = None, clock: Clock = time.monotonic, redraw: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = is_terminal(self.stream)
        self.interval = progress_interval(interval)
        self.redraw = redraw and self.tty
        self.every = REDRAW if self.redraw else self.interval
        self.clock = clock
        self.started = self.last = clock()  # the last write: the first unforced line waits `every`
        self.open = False  # a redrawn line without its newline yet
        self.lock = threading.RLock()

    def due(self) -> bool:
        return self.clock() - self.last >= self.every

    def show(self, text: str, *, force: bool = False, final: bool = False) -> None:
        """`text` if forced, final, or nothing was written for `every` seconds. `final` ends a
        redrawn line with its newline."""
        with self.lock:
            if force or final or self.due():
                self.write(text, final=final)

    def write(self, text: str, *, final: bool = False) -> None:
        """`text` now."""
        with self.lock:
            self.last = self.clock()
            try:
                if self.redraw:
                    self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
                    self.open = not final
                else:
                    self.stream.write(text + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # a closed or broken stderr must not stop the work
                pass


def live_bar(stream: IO[str], extra: Callable[[Any], list[Any]]) -> Any:
    """A started rich bar on `stream`: description, bar, done/total, then `extra(rich.progress)`."""
    import rich.progress as rp
    from rich.console import Console

    bar = rp.Progress(
        rp.TextColumn("[bold]{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(), *extra(rp),
        console=Console(file=stream, force_terminal=True),
    )  # fmt: skip
    bar.start()
    return bar


class Display:
    """A `Line` (`out`) for the lifetime of a command (a context manager). `live` (None: when the stream
    is a terminal) shows a rich bar with `bar_columns`; otherwise a heartbeat thread calls `beat`
    -- which writes with `out.show`, so only when a line is due -- while the display is entered
    (unless `heartbeat` is False, or the interval is 0 and every update writes anyway)."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        interval: float | None = None,
        clock: Clock = time.monotonic,
        live: bool | None = None,
        redraw: bool = False,
        heartbeat: bool = True,
    ) -> None:
        self.out = Line(stream, interval=interval, clock=clock, redraw=redraw)
        self.stream, self.clock = self.out.stream, clock
        self.live = self.out.tty if live is None else live
        self.bar: Any = None
        self.heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def bar_columns(self, rp: Any) -> list[Any]:
        """The live bar's columns after done/total (`rp` is rich.progress)."""
        return [rp.TimeElapsedColumn()]

    def beat(self) -> None:
        """What the heartbeat says while nothing else was written (with `out.show`)."""

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.out.every / 4)):
            self.beat()

    def __enter__(self) -> Any:
        if self.live:
            self.bar = live_bar(self.stream, self.bar_columns)
        elif self.heartbeat and self.out.every > 0:
            self._thread = threading.Thread(target=self._run, name="embedzoo-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None = None, exc: BaseException | None = None, tb: TracebackType | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.bar is not None:
            self.bar.stop()


# ---- the displays ---------------------------------------------------------------------------------


class ByteProgress:
    """A `Progress` callback -- (bytes done, total or None) -- that shows one file's download,
    redrawn on a terminal. `close()` prints the final line (size, time, mean rate) when any bytes
    were reported."""

    def __init__(self, label: str, *, stream: IO[str] | None = None, every: float | None = None, clock: Clock = time.monotonic) -> None:
        self.label = label
        self.out = Line(stream, interval=every, clock=clock, redraw=True)
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
        self.out.show(self.text(), force=starting)

    def close(self) -> None:
        if self.start is None:
            return  # nothing was downloaded (a mirror, a package, a cached file)
        elapsed = self.clock() - self.start
        self.out.show(f"{self.label}: downloaded {human_size(self.done)} in {elapsed:.1f} s ({human_size(self.rate())}/s)", final=True)
        self.start = None


class Working(Display):
    """A long step without a count (converting a checkpoint): a line when it starts, the time spent
    so far while it runs (the heartbeat, unless `thread` is False), and a line when it ends.

        with Working("tiny-test: converting tiny.pth"):
            ...
    """

    def __init__(
        self, label: str, *, stream: IO[str] | None = None, every: float | None = None, clock: Clock = time.monotonic, thread: bool = True
    ) -> None:
        super().__init__(stream, interval=every, clock=clock, live=False, redraw=True, heartbeat=thread)
        self.label = label
        self.start = 0.0

    def tick(self) -> None:
        """Show the time spent so far (if a line is due)."""
        self.out.show(f"{self.label} ... {self.clock() - self.start:.0f} s")

    beat = tick

    def __enter__(self) -> "Working":
        self.start = self.clock()
        self.out.show(f"{self.label} ...", force=True)
        return super().__enter__()

    def __exit__(self, kind: type[BaseException] | None = None, exc: BaseException | None = None, tb: TracebackType | None = None) -> None:
        super().__exit__(kind, exc, tb)
        self.out.show(f"{self.label}: {'failed' if kind else 'done'} in {self.clock() - self.start:.1f} s", final=True)


class Reporter(Display):
    """Stage progress and status lines for one command (`eval`, `sweep`, `validate`, `embed-task`).

    `update(stage, done, total)` is the `Progress` callback of `embedzoo.eval`: without a terminal a
    line when a stage starts and ends, and between them at most one every `interval` seconds;
    `line` writes a permanent line (a sweep point's status, a check's result). `live`: None decides
    by the stream (a terminal gets the bar); `quiet` silences stage progress but not
    `line(..., always=True)`."""

    def __init__(
        self,
        title: str,
        *,
        stream: IO[str] | None = None,
        interval: float | None = None,
        quiet: bool = False,
        live: bool | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(stream, interval=interval, clock=clock, live=False if quiet else live, heartbeat=not quiet)
        self.title = title
        self.quiet = quiet
        self._state: tuple[str, int, int | None] | None = None  # the stage running now
        self._stage_started = 0.0
        self._tasks: dict[str, Any] = {}
        self.prefix = ""  # what the stages belong to (a sweep's point)

    def update(self, stage: str, done: int, total: int | None, announce: bool = True) -> None:
        """`stage` has `done` of `total` items. Without a terminal a new stage is announced at once
        unless `announce` is False (then the heartbeat names it if it runs for a while); `prefix`
        (a sweep's point) leads its lines."""
        if self.quiet:
            return
        if self.bar is not None:
            if stage not in self._tasks:
                self._tasks[stage] = self.bar.add_task(stage, total=total)
            self.bar.update(self._tasks[stage], completed=done, total=total)
            return
        name = f"{self.prefix}{stage}"
        with self.out.lock:
            new = self._state is None or self._state[0] != name or done < self._state[1]
            if new:
                self._stage_started = self.clock()
            self._state = (name, done, total)
            finished = total is not None and done >= total
            self.out.show(self._describe(), force=(new and announce) or finished)
            if finished:
                self._state = None

    def line(self, text: str, *, always: bool = False) -> None:
        """A permanent line (above the bar on a terminal)."""
        if self.quiet and not always:
            return
        if self.bar is not None:
            self.bar.console.print(text, markup=False, highlight=False)
        else:
            self.out.write(text)

    def _describe(self) -> str:
        assert self._state is not None
        name, done, total = self._state
        count = f"{done}/{total}" if total is not None else str(done)
        percent = f" ({100 * done / total:.0f}%)" if total else ""
        return f"{self.title}: {name} {count}{percent} [{format_seconds(self.clock() - self._stage_started)}]"

    def beat(self) -> None:
        """While nothing else was written for `interval` seconds, say what is running."""
        with self.out.lock:
            if self._state is not None:
                self.out.show(self._describe() + " ...")
            else:
                self.out.show(f"{self.title}: working [{format_seconds(self.clock() - self.out.started)}]")


class EmbedProgress(Display):
    """`embed`'s progress: a live bar on a terminal; anywhere else a plain line at least every
    `interval` seconds, also while one long file runs: files, seconds of audio, the current file.
    `update` is the pipeline's `JobProgress.on_change`."""

    def __init__(self, label: str, stream: IO[str] | None = None, interval: float | None = None, clock: Clock = time.monotonic) -> None:
        super().__init__(stream, interval=interval, clock=clock)
        self.label = label
        self.state: Any = None
        self.task: Any = None

    def bar_columns(self, rp: Any) -> list[Any]:
        return [rp.TimeRemainingColumn(), rp.TextColumn("{task.fields[audio]}"), rp.TextColumn("{task.fields[name]}")]

    def __enter__(self) -> "EmbedProgress":
        super().__enter__()
        if self.bar is not None:
            self.task = self.bar.add_task(self.label, total=None, audio="", name="")
        return self

    def text(self) -> str:
        s = self.state
        line = f"{self.label}: {s.finished}/{s.total} files ({s.skipped} already done, {s.failed} failed), {s.audio_seconds:.1f} s of audio decoded"
        if s.current:
            line += f"; {s.current}" + (f" at {s.current_seconds:.1f} s" if s.current_seconds else "")
        return line + f" [{format_seconds(self.clock() - self.out.started)}]"

    def update(self, state: Any) -> None:
        self.state = state
        if self.bar is not None:
            self.bar.update(self.task, total=state.total, completed=state.finished, audio=f"{state.audio_seconds:.0f} s of audio", name=state.current)
            return
        with self.out.lock:
            self.out.show(self.text())

    def beat(self) -> None:
        """A line when nothing was printed for `interval` seconds (one forward pass of a long file)."""
        with self.out.lock:
            if self.state is not None:
                self.out.show(self.text() + " ...")
