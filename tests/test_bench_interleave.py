"""The benchmarks' separate-process harness: each side its own process, stepped in ABBA order."""

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from interleave import Side, WorkerDied, interleave, rounds  # noqa: E402

WORKER = """
import sys, time
sys.path.insert(0, {bench!r})
from interleave import Channel, peak_rss_gb
channel = Channel()
print("library noise on stdout must not reach the protocol")
channel.send(ready=True, name={name!r})
n = 0
while (command := channel.wait())[0] == "step":
    n += 1
    channel.send(seconds=0.0, n=n, at=time.monotonic(), args=command[1])
channel.send(steps=n, peak_rss_gb=peak_rss_gb())
"""
BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def _side(name: str) -> Side:
    return Side(name, ["-c", WORKER.format(bench=BENCH, name=name)])


def test_sides_step_in_abba_order_one_at_a_time():
    a, b = _side("a"), _side("b")
    try:
        assert a.info == {"ready": True, "name": "a"}
        out = interleave([a, b], 4, batch=8)
        assert [s["n"] for s in out["a"]] == [1, 2, 3, 4] and all(s["args"] == {"batch": 8} for s in out["a"])
        stamps = sorted([(s["at"], "a") for s in out["a"]] + [(s["at"], "b") for s in out["b"]])
        assert "".join(name for _, name in stamps) == "abbaabba"
        final = a.close()
        assert final["steps"] == 4 and final["peak_rss_gb"] > 0
        assert b.close()["steps"] == 4
    finally:
        a.kill()
        b.kill()


def test_rounds_rotate_the_order_and_seed_each_round():
    sides = [_side(name) for name in "abc"]
    try:
        out = rounds(sides, 3, seed=5, batch=2)
        stamps = sorted((s["at"], name) for name, steps in out.items() for s in steps)
        assert "".join(name for _, name in stamps) == "abcbcacab"
        assert [s["args"] for s in out["b"]] == [{"seed": 5, "batch": 2}, {"seed": 6, "batch": 2}, {"seed": 7, "batch": 2}]
        assert all(s.close()["steps"] == 3 for s in sides)
    finally:
        for s in sides:
            s.kill()


def test_worker_exit_before_ready_raises():
    t0 = time.monotonic()
    with pytest.raises(WorkerDied, match="broken worker exited \\(status 3\\)"):
        Side("broken", ["-c", "import sys; sys.exit(3)"])
    assert time.monotonic() - t0 < 30
