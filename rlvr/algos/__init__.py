"""Advantage estimators and policy-gradient losses: pure functions in name-keyed registries.

    from rlvr.algos import compute_advantages, LOSSES, LossConfig
    rollouts = compute_advantages(rollouts, "grpo")      # fills rollout.advantages
    loss, metrics = LOSSES["ppo_clip"](logp, old_logp, adv, mask, LossConfig())

A trainer picks its estimator, loss and aggregation by name from config; there is no
if/elif over algorithm names anywhere else.
"""

from __future__ import annotations

import torch

from rlvr.algos.advantages import ADVANTAGES
from rlvr.algos.length import mask_truncated, overlong_penalty
from rlvr.algos.losses import AGG_WEIGHT, AGGREGATIONS, LOSSES, LossConfig
from rlvr.algos.noise import REWARD_CORRECTIONS, corrected_advantages
from rlvr.types import TRUNCATED_FLAG, Rollout

__all__ = ["ADVANTAGES", "AGG_WEIGHT", "AGGREGATIONS", "LOSSES", "REWARD_CORRECTIONS", "LossConfig",
           "compute_advantages", "mask_truncated", "overlong_penalty"]


def compute_advantages(rollouts: list[Rollout], name: str, correction: str = "none", fp: float = 0.0,
                       fn: float = 0.0, max_len: int = 0, overlong_buffer: int = 0) -> list[Rollout]:
    """Fills each rollout's `advantages` (one float per sample, broadcast over its tokens
    and added to any per-token signal, `Sample.token_advantages`) with estimator `name`,
    after the reward-noise `correction` for a verifier with rates fp, fn (rlvr.algos.noise)
    and DAPO's soft overlong punishment over the last `overlong_buffer` of `max_len`
    tokens (rlvr.algos.length; 0: none).

    Rollouts may have different group sizes: groups of equal size are stacked into
    one [G, n] batch, so estimators only ever see rectangular tensors.
    """
    if name not in ADVANTAGES:
        raise KeyError(f"unknown advantage estimator {name!r}; valid: {sorted(ADVANTAGES)}")
    estimator = ADVANTAGES[name]
    by_size: dict[int, list[Rollout]] = {}
    for r in rollouts:
        if len(r.samples) != len(r.verdicts):
            raise ValueError(f"rollout {r.problem.id!r}: {len(r.samples)} samples, {len(r.verdicts)} verdicts")
        if len(r.verdicts) < 2:  # no baseline: a lone sample learns from its per-token signal alone
            r.advantages = [0.0] * len(r.verdicts)
            continue
        by_size.setdefault(len(r.verdicts), []).append(r)
    for group in by_size.values():
        # float64 so that reward arithmetic is not rounded before it reaches the loss
        rewards = torch.tensor([r.rewards for r in group], dtype=torch.float64)
        lengths = torch.tensor([[len(s.completion_ids) for s in r.samples] for r in group])
        exact = torch.tensor([[TRUNCATED_FLAG in v.flags for v in r.verdicts] for r in group])
        adv = corrected_advantages(rewards, lengths, estimator, correction, fp, fn,
                                   overlong_penalty(lengths, max_len, overlong_buffer) if overlong_buffer else None,
                                   exact)
        for r, row in zip(group, adv.tolist()):
            r.advantages = row
    return rollouts
