"""A bounded pool for tool calls: at most `workers` run at once, each for at most `timeout` s.

Every tools environment of a process with the same `workers` shares one pool, so 512
episodes calling the sandboxed python tool at once start at most `workers`
interpreters, the rest waiting their turn (waiting counts against their time). A call
that outlives its time is answered with a `TimeoutError` and the episode goes on. The
python tool's sandbox kills its interpreter at the call's deadline (`seconds_left`); a
plain Python function that never returns cannot be killed from outside and keeps its
worker until it does (its thread is a daemon: the process still exits), so a tool of
your own should bound its own time.

    result = pool(4).call(calculator, {"expression": "6*7"}, timeout=5.0)

Run its tests: ``.venv/bin/python -m pytest tests/test_tools.py -q``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

_POOLS: dict[int, "ToolPool"] = {}
_LOCK = threading.Lock()
_DEADLINE = threading.local()  # the running call's deadline (time.monotonic), in the call's thread


def pool(workers: int) -> "ToolPool":
    """The process's pool of `workers` workers (made on first use)."""
    with _LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = ToolPool(workers)
        return _POOLS[workers]


def seconds_left(default: float) -> float:
    """Time left to the tool call running in this thread (`default` outside the pool)."""
    deadline = getattr(_DEADLINE, "at", None)
    return default if deadline is None else max(deadline - time.monotonic(), 0.01)


class ToolPool:
    """`workers` slots; a call takes one for as long as its tool runs, in a daemon thread of
    its own (so a tool that never returns holds its slot, never the process at exit)."""

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"a tool pool needs at least 1 worker, got {workers}")
        self.workers = workers
        self.slots = threading.BoundedSemaphore(workers)

    def call(self, tool: Callable[..., Any], kwargs: dict[str, Any], timeout: float) -> Any:
        """`tool(**kwargs)`; its exception raised here; `TimeoutError` after `timeout` s, waiting included."""
        deadline = time.monotonic() + timeout
        if not self.slots.acquire(timeout=timeout):
            raise TimeoutError(f"the tool ran out of time ({timeout:g} s): every worker busy")
        out: dict[str, Any] = {}

        def run() -> None:
            _DEADLINE.at = deadline
            try:
                out["value"] = tool(**kwargs)
            except BaseException as e:  # handed to the caller
                out["error"] = e
            finally:
                self.slots.release()

        thread = threading.Thread(target=run, name="rlvr-tool", daemon=True)
        thread.start()
        thread.join(max(deadline - time.monotonic(), 0.0))
        if thread.is_alive():
            raise TimeoutError(f"the tool ran out of time ({timeout:g} s)")
        if "error" in out:
            raise out["error"]
        return out["value"]
