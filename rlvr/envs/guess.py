"""`Guess`: find a hidden number from "higher" and "lower", the smallest multi-turn task.

The model guesses with ``#### N``; the environment answers each wrong guess with
"Higher." or "Lower." (and a turn without a guess with a reminder of the format; the
episode counts those the model ended itself as void turns),
until the guess is right, the turn limit, or the episode's token limit. A right guess
earns 1 at any turn; running out of turns earns 0 (flag ``max_turns``). With
``low=1, high=100`` and ``max_turns=7`` binary search always wins: the task rewards
reading the feedback, which no single completion can do.

It is the episode API at its plainest (rlvr/types.py): `episode(problem)` returns an
object whose `step(turn)` reads one model turn and returns the next observation or
the verdict. `verify` judges a one-turn answer, so gold answers validate as for every
environment.

    from rlvr.envs import make_env
    env = make_env("guess:high=100,max_turns=7")

Run its tests: ``.venv/bin/python -m pytest tests/test_episodes.py -q``.
"""

from __future__ import annotations

import random

from rlvr.envs.base import ProceduralEnv
from rlvr.types import Problem, Step, Turn, Verdict
from rlvr.verify.extract import extract_final, parse_int

TEMPLATE = ("I am thinking of a whole number from {low} to {high}. Guess it: end each turn with #### and one "
            "number. I will say higher or lower.")


class Guess(ProceduralEnv):
    name = "guess"

    def __init__(self, low: int = 1, high: int = 100, max_turns: int = 7, max_episode_tokens: int = 256,
                 eval_fraction: float = 0.1):
        super().__init__(eval_fraction)
        if type(low) is not int or type(high) is not int or high - low < 9:
            raise ValueError(f"low and high must be ints at least 9 apart, got {low!r}, {high!r}")
        if max_turns < 1 or max_episode_tokens < 1:
            raise ValueError(f"max_turns and max_episode_tokens must be >= 1, got {max_turns}, {max_episode_tokens}")
        self.low, self.high = low, high
        self.max_turns, self.max_episode_tokens = max_turns, max_episode_tokens

    def make(self, rng: random.Random) -> Problem:
        secret = rng.randint(self.low, self.high)
        return Problem(id=f"{self.name}/{self.low}-{self.high}/{secret}",
                       prompt=TEMPLATE.format(low=self.low, high=self.high), answer=secret, env=self.name,
                       meta={"low": self.low, "high": self.high})

    def check(self, problem: Problem, answer: str) -> Verdict:
        value = parse_int(answer)
        if value is None:
            return Verdict(reward=0.0, correct=False, parsed=None, flags=frozenset({"format_error"}))
        return Verdict(reward=float(value == problem.answer), correct=value == problem.answer, parsed=value)

    def episode(self, problem: Problem) -> "GuessEpisode":
        return GuessEpisode(self, problem)


class GuessEpisode:
    def __init__(self, env: Guess, problem: Problem):
        self.env, self.problem = env, problem
        self.counts = {"void_turns": 0}  # turns without a guess

    def step(self, turn: Turn) -> Step:
        answer, _ = extract_final(turn.text)
        verdict = self.env.check(self.problem, answer) if answer is not None else None
        if verdict is not None and verdict.correct:
            return Step(verdict=verdict)
        if verdict is None or verdict.parsed is None:
            self.counts["void_turns"] += turn.finish_reason == "stop"  # a cut turn is the length limit's
            return Step(observation="End your turn with #### and one number.")
        return Step(observation="Higher." if verdict.parsed < self.problem.answer else "Lower.")
