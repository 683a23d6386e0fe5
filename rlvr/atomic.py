"""Atomic file and directory writes: a crash never leaves half a file behind.

Everything is written beside its destination under a temporary name and then renamed
into place (`os.replace` is atomic within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are meant to be read
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)
    old = path.with_name(f".{path.name}.old")
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():  # failed between the two renames: the old one stays
            os.replace(old, path)
        raise


def recover(parent: str | Path) -> None:
    """Undo what a kill inside `atomic_dir` or `point_link` left in `parent`: a directory
    moved aside (``.NAME.old`` with no ``NAME``) is put back, and half-written temporaries
    (``.NAME.*.tmp``, gigabytes for a real model's checkpoint) are removed. Only while
    nothing writes there, e.g. when a run resumes."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(".old"):
            live = entry.with_name(entry.name[1:-4])
            if live.exists():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                os.replace(entry, live)
        elif entry.name.startswith(".") and entry.name.endswith(".tmp"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def point_link(link: str | Path, target: str) -> None:
    """Atomically make `link` a symlink to `target` (relative), replacing any old one."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
