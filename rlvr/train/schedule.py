"""The learning-rate schedule every trainer uses: linear warm-up, then cosine decay.

Adam's first steps move every weight by about the learning rate whatever its gradient,
so all trainers warm up, then decay along a cosine to `floor` x lr by `total` (RL by
default too: `--lr_schedule cosine`); `total=None` keeps the rate constant. As in
`transformers`' cosine schedule, the last step (`total - 1`) is one step short of the floor.
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
