"""Episodes through wrappers: a wrapper is multi-turn exactly when what it wraps is.

A wrapper (noisy, lenient, prompt, mixture, curriculum) changes problems or verdicts,
never the conversation. `EpisodeForwarding` gives it the episode API of the
environment it routes a problem to: `max_turns` and `max_episode_tokens` exist only
when some inner environment is multi-turn (so `isinstance(env, MultiTurn)` says what
the rollout must do), and each episode is the inner one, its final verdict passed
through the wrapper's `rejudge` (a noisy verifier flips it, a lenient one reads the
last turn with its hole). Around a single-turn environment nothing changes: the
rollout judges with `verify` as before.

    class Noisy(EpisodeForwarding, ...):
        def inner_envs(self): return [self.env]
        def rejudge(self, problem, turn, verdict): ...

Run its tests: ``.venv/bin/python -m pytest tests/test_episodes.py -q``.
"""

from __future__ import annotations

from rlvr.types import Environment, Episode, MultiTurn, Problem, Step, Turn, Verdict


class EpisodeForwarding:
    """Mixin for a wrapper: subclasses say which environments they route to (`inner_envs`,
    `route`) and may change final verdicts (`rejudge`)."""

    def inner_envs(self) -> list[Environment]:
        return [self.env]

    def route(self, problem: Problem) -> Environment:
        return self.env

    def rejudge(self, problem: Problem, turn: Turn, verdict: Verdict) -> Verdict:
        """The wrapper's verdict on an episode whose last turn is `turn`, given the inner one's."""
        return verdict

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

        inner = self.route(problem)
        return Rejudged(episode_of(inner, problem), lambda turn, v: self.rejudge(problem, turn, v))


class Rejudged:
    """An inner episode whose final verdict goes through `rejudge(turn, verdict)`."""

    def __init__(self, inner: Episode, rejudge):
        self.inner, self.rejudge = inner, rejudge

    def step(self, turn: Turn) -> Step:
        step = self.inner.step(turn)
        if step.verdict is None:
            return step
        return Step(observation=step.observation, role=step.role, verdict=self.rejudge(turn, step.verdict),
                    ended=step.ended)
