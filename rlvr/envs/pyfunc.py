"""`PyFunctions`: write a small Python function from a description and examples.

Problems come from a procedural generator of our own: parameterised families ("sum
of the numbers divisible by k", "rotate left by k", "Caesar shift by k", "running
max", "clamp to [lo, hi]", ...; thousands of distinct tasks). Each task has a
reference implementation; its test inputs are drawn from a generator seeded by the
task's content key, and the expected outputs are computed by running the reference
here. The prompt shows the first `visible` tests as examples; verification runs all
tests (visible and hidden) in the sandbox (`rlvr.verify.sandbox.run_tests`), so a
solution that special-cases the examples fails. Comparisons are type-exact
(``same``: True is not 1). The gold answer is the reference source, so `validate`
checks that every reference passes its own tests in the sandbox.

The answer format, shared with `humaneval`: after the single ``####`` comes exactly
one fenced block, `` ```python `` newline, code, `` ``` ``, and nothing else (a
second fence, another language tag or trailing prose is a ``format_error``). Code
that contains ``####`` itself hedges like two answers (``multiple_answers``).

The content key is the family and its parameters (``pyfunc/clamp:-3:7``), and it is
also the problem's canonical form: no two keys name the same function (orderless
parameters are sorted, as in ``count_chars:abe``), and one key is one task whatever
`tests` and `visible` show of it, so train and eval never share a function.

    from rlvr.envs.pyfunc import PyFunctions
    env = PyFunctions()
    p = next(env.problems("train", seed=0)); env.verify(p, "#### " + env.gold_text(p))

Run its tests: ``.venv/bin/python -m pytest tests/test_code_envs.py -q``.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any, Callable

from rlvr.envs.base import ProceduralEnv
from rlvr.verify.extract import extract_final
from rlvr.types import Problem, Verdict
from rlvr.verify.sandbox import run_tests

FENCE_OPEN, FENCE_CLOSE = "```python\n", "```"
INSTRUCTION = ("End with #### and then a single ```python code block that defines `{name}` "
               "(only the standard library is available).")


def code_from_answer(answer: str) -> str | None:
    """The code of the one ```python block that is the whole answer, or None."""
    answer = answer.strip()
    if not (answer.startswith(FENCE_OPEN) and answer.endswith(FENCE_CLOSE)):
        return None
    body = answer[len(FENCE_OPEN):-len(FENCE_CLOSE)]
    if FENCE_CLOSE in body or not body.strip():
        return None
    return body


def fenced(code: str) -> str:
    """`code` as the answer block `code_from_answer` reads."""
    return FENCE_OPEN + code.rstrip("\n") + "\n" + FENCE_CLOSE


@dataclass(frozen=True)
class Task:
    key: str  # content key: family and parameters
    name: str  # the function's name
    signature: str
    description: str  # completes "Write a Python function `sig` that ..."
    source: str  # the reference implementation
    inputs: Callable[[random.Random], tuple]  # one test's arguments


# --- input generators ------------------------------------------------------------------

def _ints(rng, lo=-20, hi=20, max_len=8):
    return [rng.randint(lo, hi) for _ in range(rng.randint(0, max_len))]


def _words(rng, max_words=6):
    return " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 7)))
                    for _ in range(rng.randint(1, max_words)))


def _text(rng):
    alphabet = string.ascii_lowercase + "   ,.!AEZ"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))


# --- families: each draws its parameters and returns a Task ---------------------------------

def _sum_divisible(rng):
    k, neg = rng.randint(2, 9), rng.random() < 0.5
    cond = f"x % {k} != 0" if neg else f"x % {k} == 0"
    return Task(f"sum_divisible:{k}:{'not' if neg else 'is'}", "sum_divisible", "sum_divisible(xs: list[int]) -> int",
                f"returns the sum of the numbers in `xs` that are {'not ' if neg else ''}divisible by {k} "
                "(0 if there are none).",
                f"def sum_divisible(xs):\n    return sum(x for x in xs if {cond})\n", lambda r: (_ints(r),))


def _count_chars(rng):
    chars = "".join(sorted(rng.sample(string.ascii_lowercase, rng.randint(2, 5))))
    return Task(f"count_chars:{chars}", "count_chars", "count_chars(s: str) -> int",
                f"returns how many characters of `s` are one of the lowercase letters {', '.join(chars)}.",
                f"def count_chars(s):\n    return sum(c in {chars!r} for c in s)\n",
                lambda r: ("".join(r.choice(chars + "xyz AB") for _ in range(r.randint(0, 15))),))


def _words_op(rng):
    op = rng.choice(["reverse_order", "reverse_each", "longer", "starting"])
    if op == "reverse_order":
        key, what, body = op, "the words of `s` in reverse order", "' '.join(s.split(' ')[::-1])"
    elif op == "reverse_each":
        key, what, body = op, "`s` with the letters of each word reversed", "' '.join(w[::-1] for w in s.split(' '))"
    elif op == "longer":
        n = rng.randint(1, 5)
        key, what, body = f"longer:{n}", f"the words of `s` longer than {n} letters, in order", \
            f"' '.join(w for w in s.split(' ') if len(w) > {n})"
    else:
        c = rng.choice(string.ascii_lowercase)
        key, what, body = f"starting:{c}", f"the words of `s` that start with {c!r}, in order", \
            f"' '.join(w for w in s.split(' ') if w.startswith({c!r}))"
    return Task(f"words:{key}", "words", "words(s: str) -> str",
                f"returns {what}, joined by single spaces. Words in `s` are separated by single spaces.",
                f"def words(s):\n    return {body}\n", lambda r: (_words(r),))


def _clamp(rng):
    lo = rng.randint(-20, 20)
    hi = lo + rng.randint(1, 30)
    return Task(f"clamp:{lo}:{hi}", "clamp", "clamp(x: int) -> int",
                f"returns `x` clamped to the range [{lo}, {hi}]: {lo} if `x` is smaller, {hi} if larger.",
                f"def clamp(x):\n    return min(max(x, {lo}), {hi})\n", lambda r: (r.randint(lo - 15, hi + 15),))


def _running(rng):
    op = rng.choice(["max", "min", "sum", "mod"])
    m = rng.randint(2, 20)
    if op in ("max", "min"):
        start, step = "None", f"x if acc is None else {op}(acc, x)"
    else:
        start, step = "0", "acc + x" if op == "sum" else f"(acc + x) % {m}"
    what = {"max": "maximum", "min": "minimum", "sum": "sum", "mod": f"sum modulo {m} (Python's %)"}[op]
    return Task(f"running:{op}" + (f":{m}" if op == "mod" else ""), "running", "running(xs: list[int]) -> list[int]",
                f"returns the running {what} of `xs`: element i is the {what} of xs[0], ..., xs[i].",
                f"def running(xs):\n    out, acc = [], {start}\n    for x in xs:\n        acc = {step}\n"
                "        out.append(acc)\n    return out\n", lambda r: (_ints(r),))


def _count_compare(rng):
    t, greater = rng.randint(-10, 10), rng.random() < 0.5
    op = ">" if greater else "<="
    return Task(f"count_compare:{op}{t}", "count_compare", "count_compare(xs: list[int]) -> int",
                f"returns how many numbers in `xs` are {'greater than' if greater else 'at most'} {t}.",
                f"def count_compare(xs):\n    return sum(1 for x in xs if x {op} {t})\n", lambda r: (_ints(r),))


def _rotate(rng):
    k, left = rng.randint(1, 6), rng.random() < 0.5
    body = f"xs[{k} % len(xs):] + xs[:{k} % len(xs)]" if left else f"xs[-({k} % len(xs)):] + xs[:-({k} % len(xs))]"
    return Task(f"rotate:{'left' if left else 'right'}:{k}", "rotate", "rotate(xs: list[int]) -> list[int]",
                f"returns `xs` rotated {'left' if left else 'right'} by {k} positions (an empty list stays empty).",
                f"def rotate(xs):\n    if not xs or {k} % len(xs) == 0:\n        return list(xs)\n    return {body}\n",
                lambda r: (_ints(r, max_len=9),))


def _digit_sum(rng):
    b = rng.randint(2, 16)
    return Task(f"digit_sum:{b}", "digit_sum", "digit_sum(n: int) -> int",
                f"returns the sum of the digits of the non-negative integer `n` written in base {b}.",
                f"def digit_sum(n):\n    total = 0\n    while n:\n        n, d = divmod(n, {b})\n        total += d\n"
                "    return total\n", lambda r: (r.choice([0, r.randint(1, 50), r.randint(1, 10**6)]),))


def _caesar(rng):
    k = rng.randint(1, 25)
    return Task(f"caesar:{k}", "caesar", "caesar(s: str) -> str",
                f"returns `s` with every lowercase letter shifted forward by {k} places in the alphabet, wrapping "
                "from 'z' to 'a'; every other character stays as it is.",
                "def caesar(s):\n    return ''.join(chr((ord(c) - 97 + " + str(k) + ") % 26 + 97) if 'a' <= c <= 'z' "
                "else c for c in s)\n", lambda r: (_text(r),))


def _every_kth(rng):
    k = rng.randint(2, 5)
    s = rng.randint(0, k - 1)
    return Task(f"every_kth:{k}:{s}", "every_kth", "every_kth(xs: list[int]) -> list[int]",
                f"returns the elements of `xs` at indexes {s}, {s + k}, {s + 2 * k}, ... in order.",
                f"def every_kth(xs):\n    return xs[{s}::{k}]\n", lambda r: (_ints(r, max_len=12),))


def _poly(rng):
    a, b, c = (rng.randint(-9, 9) for _ in range(3))
    return Task(f"poly:{a}:{b}:{c}", "poly", "poly(x: int) -> int",
                f"returns {a}*x*x + {b}*x + {c}.",
                f"def poly(x):\n    return {a} * x * x + {b} * x + {c}\n", lambda r: (r.randint(-30, 30),))


_FIZZ_WORDS = ["Fizz", "Buzz", "Bang", "Pop", "Zap", "Hop"]


def _fizz(rng):
    a, b = sorted(rng.sample(range(2, 8), 2))
    wa, wb = rng.sample(_FIZZ_WORDS, 2)
    return Task(f"fizz:{a}:{b}:{wa}:{wb}", "fizz", "fizz(n: int) -> list[str]",
                f"returns, for each i in 1..n, {wa + wb!r} if i is divisible by both {a} and {b}, else {wa!r} if i is "
                f"divisible by {a}, else {wb!r} if i is divisible by {b}, else str(i).",
                "def fizz(n):\n    out = []\n    for i in range(1, n + 1):\n"
                f"        word = ({wa!r} if i % {a} == 0 else '') + ({wb!r} if i % {b} == 0 else '')\n"
                "        out.append(word or str(i))\n    return out\n", lambda r: (r.randint(0, 25),))


def _exactly_k(rng):
    k = rng.randint(1, 3)
    return Task(f"exactly_k:{k}", "exactly_k", "exactly_k(xs: list[int]) -> list[int]",
                f"returns, once each and in order of first appearance, the numbers that occur exactly {k} "
                f"time{'s' if k > 1 else ''} in `xs`.",
                f"def exactly_k(xs):\n    out = []\n    for x in xs:\n        if xs.count(x) == {k} and x not in out:\n"
                "            out.append(x)\n    return out\n", lambda r: (_ints(r, -4, 4, 10),))


def _max_window(rng):
    k = rng.randint(1, 5)
    return Task(f"max_window:{k}", "max_window", "max_window(xs: list[int]) -> int | None",
                f"returns the largest sum of {k} consecutive elements of `xs`, or None if `xs` has fewer than {k} "
                "elements.",
                f"def max_window(xs):\n    if len(xs) < {k}:\n        return None\n"
                f"    return max(sum(xs[i:i + {k}]) for i in range(len(xs) - {k} + 1))\n",
                lambda r: (_ints(r, max_len=9),))


FAMILIES: dict[str, Callable[[random.Random], Task]] = {
    "sum_divisible": _sum_divisible, "count_chars": _count_chars, "words": _words_op, "clamp": _clamp,
    "running": _running, "count_compare": _count_compare, "rotate": _rotate, "digit_sum": _digit_sum,
    "caesar": _caesar, "every_kth": _every_kth, "poly": _poly, "fizz": _fizz, "exactly_k": _exactly_k,
    "max_window": _max_window,
}


def _call_text(name: str, args: tuple) -> str:
    return f"{name}({', '.join(repr(a) for a in args)})"


class PyFunctions(ProceduralEnv):
    name = "pyfunc"

    def __init__(self, families: tuple[str, ...] = tuple(FAMILIES), tests: int = 10, visible: int = 3,
                 timeout: float = 3.0, eval_fraction: float = 0.1):
        super().__init__(eval_fraction)
        families = (families,) if isinstance(families, str) else tuple(families)
        unknown = [f for f in families if f not in FAMILIES]
        if not families or unknown:
            raise ValueError(f"families must be a non-empty subset of {sorted(FAMILIES)}, got {families!r}")
        if type(tests) is not int or type(visible) is not int or not 0 <= visible < tests:
            raise ValueError(f"need ints 0 <= visible < tests, got visible={visible!r}, tests={tests!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        self.families, self.tests, self.visible, self.timeout = families, tests, visible, timeout

    def make(self, rng: random.Random) -> Problem:
        task = FAMILIES[rng.choice(self.families)](rng)
        reference: dict[str, Any] = {}
        exec(task.source, reference)  # our own reference code: computes the expected outputs
        fn = reference[task.name]
        # The tests depend on the content key alone, so one key has one prompt.
        trng = random.Random(f"{self.name}/{task.key}/{self.tests}")
        cases, seen = [], set()
        for _ in range(50 * self.tests):
            args = task.inputs(trng)
            if repr(args) not in seen:
                seen.add(repr(args))
                cases.append((args, fn(*args)))
            if len(cases) == self.tests:
                break
        examples = "\n".join(f">>> {_call_text(task.name, a)}\n{out!r}" for a, out in cases[:self.visible])
        prompt = (f"Write a Python function `{task.signature}` that {task.description}\n\n"
                  + (f"Examples:\n{examples}\n\n" if examples else "") + INSTRUCTION.format(name=task.name))
        tests = [f"assert same({_call_text('candidate', a)}, {out!r})" for a, out in cases]
        return Problem(id=f"{self.name}/{task.key}", prompt=prompt, env=self.name,
                       answer={"source": task.source, "entry_point": task.name, "tests": tests},
                       meta={"family": task.key.split(":")[0], "tests": len(tests), "visible": self.visible})

    def gold_text(self, problem: Problem) -> str:
        return fenced(problem.answer["source"])

    def code_from(self, completion: str) -> str | None:
        """The code a completion submits (the answer block after ####), or None."""
        answer, _ = extract_final(completion)
        return None if answer is None else code_from_answer(answer)

    def code_tests(self, problem: Problem) -> tuple[list[str], str]:
        """The hidden tests (they call `candidate` and `same`) and the function's name."""
        return problem.answer["tests"], problem.answer["entry_point"]

    def check(self, problem: Problem, answer: str) -> Verdict:
        return check_code(answer, problem.answer["tests"], problem.answer["entry_point"], self.timeout)


def check_code(answer: str, tests: list[str] | str, entry_point: str, timeout: float, prelude: str = "") -> Verdict:
    """Run the answer's code block against `tests` in the sandbox, after `prelude` (shared
    by the code environments). Not exactly one code block: a ``format_error``."""
    code = code_from_answer(answer)
    if code is None:
        return Verdict(reward=0.0, correct=False, parsed=None, flags=frozenset({"format_error"}))
    return code_verdict(run_tests(code, tests, entry_point, timeout=timeout, prelude=prelude), code)


def code_verdict(report, code: str) -> Verdict:
    """All tests pass: reward 1; anything else 0, flagged ``timeout`` or ``load_error`` when so."""
    flags = set()
    if report.sandbox.timed_out:
        flags.add("timeout")
    if report.error and report.error.startswith("the code did not load"):
        flags.add("load_error")
    return Verdict(reward=1.0 if report.all_passed else 0.0, correct=report.all_passed, parsed=code,
                   flags=frozenset(flags))
