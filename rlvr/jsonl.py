"""Reading JSONL a line at a time, with errors that name the file and the line.

Data files (SFT conversations, math problems) and run logs (metrics.jsonl, evals.jsonl)
are all read here, so a bad line is reported the same way everywhere:

    for line, row in read_jsonl(path):
        ...                       # row is a dict; blank lines are skipped

A run killed mid-write can leave half a last line in its logs: readers of logs pass
`truncated_tail=notes` to skip that line (and say so in `notes`) instead of failing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from rlvr.config import InputError


class JSONLError(InputError):
    """A line that is not a JSON object; the message starts with `file:line:`."""


def read_jsonl(path: str | Path, truncated_tail: list[str] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a JSONL file")
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if truncated_tail is not None and n == len(lines) and not text.endswith("\n"):
                truncated_tail.append(f"{path.name}: ignored a truncated last line")
                return
            raise JSONLError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise JSONLError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        yield n, row
