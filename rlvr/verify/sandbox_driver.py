"""The trusted driver of one sandboxed run: the program of the processes D and W.

Standard library only, and never imported in the sandbox: `rlvr.verify.sandbox`
compiles `sandbox_isolation.py`, `sandbox_wire.py` and this file on the host and hands
the code objects to D's bootstrap (``python -I -S -B -c <_BOOT> <config json> <fd of
the code>``), which runs them in one namespace, in that order (this one last: its
``__main__`` block starts D). D sets the limits, enters the namespaces
(`sandbox_isolation`), forks W, and then waits for W (`run_python`) or judges it
(`run_tests`). W drops to its own uid, with no capabilities and no_new_privs; D stays
root inside its namespaces (no_new_privs, read-only files, no network) so that it can
kill W, and the uid keeps W out of D and the host: it cannot signal, trace or read
them, nor their /proc entries.

The result channel of `run_tests`. The verdict never comes from the process that
runs the untrusted code: W only *computes*, D *judges*. D forks W before it reads
the tests, so W's memory never holds them; W reads its code from a file descriptor
D does not use and closes its copies of D's stdin and report pipe before any
untrusted code runs. D then reads the tests (and a per-run nonce) from its stdin,
runs the test code itself, and each call of ``candidate(...)`` is a proxy that
sends the arguments to W over a pipe and reads back the return value as plain data
(tagged JSON: None, bool, int, float, str, bytes, list, tuple, dict, set,
frozenset, complex): D decodes it into exact built-in types, so the comparisons
``==`` run on D's own objects, never on an object W made. D reports each test's
outcome with the nonce on a pipe whose write end only D holds; the host reads
nothing else (not exit codes, not stdout). So ``sys.exit(0)``/``os._exit(0)`` before
the asserts, printing a success marker, patching builtins or the harness (all in
W's memory), an object whose ``__eq__`` is always True (it cannot cross the pipe:
only data crosses), and editing test files (the tests are not files; every file
system but the scratch tmpfs is read-only) all leave tests failed. Hidden tests
defeat special-casing the visible ones: W only ever sees the arguments of calls.
"""

from __future__ import annotations

import json
import os
import select
import sys

if __package__:  # imported on the host (to read or lint it); in the sandbox the bootstrap ran these first
    from rlvr.verify.sandbox_isolation import (_CLONE_NEWNET, _CLONE_NEWNS, _CLONE_NEWPID, _MS_NODEV,
                                               _MS_NOEXEC, _MS_NOSUID, _MS_RDONLY, _PR_SET_DUMPABLE,
                                               _PR_SET_NO_NEW_PRIVS, _block_hook, _call, _isolate_files,
                                               _mount, _nproc_limit, _private_dirs, _set_limits)
    from rlvr.verify.sandbox_wire import _dec, _enc, _recv, _same, _send, _Timeout


# BaseException: test code that catches Exception must not swallow it.
class _WorkerGone(BaseException):
    pass


class CandidateError(Exception):
    """The candidate function raised an exception that is not a plain built-in one."""


def _worker(cfg, facts, code_fd, pipes):
    """W: drop privileges, then run the untrusted code (and, for tests, serve calls)."""
    import builtins
    if cfg["mode"] == "tests":
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)  # D's stdin carries the tests: W must never read it
        os.close(null)
    os.close(cfg["report_fd"])
    if facts["pid_namespace"] and os.geteuid() == 0:
        try:
            _mount(_LIBC, "proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | _MS_RDONLY)
        except OSError:
            pass
    uid = facts["uid"]
    if uid != os.getuid():
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    with os.fdopen(code_fd, "rb") as f:
        job = json.loads(f.read())
    os.environ["HOME"] = os.environ["TMPDIR"] = os.getcwd()
    sys.argv = [""]
    globals().pop("_LIBC", None)
    if facts["network"] != "namespace":
        _block_hook()
    ns = {"__name__": "__main__", "__builtins__": builtins}
    if cfg["mode"] == "python":
        status = 0
        try:
            exec(compile(job["code"], "<solution>", "exec"), ns)
        except SystemExit as e:
            code = e.code
            if code is None or isinstance(code, int):
                status = code or 0
            else:
                print(code, file=sys.stderr)
                status = 1
        except BaseException:
            import traceback
            traceback.print_exc()
            status = 1
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(status & 0xFF)
    to_d, from_d = pipes
    try:
        exec(compile(job["prelude"], "<prelude>", "exec"), ns)
        exec(compile(job["code"], "<solution>", "exec"), ns)
        fn = ns[job["entry_point"]]
        if not callable(fn):
            raise TypeError(f"{job['entry_point']} is not callable")
        _send(to_d, {"ready": True})
    except BaseException as e:
        _send(to_d, {"load_error": _describe(e)})
        os._exit(1)
    while True:
        msg = _recv(from_d)
        if msg is None:
            os._exit(0)
        try:
            out = {"v": _enc(fn(*_dec(msg["a"]), **_dec(msg["k"])))}
            _send(to_d, out)
        except BaseException as e:  # raised by the call, or a value the wire cannot carry
            _send(to_d, {"x": type(e).__name__, "m": _message(e)})


def _message(e):
    try:
        return str(e)[:300]
    except BaseException:
        return ""


def _describe(e):
    return f"{type(e).__name__}: {_message(e)}"[:300]


def _judge(facts, pipes, report, deadline):
    """D: read the tests after W exists, run them here, call W for every candidate call."""
    import builtins
    job = json.loads(sys.stdin.buffer.read())
    nonce = job["nonce"]

    def emit(**obj):
        os.write(report, (json.dumps({"nonce": nonce, **obj}) + "\n").encode())

    emit(facts=facts)
    from_w, to_w = pipes
    os.set_blocking(to_w, False)
    gone = []

    def candidate(*args, **kwargs):
        if gone:
            raise _WorkerGone(gone[0])
        request = {"a": _enc(list(args)), "k": _enc(kwargs)}
        try:
            _send(to_w, request, deadline)
            reply = _recv(from_w, deadline)
        except (BrokenPipeError, ConnectionError):
            reply = None
        except (ValueError, RecursionError, MemoryError) as e:  # a broken frame: stop talking to W
            gone.append(f"malformed reply from the candidate ({_describe(e)})")
            raise _WorkerGone(gone[0])
        if reply is None:
            gone.append("the candidate's process exited")
            raise _WorkerGone(gone[0])
        if type(reply) is not dict:
            raise CandidateError("malformed reply")
        if "v" in reply:
            return _dec(reply["v"])
        name, message = str(reply.get("x")), str(reply.get("m"))[:300]
        exc = getattr(builtins, name, None)
        if isinstance(exc, type) and issubclass(exc, Exception) and not issubclass(exc, Warning):
            raise exc(message)
        raise CandidateError(message)

    tests = job["tests"]
    total = 1 if isinstance(tests, str) else len(tests)
    try:
        ready = _recv(from_w, deadline)
    except _Timeout:
        emit(load_error="timeout while loading the code", timed_out=True, total=total)
        return
    except Exception as e:  # whatever W sends, D reports and never crashes
        ready = {"load_error": _describe(e)}
    if not (type(ready) is dict and ready.get("ready") is True):
        error = ready.get("load_error") if type(ready) is dict else None
        emit(load_error=str(error or "the candidate's process exited while loading")[:300], total=total)
        return
    g = {"__name__": "__tests__", "__builtins__": builtins}
    exec(compile(job["prelude"], "<prelude>", "exec"), g)
    if isinstance(tests, str):
        exec(compile(tests, "<tests>", "exec"), g)
        units = [("check(candidate)", compile("check(candidate)", "<tests>", "exec"))]
    else:
        units = [(t, compile(t, f"<test {i}>", "exec")) for i, t in enumerate(tests)]
    g["candidate"] = g[job["entry_point"]] = candidate
    g["same"] = _same
    for i, (text, unit) in enumerate(units):
        try:
            exec(unit, g)
            emit(i=i, ok=True)
            continue
        except AssertionError as e:
            error = f"failed: {text[:200]}" + (f" ({e})" if str(e) else "")
        except _Timeout:
            emit(i=i, ok=False, error="timeout", timed_out=True)
            break
        except _WorkerGone as e:
            error = str(e)
        except CandidateError as e:
            error = f"candidate raised: {e}"
        except Exception as e:
            error = _describe(e)
        emit(i=i, ok=False, error=error)
    emit(done=True, total=total)


def _driver_main():
    import time
    start = time.monotonic()
    cfg = json.loads(sys.argv[1])
    deadline = start + cfg["timeout"]
    facts = {"network": "blocked", "filesystem": "open", "pid_namespace": False, "uid": None, "notes": []}
    _set_limits(cfg)
    # A result may be an int of any size (a factorial, 2**20000): the wire writes ints as JSON
    # text, which Python caps at 4300 digits. The CPU limit bounds what a huge one costs.
    sys.set_int_max_str_digits(0)
    global _LIBC
    try:
        import ctypes
        _LIBC = ctypes.CDLL(None, use_errno=True)
    except Exception as e:  # no ctypes: no namespaces, the audit hook remains
        _LIBC = None
        facts["notes"].append(f"no ctypes ({e})")
    root = os.geteuid() == 0
    if cfg["namespaces"] and _LIBC is not None:
        try:
            _call(_LIBC, "unshare", _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID)
        except OSError as e:
            facts["notes"].append(f"no namespaces: {e}")
        else:
            facts["network"], facts["pid_namespace"] = "namespace", True
            try:
                _isolate_files(_LIBC, cfg, facts)
            except OSError as e:
                facts["notes"].append(f"file system left writable: {e}")
    if _LIBC is not None:
        for option in (_PR_SET_NO_NEW_PRIVS, _PR_SET_DUMPABLE):
            try:
                _call(_LIBC, "prctl", option, int(option == _PR_SET_NO_NEW_PRIVS), 0, 0, 0)
            except OSError as e:
                facts["notes"].append(str(e))
    uid = cfg["uid"] if root else None
    if uid is not None and facts["filesystem"] == "open" and _private_dirs():
        uid = None
        facts["notes"].append(f"the interpreter lies under {_private_dirs()[0][1]}, which a fresh uid "
                              "cannot enter: the code runs as root, guarded by an audit hook only "
                              "(not a security boundary)")
    facts["uid"] = uid if uid is not None else os.getuid()
    _nproc_limit(cfg, uid)
    if uid is None:
        facts["notes"].append("the code runs as the host's uid: RLIMIT_NPROC counts all of its tasks"
                              + (" and does not bind root" if root else ""))
    tests_mode = cfg["mode"] == "tests"
    pipes = (os.pipe(), os.pipe()) if tests_mode else None  # (W -> D), (D -> W)
    code_fd = cfg["code_fd"]
    worker = os.fork()
    if worker == 0:
        try:
            if pipes:
                os.close(pipes[0][0])
                os.close(pipes[1][1])
            _worker(cfg, facts, code_fd, (pipes[0][1], pipes[1][0]) if pipes else None)
        except BaseException as e:
            try:
                os.write(2, f"sandbox worker failed: {_describe(e)}\n".encode())
            except BaseException:
                pass
        os._exit(1)
    os.close(code_fd)
    report = cfg["report_fd"]
    try:
        if tests_mode:
            os.close(pipes[0][1])
            os.close(pipes[1][0])
            _judge(facts, (pipes[0][0], pipes[1][1]), report, deadline)
        else:
            _wait_worker(worker, deadline, facts, report)
            worker = None  # reaped: its pid may already belong to someone else
    finally:
        if worker is not None:
            os.kill(worker, 9)  # not reaped yet, so the pid is still W's (or its zombie's)
            os.waitpid(worker, 0)


def _wait_worker(worker, deadline, facts, report):
    import time
    pidfd = os.pidfd_open(worker)
    ready, _, _ = select.select([pidfd], [], [], max(deadline - time.monotonic(), 0))
    timed_out = not ready
    if timed_out:
        os.kill(worker, 9)
    _, status = os.waitpid(worker, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    os.write(report, (json.dumps({"facts": facts, "status": code, "timed_out": timed_out}) + "\n").encode())


if __name__ == "__main__" and sys.argv[0] == "-c":
    try:
        _driver_main()
    except BaseException:
        import traceback
        traceback.print_exc()
        os._exit(1)
    os._exit(0)  # skip the interpreter's teardown (~5 ms): D holds nothing to flush
