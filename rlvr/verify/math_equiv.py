"""Math answer equivalence (math-verify) behind a deadline that works anywhere.

`equivalent(answer, gold)` says whether a model's final answer means the same as a
gold answer: ``0.5`` vs ``\\frac{1}{2}``, ``\\{2,1\\}`` vs ``\\{1,2\\}``, ``5\\text{ cm}``
vs ``5``, ``1,000`` vs ``1000``. It uses math-verify (parse to SymPy, then compare).

Why a worker process: SymPy can take seconds (or forever) on a pathological
expression, and math-verify's own timeouts use SIGALRM, which only works on the
main thread of the main interpreter; rollouts verify from threads and from
worker processes. So parse+verify run in a small pool of persistent subprocesses
(``python -m rlvr.verify.math_equiv --worker``, started with `subprocess`, which
works from threads, daemonic processes and Ray actors alike) with math-verify's
signal timeouts switched off; the caller waits on the pipe with a deadline, and
on timeout the worker is killed and replaced and `VerifierTimeout` is raised.
Following the Verdict contract, a verifier that cannot decide raises: it never
turns its own failure into "not equivalent"; the caller decides what to do.

Before math-verify sees a string it is lightly rewritten (both sides alike):
plain-text ``pi``, ``sqrt(..)``, ``**`` and ``1.5e3`` become LaTeX, so do unicode
``− √ ∞ π × · ≤ ≥ ≠`` and vulgar fractions (``½``); ``\\varnothing`` becomes
``\\emptyset``; thin-space thousands separators go; a lone word of three or more
letters is text (else ``stop`` would be s*t*o*p, equal to ``pots``); and a bare
answer is wrapped in ``$..$`` (math-verify only reads LaTeX between delimiters).
With a ``%`` on either side, the pair also counts as equivalent when it is with the
percent signs dropped (math-verify does this for integer percentages, but not for
``12.5\\%`` vs ``12.5``). math-verify's unit stripping is narrowed: it treated
single letters and letter pairs after a number as units, so ``2c`` equalled ``2d``
and ``2`` answered ``2t``; rlvr keeps only word and unmistakable units (``5 m`` is
no longer ``5``: a recall cost taken for precision). The audit in
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
import re
import select
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from rlvr import types

DEFAULT_TIMEOUT = 5.0
# Importing sympy + math-verify takes 1-3 s on an idle core, much more on a busy one;
# start-up is not charged to any call's deadline.
STARTUP_TIMEOUT = 120.0
WORKERS = max(1, int(os.environ.get("RLVR_VERIFY_WORKERS", "2")))
MEM_MB = int(os.environ.get("RLVR_VERIFY_MEM_MB", "4096"))


class VerifierError(types.VerifierError):
    """The verifier could not decide (worker crashed, ran out of memory, ...)."""


class VerifierTimeout(VerifierError, TimeoutError):
    """The verifier did not decide within its deadline."""


# --- normalisation ------------------------------------------------------------------

_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def normalize_light(s: str) -> str:
    """Whitespace collapsed, outer math delimiters dropped: the fast path's key."""
    s = " ".join(s.split())
    for left, right in _DELIMS:
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left):len(s) - len(right)].strip()
            break
    return s


_HAS_DELIMS = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed")
_PLAIN_PI = re.compile(r"(?<![\\A-Za-z])pi(?![A-Za-z])")
_POWER = re.compile(r"\*\*\s*([0-9]+|[A-Za-z])")
_THIN_THOUSANDS = re.compile(r"(?<=[0-9])\\,(?=[0-9]{3}(?![0-9]))")
_PLAIN_SQRT = re.compile(r"(?<![\\A-Za-z])sqrt\s*\(")
_ROOT_ATOM = re.compile("\u221a\\s*([0-9]+(?:\\.[0-9]+)?|[A-Za-z])")
_E_NOTATION = re.compile(r"(?<![A-Za-z0-9.\\])([0-9]+(?:\.[0-9]+)?)[eE]([+-]?[0-9]+)(?![0-9.])")
_WORD = re.compile(r"[A-Za-z]{3,}")
_MATH_WORDS = frozenset({"inf", "infty", "infinity", "sqrt", "frac", "pi", "oo"})
_UNICODE = {"\u2212": "-", "\u221e": "\\infty ", "\u03c0": "\\pi ", "\u00d7": "\\times ", "\u22c5": "\\cdot ",
            "\u00b7": "\\cdot ", "\u2264": "\\le ", "\u2265": "\\ge ", "\u2260": "\\ne "}
_PERCENT = re.compile(r"\\?%")


def _latex_sqrt(s: str) -> str:
    """``sqrt(x+1)`` -> ``\\sqrt{x+1}`` with matched parentheses (unmatched: left alone)."""
    out, i = [], 0
    while (m := _PLAIN_SQRT.search(s, i)) is not None:
        depth, j = 1, m.end()
        while j < len(s) and depth:
            depth += {"(": 1, ")": -1}.get(s[j], 0)
            j += 1
        if depth:
            break
        out.append(s[i:m.start()] + "\\sqrt{" + s[m.end():j - 1] + "}")
        i = j
    out.append(s[i:])
    return "".join(out)


def _vulgar_fractions(s: str) -> str:
    """``½`` -> ``\\frac{1}{2}`` (``1½`` then reads as the mixed number 3/2)."""
    out = []
    for ch in s:
        if unicodedata.category(ch) == "No" and unicodedata.decomposition(ch).startswith("<fraction>"):
            parts = unicodedata.decomposition(ch).split()[1:]  # "<fraction> 0031 2044 0032"
            num, _, den = "".join(chr(int(c, 16)) for c in parts).partition("\u2044")
            out.append(f"\\frac{{{num}}}{{{den}}}" if num.isdigit() and den.isdigit() else ch)
        else:
            out.append(ch)
    return "".join(out)


def prepare(s: str) -> str:
    """The string math-verify parses for one side of a comparison (see the module docstring)."""
    s = s.strip().replace("\\varnothing", "\\emptyset")
    if _WORD.fullmatch(s) and s.lower() not in _MATH_WORDS:
        # A lone word is text: math-verify would read "stop" as s*t*o*p, equal to "pots".
        return f"$\\text{{{s}}}$"
    for k, v in _UNICODE.items():
        s = s.replace(k, v)
    s = _vulgar_fractions(s)
    s = s.replace("\u221a(", "sqrt(")
    s = _ROOT_ATOM.sub(r"\\sqrt{\1}", s).replace("\u221a", "\\sqrt")
    s = _E_NOTATION.sub(r"\1\\times 10^{\2}", s)
    s = _PLAIN_PI.sub(r"\\pi ", s)
    s = _POWER.sub(r"^{\1}", s)
    s = _THIN_THOUSANDS.sub("", s)
    s = _latex_sqrt(s)
    return s if _HAS_DELIMS.search(s) else f"${s}$"


# --- the worker side (runs in the subprocess) ------------------------------------------

Mode = Literal["rlvr", "plain"]


# math-verify drops a trailing unit word after a number, and its list holds single letters
# and letter pairs that are everyday variables (c d g h l m o s t, ab bc am ...): "2c" and
# "2d" both become 2, "a + c" equals "a + d", "2" answers "2t". rlvr keeps only the units
# that are words or unmistakable abbreviations; text-wrapped units (5\text{ m}) still go.
_AMBIGUOUS_UNITS = frozenset({"ab", "bc", "am", "pm", "by", "st", "rd", "th", "mt", "mp", "cc", "gm", "dm", "lt",
                              "rs", "sq"})
_units_regex: dict[str, re.Pattern] = {}


def _use_units(mode: Mode) -> None:
    """Point math-verify at its own unit regex ("plain") or rlvr's safer one (worker only)."""
    import latex2sympy2_extended.math_normalization as mn

    if not _units_regex:
        safe = sorted({u for u in mn.units if len(u.strip()) > 1 and u.strip() not in _AMBIGUOUS_UNITS},
                      key=len, reverse=True)
        pattern = "(?:" + "|".join(map(re.escape, safe)) + ")(?:s|es)?"
        _units_regex["plain"] = mn.units_regex
        _units_regex["rlvr"] = re.compile(f"(\\d|\\}}|\\s)\\s*(?:{pattern})\\s*$")
    mn.units_regex = _units_regex[mode]


def _compare(answer: str, gold: str, mode: Mode = "rlvr") -> bool:
    """parse+verify with math-verify's signal timeouts off. "plain": math-verify as documented."""
    from math_verify import parse, verify

    _use_units(mode)
    if mode == "plain":
        return bool(verify(parse(gold, parsing_timeout=None), parse(answer, parsing_timeout=None),
                           timeout_seconds=None))
    g, a = parse(prepare(gold), parsing_timeout=None), parse(prepare(answer), parsing_timeout=None)
    # allow_set_relation_comp: "0 \le x \le 1" answers "[0,1]" (math-verify only allows it
    # when the answer is the set).
    if verify(g, a, timeout_seconds=None, allow_set_relation_comp=True):
        return True
    if "%" in answer or "%" in gold:
        return _compare(_PERCENT.sub("", answer), _PERCENT.sub("", gold), mode)
    return False


def _parses(text: str) -> bool:
    """Whether math-verify reads `text` as mathematics (not only as a fallback string)."""
    from math_verify import parse

    _use_units("rlvr")
    return any(not isinstance(x, str) for x in parse(prepare(text), parsing_timeout=None))


def _worker_main() -> None:
    import logging

    # The protocol owns the real stdout; anything a library prints goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        import resource

        limit = MEM_MB * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _compare("1/2", "\\frac{1}{2}")  # import and warm the parser before saying ready
    proto.write('{"ready": true}\n')
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "parses":
                result = _parses(req["text"])
            else:
                result = _compare(req["answer"], req["gold"], req.get("mode", "rlvr"))
            proto.write(json.dumps({"id": req["id"], "result": result}) + "\n")
        except BaseException as e:  # MemoryError, RecursionError, sympy bugs: the caller decides
            proto.write(json.dumps({"id": req["id"], "error": f"{type(e).__name__}: {e}"[:2000]}) + "\n")


# --- the caller side ----------------------------------------------------------------


class _Died(Exception):
    pass


class _Worker:
    """One persistent subprocess speaking JSON lines; used by one thread at a time."""

    def __init__(self):
        root = str(Path(__file__).resolve().parents[2])  # so the child imports this same rlvr
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rlvr.verify.math_equiv", "--worker"],
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


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker_main()
