"""What a wrapper passes through from what it wraps: episodes and capabilities.

A wrapper (noisy, lenient, prompt, mixture, curriculum) changes problems or verdicts,
never the conversation, and it has exactly the capabilities of what it wraps: a noisy
verifier around a curriculum still observes, reports and resumes like the curriculum.
`Forwarding` gives it both:

- Episodes. `max_turns` and `max_episode_tokens` exist only when some inner environment
  is multi-turn, so `isinstance(env, MultiTurn)` says what the rollout must do; each
  episode is the inner one, its final verdict passed through the wrapper's `rejudge`
  (a noisy verifier flips it, a lenient one reads the last turn with its hole), the inner
  verdict kept as its `truth` (what the hack monitor and true-reward metrics read). Around a
  single-turn environment nothing changes: the rollout judges with `verify` as before.
- Capabilities (rlvr/types.py: `Observer`, `Reporting`, `Stateful`, `StopsOn`,
  `UsesTokenizer`): `observe`, `stats`, `state`, `load_state`, `stop_strings` are the
  inner environments' where they have them, and absent otherwise, so
  `isinstance(wrapper, Stateful)` is true exactly when there is state; `use_tokenizer`
  reaches every inner environment that has it. An episode's `counts` pass through.

    class Noisy(Forwarding):
        def inner_envs(self): return [self.env]
        def rejudge(self, problem, turn, verdict): ...

Run its tests: ``.venv/bin/python -m pytest tests/test_episodes.py -q``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rlvr.types import (Environment, Episode, MultiTurn, Observer, Problem, Reporting, Stateful, Step, StopsOn, Turn,
                        UsesTokenizer, Verdict)

# Capability -> the methods it forwards.
FORWARDED = {Observer: ("observe",), Reporting: ("stats",), Stateful: ("state", "load_state"),
             StopsOn: ("stop_strings",), UsesTokenizer: ("use_tokenizer",)}
BROADCAST = {"use_tokenizer"}  # called on every inner environment that has it


class Forwarding:
    """Mixin for a wrapper: subclasses say which environments they route to (`inner_envs`,
    `route`) and may change final verdicts (`rejudge`)."""

    def inner_envs(self) -> list[Environment]:
        return [self.env]

    def route(self, problem: Problem) -> Environment:
        return self.env

    def rejudge(self, problem: Problem, turn: Turn, verdict: Verdict) -> Verdict:
        """The wrapper's verdict on an episode whose last turn is `turn`, given the inner one's."""
        return verdict

    # -- episodes
    def _multi(self) -> list[MultiTurn]:
        multi = [env for env in self.inner_envs() if isinstance(env, MultiTurn)]
        if not multi:  # AttributeError: this wrapper is not multi-turn (hasattr, isinstance say so)
            raise AttributeError("max_turns")
        return multi

    @property
    def max_turns(self) -> int:
        return max(env.max_turns for env in self._multi())

    @property
    def max_episode_tokens(self) -> int:
        return max(env.max_episode_tokens for env in self._multi())

    def episode(self, problem: Problem) -> Episode:
        from rlvr.rollout import episode_of  # the rollout owns the single-turn episode

        return Rejudged(episode_of(self.route(problem), problem), lambda turn, v: self.rejudge(problem, turn, v))

    # -- capabilities
    def __getattr__(self, name: str) -> Any:
        """`observe`, `stats`, `state`, `load_state` of the inner environments that have them
        (called only for names the wrapper does not define itself)."""
        protocol = next((p for p, names in FORWARDED.items() if name in names), None)
        if protocol is None:  # also every other name, so an unset inner env fails as absent
            raise AttributeError(name)
        having = [env for env in self.inner_envs() if isinstance(env, protocol)]
        if not having:
            raise AttributeError(name)
        if len(having) == 1:
            return getattr(having[0], name)
        if name in BROADCAST:
            def broadcast(*args: Any) -> None:
                for env in having:
                    getattr(env, name)(*args)
            return broadcast
        raise AttributeError(f"{type(self).__name__} has several inner environments with {name}; it must define it")


class Rejudged:
    """An inner episode whose final verdict goes through `rejudge(turn, verdict)`."""

    def __init__(self, inner: Episode, rejudge):
        self.inner, self.rejudge = inner, rejudge

    @property
    def counts(self) -> dict[str, int]:
        return getattr(self.inner, "counts", {})

    def step(self, turn: Turn) -> Step:
        step = self.inner.step(turn)
        if step.verdict is None:
            return step
        verdict = self.rejudge(turn, step.verdict)
        disagree = (verdict.reward, verdict.correct) != (step.verdict.reward, step.verdict.correct)
        if disagree and verdict.truth is None:  # the inner, strict verdict stays beside it
            verdict = dataclasses.replace(verdict, truth=step.verdict)
        return Step(observation=step.observation, role=step.role, verdict=verdict, ended=step.ended)
