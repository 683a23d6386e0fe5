"""`noisy:`: any environment behind a verifier that errs at known rates.

Real verifiers are imperfect: a rule-based checker rejects a right answer it cannot
parse (a false negative), a lenient one accepts a wrong answer (a false positive).
`Noisy` wraps an environment so that its verdicts flip: a correct completion is
judged wrong with probability `fn`, a wrong one right with probability `fp`. Each
flip is a deterministic function of (seed, problem, completion), so a run repeats
and the same completion always gets the same verdict. The true verdict travels
beside the noisy one (`Verdict.truth`): the trainer learns from the noisy reward,
the run logs both (`reward` and `true_reward`, `pass_rate` and `true_pass_rate`),
and evaluation always reports the truth. `random=1` is the control: the reward is a
fair coin whatever the completion (fn = fp = 0.5).

    env = make_env("noisy:fn=0.2,fp=0.05:arithmetic:digits=3,ops=add")
    env = make_env({"name": "noisy", "fn": 0.2, "fp": 0.05, "env": "countdown"})

Problems, splits and validation are the inner environment's.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from rlvr.envs.base import Wrapped, wrapper_spec
from rlvr.types import Environment, Problem, Routing, Turn, Verdict


class Noisy(Wrapped):
    # What the hack monitor's gap means here: wrong answers the noise accepted, not a policy
    # finding a hole.
    gap_cause = "the noisy verifier's false positives (expected at rate fp), not necessarily a hack"

    def __init__(self, env: Environment, fn: float = 0.0, fp: float = 0.0, seed: int = 0, random: bool = False):
        for key, rate in (("fn", fn), ("fp", fp)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"noisy: {key} must be a rate in [0, 1], got {rate!r}")
        if random:  # the control: reward a fair coin whatever the completion (fn = fp = 0.5)
            fn = fp = 0.5
        elif fn + fp >= 1.0:
            raise ValueError(f"noisy: fn + fp must be < 1 (got {fn} + {fp}): at 1 the verdict carries no information; "
                             "random=1 is the coin-flip control")
        self.env, self.fn, self.fp, self.seed, self.random = env, fn, fp, seed, bool(random)
        self.name = env.name
        self.routes = env.routes if isinstance(env, Routing) else {env.name: env}

    def flip(self, problem: Problem, completion: str, correct: bool) -> bool:
        """Whether the verifier errs on this completion (seeded by its content)."""
        key = f"{self.seed}/{problem.id}/{completion}".encode()
        u = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64
        return u < (self.fn if correct else self.fp)

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return self.rejudge(problem, Turn(completion, [], "stop"), self.env.verify(problem, completion))

    def rejudge(self, problem: Problem, turn: Turn, truth: Verdict) -> Verdict:
        """The noisy verdict on a completion (a multi-turn episode's last turn) whose true one is `truth`."""
        completion = turn.text
        if not self.flip(problem, completion, truth.correct):
            return dataclasses.replace(truth, truth=truth)
        correct = not truth.correct
        return Verdict(reward=1.0 if correct else 0.0, correct=correct, parsed=truth.parsed, flags=truth.flags,
                       truth=truth)


def parse_noisy_spec(spec: str) -> tuple[dict[str, float], str]:
    """"noisy:fn=0.2,fp=0.05:INNER" -> ({"fn": 0.2, "fp": 0.05}, "INNER")."""
    raw, inner = wrapper_spec(spec, ("fn", "fp", "seed", "random"), "noisy:fn=F,fp=P[,seed=S]:INNER_SPEC")
    params: dict[str, float] = {}
    for key, value in raw.items():
        try:
            params[key] = int(value) if key in ("seed", "random") else float(value)
        except ValueError:
            raise ValueError(f"env spec {spec!r}: bad number {value!r} for {key}") from None
    return params, inner


def make_noisy(spec: str | dict[str, Any]) -> Noisy:
    """A `Noisy` env from ``noisy:fn=F,fp=P:INNER`` or ``{"name": "noisy", "env": INNER, ...}``."""
    from rlvr.envs import make_env

    if isinstance(spec, dict):
        params = {k: v for k, v in spec.items() if k != "name"}
        if "env" not in params:
            raise ValueError(f"env spec {spec!r}: a noisy env needs 'env' (the environment it wraps)")
        return Noisy(make_env(params.pop("env")), **params)
    params, inner = parse_noisy_spec(spec)
    return Noisy(make_env(inner), **params)
