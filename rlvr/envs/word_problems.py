"""`WordProblems`: GSM8K-like templated word problems with 2 to 4 arithmetic steps.

Each template is a short story (buy and pay, share equally, percentages, rates,
profit, discounts) whose quantities are drawn at random, and its arithmetic over
them (``bill - n*p``), evaluated exactly, is the answer, so the gold is exact.
Quantities are drawn so that every intermediate result is a whole number
(percentages of multiples of 20, shares that divide evenly), and the answer is a
positive integer. `steps` picks which templates are used: a template's step count
is its difficulty.

The content key is the template and its quantities, not the names: names and
items are then chosen by an rng seeded with that key. The split is decided on the
arithmetic with its numbers, up to the order of the operands of + and *
(`canonical`): 3 items at $5 or 5 items at $3, paid with $20, is one problem. So
the same arithmetic can never appear in train with one cast of characters or
order of numbers and in eval with another; a split holds the whole problem,
whatever its wording.

Answer format: a bare integer (``#### 42``); units, ``$`` and decimals are format
errors (``format_error``), as in `Arithmetic`.

    from rlvr.envs.word_problems import WordProblems
    env = WordProblems(steps=(2, 3))
    p = next(env.problems("eval", seed=0)); env.verify(p, f"#### {p.answer}")

Run its tests: ``.venv/bin/python -m pytest tests/test_envs_breadth.py -q``.
"""

from __future__ import annotations

import random
import re

from rlvr.envs.base import ProceduralEnv, exact_verdict
from rlvr.envs.canonical import expression_form
from rlvr.types import Problem, Verdict
from rlvr.verify.expr import evaluate
from rlvr.verify.extract import parse_int

NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira", "Liam",
         "Mei", "Noah", "Olu", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Zoe")
ITEMS = ("pencils", "stickers", "apples", "cookies", "marbles", "notebooks", "cards", "balloons",
         "candles", "cupcakes", "erasers", "oranges", "buttons", "bracelets", "toy cars")
PERCENTS = (10, 20, 25, 40, 50, 60, 75, 80)  # each times a multiple of 20, over 100, is whole
SUFFIX = " End with #### and the answer as a whole number, digits only."


def _change(r):
    n, p = r.randint(2, 9), r.randint(2, 15)
    bill = next(b for b in (20, 50, 100, 200) if b > n * p)
    return {"n": n, "p": p, "bill": bill}


def _share(r):
    k, each = r.randint(2, 9), r.randint(2, 20)
    a = r.randint(2, k * each - 2)  # >= 2 on both sides: "1 cupcakes" reads wrong
    return {"a": a, "b": k * each - a, "k": k}


def _percent_left(r):
    m, pct = 20 * r.randint(1, 25), r.choice(PERCENTS)
    return {"m": m, "pct": pct}


def _profit(r):
    n, c = r.randint(2, 12), r.randint(1, 20)
    s = c + r.randint(1, 10)
    e = r.randint(1, n * (s - c) - 1)
    return {"n": n, "c": c, "s": s, "e": e}


def _store(r):
    n, pct = 20 * r.randint(2, 25), r.choice(PERCENTS)
    left = n - n * pct // 100
    t = r.randint(1, left - 1)
    return {"n": n, "pct": pct, "t": t}


def _factory(r):
    rate, h, d = r.randint(2, 30), r.randint(2, 12), r.randint(2, 7)
    b = r.randint(2, rate * h)
    return {"r": rate, "h": h, "d": d, "b": b}


def _packs(r):
    a, b, c, k = r.randint(2, 9), r.randint(2, 12), r.randint(1, 20), r.randint(2, 8)
    total = a * b + c
    if total // k < 2:
        return None
    # d = what is kept: total - d must split evenly into k shares of at least 1, and d >= 1.
    rest = total % k
    d = rest + k * r.randint(0 if rest else 1, total // k - 1)
    return {"a": a, "b": b, "c": c, "d": d, "k": k}


def _discount(r):
    n, p, pct, f = r.randint(2, 12), r.randint(2, 40), r.choice(PERCENTS), r.randint(1, 15)
    if n * p * pct % 100:
        return None  # a discount in cents: not an integer problem
    return {"n": n, "p": p, "pct": pct, "f": f}


def _trip(r):
    v, h, v2, h2 = r.randint(20, 70), r.randint(1, 5), r.randint(20, 70), r.randint(1, 5)
    w = r.randint(1, v * h + v2 * h2 - 1)
    return {"v": v, "h": h, "v2": v2, "h2": h2, "w": w}


# id -> (steps, draw, arithmetic, text). Step counts: the arithmetic operations a solver
# must do. The arithmetic, over the drawn quantities, gives the answer and decides the split.
TEMPLATES = {
    "change": (2, _change, "bill - n*p",
               "{name} buys {n} {item} at ${p} each and pays with a ${bill} bill. "
               "How many dollars of change does {name} get?"),
    "share": (2, _share, "(a + b)/k",
              "{name} has {a} {item} and {name2} gives {name} {b} more. {name} shares all of "
              "them equally among {k} friends. How many {item} does each friend get?"),
    "percent_left": (2, _percent_left, "m - m*pct/100",
                     "{name} has ${m} and spends {pct}% of it on {item}. How many dollars does {name} have left?"),
    "profit": (3, _profit, "n*(s - c) - e",
               "{name} buys {n} {item} for ${c} each and sells all of them for ${s} each. Then {name} spends "
               "${e} of the profit on lunch. How many dollars of profit are left?"),
    "store": (3, _store, "n - n*pct/100 - t",
              "A store has {n} {item}. On Monday it sells {pct}% of them, and on Tuesday it "
              "sells {t} more. How many {item} are left?"),
    "factory": (3, _factory, "r*h*d - b",
                "A machine makes {r} {item} per hour. It runs {h} hours a day for {d} days, "
                "and {b} of the {item} turn out broken. How many unbroken {item} does it make?"),
    "packs": (4, _packs, "(a*b + c - d)/k",
              "{name} buys {a} packs of {item} with {b} in each pack, and {name2} adds {c} more. "
              "They keep {d} and share the rest equally among {k} classmates. "
              "How many {item} does each classmate get?"),
    "discount": (4, _discount, "n*p - n*p*pct/100 + f",
                 "{name} buys {n} {item} at ${p} each. The store takes {pct}% off the total, "
                 "and {name} pays ${f} for delivery. How many dollars does {name} pay in all?"),
    "trip": (4, _trip, "v*h + v2*h2 - w",
             "{name} drives at {v} miles per hour for {h} hours, then at {v2} miles per hour for "
             "{h2} hours. {name2} drives {w} miles in all. How many more miles does {name} drive "
             "than {name2}?"),
}


def _filled(arithmetic: str, quantities: dict) -> str:
    """A template's arithmetic with its quantities in place of their names: "bill - n*p" -> "20 - 3*5"."""
    return re.sub(r"[a-z]\w*", lambda name: str(quantities[name[0]]), arithmetic)


def _whole(arithmetic: str) -> int:
    """The value of the filled arithmetic, which the draws keep a whole number."""
    value, _ = evaluate(arithmetic)
    if value.denominator != 1:
        raise RuntimeError(f"word problem arithmetic {arithmetic!r} is {value}, not a whole number")
    return int(value)


class WordProblems(ProceduralEnv):
    name = "word_problems"

    def __init__(self, steps: tuple[int, ...] = (2, 3, 4), eval_fraction: float = 0.1):
        super().__init__(eval_fraction)
        steps = (steps,) if isinstance(steps, int) else tuple(steps)
        known = sorted({s for s, _, _, _ in TEMPLATES.values()})
        if not steps or any(type(s) is not int or s not in known for s in steps):
            raise ValueError(f"steps must be a non-empty subset of {known}, got {steps!r}")
        self.steps = steps
        self.template_ids = sorted(t for t, (s, _, _, _) in TEMPLATES.items() if s in steps)

    def make(self, rng: random.Random) -> Problem | None:
        tid = rng.choice(self.template_ids)
        steps, draw, arithmetic, text = TEMPLATES[tid]
        quantities = draw(rng)
        if quantities is None:
            return None
        key = f"{tid}:" + ",".join(f"{k}={v}" for k, v in quantities.items())
        # Wording from the key alone, so the key determines the whole prompt (see the docstring).
        words = random.Random(f"{self.name}/{key}")
        name, name2 = words.sample(NAMES, 2)
        prompt = text.format(name=name, name2=name2, item=words.choice(ITEMS), **quantities) + SUFFIX
        return Problem(id=f"{self.name}/{key}", prompt=prompt, answer=_whole(_filled(arithmetic, quantities)),
                       env=self.name, meta={"template": tid, "steps": steps, "difficulty": steps})

    def canonical(self, problem: Problem) -> str:
        tid, _, body = problem.id.removeprefix(self.name + "/").partition(":")
        quantities = dict(item.split("=") for item in body.split(","))
        return f"{self.name}/{expression_form(_filled(TEMPLATES[tid][2], quantities))}"

    def check(self, problem: Problem, answer: str) -> Verdict:
        return exact_verdict(parse_int(answer), problem.answer)
