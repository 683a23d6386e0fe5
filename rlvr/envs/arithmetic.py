"""`Arithmetic`: two-operand integer arithmetic, the simplest verifiable task.

Problems look like "Compute 457-386. End with #### and the result."; the answer is
the exact integer (subtraction may go negative). `digits` (every operand has
exactly that many digits) is the difficulty knob. The content key is the
expression itself (``arithmetic/457-386``), and the split is decided on the
expression up to the order of the operands of + and * (`canonical`): 457+386 and
386+457 are one problem, in one split whatever the template or seed.

Grading is strict: the text after ``####`` must be an optional sign and digits
("1,234", "12.0" and "12 13" are format errors, flagged ``format_error``).

    from rlvr.envs.arithmetic import Arithmetic
    env = Arithmetic(digits=2, ops=("add", "mul"))
    p = next(env.problems("train", seed=0)); env.verify(p, "#### 42")

Run its tests: ``.venv/bin/python -m pytest tests/test_envs.py -q``.
"""

from __future__ import annotations

import operator
import random

from rlvr.envs.base import ProceduralEnv, check_template, exact_verdict
from rlvr.envs.canonical import expression_form
from rlvr.types import Problem, Verdict
from rlvr.verify.extract import parse_int

OPS = {"add": ("+", operator.add), "sub": ("-", operator.sub), "mul": ("*", operator.mul)}
TEMPLATE = "Compute {expr}. End with #### and the result."


def expression(problem: Problem) -> str:
    """An arithmetic problem's expression (``457+386``), as a calculator call writes it."""
    m = problem.meta
    if problem.env != "arithmetic" or not {"a", "b", "op"} <= set(m):
        raise ValueError(f"a calculator call needs an arithmetic problem's expression; got {problem.id!r}")
    return f"{m['a']}{OPS[m['op']][0]}{m['b']}"


class Arithmetic(ProceduralEnv):
    name = "arithmetic"

    def __init__(self, digits: int = 3, ops: tuple[str, ...] = ("add", "sub", "mul"),
                 template: str = TEMPLATE, eval_fraction: float = 0.1):
        super().__init__(eval_fraction)
        if isinstance(ops, str):
            ops = (ops,)
        ops = tuple(ops)
        if type(digits) is not int or digits < 1:
            raise ValueError(f"digits must be an int >= 1, got {digits!r}")
        unknown = [o for o in ops if o not in OPS]
        if not ops or unknown:
            raise ValueError(f"ops must be a non-empty subset of {sorted(OPS)}, got {ops!r}")
        check_template(template, ("expr",), expr="1+1")
        self.digits, self.ops, self.template = digits, ops, template

    def make(self, rng: random.Random) -> Problem:
        # "Exactly d digits": 0 counts as a one-digit number, but no leading zeros beyond that.
        lo, hi = (0 if self.digits == 1 else 10 ** (self.digits - 1)), 10**self.digits - 1
        a, b, op = rng.randint(lo, hi), rng.randint(lo, hi), rng.choice(self.ops)
        symbol, fn = OPS[op]
        expr = f"{a}{symbol}{b}"
        return Problem(
            id=f"{self.name}/{expr}",
            prompt=self.template.format(expr=expr),
            answer=fn(a, b),
            env=self.name,
            meta={"a": a, "b": b, "op": op, "digits": self.digits, "difficulty": self.digits},
        )

    def canonical(self, problem: Problem) -> str:
        return f"{self.name}/{expression_form(problem.id.removeprefix(self.name + '/'))}"

    def check(self, problem: Problem, answer: str) -> Verdict:
        return exact_verdict(parse_int(answer), problem.answer)
