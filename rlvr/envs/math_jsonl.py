"""`MathJSONL` ("math"): math word problems from a JSONL file, graded by math equivalence.

Each line is one problem: ``{"problem" (or "question"): ..., "answer": ..., "id": ...
(optional), "level": ... (optional)}``; the answer is the gold, usually LaTeX
(``\\frac{5}{6}``, ``(3, \\infty)``, ``6\\sqrt{2}``). A bad line fails at load time with
the file and line number. Without `path`, a small hand-written sample that ships
with the package is used (``rlvr/envs/data/math_sample.jsonl``), so the environment
works out of the box.

Splits: a problem belongs to "train" or "eval" by a stable hash of its text up to
case and runs of whitespace (`canonical`), not of its id, so the same problem listed
twice, or typed again with other spacing or capitals, can never sit on both sides.
`problems(split, seed)` yields that split's problems in epochs, each epoch a fresh
seeded shuffle.

Grading: strict ``####`` extraction, then `rlvr.verify.math_equiv.equivalent`
(math-verify in a worker process, with a deadline). A verifier timeout raises
`VerifierTimeout` (the rollout asks again, then scores the answer 0, flag ``timeout``).
math-verify evaluates what it reads, so the question's own expression equals its value:
"Simplify \\sqrt{72}" answered ``\\sqrt{72}``, "Compute \\binom{6}{2}" answered
``\\binom{6}{2}``, "Expand (x+2)^2" answered ``(x+2)^2``. An answer that is no plain number,
is written in the question, and is not the gold as written there earns 0 with flag
``restates_question`` (`restates_question`). `validate` also checks
that math-verify can parse every gold: a gold it cannot read would only ever
match itself character for character.

    from rlvr.envs import make_env
    env = make_env("math")                           # or "math:path=data/my.jsonl"
    p = next(env.problems("train", seed=0)); env.verify(p, "... #### " + p.answer)

Run its tests: ``.venv/bin/python -m pytest tests/test_math_verify.py -q``.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Iterator
from pathlib import Path

from rlvr.jsonl import read_jsonl
from rlvr.envs.base import SPLITS, ProceduralEnv, split_of
from rlvr.envs.canonical import text_key
from rlvr.types import Problem, Verdict
from rlvr.verify.extract import format_answer
from rlvr.verify.math_equiv import DEFAULT_TIMEOUT, equivalent, gold_parses

SAMPLE_PATH = Path(__file__).parent / "data" / "math_sample.jsonl"
TEMPLATE = "{problem}\n\nEnd your response with #### followed by the final answer."


def load_jsonl(path: str | Path) -> list[dict]:
    """Rows with "problem", "answer", "id" (given or the line number), "level" (or None), "line"."""
    rows, seen = [], {}
    for lineno, row in read_jsonl(path):
        where = f"{path}:{lineno}"
        problem = row.get("problem", row.get("question"))
        if not isinstance(problem, str) or not problem.strip():
            raise ValueError(f"{where}: missing or empty 'problem' (or 'question'); keys: {sorted(row)}")
        answer = row.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
            raise ValueError(f"{where}: missing or empty 'answer' (a string or number); keys: {sorted(row)}")
        pid = str(row.get("id", f"line{lineno}"))
        if pid in seen:
            raise ValueError(f"{where}: duplicate id {pid!r} (first on line {seen[pid]})")
        seen[pid] = lineno
        rows.append({"problem": problem, "answer": str(answer).strip(), "id": pid,
                     "level": row.get("level"), "line": lineno})
    if not rows:
        raise ValueError(f"{path}: no problems")
    return rows


_PLAIN_NUMBER = re.compile(r"[-+]?(\d+(,\d{3})*(\.\d*)?|\.\d+)%?")
_SPACE = re.compile(r"(?<=(\w))?\s+(?=(\w))?")
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")


def _squash(text: str) -> str:
    """LaTeX as a comparable string: no math delimiters or sizing commands, spaces kept only
    between two word characters, and simple fractions as a/b (so the gold \\frac{3}{4} is
    found in a question that writes 3/4)."""
    for old in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\ ", "$", "\\(", "\\)"):
        text = text.replace(old, " ")
    text = _SPACE.sub(lambda m: " " if m.group(1) and m.group(2) else "", " " + text + " ")
    return _FRAC.sub(r"\1/\2", text).replace("{", "").replace("}", "")


def _written_in(part: str, text: str) -> bool:
    """`part` in `text`, not as a piece of a longer number or word (6 is not written in 64)."""
    return re.search(rf"(?<![0-9A-Za-z.]){re.escape(part)}(?![0-9A-Za-z.])", text) is not None


def restates_question(answer: str, gold: str, question: str) -> bool:
    """Whether `answer` copies an expression out of `question` instead of working it out: it
    is not a plain number, it is written in the question, and the gold is not (when the gold
    is written there, the question offers it, as in "which is larger, 3/4 or 2/3?")."""
    a, g, q = _squash(answer), _squash(gold), _squash(question)
    if not a or _PLAIN_NUMBER.fullmatch(a) or a == g:
        return False
    return a in q and not _written_in(g, q)


class MathJSONL(ProceduralEnv):
    name = "math"

    def __init__(self, path: str = "", template: str = TEMPLATE, eval_fraction: float = 0.1,
                 timeout: float = DEFAULT_TIMEOUT):
        self.path = str(path) if path else str(SAMPLE_PATH)
        self.load(load_jsonl(self.path), template, eval_fraction, timeout)

    def load(self, rows: list[dict], template: str, eval_fraction: float, timeout: float) -> None:
        """Problems from rows of "problem", "answer", "id", "level", "source" and, where the
        data has its own splits, "split" ("train" or "eval"); else the split is a hash of
        the content. A train problem whose content is also in eval is dropped, so that
        duplicated texts cannot straddle the split (`dropped`: how many)."""
        super().__init__(eval_fraction)
        if "{problem}" not in template:
            raise ValueError(f"template must contain '{{problem}}', got {template!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        self.template, self.timeout = template, float(timeout)
        self.by_split: dict[str, list[Problem]] = {s: [] for s in SPLITS}
        for row in rows:
            problem = Problem(
                id=f"{self.name}/{row['id']}",
                prompt=template.replace("{problem}", row["problem"]),
                answer=row["answer"],
                env=self.name,
                meta={"level": row["level"], "difficulty": row["level"],
                      "source": row.get("source") or f"{self.path}:{row['line']}",
                      "content_key": text_key(row["problem"]), "question": row["problem"]},
            )
            split = row.get("split") or split_of(self.canonical(problem), eval_fraction)
            self.by_split[split].append(problem)
        held_out = {self.canonical(p) for p in self.by_split["eval"]}
        train = [p for p in self.by_split["train"] if self.canonical(p) not in held_out]
        self.dropped = len(self.by_split["train"]) - len(train)
        self.by_split["train"] = train

    def canonical(self, problem: Problem) -> str:
        return f"{self.name}/{problem.meta['content_key']}"

    def make(self, rng: random.Random) -> Problem:
        return rng.choice(self.by_split["train"] + self.by_split["eval"])

    def problems(self, split: str, seed: int) -> Iterator[Problem]:
        stream = super().problems(split, seed)  # checks the split name
        if not self.by_split[split]:
            n = sum(map(len, self.by_split.values()))
            raise ValueError(f"{self.path}: no {split} problems among {n} (eval_fraction={self.eval_fraction}); "
                             "add problems or change eval_fraction")
        return stream

    def _stream(self, split: str, seed: int) -> Iterator[Problem]:
        rng = random.Random(f"{self.name}/{split}/{seed}")
        epoch = 0
        while True:
            order = list(self.by_split[split])
            rng.shuffle(order)
            for p in order:
                yield dataclasses.replace(p, meta={**p.meta, "split": split, "seed": seed, "epoch": epoch})
            epoch += 1

    def check(self, problem: Problem, answer: str) -> Verdict:
        if restates_question(answer, problem.answer, problem.meta.get("question", "")):
            return Verdict(reward=0.0, correct=False, parsed=answer, flags=frozenset({"restates_question"}))
        correct = equivalent(answer, problem.answer, timeout=self.timeout)  # VerifierTimeout propagates
        return Verdict(reward=1.0 if correct else 0.0, correct=correct, parsed=answer)

    def validate(self, n: int = 100) -> list[str]:
        """Up to `n` problems of each split: the gold must verify and math-verify must parse it."""
        failures = []
        for split in SPLITS:
            for p in self.by_split[split][:n]:
                gold = format_answer(p.answer)
                try:
                    v = self.verify(p, gold)
                    parsed = gold_parses(p.answer, timeout=self.timeout)
                except Exception as e:  # a crash on gold is a failure to report, not to hide
                    failures.append(f"{p.id} ({split}, {p.meta['source']}): gold {p.answer!r} raised {e!r}")
                    continue
                if not (v.correct and v.reward == 1.0):
                    failures.append(f"{p.id} ({split}, {p.meta['source']}): gold {gold!r} got {v}")
                if not parsed:
                    failures.append(f"{p.id} ({split}, {p.meta['source']}): math-verify cannot parse gold "
                                    f"{p.answer!r}; only an identical string would score")
        return failures
