"""Which verified solutions a student learns from: one set of filters for distillation and best-of-N.

A filter takes the solutions written for one problem, each with its verdict, and keeps
some of them; exact duplicates are dropped first (a solution seen twice would weigh
twice). `rlvr distill` filters a teacher's solutions, `rlvr rs` the model's own.

    none             every solution, errors and all (pure imitation)
    correct          every verified solution (RFT, ReST-EM)
    one_per_problem  the first verified solution (sampling order, so an unbiased pick)
    shortest         the shortest verified solution
    best_of_k        the highest reward (> 0), the shortest among equals (RAFT; for
                     partial-credit rewards, where "correct" is too coarse)
"""

from __future__ import annotations

from typing import Callable

from rlvr.types import Verdict

Scored = list[tuple[str, Verdict]]


def _correct(s: Scored) -> Scored:
    return [(t, v) for t, v in s if v.correct]


def _best(s: Scored) -> Scored:
    best = max(s, key=lambda tv: (tv[1].reward, -len(tv[0])), default=None)
    return [best] if best is not None and best[1].reward > 0 else []


FILTERS: dict[str, Callable[[Scored], Scored]] = {
    "none": lambda s: s,
    "correct": _correct,
    "one_per_problem": lambda s: _correct(s)[:1],
    "shortest": lambda s: sorted(_correct(s), key=lambda tv: len(tv[0]))[:1],
    "best_of_k": _best,
}


def keep(scored: Scored, how: str) -> Scored:
    """The solutions of one problem that filter `how` keeps (exact duplicates dropped)."""
    if how not in FILTERS:
        raise ValueError(f"unknown filter {how!r}; choose one of {sorted(FILTERS)}")
    unique = list({text: (text, v) for text, v in scored}.values())
    return FILTERS[how](unique)
