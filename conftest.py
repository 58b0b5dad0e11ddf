"""Test-wide settings: an empty embedzoo cache per test session, never the network, and the
`one_thread` fixture.

The cache lives in a temporary folder so tests neither read nor write the user's
~/.cache/embedzoo; subprocesses inherit it through the environment.
"""

from __future__ import annotations

import os
import tempfile

import pytest

_SESSION_CACHE = tempfile.mkdtemp(prefix="embedzoo-test-cache-")
os.environ["EMBEDZOO_CACHE"] = _SESSION_CACHE
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def one_thread():
    """One torch thread, for tests of small models: faster than two threads fighting over a busy
    CI core (modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
