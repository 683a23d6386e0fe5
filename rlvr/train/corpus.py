"""A synthetic pretraining corpus: worked solutions, many with plausible slips.

Text from the wild is full of worked solutions that go wrong somewhere. This corpus
imitates that for column addition: each solution is written least-significant column
first, one numbered entry per column (the column's two operand digits, then the digit
written and the carry), then `#### answer`:

    457+386  ->  1:7631 2:5841 3:4380 #### 843

Why this shape. A RoPE model has no absolute positions: it must learn which prompt
digits each column reads, and until it does it sits on a loss plateau. The column
numbers tell it which column it is in. Copying the two operand digits first gives that
lookup a target of its own, exact and free of slips, so it is learned apart from the
addition (which then reads the digits just written, next to it); without the copies
the plateau lasted 250 to over 600 steps depending on the seed and the CPU's float
kernels, with them (and the tiny preset's init std 0.04) it ends by step 150 to 200
(EXPERIMENTS.md).

With probability `slip` the units column's written digit is one too high, and each
later column's with probability `slip_later` (the carry stays right, later columns
follow from the slipped work, and the answer is what the work says). With slip > 0.5
the most likely answer is wrong (a model trained on it has a *wrong mode*: low greedy
accuracy and pass@1), yet every correct solution keeps real probability (high pass@k),
so RL has to move the mode, not merely sharpen the distribution. Pretraining's
defaults, 0.7 for the units and 0.35 later, keep the wrong mode's margin wide (0.7
against 0.3) so greedy decoding stays wrong on any machine, while a correct answer
(0.3 x 0.65 x 0.65 = 12.7% on 3 digits) stays within a few samples' reach. Only
"train"-split problems are ever written here.
"""

from __future__ import annotations

import random
from typing import Iterator

from rlvr.types import Environment, Problem
from rlvr.verify.extract import format_answer


def addition_columns(a: int, b: int) -> Iterator[tuple[int, int, int]]:
    """Column addition, units first: each column's two digits and its total (the carry in
    included)."""
    da, db = str(a)[::-1], str(b)[::-1]
    carry = 0
    for i in range(max(len(da), len(db))):
        x, y = int(da[i] if i < len(da) else 0), int(db[i] if i < len(db) else 0)
        total = x + y + carry
        carry = total // 10
        yield x, y, total


def worked_addition(a: int, b: int, slip: float, rng: random.Random, slip_later: float | None = None) -> str:
    cols, written, carry = [], [], 0
    for i, (x, y, total) in enumerate(addition_columns(a, b)):
        digit, carry = total % 10, total // 10
        if rng.random() < (slip if i == 0 or slip_later is None else slip_later):
            digit = (digit + 1) % 10
        cols.append(f"{i + 1}:{x}{y}{digit}{carry}")
        written.append(str(digit))
    answer = int((str(carry) if carry else "") + "".join(reversed(written)))
    return " ".join(cols) + " " + format_answer(answer)


def worked_solution(problem: Problem, slip: float, rng: random.Random, slip_later: float | None = None) -> str:
    m = problem.meta
    if problem.env != "arithmetic" or m.get("op") != "add":
        raise ValueError(f"the synthetic corpus writes column additions only; got {problem.id!r} "
                         "(use an env spec like arithmetic:digits=3,ops=add)")
    return worked_addition(m["a"], m["b"], slip, rng, slip_later)


SOLUTION_STYLES = ("worked", "sums", "answer")


def column_sums(a: int, b: int) -> str:
    """Column addition as a person jots it: each column's total, units first, the carry
    folded into the next total, then the answer (457+386 -> `13 14 8 #### 843`). The
    same work as the corpus's procedure, without the column numbers and operand copies."""
    return " ".join(str(total) for _, _, total in addition_columns(a, b)) + " " + format_answer(a + b)


def correct_solution(env: Environment, problem: Problem, style: str = "worked") -> str:
    """The environment's own correct solution, as an expert writes it, in one of
    `SOLUTION_STYLES`: "worked", the corpus's column procedure without a slip (the
    environment's gold answer on its answer line where the corpus writes no procedure);
    "sums", column addition's totals without the corpus's scaffolding (`column_sums`);
    "answer", the answer line alone, as an answer key prints it."""
    if style not in SOLUTION_STYLES:
        raise ValueError(f"unknown solution style {style!r}; choose from {list(SOLUTION_STYLES)}")
    addition = problem.env == "arithmetic" and problem.meta.get("op") == "add"
    if addition and style == "worked":
        return worked_solution(problem, 0.0, random.Random(0), 0.0)
    if addition and style == "sums":
        return column_sums(problem.meta["a"], problem.meta["b"])
    if addition:
        return format_answer(problem.meta["a"] + problem.meta["b"])
    if style == "sums":
        raise ValueError(f"the 'sums' style writes column additions only; got {problem.id!r}")
    from rlvr.types import GoldText

    if not isinstance(env, GoldText):
        raise ValueError(f"environment {env.name!r} writes no gold solution (no gold_text)")
    return format_answer(env.gold_text(problem))


def mixed(docs: Iterator[str], extra: list[str], share: float, seed: int) -> Iterator[str]:
    """`docs` with a `share` of its documents replaced by `extra`'s, in order and cycled:
    other text mixed into the corpus (mid-training). Deterministic given the seed, so a
    resumed run can skip what it already read."""
    if not extra:
        raise ValueError("nothing to mix into the corpus: the extra documents are empty")

    def stream() -> Iterator[str]:
        rng, i = random.Random(f"mix/{seed}"), 0
        for doc in docs:
            if rng.random() < share:
                doc, i = extra[i % len(extra)], i + 1
            yield doc
    return stream()


def documents(env: Environment, tok, slip: float, seed: int, slip_later: float | None = None) -> Iterator[str]:
    """An endless stream of chat-formatted worked problems from the train split."""
    rng = random.Random(f"corpus/{seed}")
    for problem in env.problems("train", seed):
        reply = worked_solution(problem, slip, rng, slip_later)
        yield tok.apply_chat_template(problem.messages() + [{"role": "assistant", "content": reply}],
                                      tokenize=False)
