"""embedzoo.progress: the one mechanism under every progress display (terminal or log, interval,
heartbeat, sizes and durations)."""

from __future__ import annotations

import io

import pytest

from embedzoo.progress import DEFAULT_INTERVAL, Display, Line, format_seconds, human_size, progress_interval


def test_the_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBEDZOO_PROGRESS_SECONDS", raising=False)
    assert progress_interval() == DEFAULT_INTERVAL == 5.0
    for value, expected in (("2.5", 2.5), ("0", 0.0), ("-3", 0.0), ("soon", DEFAULT_INTERVAL)):
        monkeypatch.setenv("EMBEDZOO_PROGRESS_SECONDS", value)
        assert progress_interval() == expected
        assert Line(io.StringIO()).every == expected
    assert progress_interval(1.0) == 1.0  # an explicit interval wins


def test_a_log_line_is_throttled_and_a_terminal_line_is_redrawn() -> None:
    now = [0.0]
    log = Line(io.StringIO(), interval=5.0, clock=lambda: now[0])
    log.show("early")  # nothing written yet, but less than 5 s since the start
    now[0] = 5.0
    log.show("due")
    log.show("too soon")
    log.show("forced", force=True)
    assert log.stream.getvalue() == "due\nforced\n"

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Line(Terminal(), interval=5.0, clock=lambda: now[0], redraw=True)
    assert tty.every < 1
    tty.show("a", force=True)
    tty.show("b", final=True)
    assert tty.stream.getvalue() == "\r\x1b[2Ka\r\x1b[2Kb\n" and not tty.open


def test_no_heartbeat_thread_when_every_update_writes_a_line() -> None:
    with Display(io.StringIO(), interval=0.0) as display:
        assert display._thread is None and display.bar is None
    with Display(io.StringIO(), interval=5.0) as display:
        assert display._thread is not None and display._thread.daemon
    assert display._thread is None


def test_sizes_and_durations() -> None:
    assert [human_size(n) for n in (0, 1023, 1536, 5 * 2**20, 3 * 2**40)] == ["0 B", "1023 B", "1.5 KB", "5.0 MB", "3072.0 GB"]
    assert [format_seconds(s) for s in (6.9, 75, 3725)] == ["0:06", "1:15", "1:02:05"]
