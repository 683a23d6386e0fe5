"""`Mixture`: several environments behind one `Environment`, sampled by weight.

Train on a blend of tasks without the trainer knowing: `problems` draws each
problem from a child picked by a seeded rng in proportion to `weights`; problems
keep their child's `env` name, so `verify` can route each one back to the child
that made it. Each child keeps its own train/eval separation (and its own
`canonical` forms), so the mixture does too. Mixtures nest: an inner mixture's children are routed through it.

    from rlvr.envs import make_mixture
    env = make_mixture(["arithmetic:digits=2", "countdown"], weights=[3, 1])

Run its tests: ``.venv/bin/python -m pytest tests/test_envs.py -q``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

from rlvr.envs.base import check_split
from rlvr.envs.forwarding import Forwarding
from rlvr.types import Environment, HeldOut, Observer, Problem, Reporting, Routing, Stateful, Verdict


class Mixture(Forwarding):
    def __init__(self, envs: list[Environment], weights: list[float] | None = None, name: str = "mixture"):
        envs = list(envs)
        if not envs:
            raise ValueError("a Mixture needs at least one environment")
        weights = [1.0] * len(envs) if weights is None else [float(w) for w in weights]
        if len(weights) != len(envs):
            raise ValueError(f"got {len(weights)} weights for {len(envs)} environments")
        bad = [w for w in weights if not (math.isfinite(w) and w > 0)]
        if bad:
            raise ValueError(f"weights must be finite and > 0, got {weights}")
        self.envs, self.weights, self.name = envs, weights, name
        # problem.env -> the child that verifies it; a nested mixture routes its own children.
        self.routes: dict[str, Environment] = {}
        for env in envs:
            for env_name in env.routes if isinstance(env, Routing) else {env.name: env}:
                if env_name in self.routes:
                    raise ValueError(f"environment name {env_name!r} appears twice in mixture {name!r}")
                self.routes[env_name] = env

    def problems(self, split: str, seed: int) -> Iterator[Problem]:
        return self._stream(check_split(split), seed)

    def _stream(self, split: str, seed: int) -> Iterator[Problem]:
        streams = [env.problems(split, seed) for env in self.envs]
        rng = random.Random(f"{self.name}/{split}/{seed}")
        indices = range(len(streams))
        while True:
            yield next(streams[rng.choices(indices, weights=self.weights)[0]])

    def inner_envs(self) -> list[Environment]:
        return self.envs

    def route(self, problem: Problem) -> Environment:
        env = self.routes.get(problem.env)
        if env is None:
            raise KeyError(f"no environment {problem.env!r} in mixture {self.name!r}; has {sorted(self.routes)}")
        return env

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return self.route(problem).verify(problem, completion)

    def canonical(self, problem: Problem) -> str:
        return self.route(problem).canonical(problem)

    def heldout(self, problem: Problem, completion: str) -> Verdict:
        """The child's held-out verifier when it names one (rlvr.train.monitor), else its own."""
        env = self.route(problem)
        return (env.heldout if isinstance(env, HeldOut) else env.verify)(problem, completion)

    def observe(self, rollouts) -> None:
        """Pass results to the children that learn from them (curricula)."""
        for env in self.envs:
            if isinstance(env, Observer):
                env.observe(rollouts)

    def state(self) -> dict[str, Any]:
        return {str(i): env.state() for i, env in enumerate(self.envs) if isinstance(env, Stateful)}

    def load_state(self, state: dict[str, Any]) -> None:
        for i, env in enumerate(self.envs):
            if str(i) in state:
                env.load_state(state[str(i)])

    def stats(self) -> dict[str, float]:
        return {k: v for env in self.envs if isinstance(env, Reporting) for k, v in env.stats().items()}

    def validate(self, n: int = 100) -> list[str]:
        return [f"{env.name}: {failure}" for env in self.envs for failure in env.validate(n)]
