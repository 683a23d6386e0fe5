"""Latency of one sandboxed execution (rlvr.verify.sandbox), the unit cost of verifying code.

Why: every code completion of an RL step is one sandbox run, so its fixed cost bounds how
many code rollouts a step can verify. Measured: `run_tests` of a tiny correct function
against 3 tests (what `pyfunc` does for each completion), median of 20 runs after a
warm-up; beside it, for scale, a bare `python -I -S -c pass` subprocess (the floor: the
interpreter's start), `run_python("pass")`, and both without namespaces (the fallback),
and `run_tests` from a host holding a 2 GiB heap (a trainer's process: spawning must
not copy it). The last line is `sandbox_ms: X` (the `run_tests` median; target < 100).

    .venv/bin/python benchmarks/sandbox.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time

from rlvr.verify.sandbox import PYTHON, Limits, run_python, run_tests

CODE = "def add(a, b):\n    return a + b\n"
TESTS = ["assert candidate(1, 2) == 3", "assert candidate(-1, 1) == 0", "assert add(20, 22) == 42"]


def median_ms(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    probe = run_python("pass")
    print(f"# sandbox latency | {platform.machine()} {os.cpu_count()} cpus | Python {platform.python_version()} "
          f"| euid {os.geteuid()}")
    print(f"isolation: network={probe.network} filesystem={probe.filesystem} pid_namespace={probe.pid_namespace} "
          f"uid={probe.uid} nproc_enforced={probe.nproc_enforced}")

    def tests():
        report = run_tests(CODE, TESTS, "add")
        assert report.all_passed, report

    rows = [
        ("python -I -S -c pass (floor)", lambda: subprocess.run([PYTHON, "-I", "-S", "-c", "pass"], check=True)),
        ("run_python('pass')", lambda: run_python("pass")),
        ("run_python('pass'), fallback", lambda: run_python("pass", limits=Limits(namespaces=False))),
        ("run_tests fallback", lambda: run_tests(CODE, TESTS, "add", limits=Limits(namespaces=False))),
    ]
    for label, fn in rows:
        med, best = median_ms(fn, args.repeats)
        print(f"{label:34s} median {med:6.1f} ms (min {best:.1f})")
    heap = bytearray(2 << 30)  # touched: a resident 2 GiB, like a trainer's
    heap[::4096] = b"\x01" * len(heap[::4096])
    med, best = median_ms(tests, args.repeats)
    print(f"{'run_tests, host holds 2 GiB':34s} median {med:6.1f} ms (min {best:.1f})")
    del heap
    med, best = median_ms(tests, args.repeats)
    print(f"{'run_tests (3 tests)':34s} median {med:6.1f} ms (min {best:.1f})")
    print(f"sandbox_ms: {med:.1f}")


if __name__ == "__main__":
    main()
