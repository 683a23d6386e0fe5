"""The learning-rate schedule every trainer uses: linear warm-up, then cosine decay.

Adam's first steps move every weight by about the learning rate whatever its gradient,
so all trainers warm up; pretraining and SFT then decay to `floor` x lr by `total`,
RL keeps the rate constant (`total=None`).
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
