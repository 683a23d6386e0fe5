"""Void turns (SimpleTIR, Xue et al. 2025): leave episodes with one out of training.

A void turn is a model turn that ends (not cut by a token limit) as neither a tool call
nor an answer (the episode counts them: ``Sample.counts["void_turns"]``, rlvr/envs/tools.py and guess.py). In
multi-turn tool use such turns mark trajectories whose later tokens drift far from the
policy (low-probability tokens fed back as context), whose gradients blow up training;
SimpleTIR filters them out of the update. Here they get an all-zero loss mask: no
gradient from any of their tokens, while their reward still counts in their group's
baseline (`rlvr rl --drop_void_turns`).

    mask_void_turns(rollouts)   # how many samples were masked

Run its tests: ``.venv/bin/python -m pytest tests/test_tools.py -q``.
"""

from __future__ import annotations

from rlvr.algos.length import mask_where
from rlvr.types import Rollout


def mask_void_turns(rollouts: list[Rollout]) -> int:
    """An all-zero loss mask on every episode with a void turn; how many."""
    return mask_where(rollouts, lambda s, v: s.counts.get("void_turns", 0) > 0)
