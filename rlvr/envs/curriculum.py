"""`Curriculum`: one environment at several difficulties, kept where it teaches most.

RL learns from groups whose rewards differ: a level the policy always solves (or
never solves) gives zero advantage everywhere. A curriculum holds an environment at
a ladder of difficulty levels and moves up when the recent pass rate rises above the
band's top and down when it falls below its bottom, so training problems stay where
the policy is right about as often as the band says. The trainer reports results with
`observe(rollouts)` after every batch (every group generated, dynamic sampling's
dropped ones included); a `Mixture` of curricula passes each environment's rollouts to
its own curriculum. `state()` / `load_state()` carry the level across a resume and to
Ray rollout workers.

Evaluation is not moved by the curriculum: the "eval" split mixes all levels evenly.
So no level trains on another level's eval problems: levels are one environment, so
they share its canonical forms (`canonical`), and where the split is by seed rather
than by a hash of that form (reasoning-gym tasks), each level's train stream skips
every level's eval problems by their canonical forms. Every problem carries its level
(`meta["level"]`) and is judged by that level's verifier.

    env = make_env({"name": "curriculum", "env": "arithmetic", "param": "digits",
                    "levels": [1, 2, 3, 4], "band": [0.3, 0.7]})
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from typing import Any, Iterator

from rlvr.envs.forwarding import Forwarding
from rlvr.types import Environment, Problem, Rollout, Verdict


class Curriculum(Forwarding):
    def __init__(self, levels: list, band: tuple[float, float] = (0.3, 0.7), window: int = 256,
                 start: int = 0, min_samples: int = 64):
        if not levels:
            raise ValueError("a curriculum needs at least one level")
        names = {env.name for env in levels}
        if len(names) != 1:
            raise ValueError(f"curriculum levels must be one environment at several difficulties, got {sorted(names)}")
        low, high = band
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"band must satisfy 0 <= low < high <= 1, got {band}")
        if not 0 <= start < len(levels):
            raise ValueError(f"start level {start} is not in 0..{len(levels) - 1}")
        self.levels, self.band, self.level = list(levels), (low, high), start
        self.name = levels[0].name
        self.min_samples = min_samples
        self.recent: deque[float] = deque(maxlen=window)

    def problems(self, split: str, seed: int) -> Iterator[Problem]:
        if split == "eval":  # every level, evenly: a fixed yardstick whatever the curriculum did
            streams = [self._tagged(i, env.problems("eval", seed)) for i, env in enumerate(self.levels)]
            return (next(s) for s in itertools.cycle(streams))
        env = self.levels[self.level]
        stream = env.problems(split, seed * 1_000 + self.level)
        held_out = frozenset().union(*(getattr(level, "eval_keys", frozenset()) for level in self.levels))
        if split == "train" and held_out:
            stream = (p for p in stream if env.canonical(p) not in held_out)
        return self._tagged(self.level, stream)

    @staticmethod
    def _tagged(level: int, stream: Iterator[Problem]) -> Iterator[Problem]:
        return (dataclasses.replace(p, meta={**p.meta, "level": level}) for p in stream)

    def inner_envs(self) -> list[Environment]:
        return self.levels

    def route(self, problem: Problem) -> Environment:
        # A level's verifier may read its own settings (a reasoning-gym scorer reads its config).
        return self.levels[problem.meta.get("level", 0)]

    def canonical(self, problem: Problem) -> str:
        return self.route(problem).canonical(problem)

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return self.route(problem).verify(problem, completion)

    def validate(self, n: int = 100) -> list[str]:
        return [f"level {i}: {f}" for i, env in enumerate(self.levels) for f in env.validate(n)]

    def observe(self, rollouts: list[Rollout]) -> None:
        """Record pass rates of this environment's rollouts and move the level if needed."""
        for r in rollouts:
            if r.problem.env == self.name:
                self.recent.extend(float(v.correct) for v in r.verdicts)
        if len(self.recent) < self.min_samples:
            return
        rate = sum(self.recent) / len(self.recent)
        step = 1 if rate > self.band[1] else -1 if rate < self.band[0] else 0
        if step and 0 <= self.level + step < len(self.levels):
            self.level += step
            self.recent.clear()  # the old level's results say nothing about the new one

    def state(self) -> dict[str, Any]:
        """What a resumed run (and a Ray rollout worker) needs to continue at this level."""
        return {"level": self.level, "recent": list(self.recent)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.level = state["level"]
        self.recent.clear()
        self.recent.extend(state["recent"])

    def stats(self) -> dict[str, float]:
        rate = sum(self.recent) / len(self.recent) if self.recent else float("nan")
        return {f"curriculum/{self.name}/level": float(self.level), f"curriculum/{self.name}/pass_rate": rate}


def make_curriculum(spec: dict[str, Any]) -> Curriculum:
    """{"name": "curriculum", "env": NAME or spec, "param": KEY, "levels": [v, ...], "band": [lo, hi], ...}"""
    from rlvr.envs import make_env

    spec = dict(spec) if isinstance(spec, dict) else {}  # a bare name lacks every key: said below
    spec.pop("name", None)
    try:
        base, param, values = spec.pop("env"), spec.pop("param"), spec.pop("levels")
    except KeyError as e:
        raise ValueError(f"curriculum spec needs {e.args[0]!r} (env, param, levels)") from None
    base = {"name": base} if isinstance(base, str) else dict(base)
    levels = [make_env({**base, param: v}) for v in values]
    if "band" in spec:
        spec["band"] = tuple(spec["band"])
    return Curriculum(levels, **spec)
