"""`Countdown`: reach a target from given numbers with + - * / and parentheses.

Each problem gives `count` numbers in 1..`max_number` and a target in
1..`max_target`. The generator combines a random subset (two or more) of the
numbers with random operations, keeping every intermediate value a positive
integer, so every problem has a known solution (the gold expression). Any correct
expression scores, not just the gold one: the answer after ``####`` is evaluated
exactly by `rlvr.verify.expr` (never eval), may use each given number at most as
often as it is given, and must equal the target. A problem is its numbers, in any
order, and its target: that is its content key (the numbers sorted) and what decides
its split (`canonical`).

Flags: ``format_error`` (not an allowed expression, or division by zero),
``bad_numbers`` (uses a number not given, or too often).

    from rlvr.envs.countdown import Countdown
    env = Countdown(count=3)
    p = next(env.problems("eval", seed=0)); env.verify(p, "#### " + p.answer["solution"])

Run its tests: ``.venv/bin/python -m pytest tests/test_envs.py -q``.
"""

from __future__ import annotations

import random
from collections import Counter

from rlvr.envs.base import ProceduralEnv, check_template
from rlvr.types import Problem, Verdict
from rlvr.verify.expr import ExprError, evaluate

TEMPLATE = ("Using the numbers {numbers} make {target}. Use each number at most once, "
            "with + - * / and parentheses. End with #### and the expression.")
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 3


class Countdown(ProceduralEnv):
    name = "countdown"

    def __init__(self, count: int = 4, max_number: int = 25, max_target: int = 1000,
                 template: str = TEMPLATE, eval_fraction: float = 0.1):
        super().__init__(eval_fraction)
        for key, value, least in (("count", count, 2), ("max_number", max_number, 1), ("max_target", max_target, 2)):
            if type(value) is not int or value < least:
                raise ValueError(f"{key} must be an int >= {least}, got {value!r}")
        check_template(template, ("numbers", "target"), numbers=[1, 2], target=3)
        self.count, self.max_number, self.max_target, self.template = count, max_number, max_target, template

    def make(self, rng: random.Random) -> Problem | None:
        # Sorted, so that one content key has one prompt (and so one split).
        numbers = sorted(rng.randint(1, self.max_number) for _ in range(self.count))
        subset = rng.sample(numbers, rng.randint(2, self.count))
        pool = [(n, str(n), _ATOM) for n in subset]
        while len(pool) > 1:
            x, y = pool.pop(rng.randrange(len(pool))), pool.pop(rng.randrange(len(pool)))
            pool.append(_combine(x, y, rng))
        target, solution, _ = pool[0]
        # A target among the numbers is solved by copying it: no arithmetic needed.
        if not 1 <= target <= self.max_target or target in numbers:
            return None
        return Problem(
            id=f"{self.name}/{_key(numbers, target)}",
            prompt=self.template.format(numbers=numbers, target=target),
            answer={"target": target, "numbers": tuple(numbers), "solution": solution},
            env=self.name,
            meta={"count": self.count, "max_number": self.max_number, "difficulty": self.count,
                  "solution_size": len(subset)},
        )

    def gold_text(self, problem: Problem) -> str:
        return problem.answer["solution"]

    def canonical(self, problem: Problem) -> str:
        return f"{self.name}/{_key(problem.answer['numbers'], problem.answer['target'])}"

    def check(self, problem: Problem, answer: str) -> Verdict:
        try:
            value, used = evaluate(answer)
        except ExprError:
            return Verdict(reward=0.0, correct=False, parsed=None, flags=frozenset({"format_error"}))
        if Counter(used) - Counter(problem.answer["numbers"]):
            return Verdict(reward=0.0, correct=False, parsed=answer, flags=frozenset({"bad_numbers"}))
        correct = value == problem.answer["target"]
        return Verdict(reward=1.0 if correct else 0.0, correct=correct, parsed=answer)


def _key(numbers, target: int) -> str:
    """"2,3,4,6=24": the numbers in ascending order, whatever order they came in, then the target."""
    return f"{','.join(map(str, sorted(numbers)))}={target}"


def _combine(x: tuple, y: tuple, rng: random.Random) -> tuple:
    """One random operation on two (value, text, precedence) nodes; values stay positive ints."""
    if x[0] < y[0]:
        x, y = y, x
    ops = ["+", "*"] + ["-"] * (x[0] > y[0]) + ["/"] * (x[0] % y[0] == 0)
    op = rng.choice(ops)
    if op in "+*" and rng.random() < 0.5:  # commutative: either order reads naturally
        x, y = y, x
    value = {"+": x[0] + y[0], "-": x[0] - y[0], "*": x[0] * y[0], "/": x[0] // y[0]}[op]
    prec = _PREC[op]
    left = x[1] if x[2] >= prec else f"({x[1]})"
    # The right operand of - and / needs parentheses at equal precedence: a-(b-c) != a-b-c.
    right = y[1] if y[2] > prec or (y[2] == prec and op in "+*") else f"({y[1]})"
    return value, f"{left}{op}{right}", prec
