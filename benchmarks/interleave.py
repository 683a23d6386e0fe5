"""Each side of a benchmark in its own process, run in turn: a baseline measured as its users run it.

Why: a baseline timed inside the harness that also runs rlvr shares its process with
rlvr's settings (threads, allocator state, flush-to-zero, oneDNN caches, imported
patches). `benchmarks/rl_step_vs_trl.py` once reported TRL 19x slower in-harness than
alone on the same machine. So every side runs in a process of its own, started from
this file's `worker` protocol, and the parent steps them in turn, A B B A A B ..., so
that a slow spell of a shared machine hits both sides alike. While one side steps the
other is blocked on a pipe read: they never compete for the cores.

Parent:

    sides = [Side("rlvr", [script, "--worker", "rlvr", ...]), Side("trl", [...])]
    results = interleave(sides, steps=12)      # {name: [step message, ...]}
    results = rounds(sides, repeats=5)         # or: one step a side per round, the order rotated
    finals = {s.name: s.close() for s in sides}  # each worker's last message (peak RSS ...)

Worker (the script's `--worker` branch):

    channel = Channel()                 # stdout becomes the protocol; prints go to stderr
    channel.send(ready=True, **info)
    while (command := channel.wait())[0] == "step":
        channel.send(seconds=..., **what_it_did(**command[1]))
    channel.send(**final_report(), peak_rss_gb=peak_rss_gb())
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from typing import Any, Callable


class WorkerDied(RuntimeError):
    pass


class Side:
    """One benchmark side in its own Python process, stepped on command."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, **(env or {})})
        self.info = self._read()  # the worker's "ready" message: what it loaded, its threads

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise WorkerDied(f"the {self.name} worker exited (status {code}) before answering; its stderr is above")
        return json.loads(line)

    def _send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def step(self, **args: Any) -> dict[str, Any]:
        """One step; `args` reach the worker with the command."""
        self._send("step " + json.dumps(args))
        return self._read()

    def close(self) -> dict[str, Any]:
        """Ask the worker for its final report and wait for it to exit."""
        self._send("quit")
        out = self._read()
        self.proc.stdin.close()
        self.proc.wait(timeout=120)
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def interleave(sides: list[Side], steps: int, between: Callable[[], object] | None = None,
               **args: Any) -> dict[str, list[dict[str, Any]]]:
    """`steps` steps of every side, in ABBA order (each round reverses the last), one process
    at a time; `between()` runs before each round while every worker waits (e.g. measuring
    the machine's matmul rate, so each step's share of the peak uses a rate measured next to it)."""
    out: dict[str, list[dict[str, Any]]] = {s.name: [] for s in sides}
    order = list(sides)
    for _ in range(steps):
        if between is not None:
            between()
        for side in order:
            out[side.name].append(side.step(**args))
        order.reverse()
    return out


def rounds(sides: list[Side], repeats: int, between: Callable[[], object] | None = None, seed: int = 1,
           **args: Any) -> dict[str, list[dict[str, Any]]]:
    """`repeats` rounds of one step of every side, the order rotated by one after each
    round (two sides: A B, B A, A B ...; three: A B C, B C A, C A B ...), so that each side
    takes each place alike; round r's steps get `seed + r`; `between()` runs before each
    round (see `interleave`)."""
    out: dict[str, list[dict[str, Any]]] = {s.name: [] for s in sides}
    order = list(sides)
    for r in range(repeats):
        for name, steps in interleave(order, 1, between, seed=seed + r, **args).items():
            out[name] += steps
        order = order[1:] + order[:1]
    return out


class Channel:
    """A worker's end: JSON lines on the real stdout; everything else printed goes to stderr."""

    def __init__(self):
        sys.stdout.flush()
        self._out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # libraries' prints and progress bars must not corrupt the protocol

    def send(self, **message: Any) -> None:
        self._out.write(json.dumps(message) + "\n")
        self._out.flush()

    def wait(self) -> tuple[str, dict[str, Any]]:
        """The parent's next command and its arguments: ("step", {...}) or ("quit", {}) (also
        when the parent is gone)."""
        command, _, args = (sys.stdin.readline().strip() or "quit").partition(" ")
        return command, json.loads(args) if args else {}


def worker_channel(threads: int | None) -> Channel:
    """A worker's start: its `Channel`, `transformers`' logging quiet, and its torch threads
    (when given)."""
    import torch
    from transformers.utils import logging as hf_logging

    channel = Channel()
    hf_logging.set_verbosity_error()
    if threads:
        torch.set_num_threads(threads)
    return channel


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, GB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def report_peak(peaks: list[float], what: str, device: str) -> float:
    """Print the matmul peak measured before each round; return its median (FLOP/s)."""
    import statistics
    peak = statistics.median(peaks)
    print(f"matmul {what} on {device}: {peak / 1e9:.1f} GFLOP/s (median of {len(peaks)} measurements, one before each "
          f"timed round: {min(peaks) / 1e9:.1f}-{max(peaks) / 1e9:.1f})")
    return peak


def add_side_args(ap, names: tuple[str, ...], repeats_help: str) -> None:
    """The options every one-model CPU benchmark of sides takes: --model, --repeats,
    --threads, and the hidden --worker/--path its worker processes are started with."""
    import argparse

    ap.add_argument("--model", default="tiny", help="tiny (random-init preset 'small'), a registered name "
                    "(smollm2-135m, after `rlvr models get`) or a local HF model dir")
    ap.add_argument("--repeats", type=int, default=None, help=repeats_help)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads of every side and of the "
                    "matmul peak (1 on a machine whose cores other work shares: OpenMP's barriers then stall)")
    ap.add_argument("--worker", choices=names, help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)


def run_sides(script: str, names: tuple[str, ...], path: str, threads: int | None, repeats: int,
              **step: Any) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]], float]:
    """Each of `names` as a worker process of `script` on the model at `path`: one warm-up
    step each (step seed 0), then `repeats` rounds (`rounds`), the CPU's matmul rate
    measured before each. Returns (each side's step messages, each side's last message,
    the median matmul rate in FLOP/s)."""
    from common import device_peak

    argv = [script, "--path", path] + (["--threads", str(threads)] if threads else [])
    sides: list[Side] = []
    try:
        for name in names:
            sides.append(Side(name, argv + ["--worker", name]))
        interleave(sides, 1, seed=0, **step)  # warm-up
        peaks: list[float] = []
        runs = rounds(sides, repeats, between=lambda: peaks.append(device_peak("cpu")[0]), **step)
        finals = {s.name: s.close() for s in sides}
    finally:
        for s in sides:
            s.kill()
    return runs, finals, report_peak(peaks, "fp32 2048^3", "cpu")
