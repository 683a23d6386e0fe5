"""Run untrusted Python (model-written code) in a separate, locked-down process.

Never in-process: a completion is code the policy wrote, and RL finds every hole.
`run_python(code)` runs a program and returns what it printed; `run_tests(code,
tests, entry_point)` grades a function and returns a `TestReport` the code under
test cannot forge.

The process tree of one run::

    host (this process)
      └─ driver D   python -I -S -B running the sandbox driver; trusted
           └─ worker W   the untrusted code; its own uid; pid 1 of a new pid namespace

This file is the host side: the public API, starting D and reading what D reports;
`sandbox_procs.py` holds the host's hold on the run's processes (reading their pipes
under a deadline, killing, reaping, finding leftovers). What D and W run lives in three files, standard library only, compiled
here once and handed to D's bootstrap as marshalled code objects (so D imports
nothing of rlvr): `sandbox_isolation.py` (rlimits, namespaces, read-only mounts, the
fallback's audit hook), `sandbox_wire.py` (the plain data that crosses between D
and W) and `sandbox_driver.py` (D and W themselves, and why W cannot forge a verdict).

Isolation (each run, each layer reported in `SandboxResult`):

- D is started in a new session and process group with a scrubbed environment
  (PATH, LANG, HOME and TMPDIR only; none of the host's variables) in isolated mode
  (``-I -S -B``: no user site, no site-packages, no PYTHON* variables, no .pyc writes).
- D sets the resource limits before any untrusted code exists: CPU seconds, address
  space, processes, file size, open files, no core dumps.
- D unshares network, mount and pid namespaces when it can (needs root or
  CAP_SYS_ADMIN): nothing is reachable (``network="namespace"``); the host's temporary
  directories, working directory and import paths look empty (`host_paths`), every file
  system is read-only, and the code's cwd, HOME and TMPDIR are a fresh scratch tmpfs, the
  one writable place and the only entry left in the temporary directory
  (``filesystem="readonly"``); and no process outlives W (``pid_namespace``).
- Without namespaces (the fallback), an audit hook refuses sockets, ctypes and process
  spawning (``network="blocked"``, best effort: a hook is not a kernel boundary), and the
  host kills the process group and every process of W's uid. It hides no file
  (``filesystem="open"``): the code reads and writes whatever its uid may, the host's
  temporary directory and working directory included, and a warning says so once.
- When the host is root, W drops to a fresh unprivileged uid (random per run), with
  no capabilities and no_new_privs; RLIMIT_NPROC binds it (``nproc_enforced``).
- The host enforces a wall-clock limit: D kills W at its deadline; if D itself is
  late, the host SIGKILLs the whole process group. stdout and stderr are captured
  and capped (64 KiB each by default).
- `run_tests` takes its verdict only from D, on a pipe whose write end only D holds,
  tagged with a per-run nonce; the host reads nothing else (not exit codes, not stdout).

    from rlvr.verify.sandbox import run_python, run_tests
    run_python("print(2 + 2)").stdout                                  # '4\\n'
    run_tests("def add(a, b): return a + b", ["assert candidate(1, 2) == 3"], "add").all_passed

Tests: ``.venv/bin/python -m pytest tests/test_sandbox.py -q``.
"""

from __future__ import annotations

import dataclasses
import json
import marshal
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings

from rlvr.types import VerifierError
from rlvr.verify.sandbox_paths import host_paths
from rlvr.verify.sandbox_procs import collect, leftover_processes, reap

__all__ = ["Limits", "SandboxError", "SandboxResult", "TestReport", "leftover_processes", "run_python", "run_tests"]

# D runs the driver precompiled (compiling it costs ~5 ms a run): a tiny bootstrap reads
# the marshalled code objects from a file descriptor (same interpreter, so same format)
# and runs them in order in its own namespace; the driver's __main__ block, last, starts D.
_DRIVER_FILES = ("sandbox_isolation", "sandbox_wire", "sandbox_driver")


def _compile_driver() -> bytes:
    here = os.path.dirname(os.path.abspath(__file__))
    codes = []
    for name in _DRIVER_FILES:
        with open(os.path.join(here, f"{name}.py"), encoding="utf-8") as f:
            codes.append(compile(f.read(), f"<{name.replace('_', ' ')}>", "exec"))
    return marshal.dumps(tuple(codes))


_DRIVER_CODE = _compile_driver()
_BOOT = ("import marshal, os, sys\nfd = int(sys.argv[2])\ncodes = marshal.loads(os.read(fd, os.fstat(fd).st_size))\n"
         "os.close(fd)\ndel fd\nfor code in codes:\n    exec(code)\n")
# The base interpreter, not the venv's launcher: -S ignores the venv anyway, and the
# real binary sits where the sandbox can expose it.
PYTHON = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
# What the host adds to the driver's wall-clock budget before killing the group itself.
_GRACE = 1.5


class SandboxError(VerifierError):
    """The sandbox itself failed (not the code in it): a verifier must not turn this into reward 0."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of one run. `cpu_seconds` None means the timeout rounded up, plus 1."""

    cpu_seconds: int | None = None
    memory_bytes: int = 512 << 20  # RLIMIT_AS of every process
    nproc: int = 16  # processes (and threads) of the untrusted uid
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE: the largest file it may write
    open_files: int = 64
    scratch_bytes: int = 64 << 20  # size of the scratch tmpfs
    output_bytes: int = 64 << 10  # stdout and stderr are each cut here
    namespaces: bool = True  # False: skip namespaces (the fallback: audit hook; no file is hidden)


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run did, and which isolation it really had."""

    returncode: int | None  # the untrusted process's status (negative: killed by that signal)
    stdout: str
    stderr: str
    timed_out: bool
    killed: bool  # something had to be SIGKILLed (at the deadline, or by the host)
    network: str  # "namespace" | "blocked" | "unknown" (the driver never said)
    wall_seconds: float
    filesystem: str = "open"  # "readonly" | "partial" (something could not be hidden or made read-only) | "open"
    pid_namespace: bool = False
    uid: int | None = None  # uid the untrusted code ran as
    nproc_enforced: bool = False  # False as root: the kernel exempts uid 0 from RLIMIT_NPROC
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    pid: int = 0  # the driver's pid: also the process group and session id of the run
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TestReport:
    """Outcome of `run_tests`; `errors[i]` is None for a passed test."""

    __test__ = False  # not a pytest class

    passed: int
    total: int
    all_passed: bool
    error: str | None  # the first failure (or why nothing ran)
    sandbox: SandboxResult
    errors: tuple[str | None, ...] = ()


def run_python(code: str, *, stdin: str = "", timeout: float = 5.0, limits: Limits | None = None) -> SandboxResult:
    """Run `code` as a program in the sandbox; its stdin is `stdin`."""
    result, _ = _run("python", {"code": code}, stdin.encode(), timeout, limits or Limits())
    return result


def run_tests(code: str, tests: list[str] | str, entry_point: str, timeout: float = 5.0, *,
              prelude: str = "", limits: Limits | None = None) -> TestReport:
    """Grade the function `entry_point` that `code` defines.

    `tests` is a list of independent test snippets (each one test; ``candidate`` and
    `entry_point` name the function, ``same(a, b)`` is a type-exact equality), or one
    source that defines ``check(candidate)`` (HumanEval style; one test). `prelude`
    is trusted, public code run before `code` (on the candidate's side) and before the
    tests (on the judge's side): imports and helpers a prompt gives.
    """
    if not (isinstance(tests, str) or isinstance(tests, list) and all(isinstance(t, str) for t in tests)):
        raise TypeError("tests must be a str or a list of str")
    nonce = secrets.token_hex(16)
    job = {"nonce": nonce, "tests": tests, "prelude": prelude, "entry_point": entry_point}
    result, lines = _run("tests", {"code": code, "prelude": prelude, "entry_point": entry_point},
                         json.dumps(job).encode(), timeout, limits or Limits())
    total = 1 if isinstance(tests, str) else len(tests)
    errors: list[str | None] = ["not run"] * total
    error, done, timed_out = None, False, False
    for line in lines:
        if line.get("nonce") != nonce:
            continue
        if "i" in line and 0 <= line["i"] < total:
            errors[line["i"]] = None if line.get("ok") is True else str(line.get("error"))
        if "load_error" in line:
            error, done = f"the code did not load: {line['load_error']}", True
        timed_out |= bool(line.get("timed_out"))
        done |= bool(line.get("done"))
    if not done and not result.timed_out and result.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        # Killed by its own CPU limit (the driver shares it with the candidate's code, e.g. a
        # returned set whose hashes all collide): the code's doing, so a timeout verdict,
        # never a verifier failure the sample would be dropped for.
        result = dataclasses.replace(result, timed_out=True, killed=True)
    if not done and not result.timed_out:
        raise SandboxError(f"the sandbox driver died without a report (returncode {result.returncode}): "
                           f"{result.stderr[-500:]}")
    if timed_out and not result.timed_out:
        result = dataclasses.replace(result, timed_out=True, killed=True)
    passed = sum(e is None for e in errors)
    if error is None:
        error = next((f"test {i}: {e}" for i, e in enumerate(errors) if e is not None), None)
    if error is None and result.timed_out:
        error = "timeout"
    return TestReport(passed=passed, total=total, all_passed=passed == total and error is None,
                      error=error, sandbox=result, errors=tuple(errors))


def _run(mode: str, code_job: dict, stdin: bytes, timeout: float, limits: Limits):
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0, got {timeout!r}")
    uid = 1_000_000 + secrets.randbelow(1 << 30) if os.geteuid() == 0 else None
    scratch = tempfile.mkdtemp(prefix="rlvr-sandbox-")
    if uid is not None:
        os.chown(scratch, uid, uid)  # the fallback writes here directly
    report_r, report_w = os.pipe()
    stdin_fd, code_fd, driver_fd = os.memfd_create("stdin"), os.memfd_create("code"), os.memfd_create("driver")
    for fd, data in ((stdin_fd, stdin), (code_fd, json.dumps(code_job).encode()), (driver_fd, _DRIVER_CODE)):
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    cfg = {"mode": mode, "timeout": timeout, "uid": uid, "scratch": scratch, "report_fd": report_w,
           "code_fd": code_fd, "namespaces": limits.namespaces, "nproc": limits.nproc,
           "cpu_seconds": limits.cpu_seconds or math.ceil(timeout) + 1, "memory_bytes": limits.memory_bytes,
           "file_bytes": limits.file_bytes, "open_files": limits.open_files, "scratch_bytes": limits.scratch_bytes,
           "hide": host_paths()}
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "HOME": scratch, "TMPDIR": scratch, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}
    start = time.monotonic()
    proc, lines, facts = None, [], {}
    try:
        proc = subprocess.Popen([PYTHON, "-I", "-S", "-B", "-c", _BOOT, json.dumps(cfg), str(driver_fd)],
                                stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(report_w, code_fd, driver_fd), cwd=scratch, env=env,
                                start_new_session=True)
        for fd in (report_w, stdin_fd, code_fd, driver_fd):
            os.close(fd)
        report_w = stdin_fd = code_fd = driver_fd = -1
        streams, killed, late = collect(proc, report_r, start + timeout + _GRACE, limits.output_bytes)
        for raw in streams["report"][0].splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if type(line) is dict:
                lines.append(line)
        facts = next((ln["facts"] for ln in lines if type(ln.get("facts")) is dict), {})
    finally:
        for fd in (report_r, report_w, stdin_fd, code_fd, driver_fd):
            if fd >= 0:
                os.close(fd)
        if proc is not None:
            # Without a pid namespace, processes that left the group are found by uid.
            reap(proc, uid if not facts.get("pid_namespace") else None)
        shutil.rmtree(scratch, ignore_errors=True)
    status = next((ln for ln in lines if "status" in ln), None)
    if mode == "python" and status is not None:
        returncode, timed_out = status["status"], bool(status["timed_out"])
    else:
        returncode, timed_out = proc.returncode, False
    ran_as = facts.get("uid")
    result = SandboxResult(
        returncode=returncode, stdout=_text(streams["stdout"][0]), stderr=_text(streams["stderr"][0]),
        timed_out=timed_out or late, killed=killed or timed_out, network=facts.get("network", "unknown"),
        wall_seconds=time.monotonic() - start, filesystem=facts.get("filesystem", "open"),
        pid_namespace=bool(facts.get("pid_namespace")), uid=ran_as,
        nproc_enforced=ran_as is not None and ran_as != 0,
        stdout_truncated=streams["stdout"][1], stderr_truncated=streams["stderr"][1], pid=proc.pid,
        notes=tuple(str(n) for n in facts.get("notes", ())))
    if limits.namespaces and result.filesystem != "readonly":
        _warn_weak(result)
    return result, lines


_WARNED: list[bool] = []


def _warn_weak(result: "SandboxResult") -> None:
    """Once a process: namespaces were asked for and not had, so model-written code runs with
    the host's file system in reach, guarded by an audit hook (not a security boundary)."""
    if _WARNED:
        return
    _WARNED.append(True)
    warnings.warn(f"sandbox without namespaces (file system {result.filesystem}, uid {result.uid}): model-written "
                  f"code can read and may write the host's files; run as root or with CAP_SYS_ADMIN (e.g. docker "
                  f"--cap-add SYS_ADMIN) for the isolated sandbox. Why: {'; '.join(result.notes) or 'unknown'}",
                  RuntimeWarning, stacklevel=3)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
