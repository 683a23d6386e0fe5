"""The host's hold on the processes of one sandbox run (rlvr/verify/sandbox.py): read the
driver's stdout, stderr and report pipes until they close or a deadline passes, kill its
process group, reap it and, without a pid namespace, hunt down every process of the
run's uid; `leftover_processes` tells what is still alive after a run.

Linux only (pidfd_open, /proc). Tests: ``.venv/bin/python -m pytest tests/test_sandbox.py -q``.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlvr.verify.sandbox import SandboxResult

_REPORT_MAX = 4 << 20  # what the driver's report may hold


def collect(proc, report_fd: int, deadline: float, cap: int):
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


def reap(proc, uid: int | None) -> None:
    """Leave nothing behind: kill the group (before reaping D, so its id cannot be reused)."""
    _killpg(proc.pid)
    proc.wait()
    if uid is not None:  # no pid namespace: hunt down the fresh uid's processes too
        for _ in range(100):
            pids = [p for p in _pids() if _uid_of(p) == uid and _state(p) not in (None, b"Z")]
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


def _state(pid: int) -> bytes | None:
    """A process's state letter (b"Z": a zombie, dead and only waiting for its parent to reap
    it), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def leftover_processes(result: "SandboxResult") -> list[int]:
    """Processes still alive from a run: in its session or group, or running as its uid.
    A zombie is not alive (one orphaned by a sandbox that died waits for the host's init)."""
    found = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == b"Z":
            continue
        pgrp, session = int(fields[2]), int(fields[3])
        if result.pid in (pgrp, session) or (result.uid not in (None, 0, os.getuid()) and _uid_of(pid) == result.uid):
            found.append(pid)
    return found
