"""The learning-rate schedule every trainer uses: linear warm-up, then cosine decay.

Adam's first steps move every weight by about the learning rate whatever its gradient,
so all trainers warm up, then decay along a cosine to `floor` x lr by `total` (RL by
default too: `--lr_schedule cosine`); `total=None` keeps the rate constant. As in
`transformers`' cosine schedule, the last step (`total - 1`) is one step short of the floor.

Under `--budget_flops` the decay spans the steps the budget affords, not the most steps
a run may take: `Horizon` holds that step, estimated from what a step costs.

    horizon = Horizon(cosine=True, steps=100, budget_flops=4e12)
    lr = horizon.rate(step, lr=5e-4, warmup=10)           # constant until the cost is known
    horizon.fit(step + 1, spent=total_flops, step_cost=flops_of_this_step)
"""

from __future__ import annotations

import math


def lr_at(step: int, lr: float, warmup: int, total: int | None = None, floor: float = 0.1) -> float:
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if total is None:
        return lr
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))


class Horizon:
    """The step a cosine schedule decays to its floor by (`total`; None: a constant rate).

    Without a budget it is `steps`. Under one it is unknown until a step's cost is: RL's
    steps cost what their rollouts happen to be, so it is fitted after the first step
    (and kept in the checkpoint, `saved`); SFT fits it before training, from its data.
    """

    def __init__(self, cosine: bool, steps: int, budget_flops: float = 0.0, saved: int | None = None):
        self.cosine, self.steps, self.budget_flops = cosine, steps, budget_flops
        self.total = steps if cosine and not budget_flops else saved

    def rate(self, step: int, lr: float, warmup: int) -> float:
        return lr_at(step, lr, warmup, self.total)

    def fit(self, step: int, spent: float, step_cost: float) -> None:
        """Where the budget runs out, `step` steps in with `spent` FLOPs used, at `step_cost`
        FLOPs a step from here on; a schedule that already has its horizon keeps it."""
        if self.total is None and self.cosine:
            left = math.ceil(max(0.0, self.budget_flops - spent) / step_cost)
            self.total = max(1, min(self.steps, step + left))
