"""`LinearEquation`: solve a linear equation in x for its integer solution.

One step (``steps=1``) is ``a*x + b = c``; two steps (``steps=2``) is either
``a*(x + b) = c`` or x on both sides, ``a*x + b = d*x + e``. `max_coef` bounds
the magnitude of every coefficient and of the solution; `steps` is the
difficulty. Equations are built from the solution outward, so x is always an
integer and the gold is known exactly. The content key is the rendered equation;
its split is decided on the equation up to which side is written first
(`canonical`), so ``2*x + 1 = x + 4`` and ``x + 4 = 2*x + 1`` share one. Other
rewritings (expanding ``a*(x + b)``, moving a term across) are solving steps, so
they make other problems.

Answer format: an integer, optionally preceded by ``x =`` (``#### -3`` or
``#### x = -3``; spaces around ``=`` are free). Nothing else: ``x=3.0``,
``3 (x = 3)`` and ``X = 3`` are format errors (``format_error``). The ``x =``
form is accepted because it is how people naturally state a solution, and it
carries no extra information a hedging policy could exploit.

    from rlvr.envs.linear import LinearEquation
    env = LinearEquation(max_coef=10, steps=2)
    p = next(env.problems("train", seed=0)); env.verify(p, "#### x = 4")

Run its tests: ``.venv/bin/python -m pytest tests/test_envs_breadth.py -q``.
"""

from __future__ import annotations

import random
import re

from rlvr.envs.base import ProceduralEnv, check_template, exact_verdict
from rlvr.types import Problem, Verdict
from rlvr.verify.extract import parse_int

TEMPLATE = "Solve for x: {equation}. End with #### and the value of x."
_X_PREFIX = re.compile(r"x\s*=\s*")


class LinearEquation(ProceduralEnv):
    name = "linear"

    def __init__(self, max_coef: int = 10, steps: int = 1, template: str = TEMPLATE,
                 eval_fraction: float = 0.1):
        super().__init__(eval_fraction)
        # >= 2: with 1 there are only a few dozen equations, too few for two disjoint splits.
        if type(max_coef) is not int or max_coef < 2:
            raise ValueError(f"max_coef must be an int >= 2, got {max_coef!r}")
        if type(steps) is not int or steps not in (1, 2):
            raise ValueError(f"steps must be 1 or 2, got {steps!r}")
        check_template(template, ("equation",), equation="x = 1")
        self.max_coef, self.steps, self.template = max_coef, steps, template

    def _nonzero(self, rng: random.Random) -> int:
        return rng.choice([-1, 1]) * rng.randint(1, self.max_coef)

    def make(self, rng: random.Random) -> Problem | None:
        m = self.max_coef
        x, a = rng.randint(-m, m), self._nonzero(rng)
        if self.steps == 1:
            b = rng.randint(-m, m)
            equation = f"{_linear(a, b)} = {a * x + b}"
        elif rng.random() < 0.5:
            # b != 0, else it is the one-step a*x = c.
            b = self._nonzero(rng)
            inner = f"x {'+' if b > 0 else '-'} {abs(b)}"
            equation = f"{_coef(a)}({inner}) = {a * (x + b)}"
        else:
            b, d = rng.randint(-m, m), self._nonzero(rng)
            if d == a:  # x would cancel out: no unique solution
                return None
            e = a * x + b - d * x
            equation = f"{_linear(a, b)} = {_linear(d, e)}"
        return Problem(
            id=f"{self.name}/{equation}",
            prompt=self.template.format(equation=equation),
            answer=x,
            env=self.name,
            meta={"max_coef": m, "steps": self.steps, "difficulty": self.steps},
        )

    def canonical(self, problem: Problem) -> str:
        sides = problem.id.removeprefix(self.name + "/").split(" = ")
        return f"{self.name}/{' = '.join(sorted(sides))}"

    def check(self, problem: Problem, answer: str) -> Verdict:
        prefix = _X_PREFIX.match(answer)
        return exact_verdict(parse_int(answer[prefix.end():] if prefix else answer), problem.answer)


def _coef(a: int) -> str:
    """`a` as a multiplier of what follows: 1 -> "", -1 -> "-", 3 -> "3*"."""
    return {1: "", -1: "-"}.get(a, f"{a}*")


def _linear(a: int, b: int) -> str:
    """``a*x + b`` as people write it: "3*x - 4", "-x", "2*x" (a zero b is dropped)."""
    text = f"{_coef(a)}x"
    return text if b == 0 else f"{text} {'+' if b > 0 else '-'} {abs(b)}"
