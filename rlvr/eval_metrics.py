"""Evaluation statistics over sampled completions: pass@k, maj@k, bootstrap intervals.

Pure functions of per-sample correctness and parsed answers, so that the evaluator,
the report and the tests share one definition. Typical use:

    per_problem = [{"correct": [True, False, ...], "answers": ["42", "41", ...]}, ...]
    summary = summarize(per_problem, ks=[1, 4, 16])
    summary["pass@4"]["mean"], summary["pass@4"]["ci"]

Every metric is computed per problem first and then averaged over problems; its
confidence interval resamples problems (the unit that was drawn from a population),
not samples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021 from n samples of which c are correct:
    1 - C(n-c, k) / C(n, k), written as a product so it never forms huge binomials."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _vote(answers: list[Any], correct: list[bool], idx: list[int]) -> bool:
    """Whether the majority answer among samples `idx` is correct. Equality, not
    hashing, so any parsed answer type works; ties go to the answer seen first;
    None (nothing parsed) never wins. Correctness comes from the first sample in
    `idx` carrying the winning answer (equal answers are judged alike)."""
    tally: list[list[Any]] = []  # [answer, votes, correctness of its first sample]
    for i in idx:
        if answers[i] is None:
            continue
        for entry in tally:
            if entry[0] == answers[i]:
                entry[1] += 1
                break
        else:
            tally.append([answers[i], 1, bool(correct[i])])
    if not tally:
        return False
    best = max(tally, key=lambda e: e[1])  # max keeps the first of equal maxima
    return best[2]


def maj_at_k(answers: list[Any], correct: list[bool], k: int, rng_seed: int = 0,
             draws: int = 32) -> float:
    """Majority-vote accuracy with k samples. Exact when k == n or k == 1; otherwise the
    mean over `draws` seeded random k-subsets (a subset keeps the samples' order).

    Votes go to the parsed answer as the verifier read it: numbers are normalised
    (``042`` and ``42`` vote together), but two correct expressions or programs written
    differently (countdown, math, code) split their votes, so there maj@k is a lower bound."""
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"{n} answers but {len(correct)} correctness flags")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if k == n:
        return float(_vote(answers, correct, list(range(n))))
    if k == 1:  # one sample's vote is its own answer: exactly pass@1 (None never wins)
        return float(np.mean([a is not None and bool(c) for a, c in zip(answers, correct)]))
    rng = np.random.default_rng(rng_seed)
    wins = [_vote(answers, correct, sorted(rng.choice(n, size=k, replace=False).tolist()))
            for _ in range(draws)]
    return float(np.mean(wins))


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sensible at 0 and n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_ci(values: list[float], level: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Interval of the mean of per-problem `values` in [0, 1] (deterministic given seed):
    the percentile bootstrap, except where it fails. Values that are all 0 or 1 (greedy
    accuracy, one sample a problem) get the Wilson interval, and so do values all equal:
    a bootstrap of 200 problems all right says [100%, 100%], which covers the truth far
    less often than 95% of the time near the edges."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if level == 0.95 and (np.all((x == 0) | (x == 1)) or np.all(x == x[0])):
        return wilson(float(x.sum()), int(x.size))
    return _percentile_bootstrap(x, level, resamples, seed)


def _percentile_bootstrap(x: np.ndarray, level: float, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `x`, resampling its entries."""
    if np.all(x == x[0]):  # no spread to resample
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_change(start: dict[str, float], end: dict[str, float], level: float = 0.95, resamples: int = 2000,
                  seed: int = 0) -> dict[str, Any]:
    """Mean change of per-problem scores from `start` to `end` ({problem id: score}, two
    evaluations of the same held-out set), with a bootstrap interval over problems that
    keeps each problem's pair together: much tighter than comparing two unpaired
    intervals, which miss a real loss of 1.5 points two times in three."""
    ids = sorted(set(start) & set(end))
    if not ids:
        raise ValueError("paired_change needs evaluations that share problems")
    d = np.array([end[i] - start[i] for i in ids], dtype=np.float64)
    return {"mean": float(d.mean()), "ci": list(_percentile_bootstrap(d, level, resamples, seed)), "n_problems": len(ids)}


def _stat(values: list[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)), "ci": list(bootstrap_ci(values))}


def summarize(per_problem: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    """pass@1, pass@k and maj@k (each mean over problems with a bootstrap CI).

    `n_samples` is the total over problems. A k is reported only when every problem
    has at least k samples, so that each number averages the same problems.
    """
    if not per_problem:
        raise ValueError("summarize needs at least one problem")
    sizes = [len(p["correct"]) for p in per_problem]
    if min(sizes) == 0:
        raise ValueError("every problem needs at least one sample")
    out: dict[str, Any] = {"n_problems": len(per_problem), "n_samples": int(sum(sizes))}
    out["pass@1"] = _stat([float(np.mean(p["correct"])) for p in per_problem])
    if any("flags" in p for p in per_problem):  # why samples lost reward: share of all samples per flag
        counts: dict[str, int] = {}
        for p in per_problem:
            for flags in p.get("flags", []):
                for f in flags:
                    counts[f] = counts.get(f, 0) + 1
        out["flags"] = {f: c / out["n_samples"] for f, c in sorted(counts.items())}
    for k in sorted(set(ks)):
        if k > min(sizes) or k < 1:
            continue
        if k > 1:  # pass@1 above is the same number, without the product's rounding
            out[f"pass@{k}"] = _stat([pass_at_k(len(p["correct"]), int(sum(p["correct"])), k)
                                      for p in per_problem])
        out[f"maj@{k}"] = _stat([maj_at_k(p["answers"], p["correct"], k) for p in per_problem])
    return out
