"""Length and truncation (DAPO, Yu et al. 2025): pure functions on completion lengths.

Soft overlong punishment: a completion longer than `max_len - buffer` tokens loses
reward linearly, down to -1 at `max_len` (where generation stops and the sample is
truncated), so the policy learns to finish before the limit instead of meeting a
cliff:

    penalty(L) = 0                              L <= max_len - buffer
               = ((max_len - buffer) - L) / buffer   max_len - buffer < L <= max_len
               = -1                             L > max_len

Overlong filtering: a truncated completion's reward says nothing about its reasoning
(it was cut before its answer), so its tokens can be left out of the loss altogether
(`truncation_mask`), rather than trained towards as "wrong".

    rewards = rewards + overlong_penalty(lengths, max_len=512, buffer=128)
    mask_truncated(rollouts)          # sets each truncated sample's loss mask to zeros
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from rlvr.types import TRUNCATED_FLAG, Rollout, Sample, Verdict


def overlong_penalty(lengths: Tensor, max_len: int, buffer: int) -> Tensor:
    """The soft overlong punishment [same shape as lengths], in [-1, 0]; buffer 0: none."""
    if buffer < 0 or buffer > max_len:
        raise ValueError(f"overlong buffer {buffer} must be in [0, max_len={max_len}]")
    if buffer == 0:
        return torch.zeros(lengths.shape, dtype=torch.float64)
    start = max_len - buffer
    over = (start - lengths.to(torch.float64)) / buffer
    return over.clamp(min=-1.0, max=0.0)


def mask_truncated(rollouts: list[Rollout]) -> int:
    """Overlong filtering: every sample cut off by the token limit (verdict flag
    `truncated`) gets an all-zero loss mask, so it adds no gradient and its tokens leave
    the aggregation's count; it still counts in its group's baseline. Returns how many."""
    return mask_where(rollouts, lambda s, v: TRUNCATED_FLAG in v.flags)


def mask_where(rollouts: list[Rollout], drop: Callable[[Sample, Verdict], bool]) -> int:
    """An all-zero loss mask on every sample for which `drop(sample, verdict)` holds (it
    stays in its group's baseline); how many."""
    n = 0
    for r in rollouts:
        for s, v in zip(r.samples, r.verdicts):
            if drop(s, v):
                s.loss_mask = [0] * len(s.completion_ids)
                n += 1
    return n
