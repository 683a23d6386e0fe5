"""The engine thread of `rlvr serve`: concurrent requests become shared `generate` calls.

Scoring requests (the log-prob of every prompt token: `echo` with `logprobs`, vLLM's
`prompt_logprobs`) run on the same thread, one `score` call for those that arrive together.

One background thread owns the engine and drains a queue: requests that arrive within
`wait_s` of each other and share sampling parameters are decoded in one `generate`
call, so concurrent clients share the GPU/CPU instead of queueing behind each other.
A request with a `seed` is generated alone, so the same seed gives the same samples
whatever else is in flight. The engine's failure fails the requests of that call,
never the thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rlvr.types import Sample, Sampling

log = logging.getLogger("rlvr.serve")


@dataclass
class _Job:
    prompts: list[list[int]]
    n: int
    sampling: Sampling
    done: Any  # callable(result | exception), thread-safe
    key: tuple = field(default=())


class Batcher:
    """One thread owns the engine; requests that arrive together and share sampling
    parameters become one `generate` call. `calls` counts those calls."""

    def __init__(self, engine, max_batch: int, wait_s: float):
        self.engine, self.max_batch, self.wait_s = engine, max_batch, wait_s
        self.calls = 0
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="rlvr-serve-engine", daemon=True)
        self._thread.start()

    def submit(self, prompts: list[list[int]], n: int, sampling: Sampling, done) -> None:
        # A seeded job is alone in its group: a shared generator would make its samples
        # depend on whatever else is in the batch.
        key = (sampling, object()) if sampling.seed is not None else (sampling,)
        self._q.put(_Job(prompts, n, sampling, done, key))

    def submit_score(self, prompts: list[list[int]], done) -> None:
        """Each prompt token's log-prob after the tokens before it (the first has none)."""
        self._q.put(_Job(prompts, 0, Sampling(), done, ("score",)))

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            jobs, size = [job], len(job.prompts) * job.n
            deadline = time.monotonic() + self.wait_s
            stop = False
            while size < self.max_batch:
                try:
                    more = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
                size += len(more.prompts) * more.n
            groups: dict[tuple, list[_Job]] = {}
            for j in jobs:
                groups.setdefault(j.key, []).append(j)
            for group in groups.values():
                self._run(group)
            if stop:
                return

    def _run(self, group: list[_Job]) -> None:
        if group[0].key == ("score",):
            return self._score(group)
        try:
            ns = {j.n for j in group}
            prompts = [p for j in group for p in j.prompts]
            if len(ns) == 1:
                n = ns.pop()
                flat = self._generate(prompts, n, group[0].sampling)
                results, at = [], 0
                for j in group:
                    results.append(flat[at:at + len(j.prompts)])
                    at += len(j.prompts)
            else:
                # Different n: one row per completion (each prompt repeated n times).
                rows = [p for j in group for p in j.prompts for _ in range(j.n)]
                flat = [g[0] for g in self._generate(rows, 1, group[0].sampling)]
                results, at = [], 0
                for j in group:
                    results.append([flat[at + i * j.n: at + (i + 1) * j.n] for i in range(len(j.prompts))])
                    at += len(j.prompts) * j.n
        except Exception as e:  # the engine's failure is every request's failure, not the server's
            log.exception("generate failed")
            for j in group:
                j.done(e)
            return
        for j, r in zip(group, results):
            j.done(r)

    def _score(self, group: list[_Job]) -> None:
        try:
            prompts = [p for j in group for p in j.prompts]
            self.calls += 1
            flat = self.engine.score([p[:1] for p in prompts], [p[1:] for p in prompts])
        except Exception as e:  # as for generation: the requests fail, the thread goes on
            log.exception("score failed")
            for j in group:
                j.done(e)
            return
        at = 0
        for j in group:
            j.done(flat[at:at + len(j.prompts)])
            at += len(j.prompts)

    def _generate(self, prompts, n, sampling) -> list[list[Sample]]:
        self.calls += 1
        return self.engine.generate(prompts, n, sampling)
