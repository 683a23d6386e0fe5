"""Off-policy corrections: how a loss treats samples from a policy older than the one it trains.

With asynchronous rollouts (`max_staleness` > 0, Ray workers) a sample was generated
by the behaviour policy π_b, some versions behind the current π_θ; even on-policy, an
inference engine's log-probs differ from the trainer's by rounding. Each correction is
a pure function of the current log-probs `logp` [B, T] (with gradient), the
behaviour's `behaviour` [B, T], the proximal `proximal` [B, T] (the trainer's own
log-probs of the batch at the start of the step, before any update in it; None when
not computed) and the loss `mask`, with a cap C > 1. It returns what the loss needs:

    anchor   the log-probs the loss's ratio is taken against (constants)
    weights  per-token importance weights multiplying the per-token policy-gradient
             loss (constants); a token a correction drops gets weight 0

and its metrics: `is_ess` (effective sample size of the weights over the trained
tokens, 1 = all equal), `behaviour_kl` (k3 estimate of KL(π_b || π_θ) on the
samples), `is_clipped` (share of tokens whose weight hit the cap) and `is_masked`.

    none       anchor π_b, weight 1: the behaviour policy is PPO's old policy (the default).
    tis        token-level truncated importance sampling: weight min(π_θ/π_b, C) per token,
               anchor π_θ itself (so PPO's ratio is 1 and the cap is the trust region).
    seq_tis    the same with one weight per sequence, min(Π_t π_θ/π_b, C).
    mask       tokens whose π_prox/π_b (π_θ/π_b without a proximal) leaves [1/C, C] are
               dropped; the others train as under `none`.
    decoupled  decoupled PPO (AReaL; Fu et al. 2025): PPO clipped against the proximal
               policy, each token weighted by the behaviour-to-proximal ratio π_prox/π_b;
               tokens whose ratio exceeds C are dropped, as AReaL's
               `behav_imp_weight_cap` does (not capped at C: that is `tis`).
    gspo       GSPO (Zheng et al. 2025): one ratio per sequence, the geometric mean of its
               tokens' π_θ/π_b, s = exp(mean_t log π_θ/π_b), clipped as a whole by the
               loss's PPO clip (GSPO's ranges are tiny: --clip_low 3e-4 --clip_high 4e-4).
               Done as GSPO-token is: anchor log π_θ - log s (a constant per sequence), so
               every token's ratio is s and its gradient s·∇log π_θ; under
               `seq_mean_token_mean` this is GSPO's gradient exactly. The cap is not read.
    m2po       M2PO (Zheng et al. 2025, "Prosperity before collapse"): a second-moment
               trust region. The tokens with the largest squared log-ratio (log π_prox/π_b,
               log π_θ/π_b without a proximal) are dropped, largest first, until the mean
               squared log-ratio of those left is under (log C)², a root-mean-square ratio
               within [1/C, C] (M2PO's τ = 0.04 is C = 1.22); anchor π_b. The mean is over
               the tokens the function is given: under micro-batches, each micro-batch's.

A dropped token still counts in what the loss's aggregation divides by, as in AReaL: the
denominators are the batch's, fixed before any log-prob is computed, so a step cut into
micro-batches gets exactly the whole batch's gradient (with a denominator of kept tokens,
a micro-batch with many dropped tokens would weigh its survivors up). The optional KL
penalty to a reference still acts on a dropped token: it is no off-policy estimate.

When behaviour, proximal and current log-probs are equal every correction gives the
on-policy loss exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import math

import torch
from torch import Tensor


@dataclass
class OffPolicy:
    anchor: Tensor
    weights: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def _metrics(weights: Tensor, logp: Tensor, behaviour: Tensor, mask: Tensor, clipped: Tensor,
             masked: Tensor) -> dict[str, float]:
    with torch.no_grad():
        on = mask > 0
        n = on.sum().clamp(min=1)
        w = weights[on].double()  # in float32 the sums round an ESS of all-equal weights past 1
        ess = float(w.sum() ** 2 / (n * (w * w).sum()).clamp(min=1e-12)) if on.any() else 1.0
        d = (logp.detach() - behaviour)[on]
        kl = float((torch.exp(d) - d - 1).mean()) if on.any() else 0.0
        return {"is_ess": ess, "behaviour_kl": kl, "is_clipped": float(clipped[on].float().sum() / n),
                "is_masked": float(masked[on].float().sum() / n)}


def _check_cap(cap: float) -> None:
    if not cap > 1.0:
        raise ValueError(f"an off-policy cap must be > 1, got {cap}")


def none(logp: Tensor, behaviour: Tensor, proximal: Tensor | None, mask: Tensor, cap: float) -> OffPolicy:
    ones, no = torch.ones_like(behaviour), torch.zeros_like(mask, dtype=torch.bool)
    return OffPolicy(behaviour, ones, _metrics(ones, logp, behaviour, mask, no, no))


def tis(logp: Tensor, behaviour: Tensor, proximal: Tensor | None, mask: Tensor, cap: float) -> OffPolicy:
    _check_cap(cap)
    ratio = torch.exp(logp.detach() - behaviour)
    weights = ratio.clamp(max=cap)
    no = torch.zeros_like(mask, dtype=torch.bool)
    return OffPolicy(logp.detach(), weights, _metrics(weights, logp, behaviour, mask, ratio > cap, no))


def seq_tis(logp: Tensor, behaviour: Tensor, proximal: Tensor | None, mask: Tensor, cap: float) -> OffPolicy:
    _check_cap(cap)
    on = mask > 0
    log_ratio = torch.where(on, logp.detach() - behaviour, torch.zeros_like(behaviour)).sum(dim=1, keepdim=True)
    ratio = torch.exp(log_ratio).expand_as(behaviour)
    weights = ratio.clamp(max=cap)
    no = torch.zeros_like(mask, dtype=torch.bool)
    return OffPolicy(logp.detach(), weights, _metrics(weights, logp, behaviour, mask, ratio > cap, no))


def mask(logp: Tensor, behaviour: Tensor, proximal: Tensor | None, mask: Tensor, cap: float) -> OffPolicy:
    _check_cap(cap)
    reference = proximal if proximal is not None else logp.detach()
    ratio = torch.exp(reference - behaviour)
    out = (ratio < 1.0 / cap) | (ratio > cap)
    weights, no = (~out).to(behaviour.dtype), torch.zeros_like(out)
    return OffPolicy(behaviour, weights, _metrics(weights, logp, behaviour, mask, no, out))


def decoupled(logp: Tensor, behaviour: Tensor, proximal: Tensor | None, mask: Tensor, cap: float) -> OffPolicy:
    _check_cap(cap)
    if proximal is None:
        raise ValueError("decoupled PPO needs the proximal log-probs (the trainer's at the start of the step)")
    ratio = torch.exp(proximal - behaviour)
    out = ratio > cap
    weights, no = torch.where(out, torch.zeros_like(ratio), ratio), torch.zeros_like(out)
    return OffPolicy(proximal, weights, _metrics(weights, logp, behaviour, mask, no, out))


def gspo(logp: Tensor, behaviour: Tensor, proximal: Tensor | None, mask: Tensor, cap: float) -> OffPolicy:
    on = mask > 0
    log_ratio = torch.where(on, logp.detach() - behaviour, torch.zeros_like(behaviour))
    log_s = log_ratio.sum(dim=1, keepdim=True) / on.sum(dim=1, keepdim=True).clamp(min=1)
    weights, no = torch.ones_like(behaviour), torch.zeros_like(on)
    return OffPolicy(logp.detach() - log_s, weights, _metrics(weights, logp, behaviour, mask, no, no))


def m2po(logp: Tensor, behaviour: Tensor, proximal: Tensor | None, mask: Tensor, cap: float) -> OffPolicy:
    _check_cap(cap)
    on = mask > 0
    reference = proximal if proximal is not None else logp.detach()
    squared = torch.where(on, (reference - behaviour) ** 2, torch.zeros_like(behaviour))
    values = squared[on].double()
    out = torch.zeros_like(on)
    if values.numel():
        # Sorted ascending, the mean of the m smallest grows with m: keep the most tokens
        # whose mean is under the threshold, which is dropping the largest, largest first.
        order = torch.argsort(values, stable=True)
        means = torch.cumsum(values[order], 0) / torch.arange(1, values.numel() + 1, dtype=values.dtype)
        keep = int((means < math.log(cap) ** 2).sum())
        rank = torch.empty_like(order)
        rank[order] = torch.arange(values.numel())
        out[on] = rank >= keep
    weights, no = (~out).to(behaviour.dtype), torch.zeros_like(out)
    return OffPolicy(behaviour, weights, _metrics(weights, logp, behaviour, mask, no, out))


OFFPOLICY: dict[str, Callable[..., OffPolicy]] = {
    "none": none,
    "tis": tis,
    "seq_tis": seq_tis,
    "mask": mask,
    "decoupled": decoupled,
    "gspo": gspo,
    "m2po": m2po,
}
# Corrections that read the proximal policy: the trainer computes it (one forward
# without gradient) when a step makes more than one optimizer update, and otherwise
# passes the current log-probs, which are then the same numbers.
NEEDS_PROXIMAL = {"mask", "decoupled", "m2po"}
