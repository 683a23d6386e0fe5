"""`ReasoningGymEnv` ("gym:TASK"): any reasoning-gym task as an rlvr environment.

reasoning-gym (pinned 0.1.25) generates ~100 kinds of verifiable problems offline:
arithmetic, logic puzzles, graphs, ciphers, ... Each is `create_dataset(task, size=,
seed=, **config)`, entries ``{"question", "answer", "metadata"}``, graded by the
dataset's own ``score_answer(answer, entry) -> float`` (some tasks give partial
credit). Build one with the registry:

    from rlvr.envs import make_env
    env = make_env("gym:basic_arithmetic")                       # task defaults
    env = make_env("gym:basic_arithmetic:min_terms=2,max_terms=3,eval_size=100")
    env = make_env({"name": "gym:basic_arithmetic", "min_terms": 2})

Splits: "eval" is a fixed set of `eval_size` entries drawn with an eval seed;
"train" is an endless stream of fresh chunks drawn with seeds derived from the
stream's seed. Seeds differ, and disjointness is also enforced by content: the
train stream skips every entry whose canonical form (`canonical`) is an eval
problem's, whatever its seed. An entry's canonical form is its question
(whitespace-normalised, which is also its id), except for the tasks in
`GYM_CANONICAL`, whose twins are worded differently: there it is the problem
itself, read from the entry's metadata (an expression up to the order of the
operands of + and *, the numbers or items in any order), so "Calculate 3 + 5."
in eval keeps "Calculate 5 + 3." out of train. reasoning-gym seeds entry i of a
dataset with seed+i, so derived seeds are hashed over [0, 2**32) rather than
consecutive.

Grading: strict ``####`` extraction, then the task's ``score_answer``; `correct` means
a score of exactly 1.0, and so does reward 1: anything in between earns 0 with flag
``partial_credit``. A scorer that raises becomes `VerifierError` (the caller decides),
never reward 0. Why 0/1 by default: reasoning-gym's default scorer pays
len(gold)/len(answer) when the gold is a substring of the answer, so hedges farm it
(against gold 56: "56 or 57" 0.25, "55, 56, 57" 0.2, "-56" and "560" 0.67).
``partial_credit=True`` passes the graded scores through, for tasks whose scorer
grades real partial solutions.

Some tasks' gold answers do not score 1 (several valid answers, no single gold):
boxnet, graph_color, propositional_logic, rubiks_cube and rush_hour, listed in
`GYM_UNRELIABLE` (a sweep of all 106 tasks at 10 problems a split found exactly
these; composite needs a dataset list; the other 100 validated clean). So a gym
env validates itself when built: `check` (default 20) problems of each split must
have golds that score 1, or construction fails with `UnreliableTaskError` listing
them. Pass ``check=0`` to build one anyway (e.g. to look at it); `validate(n)`
reports the failures.

Run its tests: ``.venv/bin/python -m pytest tests/test_gym_env.py -q``.
"""

from __future__ import annotations

import itertools

import dataclasses
import difflib
import hashlib
import inspect
import math
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

from rlvr.config import InputError
from rlvr.envs.base import check_golds, check_split, verify_final
from rlvr.envs.canonical import expression_form
from rlvr.types import Problem, Verdict
from rlvr.verify.math_equiv import VerifierError

PREFIX = "gym:"
TEMPLATE = "{question}\n\nEnd your response with #### followed by the final answer."
# Known to have golds that do not score 1 (reasoning-gym 0.1.25: a sweep of all 106 tasks at 10 problems a
# split, see the docstring); composite needs a dataset list.
GYM_UNRELIABLE = frozenset({"boxnet", "graph_color", "propositional_logic", "rubiks_cube", "rush_hour"})
# Found (reasoning-gym 0.1.25, 8 problems of every task under PYTHONHASHSEED 1 and 2) to
# generate different problems in different Python processes: they iterate over sets or
# hash strings. Their eval set would differ between the trainer, a Ray worker and a later
# `rlvr eval`, and train problems could be another process's eval problems.
GYM_HASH_SEEDED = frozenset({"isomorphic_strings", "knight_swap", "list_functions", "polynomial_multiplication",
                             "ransom_note", "word_ladder"})
CHUNK = 10_000  # entries per train dataset before the stream reseeds
MAX_MISSES = 100_000  # consecutive train entries that are all eval content: the task's space is too small
MAX_EVAL_SIZE = 1_000_000


def _expression(meta: dict) -> str:
    return expression_form(meta["expression"])


def _numbers(meta: dict) -> str:
    return ",".join(map(str, sorted(meta["numbers"])))


def _numbers_and_target(meta: dict) -> str:
    return f"{_numbers(meta)}={meta['target']}"


def _number_sorting(meta: dict) -> str:
    return f"{meta['direction']}:{sorted(meta['original_numbers'])}"


def _word_sorting(meta: dict) -> str:
    return f"{meta['direction']}:{sorted(meta['transformed_words'])}"


def _legs(meta: dict) -> str:
    return str(sorted(meta["animals"].items()))


def _complex(meta: dict) -> str:
    operands = [tuple(meta["num1"]), tuple(meta["num2"])]
    return f"{meta['operation']}:{sorted(operands) if meta['operation'] in '+*' else operands}"


# Tasks whose twins are worded differently (commuted operands, the same numbers or items
# in another order, other phrasings): task -> the form, from an entry's metadata, that
# all twins share. Read from reasoning-gym 0.1.25's metadata; tests/test_splits.py checks it.
GYM_CANONICAL: dict[str, Callable[[dict], str]] = {
    "basic_arithmetic": _expression, "chain_sum": _expression, "decimal_chain_sum": _expression,
    "products": _expression, "gcd": _numbers, "lcm": _numbers, "puzzle24": _numbers,
    "countdown": _numbers_and_target, "number_sorting": _number_sorting, "word_sorting": _word_sorting,
    "leg_counting": _legs, "complex_arithmetic": _complex,
}


class UnreliableTaskError(InputError):
    """A task whose gold answers do not all score 1 (see `ReasoningGymEnv.validate`)."""


def gym_tasks() -> list[str]:
    """The names reasoning-gym knows (imports reasoning_gym, a few seconds)."""
    from reasoning_gym.factory import DATASETS
    return sorted(DATASETS)


def _seed(*parts: Any) -> int:
    # Some tasks require seeds in [0, 2**32); entry i is seeded with seed + i, so leave headroom.
    h = int.from_bytes(hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest(), "big")
    return h % (2**32 - 2 * MAX_EVAL_SIZE)


def _content_key(question: str) -> str:
    return hashlib.blake2b(" ".join(question.split()).encode(), digest_size=8).hexdigest()


class ReasoningGymEnv:
    def __init__(self, task: str, eval_size: int = 200, eval_seed: int = 0, check: int = 20,
                 template: str = TEMPLATE, partial_credit: bool = False, **params: Any):
        from reasoning_gym.factory import DATASETS, create_dataset

        if task not in DATASETS:
            close = difflib.get_close_matches(task, DATASETS, n=5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(f"unknown reasoning-gym task {task!r}; {hint}(`rlvr envs --gym` lists all "
                             f"{len(DATASETS)} tasks)")
        for key in ("seed", "size"):
            if key in params:
                raise ValueError(f"gym:{task}: {key!r} is set by the environment (use eval_size / eval_seed / "
                                 "the stream's seed)")
        config_fields = {f.name for f in dataclasses.fields(DATASETS[task][1])} - {"seed", "size"}
        unknown = sorted(set(params) - config_fields)
        if unknown:
            own = [k for k in inspect.signature(ReasoningGymEnv).parameters if k not in ("task", "params")]
            raise ValueError(f"unknown parameter(s) {unknown} for gym:{task}; valid: {own + sorted(config_fields)}")
        if task in GYM_HASH_SEEDED and not os.environ.get("PYTHONHASHSEED", "random").isdigit():
            raise ValueError(f"gym:{task} generates different problems in every Python process (it depends on "
                             "Python's hash seed), so its eval set would not be the same twice; run rlvr with "
                             "PYTHONHASHSEED set, e.g. `PYTHONHASHSEED=0 rlvr ...` (every process of the run "
                             "inherits it)")
        if type(eval_size) is not int or not 1 <= eval_size <= MAX_EVAL_SIZE:
            raise ValueError(f"eval_size must be an int in [1, {MAX_EVAL_SIZE}], got {eval_size!r}")
        if "{question}" not in template:
            raise ValueError(f"template must contain '{{question}}', got {template!r}")
        self.task, self.name, self.params, self.template = task, PREFIX + task, dict(params), template
        self.partial_credit = bool(partial_credit)
        self._create = create_dataset
        try:
            # The scorer: score_answer may read the dataset's config, so it comes from the same config.
            self.scorer = self._dataset(size=1, seed=0)
        except Exception as e:
            raise ValueError(f"gym:{task} cannot be created with {params}: {e!r}") from None
        eval_ds = self._dataset(size=eval_size, seed=_seed(task, "eval", eval_seed))
        self.eval_set, seen = [], set()
        for i in range(eval_size):
            p = self._problem(eval_ds[i])
            if self.canonical(p) not in seen:  # a repeated problem would count twice in eval
                seen.add(self.canonical(p))
                self.eval_set.append(p)
        self.eval_keys = frozenset(seen)  # the canonical forms of the eval problems
        if check:
            failures = self.validate(check)
            if failures:
                raise UnreliableTaskError(
                    f"gym:{task}: {len(failures)} of the gold answers checked ({check} per split) do not score 1, "
                    "so its rewards cannot be trusted (build with check=0 to inspect):\n  "
                    + "\n  ".join(failures[:5]))

    def _dataset(self, size: int, seed: int):
        return self._create(self.task, size=size, seed=seed, **self.params)

    def _problem(self, entry: dict) -> Problem:
        key = _content_key(entry["question"])
        return Problem(id=f"{self.name}/{key}", prompt=self.template.replace("{question}", entry["question"]),
                       answer=entry, env=self.name, meta={"content_key": key, "task": self.task})

    def gold_text(self, problem: Problem) -> str:
        return str(problem.answer["answer"])

    def canonical(self, problem: Problem) -> str:
        """The problem up to its twins (see the module docstring): its id unless the task
        is in `GYM_CANONICAL`."""
        form = GYM_CANONICAL.get(self.task)
        return problem.id if form is None else f"{self.name}/{form(problem.answer['metadata'])}"

    def problems(self, split: str, seed: int) -> Iterator[Problem]:
        return self._train(seed) if check_split(split) == "train" else self._eval(seed)

    def _eval(self, seed: int) -> Iterator[Problem]:
        rng = random.Random(f"{self.name}/eval/{seed}")
        epoch = 0
        while True:  # epochs over the fixed eval set, each in its own seeded order
            order = list(self.eval_set)
            rng.shuffle(order)
            for p in order:
                yield dataclasses.replace(p, meta={**p.meta, "split": "eval", "seed": seed, "epoch": epoch})
            epoch += 1

    def _train(self, seed: int) -> Iterator[Problem]:
        misses, chunk = 0, 0
        while True:
            ds = self._dataset(size=CHUNK, seed=_seed(self.task, "train", seed, chunk))
            for i in range(CHUNK):
                p = self._problem(ds[i])
                if self.canonical(p) in self.eval_keys:
                    misses += 1
                    if misses > MAX_MISSES:
                        raise RuntimeError(f"{self.name}: {MAX_MISSES} train draws in a row were eval problems; "
                                           "the task's parameters leave too few distinct problems")
                    continue
                misses = 0
                yield dataclasses.replace(p, meta={**p.meta, "split": "train", "seed": seed, "chunk": chunk})
            chunk += 1

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return verify_final(self, problem, completion)

    def check(self, problem: Problem, answer: str) -> Verdict:
        """Grade `answer`, the text after ``####``, with the task's own scorer."""
        try:
            score = float(self.scorer.score_answer(answer, problem.answer))
        except Exception as e:
            raise VerifierError(f"{self.name}: score_answer raised {e!r} on answer {answer[:200]!r}") from e
        if not (math.isfinite(score) and 0.0 <= score <= 1.0):
            raise VerifierError(f"{self.name}: score_answer returned {score!r}, outside [0, 1]")
        partial = 0.0 < score < 1.0
        return Verdict(reward=score if self.partial_credit or not partial else 0.0, correct=score == 1.0,
                       parsed=answer, flags=frozenset({"partial_credit"}) if partial else frozenset())

    def validate(self, n: int = 100) -> list[str]:
        """The first `n` problems of each split (eval: at most its size) whose gold does not score 1."""
        counts = {"train": n, "eval": min(n, len(self.eval_set))}
        return check_golds(self, {s: itertools.islice(self.problems(s, seed=0), k) for s, k in counts.items()})


def make_gym_env(spec: str | dict[str, Any]) -> ReasoningGymEnv:
    """``"gym:TASK"``, ``"gym:TASK:key=value,..."`` or ``{"name": "gym:TASK", key: value}``.

    String values are converted to the type of the parameter's default (the env's own
    parameters, then the task's config dataclass fields).
    """
    from reasoning_gym.factory import DATASETS

    from rlvr.envs import _coerce, _key_values

    if isinstance(spec, dict):
        params = dict(spec)
        task = str(params.pop("name"))[len(PREFIX):]
        return ReasoningGymEnv(task, **params)
    task, _, rest = spec[len(PREFIX):].partition(":")
    defaults = {k: v.default for k, v in inspect.signature(ReasoningGymEnv).parameters.items()
                if v.default is not inspect.Parameter.empty}
    if task in DATASETS:
        defaults.update({f.name: f.default for f in dataclasses.fields(DATASETS[task][1])
                         if f.default is not dataclasses.MISSING})
    params = {key: _coerce(key, value, defaults.get(key)) for key, value in _key_values(spec, rest).items()}
    return ReasoningGymEnv(task, **params)
