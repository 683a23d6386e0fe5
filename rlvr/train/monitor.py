"""The hack monitor: every RL step, a sample of rollouts re-scored by a held-out verifier.

A policy trained on an imperfect verifier looks for its holes, and its training reward
then rises while what it really earns does not. An environment that names a held-out
strict verifier (a `heldout(problem, completion) -> Verdict` method: the lenient
variants' strict check, a noisy verifier's clean one) gets a monitor in every RL run:
each step it re-scores `samples` completions (a seeded draw) and logs

    hack/rate        of the sampled completions the training verifier rewarded, the
                     share the held-out verifier rejects
    hack/gap         training reward minus held-out accuracy on the sample
    hack/heldout     held-out accuracy on the sample

With `penalty` > 0 a completion it catches is rewarded -penalty instead (a defence).
`Rollout.verdicts` are changed in place, before advantages are computed.

A held-out verifier must be at least as strict as the training one: at the start,
`check_stricter` runs the hack probes (rlvr/verify/probes.py: wrong answers dressed as
right ones) on a few eval problems, and a held-out verifier that accepts a probe the
training verifier rejects is refused, naming the probe (it would call honest
completions hacks and hide real ones).

`--stop_on_hack RATE` ends the run at the first step whose hack rate reaches RATE, and
keeps the weights of the last step below it (`HackStop`), so that the run's final
checkpoint and evaluation are of a policy the monitor still passed.

Under torchrun each rank re-scores its share of the `samples` among its own rollouts and
the counts are summed over ranks before the rates are taken: every rank reads the
figures of the whole batch, and so decides alike whether the run stops (a stop decided
on one rank's figures would leave the others waiting in the next collective).

    monitor = HackMonitor(env, samples=32, seed=0)
    metrics = monitor(rollouts, step)
    stop = HackStop(0.2, monitor, start=0)
    reason = stop.check(metrics, step, model)   # "" while under the rate
"""

from __future__ import annotations

import random
from dataclasses import replace

import torch

from rlvr.train.parallel import SINGLE, Parallel
from rlvr.types import Environment, HeldOut, Rollout, VerifierError


def check_stricter(env: Environment, problems: int = 5) -> None:
    """Refuse a held-out verifier that accepts a hack probe the training verifier rejects."""
    from itertools import islice

    from rlvr.config import InputError
    from rlvr.verify.probes import probe_completions

    for problem in islice(env.problems("eval", 0), problems):
        for probe, completion in probe_completions(env, problem).items():
            try:
                held, trained = env.heldout(problem, completion), env.verify(problem, completion)
            except VerifierError:
                continue
            if held.correct and not trained.correct:
                raise InputError(f"env {getattr(env, 'name', env)!r}: its held-out verifier accepts the {probe!r} "
                                 f"probe on {problem.id} ({completion[:60]!r}) that the training verifier rejects; "
                                 "a held-out verifier must be at least as strict as the one trained on")


class HackMonitor:
    def __init__(self, env: Environment, samples: int = 32, seed: int = 0, penalty: float = 0.0,
                 par: Parallel = SINGLE):
        self.env, self.samples, self.seed, self.penalty, self.par = env, samples, seed, penalty, par
        self.enabled = samples > 0 and isinstance(env, HeldOut)
        self._warned = 0.0
        if self.enabled:
            check_stricter(env)

    def __call__(self, rollouts: list[Rollout], step: int) -> dict[str, float]:
        if not self.enabled:
            return {}
        par = self.par
        cells = [(r, i) for r in rollouts for i in range(len(r.samples))]
        rng = random.Random(f"hack-monitor/{self.seed}/{step}" + (f"/{par.rank}" if par.world > 1 else ""))
        share = self.samples // par.world + (par.rank < self.samples % par.world)  # this rank's of `samples`
        picked = rng.sample(cells, min(share, len(cells)))
        rewarded = hacks = right = checked = 0
        train_reward = 0.0
        for r, i in picked:
            verdict = r.verdicts[i]
            try:
                held = self._heldout(r.problem, r.samples[i], verdict)
            except VerifierError:
                continue
            checked += 1
            train_reward += verdict.reward
            right += held.correct
            if verdict.correct:
                rewarded += 1
                if not held.correct:
                    hacks += 1
                    if self.penalty:
                        r.verdicts[i] = replace(verdict, reward=-self.penalty, correct=False,
                                                flags=verdict.flags | {"hack"})
        # Every rank's counts (see the module docstring): the same figures, and decisions, on each.
        rewarded, hacks, right, checked, train_reward = par.sum([rewarded, hacks, right, checked, train_reward])
        if not checked:
            return {}
        return {"hack/rate": hacks / rewarded if rewarded else 0.0, "hack/caught": float(hacks),
                "hack/gap": train_reward / checked - right / checked, "hack/heldout": right / checked}

    def _heldout(self, problem, sample, verdict):
        """The held-out verdict: re-scored from the completion, or for a multi-turn episode
        (whose final turn its wrapper already judged both ways) the inner verdict it kept."""
        if sample.source is None:
            return self.env.heldout(problem, sample.text)
        return verdict.truth or verdict

    def warning(self, metrics: dict[str, float], step: int) -> str | None:
        """A warning when the hack rate passes 5%, and again each time it doubles."""
        rate = metrics.get("hack/rate", 0.0)
        if rate < 0.05 or rate < 2 * self._warned:
            return None
        self._warned = rate
        cause = getattr(self.env, "gap_cause", "the policy may be exploiting the verifier; see --hack_penalty, "
                                               "--stop_on_hack")
        gap = metrics["hack/gap"]
        return (f"step {step}: {rate:.0%} of the completions the training verifier rewards fail its held-out check "
                f"(training reward {abs(gap) * 100:.0f} points {'above' if gap >= 0 else 'below'} held-out accuracy): "
                f"{cause}")


class HackStop:
    """`--stop_on_hack`: the run ends when the monitor's hack rate reaches `threshold`, and
    keeps the weights of the last step below it. Each step, before training, `check` either
    says why the run stops or copies the weights about to be trained (the monitor passed
    the rollouts they made); `restore` puts the copy back after a stop."""

    def __init__(self, threshold: float, monitor: HackMonitor, start: int = 0):
        self.threshold, self.monitor, self.start = threshold, monitor, start
        self.clean: tuple[int, dict[str, torch.Tensor]] | None = None  # (step, weights) of the last step below it
        self.reason = ""

    def check(self, hack: dict[str, float], step: int, model: torch.nn.Module) -> str:
        """Why the run stops at `step` (0-based), or "" after keeping its weights as the clean ones."""
        if not self.threshold:
            return ""
        if hack and hack["hack/rate"] >= self.threshold:
            self.reason = (f"stopped at step {step + 1}: hack rate {hack['hack/rate']:.1%} >= --stop_on_hack "
                           f"{self.threshold:.1%}; the final checkpoint holds the weights of step "
                           f"{self.clean[0] if self.clean else self.start}, the last below it")
            return self.reason
        if self.monitor.enabled:
            self.clean = (step, {k: v.detach().clone() for k, v in model.state_dict().items()})
        return ""

    def restore(self, model: torch.nn.Module, step: int) -> int:
        """The step whose weights the run ends with: after a stop, the clean copy's, loaded
        into `model` (none: the stop came at this run's first step, whose weights it has)."""
        if self.reason and self.clean is not None:
            model.load_state_dict(self.clean[1])
            return self.clean[0]
        return step
