"""Group-relative advantage estimators: rewards of a group of samples -> advantages.

Every estimator takes `rewards` [G, n] (G groups, n samples of one prompt each) and
`lengths` [G, n] (completion lengths in tokens) and returns advantages [G, n]. The
lengths are part of the signature so that length-aware estimators (overlong
penalties, length-normalised baselines) fit the same registry; the three here
ignore them. Use through the registry:

    adv = ADVANTAGES["grpo"](rewards, lengths)

A group whose rewards are all equal carries no signal about which sample was better,
so every estimator returns exactly 0 there (not a rounding residue of r - mean,
which would otherwise push on the policy in an arbitrary direction).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

# Same value as TRL's GRPOTrainer: keeps a group with a tiny spread from exploding.
GRPO_EPS = 1e-4


def _constant(rewards: Tensor) -> Tensor:
    """[G, 1] bool: groups whose rewards are all equal."""
    return (rewards.amax(dim=1, keepdim=True) == rewards.amin(dim=1, keepdim=True))


def dr_grpo(rewards: Tensor, lengths: Tensor) -> Tensor:
    """Dr. GRPO (Liu et al. 2025): r - group mean, no std division (which biases
    towards groups that are nearly all right or all wrong)."""
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    return centered.masked_fill(_constant(rewards), 0.0)


def grpo(rewards: Tensor, lengths: Tensor) -> Tensor:
    """GRPO (Shao et al. 2024): (r - group mean) / (group std + eps).

    The std is the unbiased sample std (Bessel, divide by n - 1), torch's default
    and what TRL and veRL use, so numbers match theirs. A group of one sample has
    no spread (and an undefined unbiased std): its advantage is 0.
    """
    if rewards.shape[1] < 2:
        return rewards.new_zeros(rewards.shape)
    std = rewards.std(dim=1, keepdim=True, unbiased=True)
    return dr_grpo(rewards, lengths) / (std + GRPO_EPS)


def rloo(rewards: Tensor, lengths: Tensor) -> Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): r_i - mean of the other n-1
    rewards, a baseline independent of the sample it judges (so the estimate stays
    unbiased). Equals n/(n-1) * (r_i - group mean)."""
    n = rewards.shape[1]
    if n < 2:
        raise ValueError(f"rloo needs at least 2 samples per group, got n={n}")
    others = (rewards.sum(dim=1, keepdim=True) - rewards) / (n - 1)
    return (rewards - others).masked_fill(_constant(rewards), 0.0)


ADVANTAGES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "rloo": rloo,
}
