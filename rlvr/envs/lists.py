"""`ListOps`: small list and string manipulations with exact answers.

Ops on a list of `length` integers in 0..`max_value`: ``sort`` (ascending),
``reverse``, ``count`` (occurrences of a value), ``max``, ``min``, ``sum``; and on
a word of `length` random letters: ``reverse_word`` and ``count_letter``. `length`
is the difficulty. The content key is the op, its argument and the list or word.
Where the answer does not depend on the order (every op but the two reverses), the
split is decided on the items sorted (`canonical`): summing, sorting or counting
in ``[3, 1, 2]`` is the same task as in ``[1, 2, 3]``, so both share one split.

Answer formats (what follows ``####``), strict so that no hedge can score:

- a list (sort, reverse): the integers in order, comma-separated. Canonical form
  ``3, 1, 2``; also accepted: any spaces around the commas and one pair of
  surrounding brackets (``[3,1,2]``). Not accepted: other separators, a trailing
  comma, a bracket without its partner, and any missing or extra item.
- a number (count, max, min, sum, count_letter): a bare integer, as in `Arithmetic`.
- a word (reverse_word): the lowercase letters, optionally in one pair of
  matching quotes (``'dcba'``); nothing else.

Anything else is a ``format_error``.

    from rlvr.envs.lists import ListOps
    env = ListOps(length=6, ops=("sort", "sum"))
    p = next(env.problems("train", seed=0)); env.verify(p, "#### " + env.gold_text(p))

Run its tests: ``.venv/bin/python -m pytest tests/test_envs_breadth.py -q``.
"""

from __future__ import annotations

import random
import re
import string

from rlvr.envs.base import ProceduralEnv, exact_verdict
from rlvr.types import Problem, Verdict
from rlvr.verify.extract import parse_int

LIST_END = " End with #### and the numbers separated by commas, like: 4, 0, 7."
NUMBER_END = " End with #### and the number."
WORD_END = " End with #### and the word."
# op -> (prompt, ending). {xs} is the list as "[3, 1, 2]", {w} the word, {t} the value or letter counted.
OPS = {
    "sort": ("Sort the list {xs} in ascending order.", LIST_END),
    "reverse": ("Reverse the list {xs}.", LIST_END),
    "count": ("How many times does {t} appear in the list {xs}?", NUMBER_END),
    "max": ("What is the largest number in the list {xs}?", NUMBER_END),
    "min": ("What is the smallest number in the list {xs}?", NUMBER_END),
    "sum": ("What is the sum of the list {xs}?", NUMBER_END),
    "reverse_word": ("Write the letters of the word '{w}' in reverse order.", WORD_END),
    "count_letter": ("How many times does the letter '{t}' appear in '{w}'?", NUMBER_END),
}
WORD_OPS = ("reverse_word", "count_letter")
ORDERED_OPS = ("reverse", "reverse_word")  # the only answers that depend on the order of the items
# Few distinct letters, so that counts are not almost always 0 or 1.
COUNT_LETTERS = "abcdef"
_WORD = re.compile(r"[a-z]+")


class ListOps(ProceduralEnv):
    name = "lists"

    def __init__(self, length: int = 5, max_value: int = 9, ops: tuple[str, ...] = tuple(OPS),
                 eval_fraction: float = 0.1):
        super().__init__(eval_fraction)
        ops = (ops,) if isinstance(ops, str) else tuple(ops)
        for key, value, least in (("length", length, 2), ("max_value", max_value, 1)):
            if type(value) is not int or value < least:
                raise ValueError(f"{key} must be an int >= {least}, got {value!r}")
        if not ops or any(o not in OPS for o in ops):
            raise ValueError(f"ops must be a non-empty subset of {list(OPS)}, got {ops!r}")
        self.length, self.max_value, self.ops = length, max_value, ops

    def make(self, rng: random.Random) -> Problem:
        op = rng.choice(self.ops)
        target: int | str | None = None
        if op in WORD_OPS:
            letters = string.ascii_lowercase if op == "reverse_word" else COUNT_LETTERS
            w = "".join(rng.choice(letters) for _ in range(self.length))
            content, xs = w, None
            if op == "count_letter":
                target = rng.choice(COUNT_LETTERS)
        else:
            xs = [rng.randint(0, self.max_value) for _ in range(self.length)]
            content, w = ",".join(map(str, xs)), None
            if op == "count":
                # Mostly a value that is there: a count of 0 every other time teaches little.
                target = rng.choice(xs) if rng.random() < 0.75 else rng.randint(0, self.max_value)
        answer = {
            "sort": lambda: tuple(sorted(xs)), "reverse": lambda: tuple(reversed(xs)),
            "count": lambda: xs.count(target), "max": lambda: max(xs), "min": lambda: min(xs),
            "sum": lambda: sum(xs), "reverse_word": lambda: w[::-1], "count_letter": lambda: w.count(target),
        }[op]()
        question, ending = OPS[op]
        prompt = question.format(xs=f"[{', '.join(map(str, xs or []))}]", w=w, t=target) + ending
        key = f"{op}:{content}" if target is None else f"{op}({target}):{content}"
        return Problem(id=f"{self.name}/{key}", prompt=prompt, answer=answer, env=self.name,
                       meta={"op": op, "length": self.length, "difficulty": self.length})

    def canonical(self, problem: Problem) -> str:
        op = problem.meta["op"]
        if op in ORDERED_OPS:
            return problem.id
        head, _, content = problem.id.partition(":")
        return f"{head}:{_sorted_word(content) if op in WORD_OPS else _sorted_list(content)}"

    def gold_text(self, problem: Problem) -> str:
        answer = problem.answer
        return ", ".join(map(str, answer)) if isinstance(answer, tuple) else str(answer)

    def check(self, problem: Problem, answer: str) -> Verdict:
        gold = problem.answer
        if isinstance(gold, tuple):
            parsed = parse_list(answer)
        elif isinstance(gold, str):
            parsed = parse_word(answer)
        else:
            parsed = parse_int(answer)
        return exact_verdict(parsed, gold)


def _sorted_list(content: str) -> str:
    """ "3,1,2" -> "1,2,3": a list's items in ascending order."""
    return ",".join(map(str, sorted(map(int, content.split(",")))))


def _sorted_word(content: str) -> str:
    """ "cab" -> "abc": a word's letters in alphabetical order."""
    return "".join(sorted(content))


def parse_list(s: str) -> tuple[int, ...] | None:
    """ "3, 1, 2" or "[3,1,2]" -> (3, 1, 2); any other shape -> None."""
    s = s.strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    items = [parse_int(item) for item in s.split(",")]  # a stray bracket or "" item fails here
    return None if any(i is None for i in items) else tuple(items)


def parse_word(s: str) -> str | None:
    """ "dcba" or "'dcba'" or '"dcba"' -> "dcba"; anything but lowercase letters -> None."""
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        s = s[1:-1]
    return s if _WORD.fullmatch(s) else None
