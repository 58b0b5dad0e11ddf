"""The shard plan (embedzoo.shards): a function of the files alone, capped as documented."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from embedzoo.shards import durations, plan_shards


def test_the_plan_depends_on_the_files_not_on_their_order():
    paths = [f"/data/{name}.wav" for name in "dbeac"]
    seconds = [1.0, 2.0, 3.0, 4.0, 5.0]
    plan = plan_shards(paths, seconds, max_files=2, max_seconds=100)
    assert [[paths[i] for i in s.members] for s in plan] == [["/data/a.wav", "/data/b.wav"], ["/data/c.wav", "/data/d.wav"], ["/data/e.wav"]]
    shuffled = [3, 0, 4, 1, 2]
    again = plan_shards([paths[i] for i in shuffled], [seconds[i] for i in shuffled], max_files=2, max_seconds=100)
    assert [[paths[shuffled[i]] for i in s.members] for s in again] == [[paths[i] for i in s.members] for s in plan]
    assert [s.seconds for s in plan] == [6.0, 6.0, 3.0]  # a + b = 4 + 2 s, c + d = 5 + 1 s, e = 3 s


def test_shards_are_capped_by_seconds_and_a_long_file_is_a_shard_alone():
    paths = [f"/d/{i:02d}.flac" for i in range(6)]
    seconds = [10.0, 10.0, 3600.0, 10.0, 25.0, 10.0]
    plan = plan_shards(paths, seconds, max_files=100, max_seconds=30)
    assert [list(s.members) for s in plan] == [[0, 1], [2], [3], [4], [5]]
    assert all(s.seconds <= 30 or len(s.members) == 1 for s in plan)
    assert plan_shards([], []) == []
    with pytest.raises(ValueError, match="max_files"):
        plan_shards(paths, seconds, max_files=0)


def test_durations_come_from_headers_and_an_unreadable_file_counts_zero(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(24000, dtype=np.float32), 16000)
    (tmp_path / "b.wav").write_bytes(b"not audio")
    assert durations([tmp_path / "a.wav", tmp_path / "b.wav", tmp_path / "missing.wav"]) == [1.5, 0.0, 0.0]


def test_planning_imports_no_torch():
    code = "import sys, embedzoo.shards; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
