"""Reward-noise corrections: what to learn from a verifier that errs at known rates.

The noise model (Cai et al. 2025, arXiv 2510.00915): the verifier turns a wrong
completion into reward 1 with probability `fp` and a right one into reward 0 with
probability `fn`, independently of the completion, with fp + fn < 1. The rates come
from `rlvr noise-audit` (or are known, for `noisy:` environments). Each correction
is a pure function of the observed 0/1 rewards [G, n] and the rates, chosen by name:

    none       the observed rewards, then the run's advantage estimator
    backward   the unbiased surrogate r = (r~ - fp) / (1 - fp - fn), then the estimator.
               Its expectation is the clean reward. Note that it is affine in r~: a
               group-relative estimator removes the shift, so under dr_grpo and rloo
               only the scale 1 / (1 - fp - fn) survives (which Adam mostly absorbs),
               and under grpo, which also divides by the group's spread, nothing does:
               there it trains exactly as `none` (EXPERIMENTS.md, the noise experiment).
    forward    the advantages themselves: w / (1 - fp - fn) with w = fn for r~ = 1 and
               fn - 1 for r~ = 0 (r~ minus the constant baseline 1 - fn), no group
               baseline. E[w | right] = 0 and E[w | wrong] = -(1 - fp - fn), so the
               expected update is the clean gradient scaled; only fn enters w.

Samples the verifier could not decide are dropped before this (rlvr/rollout.py), so
they are never treated as wrong. A completion cut off by the token limit never reaches
the verifier (it earns 0 for that, rlvr/rollout.py): its reward is certain, not noisy,
so the corrections pass it through as a clean reward would be (`exact`).

    adv = corrected_advantages(rewards, lengths, "dr_grpo", "forward", fp=0.05, fn=0.2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor


def _check(fp: float, fn: float) -> float:
    if not (0.0 <= fp < 1.0 and 0.0 <= fn < 1.0 and fp + fn < 1.0):
        raise ValueError(f"noise rates need 0 <= fp, fn and fp + fn < 1, got fp={fp}, fn={fn}")
    return 1.0 - fp - fn


def backward(rewards: Tensor, fp: float, fn: float) -> Tensor:
    return (rewards - fp) / _check(fp, fn)


def forward(rewards: Tensor, fp: float, fn: float) -> Tensor:
    return (rewards - (1.0 - fn)) / _check(fp, fn)


@dataclass(frozen=True)
class Correction:
    rewards: Callable[[Tensor, float, float], Tensor] | None  # None: the observed rewards
    baseline: bool  # True: the run's group-relative estimator follows; False: these are the advantages


REWARD_CORRECTIONS: dict[str, Correction] = {
    "none": Correction(None, True),
    "backward": Correction(backward, True),
    "forward": Correction(forward, False),
}


def corrected_advantages(rewards: Tensor, lengths: Tensor, estimator: Callable[[Tensor, Tensor], Tensor],
                         correction: str, fp: float = 0.0, fn: float = 0.0, shaping: Tensor | None = None,
                         exact: Tensor | None = None) -> Tensor:
    """Advantages [G, n] from observed rewards [G, n] under the named correction; `shaping`
    (a length penalty, rlvr.algos.length) is added after it: the verifier's noise is not its.
    `exact` [G, n] (bool) marks rewards the verifier did not give (truncated completions):
    each takes the value the correction gives a clean reward, the same function at fp = fn = 0."""
    if correction not in REWARD_CORRECTIONS:
        raise KeyError(f"unknown reward correction {correction!r}; valid: {sorted(REWARD_CORRECTIONS)}")
    c = REWARD_CORRECTIONS[correction]
    values = rewards if c.rewards is None else c.rewards(rewards, fp, fn)
    if c.rewards is not None and exact is not None and exact.any():
        values = values.where(~exact, c.rewards(rewards, 0.0, 0.0))
    if shaping is not None:
        values = values + shaping
    return estimator(values, lengths) if c.baseline else values
