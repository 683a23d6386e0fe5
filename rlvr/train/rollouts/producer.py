"""The RL loop's producer side: one batch of rollout groups from an engine.

`Producer.produce(index, shard, shards)` samples batch `index` (or its `shard`-th of
`shards` parts, for a rollout worker) with the engine's current weights;
`Producer.sync_weights(state, version)` takes new ones. These two methods are the
whole interface a rollout worker offers; queues.py joins producers to the
trainer (in its thread, in a background thread, or as Ray actors).

A batch carries every group it generated (`generated`, the dropped ones of dynamic
sampling included), so that the trainer, not the producer, tells a curriculum how the
policy did: one curriculum, wherever the rollouts were made.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace

from torch import Tensor

from rlvr.rollout import generate_rollouts, rollout_stats, token_counts
from rlvr.types import Environment, Rollout, Sampling


@dataclass
class Batch:
    index: int
    rollouts: list[Rollout]
    version: int  # oldest policy version among the samples
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)
    generated: list[Rollout] = field(default_factory=list)  # every group made, kept or not (for curricula)


class Producer:
    def __init__(self, engine, env: Environment, prompts: int, group_size: int, sampling: Sampling,
                 seed: int = 0, drop_uniform: bool = False, max_tries: int = 4, shard: int = 0, shards: int = 1):
        self.engine, self.env = engine, env
        self.shard, self.shards = shard, shards  # the part it makes of every batch (a torchrun rank's)
        self.prompts, self.group_size, self.sampling = prompts, group_size, sampling
        self.seed, self.drop_uniform, self.max_tries = seed, drop_uniform, max_tries

    def sync_weights(self, state: dict[str, Tensor], version: int, partial: bool = False) -> None:
        self.engine.sync_weights(state, version, partial)

    def produce(self, index: int, shard: int | None = None, shards: int | None = None) -> Batch:
        """Batch `index`, or its `shard`-th part of `shards` (default: the producer's own): its
        problems depend only on (seed, index, shard), so a resumed run sees the same problems
        it would have seen."""
        t0 = time.perf_counter()
        shard, shards = (self.shard, self.shards) if shards is None else (shard or 0, shards)
        if shards == 1:
            stream, quota = self.env.problems("train", seed=self.seed * 1_000_003 + index), self.prompts
        else:
            stream = self.env.problems("train", seed=random.Random(f"{self.seed}/{index}/{shard}").getrandbits(31))
            quota = self.prompts // shards + (shard < self.prompts % shards)
        kept: list[Rollout] = []
        generated: list[Rollout] = []
        for attempt in range(self.max_tries if self.drop_uniform else 1):
            problems = [next(stream) for _ in range(quota - len(kept) if self.drop_uniform else quota)]
            sampling = self.sampling
            if sampling.seed is not None:  # a seeded run draws each batch from its own seed
                key = f"{sampling.seed}/{index}/{attempt}" if shards == 1 else f"{sampling.seed}/{index}/{shard}/{attempt}"
                sampling = replace(sampling, seed=random.Random(key).getrandbits(31))
            new = generate_rollouts(self.engine, self.env, problems, self.group_size, sampling) if problems else []
            generated += new
            # DAPO dynamic sampling: a group whose rewards are all equal has zero
            # advantage everywhere and only dilutes the batch; drop it and draw more.
            kept += [r for r in new if not self.drop_uniform or len(set(r.rewards)) > 1]
            if len(kept) >= quota:
                break
        version = min((r.min_version for r in kept), default=self.engine.version)
        return Batch(index, kept[:quota], version, time.perf_counter() - t0, batch_stats(generated, kept),
                     generated)


def batch_stats(generated: list[Rollout], kept: list[Rollout]) -> dict[str, float]:
    """What a batch cost and how it did: rollout stats, groups kept, token counts."""
    stats = rollout_stats(generated)
    stats["groups_kept"] = len(kept) / max(1, len(generated))
    stats.update(token_counts(generated))  # the compute spent, dropped groups included
    return stats
