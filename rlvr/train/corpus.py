"""A synthetic pretraining corpus: worked solutions, many with plausible slips.

Text from the wild is full of worked solutions that go wrong somewhere. This corpus
imitates that for column addition: each solution is written least-significant column
first, one numbered "digit carry" entry per column, then `#### answer`:

    457+386  ->  1:31 2:41 3:80 #### 843

The column numbers matter: a RoPE model has no absolute positions, and without them
it must infer which column it is writing (and so which operand digits to read) by
counting, which left a ~700-step plateau before it learned anything; with them the
plateau is ~300 steps.

With probability `slip` each column's written digit is one too high (the carry stays
right, later columns follow from the slipped work, and the answer is what the work
says). With slip > 0.5 the most likely digit of every column is wrong, so a model
trained on it has a *wrong mode*: low greedy accuracy, low pass@1, yet every correct
solution has real probability (high pass@k). RL then has to move the mode, not merely
sharpen the distribution. Only "train"-split problems are ever written here.
"""

from __future__ import annotations

import random
from typing import Iterator

from rlvr.types import Environment, Problem
from rlvr.verify.extract import format_answer


def worked_addition(a: int, b: int, slip: float, rng: random.Random) -> str:
    da, db = str(a)[::-1], str(b)[::-1]
    carry, cols, written = 0, [], []
    for i in range(max(len(da), len(db))):
        s = int(da[i] if i < len(da) else 0) + int(db[i] if i < len(db) else 0) + carry
        digit, carry = s % 10, s // 10
        if rng.random() < slip:
            digit = (digit + 1) % 10
        cols.append(f"{i + 1}:{digit}{carry}")
        written.append(str(digit))
    answer = int((str(carry) if carry else "") + "".join(reversed(written)))
    return " ".join(cols) + " " + format_answer(answer)


def worked_solution(problem: Problem, slip: float, rng: random.Random) -> str:
    m = problem.meta
    if problem.env != "arithmetic" or m.get("op") != "add":
        raise ValueError(f"the synthetic corpus writes column additions only; got {problem.id!r} "
                         "(use an env spec like arithmetic:digits=3,ops=add)")
    return worked_addition(m["a"], m["b"], slip, rng)


def documents(env: Environment, tok, slip: float, seed: int) -> Iterator[str]:
    """An endless stream of chat-formatted worked problems from the train split."""
    rng = random.Random(f"corpus/{seed}")
    for problem in env.problems("train", seed):
        reply = worked_solution(problem, slip, rng)
        yield tok.apply_chat_template(problem.messages() + [{"role": "assistant", "content": reply}],
                                      tokenize=False)
