"""Math answer equivalence (math-verify) behind a deadline that works anywhere.

`equivalent(answer, gold)` says whether a model's final answer means the same as a
gold answer: ``0.5`` vs ``\\frac{1}{2}``, ``\\{2,1\\}`` vs ``\\{1,2\\}``, ``5\\text{ cm}``
vs ``5``, ``1,000`` vs ``1000``. It uses math-verify (parse to SymPy, then compare).

Why a worker process: SymPy can take seconds (or forever) on a pathological
expression, and math-verify's own timeouts use SIGALRM, which only works on the
main thread of the main interpreter; rollouts verify from threads and from
worker processes. So parse+verify run in a small pool of persistent subprocesses
(``python -m rlvr.verify.math_worker``, started with `subprocess`, which works from
threads, daemonic processes and Ray actors alike) with math-verify's signal timeouts
switched off; the caller waits on the pipe with a deadline, and on timeout the
worker is killed and replaced and `VerifierTimeout` is raised. Following the Verdict
contract, a verifier that cannot decide raises: it never turns its own failure into
"not equivalent"; the caller decides what to do. This file is the caller's side (the
pool, the deadlines, a string fast path, the API); `math_worker` is what the workers
run, including `prepare`, the light rewriting both sides get before math-verify
parses them (plain-text and unicode math to LaTeX, lone words as text, percentages)
and math-verify's unit stripping narrowed to unambiguous units. The audit in
`rlvr.verify.audit_set` measures what all this buys.

    from rlvr.verify.math_equiv import equivalent, equivalent_many
    equivalent("0.5", "\\\\frac{1}{2}")                 # True
    equivalent_many([("1,000", "1000"), ("12", "21")])  # [True, False]

Workers: ``RLVR_VERIFY_WORKERS`` (default 2), started lazily; each holds ~150 MB
and is capped at ``RLVR_VERIFY_MEM_MB`` (default 4096) of address space. POSIX only.

Run its tests: ``.venv/bin/python -m pytest tests/test_math_verify.py -q``.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from rlvr import types
from rlvr.verify.math_worker import Mode, prepare

DEFAULT_TIMEOUT = 5.0
# Importing sympy + math-verify takes 1-3 s on an idle core, much more on a busy one;
# start-up is not charged to any call's deadline.
STARTUP_TIMEOUT = 120.0
WORKERS = max(1, int(os.environ.get("RLVR_VERIFY_WORKERS", "2")))


class VerifierError(types.VerifierError):
    """The verifier could not decide (worker crashed, ran out of memory, ...)."""


class VerifierTimeout(VerifierError, TimeoutError):
    """The verifier did not decide within its deadline."""


# --- the string fast path ----------------------------------------------------------

_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def normalize_light(s: str) -> str:
    """Whitespace collapsed, outer math delimiters dropped: the fast path's key."""
    s = " ".join(s.split())
    for left, right in _DELIMS:
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left):len(s) - len(right)].strip()
            break
    return s


# --- the caller side ----------------------------------------------------------------


class _Died(Exception):
    pass


class _Worker:
    """One persistent subprocess speaking JSON lines; used by one thread at a time."""

    def __init__(self):
        root = str(Path(__file__).resolve().parents[2])  # so the child imports this same rlvr
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rlvr.verify.math_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            start_new_session=True,  # a Ctrl-C meant for the caller does not spray worker tracebacks
        )
        self._fd, self._buf, self._next_id = self.proc.stdout.fileno(), b"", 0
        try:
            ready = self._read_line(time.monotonic() + STARTUP_TIMEOUT)
        except (_Died, TimeoutError):
            self.kill()
            raise VerifierError("the math-verify worker failed to start (see its stderr above)") from None
        if json.loads(ready) != {"ready": True}:
            self.kill()
            raise VerifierError(f"the math-verify worker said {ready!r} instead of ready")

    def _read_line(self, deadline: float) -> bytes:
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if select.select([self._fd], [], [], remaining)[0]:
                chunk = os.read(self._fd, 1 << 16)
                if not chunk:
                    raise _Died
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def call(self, request: dict, timeout: float):
        self._next_id += 1
        request = {**request, "id": self._next_id}
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
            deadline = time.monotonic() + timeout
            while True:
                reply = json.loads(self._read_line(deadline))
                if reply.get("id") == self._next_id:
                    break
        except (BrokenPipeError, _Died):
            raise VerifierError(f"the math-verify worker died (exit code {self.proc.poll()})") from None
        if "error" in reply:
            raise VerifierError(f"math-verify failed: {reply['error']}")
        return reply["result"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class _Pool:
    """At most `size` workers, started on demand; a worker that failed is replaced."""

    def __init__(self, size: int):
        self.size, self._idle, self._count = size, [], 0
        self._cv = threading.Condition()

    def run(self, request: dict, timeout: float):
        worker = self._acquire()
        ok = False
        try:
            result = worker.call(request, timeout)
            ok = True
            return result
        except TimeoutError:
            raise VerifierTimeout(f"math-verify took longer than {timeout:g}s on {_describe(request)}") from None
        finally:
            self._release(worker, ok)

    def _acquire(self) -> _Worker:
        with self._cv:
            while not self._idle and self._count >= self.size:
                self._cv.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return _Worker()  # outside the lock: start-up takes seconds
        except BaseException:
            with self._cv:
                self._count -= 1
                self._cv.notify()
            raise

    def _release(self, worker: _Worker, ok: bool) -> None:
        # Any failure (timeout, crash, error) may leave the worker mid-work or poisoned: replace it.
        if not (ok and worker.alive()):
            worker.kill()
        with self._cv:
            if ok and worker.alive():
                self._idle.append(worker)
            else:
                self._count -= 1
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for w in idle:
            w.kill()


def _describe(request: dict) -> str:
    if request["op"] == "parses":
        return f"parsing {request['text'][:200]!r}"
    return f"answer {request['answer'][:200]!r} vs gold {request['gold'][:200]!r}"


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool(WORKERS)
        return _pool


def _forget_pool_after_fork() -> None:
    # A forked child must not talk to its parent's workers (two readers on one pipe).
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


def shutdown() -> None:
    """Stop the idle workers (they restart on the next call). Also runs at exit."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()


os.register_at_fork(after_in_child=_forget_pool_after_fork)
atexit.register(shutdown)


# --- public API ---------------------------------------------------------------------


def _check_args(answer: str, gold: str, timeout: float) -> None:
    if not isinstance(answer, str) or not isinstance(gold, str):
        raise TypeError(f"answer and gold must be str, got {type(answer).__name__} and {type(gold).__name__}")
    if not normalize_light(gold):
        raise ValueError("gold answer is empty")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0, got {timeout!r}")


def _equivalent(answer: str, gold: str, timeout: float, mode: Mode) -> bool:
    _check_args(answer, gold, timeout)
    if mode == "rlvr":
        a = normalize_light(answer)
        if not a:
            return False
        if a == normalize_light(gold):
            return True
    return bool(_get_pool().run({"op": "compare", "answer": answer, "gold": gold, "mode": mode}, timeout))


def equivalent(answer: str, gold: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether `answer` is mathematically the same answer as `gold`.

    Raises `VerifierTimeout` past `timeout` seconds (start-up of a worker excluded) and
    `VerifierError` if the verifier fails; never returns False for its own failure.
    """
    return _equivalent(answer, gold, timeout, "rlvr")


def equivalent_many(pairs: Iterable[tuple[str, str]], timeout: float = DEFAULT_TIMEOUT, *,
                    errors: Literal["raise", "return"] = "raise", _mode: Mode = "rlvr") -> list:
    """`equivalent` for each (answer, gold) pair, spread over the worker pool.

    `timeout` applies to each pair. errors="raise" raises the first failure;
    errors="return" puts the exception (`VerifierTimeout`, `VerifierError`) in that
    pair's place and goes on.
    """
    if errors not in ("raise", "return"):
        raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
    pairs = list(pairs)

    def one(pair: Sequence[str]):
        try:
            return _equivalent(pair[0], pair[1], timeout, _mode)
        except VerifierError as e:
            if errors == "raise":
                raise
            return e

    if len(pairs) <= 1 or WORKERS == 1:
        return [one(p) for p in pairs]
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(pairs)), thread_name_prefix="math-equiv") as ex:
        return list(ex.map(one, pairs))


def gold_parses(gold: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether math-verify reads `gold` as mathematics. A gold it cannot parse only ever
    matches itself (by the string fast path), so datasets should be checked with this."""
    _check_args(gold, gold, timeout)
    return bool(_get_pool().run({"op": "parses", "text": gold}, timeout))



__all__ = ["DEFAULT_TIMEOUT", "VerifierError", "VerifierTimeout", "equivalent", "equivalent_many", "gold_parses",
           "normalize_light", "prepare", "shutdown"]
