"""Run untrusted Python (model-written code) in a separate, locked-down process.

Never in-process: a completion is code the policy wrote, and RL finds every hole.
`run_python(code)` runs a program and returns what it printed; `run_tests(code,
tests, entry_point)` grades a function and returns a `TestReport` the code under
test cannot forge.

The process tree of one run::

    host (this process)
      └─ driver D   python -I -S -B running this file's driver section; trusted
           └─ worker W   the untrusted code; its own uid; pid 1 of a new pid namespace

Isolation (each run, each layer reported in `SandboxResult`):

- D is started in a new session and process group with a scrubbed environment
  (PATH, LANG, HOME and TMPDIR only; none of the host's variables) in isolated mode
  (``-I -S -B``: no user site, no site-packages, no PYTHON* variables, no .pyc writes).
- D sets the resource limits before any untrusted code exists: CPU seconds, address
  space, processes, file size, open files, no core dumps. (D does this itself rather
  than in a `preexec_fn`: the host may be a multi-threaded trainer, where
  `preexec_fn` is unsafe, and without one `subprocess` can spawn cheaply.)
- D unshares network, mount and pid namespaces (needs root or CAP_SYS_ADMIN). The new
  network namespace has only a downed loopback: nothing, not even 127.0.0.1, is
  reachable (``network="namespace"``). In the mount namespace every mount is made
  read-only, and the scratch directory is a fresh size-capped tmpfs that vanishes
  with the namespace (``filesystem="readonly"``). The interpreter's prefix is bind
  mounted visible when it lies under a private directory (pyenv under /root), which
  is hidden behind an empty tmpfs. W is pid 1 of the new pid namespace, mounts its
  own /proc (host processes are invisible) and, when it exits or is killed, the
  kernel kills every process it left behind, including ones that called setsid():
  no orphans. Without namespaces, sockets, ctypes and process spawning are refused
  by an audit hook installed before the untrusted code runs (``network="blocked"``,
  best effort: a hook is not a kernel boundary), and the host kills the process
  group and every process of W's uid.
- When the host is root, W drops to a fresh unprivileged uid (random per run), with
  no capabilities and no_new_privs. RLIMIT_NPROC does not bind root (the kernel
  exempts it), but it binds this uid, which no other process shares
  (``nproc_enforced``). The uid also keeps W out of D and the host: it cannot
  signal, trace or read them, nor their /proc entries. D stays root inside its
  namespaces (no_new_privs, read-only files, no network) so that it can kill W. As
  non-root, W keeps the host's uid: RLIMIT_NPROC is then set to the uid's current
  task count plus the limit, and the notes say so.
- Memory is bounded per process (RLIMIT_AS), so a run's total is at most
  `nproc` x `memory_bytes` (no cgroups), and only until the deadline.
- The host enforces a wall-clock limit: D kills W at its deadline; if D itself is
  late, the host SIGKILLs the whole process group. stdout and stderr are captured
  and capped (64 KiB each by default).

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

    from rlvr.verify.sandbox import run_python, run_tests
    run_python("print(2 + 2)").stdout                                  # '4\\n'
    run_tests("def add(a, b): return a + b", ["assert candidate(1, 2) == 3"], "add").all_passed

The driver section below runs alone in the sandbox (standard library only), compiled
once by the host and handed to D's bootstrap as a marshalled code object.
Tests: ``.venv/bin/python -m pytest tests/test_sandbox.py -q``.
"""

# ---- sandbox driver: begin ----
# From here to "driver: end" is also the program of the sandboxed process D (and W):
# `python -I -S -B -c <_BOOT> <config json> <fd of this section, compiled>`. Standard
# library only.
from __future__ import annotations

import json
import os
import select
import sys

_FRAME_MAX = 8 << 20  # the largest message W may send D (bytes)
_DEPTH_MAX = 100  # nesting of values crossing the pipe
_CLONE_NEWNS, _CLONE_NEWPID, _CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 4, 38
# statvfs flag -> mount flag, kept when a mount is remounted read-only.
_KEEP_FLAGS = ((2, 2), (4, 4), (8, 8), (1024, 1024), (2048, 2048), (4096, 1 << 21))
# The fallback's audit hook: events and modules refused to the untrusted code.
_BLOCKED_EVENTS = ("socket.", "ctypes.", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                   "subprocess.", "pty.", "os.startfile")
_BLOCKED_MODULES = frozenset({"socket", "_socket", "ssl", "_ssl", "ctypes", "_ctypes", "subprocess",
                              "_posixsubprocess", "multiprocessing", "_multiprocessing", "asyncio", "pty"})


# BaseException: test code that catches Exception must not swallow these.
class _Timeout(BaseException):
    pass


class _WorkerGone(BaseException):
    pass


class CandidateError(Exception):
    """The candidate function raised an exception that is not a plain built-in one."""


def _enc(x, depth=0):
    """A value as tagged JSON data; built-in types only (subclasses become their base)."""
    if depth > _DEPTH_MAX:
        raise ValueError("value nested too deeply")
    if x is None or x is True or x is False:
        return x
    if isinstance(x, int):
        return int.__int__(x)
    if isinstance(x, float):
        return float.__float__(x)
    if isinstance(x, str):
        return str.__str__(x)
    d = depth + 1
    if isinstance(x, list):
        return [_enc(v, d) for v in list.__iter__(x)]
    if isinstance(x, tuple):
        return {"$": "tuple", "v": [_enc(v, d) for v in tuple.__iter__(x)]}
    if isinstance(x, dict):
        return {"$": "dict", "v": [[_enc(k, d), _enc(v, d)] for k, v in dict.items(x)]}
    if isinstance(x, (set, frozenset)):
        tag = "frozenset" if isinstance(x, frozenset) else "set"
        return {"$": tag, "v": [_enc(v, d) for v in frozenset.__iter__(frozenset(x))]}
    if isinstance(x, bytes):
        return {"$": "bytes", "v": bytes.hex(x)}
    if isinstance(x, complex):
        return {"$": "complex", "v": [x.real, x.imag]}
    raise TypeError(f"a {type(x).__name__} cannot cross the sandbox boundary (plain data only)")


def _dec(x, depth=0):
    """Tagged JSON data (possibly hostile) as exact built-in values."""
    if depth > _DEPTH_MAX:
        raise ValueError("value nested too deeply")
    t = type(x)
    if x is None or t is bool or t is int or t is float or t is str:
        return x
    d = depth + 1
    if t is list:
        return [_dec(v, d) for v in x]
    if t is dict and set(x) == {"$", "v"}:
        tag, v = x["$"], x["v"]
        if tag == "tuple" and type(v) is list:
            return tuple(_dec(i, d) for i in v)
        if tag == "dict" and type(v) is list and all(type(p) is list and len(p) == 2 for p in v):
            return {_dec(k, d): _dec(i, d) for k, i in v}
        if tag in ("set", "frozenset") and type(v) is list:
            return (set if tag == "set" else frozenset)(_dec(i, d) for i in v)
        if tag == "bytes" and type(v) is str:
            return bytes.fromhex(v)
        if tag == "complex" and type(v) is list and len(v) == 2 and all(type(i) in (int, float) for i in v):
            return complex(v[0], v[1])
    raise ValueError(f"malformed value from the candidate: {str(x)[:80]}")


def _send(fd, obj, deadline=None):
    data = json.dumps(obj, separators=(",", ":")).encode()
    data = len(data).to_bytes(8, "big") + data
    while data:
        if deadline is not None:
            _wait(fd, deadline, write=True)
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            pass


def _read_exact(fd, n, deadline):
    chunks = []
    while n:
        if deadline is not None:
            _wait(fd, deadline)
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(fd, deadline=None):
    """One message, or None at end of file."""
    head = _read_exact(fd, 8, deadline)
    if head is None:
        return None
    n = int.from_bytes(head, "big")
    if n > _FRAME_MAX:
        raise ValueError(f"message of {n} bytes from the candidate exceeds {_FRAME_MAX}")
    data = _read_exact(fd, n, deadline)
    if data is None:
        return None
    return json.loads(data)


def _wait(fd, deadline, write=False):
    import time
    left = deadline - time.monotonic()
    r, w, _ = select.select([] if write else [fd], [fd] if write else [], [], max(left, 0))
    if not (r or w):
        raise _Timeout()


def _same(a, b):
    """Equal and of exactly the same types, all the way down (True is not 1, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _set_limits(cfg):
    import resource
    cpu = int(cfg["cpu_seconds"])
    limits = [(resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, cfg["memory_bytes"]),
              (resource.RLIMIT_FSIZE, cfg["file_bytes"]), (resource.RLIMIT_NOFILE, cfg["open_files"]),
              (resource.RLIMIT_CORE, 0)]
    for res, soft, *hard in limits:
        resource.setrlimit(res, (soft, hard[0] if hard else soft))


def _nproc_limit(cfg, uid):
    """RLIMIT_NPROC counts every task of the uid: a fresh uid gets the plain limit."""
    import resource
    n = cfg["nproc"]
    if uid is None:  # the host's own uid: add the tasks it already runs
        me = os.getuid()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.stat(f"/proc/{pid}").st_uid == me:
                    n += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    resource.setrlimit(resource.RLIMIT_NPROC, (n, n))


def _call(libc, name, *args):
    import ctypes
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}{args!r}: {os.strerror(err)}")


def _mount(libc, source, target, fstype, flags, data=None):
    enc = (lambda s: None if s is None else s.encode())
    _call(libc, "mount", enc(source), enc(target), enc(fstype), flags, enc(data))


def _mountpoints():
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            points.append(_unoctal(line.split()[4]))
    return points


def _unoctal(path):
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in path:
        return path
    raw, out, i = path.encode(), bytearray(), 0
    while i < len(raw):
        if raw[i] == 92 and raw[i + 1:i + 4].isdigit():
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def _private_dirs():
    """(prefix, its first ancestor others cannot enter) for the interpreter's prefixes."""
    out = []
    for prefix in sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}):
        parts = prefix.strip("/").split("/")
        private = next((d for d in ("/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
                        if not os.stat(d).st_mode & 0o001), None)
        if private is not None:
            out.append((prefix, private))
    return out


def _isolate_files(libc, cfg, facts):
    """Mount namespace: everything read-only but a fresh tmpfs scratch dir (the cwd)."""
    scratch = cfg["scratch"]
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    # The interpreter must stay readable by W's uid: pyenv under /root (0700) is not.
    for prefix, private in _private_dirs():
        fd = os.open(prefix, os.O_PATH)
        _mount(libc, "tmpfs", private, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k")
        os.makedirs(prefix, 0o755, exist_ok=True)
        _mount(libc, f"/proc/self/fd/{fd}", prefix, None, _MS_BIND | _MS_REC)
        os.close(fd)
        facts["notes"].append(f"{private} is hidden; only {prefix} is visible in it")
    failed = []
    for point in _mountpoints():
        try:
            flags = os.statvfs(point).f_flag
            keep = sum(ms for st, ms in _KEEP_FLAGS if flags & st)
            _mount(libc, None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | keep)
        except OSError as e:
            if point == "/":
                raise
            failed.append(f"{point} ({e.strerror})")
    _mount(libc, "tmpfs", scratch, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
           f"size={cfg['scratch_bytes']},mode=0700,uid={cfg['uid'] or 0},gid={cfg['uid'] or 0}")
    os.chdir(scratch)
    if failed:
        facts["notes"].append("could not make read-only: " + ", ".join(failed))
    facts["filesystem"] = "readonly" if not failed else "partial"


def _block_hook():
    """The fallback without namespaces: refuse sockets, ctypes, exec, signals to others."""
    for name in list(sys.modules):
        if name.split(".")[0] in _BLOCKED_MODULES:
            del sys.modules[name]
    import _signal
    import signal
    for module in (signal, _signal):  # signals by pidfd raise no audit event
        module.__dict__.pop("pidfd_send_signal", None)
    me = os.getpid()

    def hook(event, args):
        if event == "import" and str(args[0]).split(".")[0] in _BLOCKED_MODULES:
            raise PermissionError(f"sandbox: import of {args[0]} is blocked")
        if event.startswith(_BLOCKED_EVENTS) or event in ("os.kill", "os.killpg") and args[0] != me:
            raise PermissionError(f"sandbox: {event} is blocked")

    sys.addaudithook(hook)


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
        except BaseException as e:
            out = {"x": type(e).__name__, "m": _message(e)}
        _send(to_d, out)


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
# ---- sandbox driver: end ----

import dataclasses  # noqa: E402  (the driver section above must come first)
from rlvr.types import VerifierError  # noqa: E402
import errno  # noqa: E402
import marshal  # noqa: E402
import math  # noqa: E402
import secrets  # noqa: E402
import selectors  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

_HERE = os.path.abspath(__file__)
with open(_HERE, encoding="utf-8") as _f:
    _src = _f.read()
DRIVER_SOURCE = _src[_src.index("# ---- sandbox driver: begin ----"):_src.index("# ---- sandbox driver: end ----")]
del _f, _src
# D runs the driver precompiled (compiling it costs ~5 ms a run): a tiny bootstrap reads
# the marshalled code object from a file descriptor (same interpreter, so same format).
_DRIVER_CODE = marshal.dumps(compile(DRIVER_SOURCE, "<sandbox driver>", "exec"))
_BOOT = ("import marshal, os, sys\nfd = int(sys.argv[2])\ncode = marshal.loads(os.read(fd, os.fstat(fd).st_size))\n"
         "os.close(fd)\ndel fd\nexec(code)\n")
# The base interpreter, not the venv's launcher: -S ignores the venv anyway, and the
# real binary sits where the sandbox can expose it.
PYTHON = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
# What the host adds to the driver's wall-clock budget before killing the group itself.
_GRACE = 1.5
_REPORT_MAX = 4 << 20


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
    namespaces: bool = True  # False: skip namespaces (the fallback: audit hook, no fs isolation)


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
    filesystem: str = "open"  # "readonly" | "partial" | "open"
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
           "file_bytes": limits.file_bytes, "open_files": limits.open_files, "scratch_bytes": limits.scratch_bytes}
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
        streams, killed, late = _collect(proc, report_r, start + timeout + _GRACE, limits.output_bytes)
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
            _reap(proc, uid if not facts.get("pid_namespace") else None)
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
    return result, lines


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _collect(proc, report_fd: int, deadline: float, cap: int):
    """Read stdout, stderr and the report until they close.

    Returns (streams, killed, late): the group was SIGKILLed because D was still
    running at `deadline` (late) or because something held the pipes open after D
    exited (killed, not late).
    """
    sel = selectors.DefaultSelector()
    bufs = {"stdout": bytearray(), "stderr": bytearray(), "report": bytearray()}
    truncated = dict.fromkeys(bufs, False)
    caps = {"stdout": cap, "stderr": cap, "report": _REPORT_MAX}
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    sel.register(report_fd, selectors.EVENT_READ, "report")
    pidfd = os.pidfd_open(proc.pid)
    sel.register(pidfd, selectors.EVENT_READ, "exit")
    killed = late = exited = False
    open_streams = 3
    try:
        while open_streams:
            left = deadline - time.monotonic()
            if left <= 0:
                if killed:
                    break  # killed half a second ago and the pipes are still open: give up on them
                _killpg(proc.pid)
                killed, late = True, not exited
                deadline = time.monotonic() + 0.5
                continue
            for key, _ in sel.select(left):
                name = key.data
                if name == "exit":
                    # D is gone, and with it W and all its descendants (pid namespace).
                    # Whatever still holds the pipes gets a moment, then the group is killed.
                    sel.unregister(pidfd)
                    exited = True
                    deadline = min(deadline, time.monotonic() + 0.5)
                    continue
                fd = key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno()
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                room = caps[name] - len(bufs[name])
                if room > 0:
                    bufs[name] += chunk[:room]
                if len(chunk) > room:
                    truncated[name] = True
    finally:
        sel.close()
        os.close(pidfd)
        proc.stdout.close()
        proc.stderr.close()
    return {k: (bytes(v), truncated[k]) for k, v in bufs.items()}, killed, late


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(proc, uid: int | None) -> None:
    """Leave nothing behind: kill the group (before reaping D, so its id cannot be reused)."""
    _killpg(proc.pid)
    proc.wait()
    if uid is not None:  # no pid namespace: hunt down the fresh uid's processes too
        for _ in range(100):
            pids = [p for p in _pids() if _uid_of(p) == uid]
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError as e:
                    if e.errno != errno.ESRCH:
                        raise
            time.sleep(0.01)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def leftover_processes(result: SandboxResult) -> list[int]:
    """Processes still alive from a run: in its session or group, or running as its uid."""
    found = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pgrp, session = int(fields[2]), int(fields[3])
        if result.pid in (pgrp, session) or (result.uid not in (None, 0, os.getuid()) and _uid_of(pid) == result.uid):
            found.append(pid)
    return found
