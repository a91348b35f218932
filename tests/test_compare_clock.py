"""``kdlab.compare.clock.InvocationClock``: the elapsed time an invocation records while it runs, and the sum
the invocation that finishes reads back from the earlier ones."""
from __future__ import annotations

import json
import time

import pytest

from kdlab.compare.clock import CLOCK_DIR, InvocationClock


def test_the_record_is_rewritten_while_running_and_kept_when_the_body_raises(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError):
        with InvocationClock(tmp_path, "exp", t0=t0, every_s=0.05) as clock:
            first = json.loads(clock.path.read_text())["elapsed_s"]
            beats = {first}
            while len(beats) < 3 and time.perf_counter() - t0 < 30:  # two rewrites (a loaded machine may be slow)
                time.sleep(0.02)
                beats.add(json.loads(clock.path.read_text())["elapsed_s"])
            raise RuntimeError("stopped")
    end = time.perf_counter() - t0
    final = json.loads(clock.path.read_text())
    assert len(beats) == 3 and min(beats) == first
    assert max(beats) <= final["elapsed_s"] <= end and final["pid"] > 0  # written once more at the exit
    assert clock.path.parent == tmp_path / CLOCK_DIR / "exp"


def test_finish_sums_the_earlier_records_of_its_comparison_only_and_removes_them(tmp_path):
    folder = tmp_path / CLOCK_DIR
    (folder / "exp").mkdir(parents=True)
    (folder / "exp" / "a.json").write_text(json.dumps({"elapsed_s": 100.5}))
    (folder / "exp" / "b.json").write_text(json.dumps({"elapsed_s": 20.25}))
    (folder / "exp" / "torn.json").write_text('{"elapsed')  # a record cut short counts 0
    (folder / "exp-2").mkdir()
    (folder / "exp-2" / "c.json").write_text(json.dumps({"elapsed_s": 7.0}))  # another comparison's
    t0 = time.perf_counter() - 3.0
    with InvocationClock(tmp_path, "exp", t0=t0, every_s=60) as clock:
        got = clock.finish()
    assert got["earlier_invocations"] == 2 and got["earlier_wall_time_s"] == pytest.approx(120.75)
    assert 3.0 <= got["wall_time_s"] <= time.perf_counter() - t0
    assert not (folder / "exp").exists()  # its own record too: not written again at the exit
    assert (folder / "exp-2" / "c.json").is_file()
    with InvocationClock(tmp_path, "exp", every_s=60) as clock:
        assert clock.finish()["earlier_invocations"] == 0
