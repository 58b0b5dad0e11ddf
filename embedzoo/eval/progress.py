"""Progress of long commands (`eval`, `sweep`, `validate`, `embed-task`) on stderr.

On a terminal it is a live rich bar per stage. Anywhere else (a log file, a pipe, CI) a live bar
prints nothing until the end -- hours of work without a word -- so the reporter writes plain lines
instead: one when a stage starts and ends, one for each point or check, and while anything runs
at least one line every `interval` seconds (a heartbeat that repeats the current state, with the
time spent), never more often than that for a stage's items, so a log stays readable.

The reporter's `update(stage, done, total)` is the `Progress` callback of `embedzoo.eval`; `line`
writes a permanent line (a sweep point's status, a check's result). Torch-free.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any, Callable

__all__ = ["Reporter", "DEFAULT_INTERVAL", "format_seconds"]

DEFAULT_INTERVAL = 5.0  # seconds between lines when stderr is not a terminal


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class Reporter:
    """Stage progress and status lines for one command (a context manager).

    `live`: None decides by the stream (a terminal gets the bar); `quiet` silences stage progress
    but not `line(..., always=True)`. `clock` is for tests of the throttling."""

    def __init__(
        self,
        title: str,
        *,
        stream: IO[str] | None = None,
        interval: float = DEFAULT_INTERVAL,
        quiet: bool = False,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.title = title
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.quiet = quiet
        self.clock = clock
        self.live = (not quiet) and (_is_terminal(self.stream) if live is None else live)
        self._lock = threading.Lock()
        self._state: tuple[str, int, int | None] | None = None  # the stage running now
        self._stage_started = 0.0
        self._last_line = clock()
        self._started = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self.prefix = ""  # what the stages belong to (a sweep's point)

    # ---- lifetime -----------------------------------------------------------------------------

    def __enter__(self) -> "Reporter":
        if self.quiet:
            return self
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(file=self.stream, force_terminal=True)
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
            self._bar.start()
        else:
            self._thread = threading.Thread(target=self._heartbeat, name="embedzoo-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.stop()

    # ---- reporting ----------------------------------------------------------------------------

    def update(self, stage: str, done: int, total: int | None, announce: bool = True) -> None:
        """`stage` has `done` of `total` items (the `embedzoo.eval` Progress callback). Without a
        terminal a new stage is announced at once unless `announce` is False (then the heartbeat
        names it if it runs for a while); `prefix` (a sweep's point) leads its lines."""
        if self.quiet:
            return
        if self._bar is not None:
            name = stage
            if name not in self._tasks:
                self._tasks[name] = self._bar.add_task(name, total=total)
            self._bar.update(self._tasks[name], completed=done, total=total)
            return
        name = f"{self.prefix}{stage}"
        with self._lock:
            now = self.clock()
            new = self._state is None or self._state[0] != name or done < self._state[1]
            if new:
                self._stage_started = now
            self._state = (name, done, total)
            finished = total is not None and done >= total
            if (new and announce) or finished or now - self._last_line >= self.interval:
                self._write(self._describe(now))
            if finished:
                self._state = None

    def line(self, text: str, *, always: bool = False) -> None:
        """A permanent line (above the bar on a terminal)."""
        if self.quiet and not always:
            return
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
            return
        with self._lock:
            self._write(text)

    def _describe(self, now: float) -> str:
        assert self._state is not None
        name, done, total = self._state
        count = f"{done}/{total}" if total is not None else str(done)
        percent = f" ({100 * done / total:.0f}%)" if total else ""
        return f"{self.title}: {name} {count}{percent} [{format_seconds(now - self._stage_started)}]"

    def _write(self, text: str) -> None:
        self._last_line = self.clock()
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed or broken stderr must not stop the work
            pass

    def _heartbeat(self) -> None:
        """While nothing else was written for `interval` seconds, say what is running."""
        while not self._stop.wait(min(1.0, self.interval / 4)):
            with self._lock:
                now = self.clock()
                if now - self._last_line < self.interval:
                    continue
                if self._state is not None:
                    self._write(self._describe(now) + " ...")
                else:
                    self._write(f"{self.title}: working [{format_seconds(now - self._started)}]")


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
