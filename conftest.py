"""Test-wide settings: an empty embedzoo cache per test session, and never the network.

The cache lives in a temporary folder so tests neither read nor write the user's
~/.cache/embedzoo; subprocesses inherit it through the environment.
"""

from __future__ import annotations

import os
import tempfile

_SESSION_CACHE = tempfile.mkdtemp(prefix="embedzoo-test-cache-")
os.environ["EMBEDZOO_CACHE"] = _SESSION_CACHE
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
