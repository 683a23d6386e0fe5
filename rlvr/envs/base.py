"""`ProceduralEnv`: the shared machinery of environments that generate their problems.

A subclass sets `name` and implements two methods: `make(rng)` draws one `Problem`
(or None to reject a draw) and `check(problem, answer)` grades an extracted answer.
This class supplies the rest of the `Environment` protocol:

- `problems(split, seed)`: an endless, deterministic stream. Train and eval never
  share a problem, nor two forms of one: each problem belongs to a split by a stable
  hash of its canonical form, and each split's stream drops the other split's
  problems. Seeds only pick *which* problems of a split you see.
- `canonical(problem)`: that form, the problem up to what the environment counts as
  the same problem (``arithmetic/386+457`` for both ``457+386`` and ``386+457``; the
  same countdown numbers in any order). By default it is the problem's id, which is
  its content key (``f"{env}/{key}"``); a subclass whose problems have twins says so
  by overriding it (rlvr.envs.canonical has the shared forms). So a held-out problem
  never has a twin in train.
- `verify`: strict ``####`` extraction, then `check` (`verify_final`, which reasoning-gym
  tasks share); `exact_verdict` is the `check` of every task with one exact answer.
- `validate`: the gold answers of the first problems of both splits must verify.

Run its tests: ``.venv/bin/python -m pytest tests/test_envs.py -q``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

from rlvr.envs.forwarding import Forwarding
from rlvr.types import Environment, Problem, Turn, Verdict
from rlvr.verify.extract import extract_final
from rlvr.verify.formats import DEFAULT_FORMAT, get_format

SPLITS = ("train", "eval")
# Consecutive rejected draws before a stream gives up: reached only when a content
# space is (nearly) empty for a split, which is a configuration error, not bad luck.
MAX_MISSES = 100_000


def check_split(split: str) -> str:
    """`split` when it is one of `SPLITS`, else a ValueError naming them."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return split


def check_template(template: str, required: tuple[str, ...], **sample: Any) -> None:
    """A ValueError unless `template` formats with the `sample` fields alone and names every
    `required` one: a typo in a configured prompt fails when the environment is built."""
    try:
        template.format(**sample)
    except (KeyError, IndexError, ValueError) as e:
        fields = " and ".join(f"{{{k}}}" for k in sample)
        raise ValueError(f"template may use only {fields}: {template!r} ({e!r})") from None
    if any(f"{{{k}}}" not in template for k in required):
        fields = " and ".join(f"'{{{k}}}'" for k in required)
        raise ValueError(f"template must contain {fields}, got {template!r}")


def split_of(canonical: str, eval_fraction: float) -> str:
    """The split of a problem whose canonical form is `canonical` (stable across runs and machines)."""
    h = int.from_bytes(hashlib.blake2b(canonical.encode(), digest_size=8).digest(), "big")
    return "eval" if h / 2**64 < eval_fraction else "train"


class ProceduralEnv(ABC):
    name: str = ""

    def __init__(self, eval_fraction: float = 0.1):
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction!r}")
        self.eval_fraction = eval_fraction

    @abstractmethod
    def make(self, rng: random.Random) -> Problem | None:
        """Draw one problem with `rng` (its only source of randomness); None rejects the draw."""

    @abstractmethod
    def check(self, problem: Problem, answer: str) -> Verdict:
        """Grade `answer`, the non-empty text after the ``####`` marker."""

    def gold_text(self, problem: Problem) -> str:
        """The text a perfect completion puts after ``####``."""
        return str(problem.answer)

    def canonical(self, problem: Problem) -> str:
        """The form that decides `problem`'s split: the same for every problem this
        environment counts as the same one. By default its id (its content key)."""
        return problem.id

    def problems(self, split: str, seed: int) -> Iterator[Problem]:
        # Not a generator itself, so a bad split fails here, not at the first next().
        return self._stream(check_split(split), seed)

    def _stream(self, split: str, seed: int) -> Iterator[Problem]:
        # A str seed is hashed with SHA-512 by random.Random, unlike hash(str),
        # which is salted per process.
        rng = random.Random(f"{self.name}/{split}/{seed}")
        misses = 0
        while True:
            p = self.make(rng)
            if p is None or split_of(self.canonical(p), self.eval_fraction) != split:
                misses += 1
                if misses > MAX_MISSES:
                    raise RuntimeError(f"{self.name}: no {split} problem in {MAX_MISSES} draws; "
                                       "the parameters leave too few distinct problems")
                continue
            misses = 0
            yield dataclasses.replace(p, meta={**p.meta, "split": split, "seed": seed})

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return verify_final(self, problem, completion)

    def validate(self, n: int = 100) -> list[str]:
        return check_golds(self, {split: itertools.islice(self.problems(split, seed=0), n) for split in SPLITS})


def verify_final(env, problem: Problem, completion: str) -> Verdict:
    """`env.check` on the strict ``####`` extraction of `completion`; no single answer earns 0
    with the extraction's flags. Shared by every environment that grades one final answer."""
    if problem.env != env.name:
        raise ValueError(f"{env.name} cannot verify a problem of env {problem.env!r}")
    answer, flags = extract_final(completion)
    if answer is None:
        return Verdict(reward=0.0, correct=False, parsed=None, flags=flags)
    return env.check(problem, answer)


def exact_verdict(parsed, gold) -> Verdict:
    """Reward 1 when the parsed answer equals the gold; an answer that did not parse (None)
    is a ``format_error``. The grading of every environment with one exact answer."""
    if parsed is None:
        return Verdict(reward=0.0, correct=False, parsed=None, flags=frozenset({"format_error"}))
    correct = parsed == gold
    return Verdict(reward=1.0 if correct else 0.0, correct=correct, parsed=parsed)


class Wrapped(Forwarding):
    """An environment around another one whose verifier it changes (`noisy:`, `lenient:`):
    problems, splits and validation stay the inner environment's, and the inner
    verifier stays available as the held-out one (`heldout`) that the hack monitor
    re-scores rollouts with. A subclass sets `self.env` and implements `verify`; around
    a multi-turn environment its episodes are the inner one's, and `rejudge` gives the
    final verdict (by default `verify` of the last turn)."""

    def rejudge(self, problem: Problem, turn: Turn, verdict: Verdict) -> Verdict:
        return self.verify(problem, turn.text)

    env: Environment

    def problems(self, split: str, seed: int):
        return self.env.problems(split, seed)

    def validate(self, n: int = 100) -> list[str]:
        return self.env.validate(n)

    def heldout(self, problem: Problem, completion: str) -> Verdict:
        """The inner environment's own, strict verdict: what the completion really earns."""
        return self.env.verify(problem, completion)

    def canonical(self, problem: Problem) -> str:
        return self.env.canonical(problem)


def wrapper_spec(spec: str, keys: tuple[str, ...], usage: str) -> tuple[dict[str, str], str]:
    """"NAME:k=v,k=v:INNER" -> ({k: v} as text, "INNER"), for the wrapper specs (`noisy:`,
    `prompt:`); a missing inner spec or a key not in `keys` is an error naming the spec."""
    name, _, rest = spec.partition(":")
    params_text, sep, inner = rest.partition(":")
    if not sep or not inner:
        raise ValueError(f"env spec {spec!r}: expected {usage}")
    params: dict[str, str] = {}
    for item in filter(None, params_text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in keys:
            raise ValueError(f"env spec {spec!r}: {name} takes {', '.join(k + '=' for k in keys)}; got {item!r}")
        params[key.strip()] = value.strip()
    return params, inner


def check_golds(env, problems: dict[str, Iterable[Problem]]) -> list[str]:
    """The problems (by split) whose gold answer, in the answer format the env asks for
    (`answer_format`, ``####`` by default), does not verify as correct with reward 1 (must be [])."""
    fmt = get_format(getattr(env, "answer_format", DEFAULT_FORMAT))
    failures = []
    for split, some in problems.items():
        for p in some:
            gold = fmt.render(env.gold_text(p))
            try:
                v = env.verify(p, gold)
            except Exception as e:  # a crash on gold is a failure to report, not to hide
                failures.append(f"{p.id} ({split}): gold {gold!r} raised {e!r}")
                continue
            if not (v.correct and v.reward == 1.0):
                failures.append(f"{p.id} ({split}): gold {gold!r} got {v}")
    return failures
