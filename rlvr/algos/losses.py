"""Per-token policy-gradient losses and the ways to average them, as pure functions.

A loss maps the current policy's per-token log-probs `logp` [B, T], the behaviour
policy's `old_logp` [B, T] (from the engine), `advantages` (per token [B, T], or per
sequence [B], broadcast over its tokens) and a loss `mask` [B, T] to a scalar loss and
a dict of float metrics:

    loss, metrics = LOSSES["ppo_clip"](logp, old_logp, adv, mask, LossConfig(agg="token_mean"))
    loss.backward()

Gradients flow only through `logp`: old log-probs, reference log-probs, advantages
and the optional per-token `weights` (an off-policy correction's importance weights,
rlvr/algos/offpolicy.py) are treated as constants. How per-token losses become one number is a
separate, named choice (`AGGREGATIONS`) because it is exactly where GRPO, DAPO and
Dr. GRPO differ; see each aggregation's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


@dataclass(frozen=True)
class LossConfig:
    clip_low: float = 0.2  # ratio floor is 1 - clip_low
    clip_high: float = 0.2  # ratio ceiling is 1 + clip_high; > clip_low is DAPO's clip-higher
    kl_coef: float = 0.0  # weight of the k3 KL penalty to the reference policy
    agg: str = "token_mean"  # key of AGGREGATIONS
    max_tokens: int | None = None  # constant normaliser of seq_mean_token_sum_norm


def _masked_sum(loss: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    picked = torch.where(mask > 0, loss, torch.zeros_like(loss))  # padding may hold inf/NaN
    return picked.sum() if dim is None else picked.sum(dim=dim)


def token_mean(loss: Tensor, mask: Tensor, cfg: LossConfig) -> Tensor:
    """DAPO: every trained token weighs the same, so long sequences count more."""
    return _masked_sum(loss, mask) / (mask > 0).sum().clamp(min=1)


def seq_mean_token_mean(loss: Tensor, mask: Tensor, cfg: LossConfig) -> Tensor:
    """Original GRPO: each sequence weighs the same, so its tokens weigh 1/length.
    A sequence without trained tokens adds 0 but still counts in the mean over B,
    as in TRL."""
    per_seq = _masked_sum(loss, mask, dim=1) / (mask > 0).sum(dim=1).clamp(min=1)
    return per_seq.mean()


def seq_mean_token_sum_norm(loss: Tensor, mask: Tensor, cfg: LossConfig) -> Tensor:
    """Dr. GRPO: divide by a constant (B * max_tokens), so neither the length of a
    sequence nor of the batch rescales any token's gradient."""
    if cfg.max_tokens is None:
        raise ValueError("agg='seq_mean_token_sum_norm' needs LossConfig.max_tokens")
    return _masked_sum(loss, mask) / (loss.shape[0] * cfg.max_tokens)


AGGREGATIONS: dict[str, Callable[[Tensor, Tensor, LossConfig], Tensor]] = {
    "token_mean": token_mean,
    "seq_mean_token_mean": seq_mean_token_mean,
    "seq_mean_token_sum_norm": seq_mean_token_sum_norm,
}


# What each aggregation divides by. A batch split into micro-batches (gradient
# accumulation) gets exactly the full batch's gradient when each micro-batch's loss
# is weighted by its share of this count.
AGG_WEIGHT: dict[str, Callable[[Tensor], float]] = {
    "token_mean": lambda mask: float((mask > 0).sum()),
    "seq_mean_token_mean": lambda mask: float(mask.shape[0]),
    "seq_mean_token_sum_norm": lambda mask: float(mask.shape[0]),
}


def _k3(log_q: Tensor, logp: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(p || q) from samples of p: >= 0, unbiased, low variance.
    As a loss on samples of p (as TRL and DeepSeekMath use it) its expected gradient is
    that of KL(q || p), the mass-covering direction, not of the KL its value estimates."""
    d = log_q - logp
    return torch.exp(d) - d - 1


def _masked_mean(x: Tensor, mask: Tensor) -> float:
    return float((x * mask).sum() / mask.sum().clamp(min=1))


def _prepare(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
             ref_logp: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Detaches the constants and zeroes every log-prob outside the mask, so padding
    (which engines may fill with -inf or NaN) can make neither the loss nor its
    gradient NaN (multiplying by the mask would turn 0 * inf into NaN)."""
    off = ~(mask > 0)
    logp = logp.masked_fill(off, 0.0)
    old_logp = old_logp.detach().to(logp.dtype).masked_fill(off, 0.0)
    if ref_logp is not None:
        ref_logp = ref_logp.detach().to(logp.dtype).masked_fill(off, 0.0)
    adv = advantages.detach().to(logp.dtype)
    if adv.dim() == 1:  # one advantage per sequence: every token of it gets it
        adv = adv[:, None]
    return logp, old_logp, adv, (~off).to(logp.dtype), ref_logp


def _finish(pg: Tensor, logp: Tensor, old_logp: Tensor, mask: Tensor, cfg: LossConfig,
            ref_logp: Tensor | None, metrics: dict[str, float]) -> tuple[Tensor, dict[str, float]]:
    """Adds the optional KL penalty, aggregates, and fills the metrics shared by all losses."""
    if cfg.agg not in AGGREGATIONS:
        raise KeyError(f"unknown aggregation {cfg.agg!r}; valid: {sorted(AGGREGATIONS)}")
    if cfg.kl_coef > 0 and ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp (the frozen reference's log-probs)")
    agg = AGGREGATIONS[cfg.agg]
    per_token = pg
    kl = _k3(ref_logp, logp) if ref_logp is not None else None
    if kl is not None and cfg.kl_coef > 0:
        per_token = pg + cfg.kl_coef * kl
    loss = agg(per_token, mask, cfg)
    with torch.no_grad():
        ratio = torch.exp(logp - old_logp)
        on = mask > 0
        metrics["ratio_mean"] = _masked_mean(ratio, mask)
        metrics["ratio_max"] = float(ratio[on].max()) if on.any() else 0.0
        metrics["approx_kl"] = _masked_mean(_k3(old_logp, logp), mask)
        if kl is not None:
            metrics["kl"] = _masked_mean(kl, mask)
        metrics["pg_loss"] = float(agg(pg, mask, cfg))
        metrics["loss"] = float(loss)
    return loss, metrics


def _weighted(pg: Tensor, weights: Tensor | None, mask: Tensor) -> Tensor:
    if weights is None:
        return pg
    return pg * weights.detach().to(pg.dtype).masked_fill(~(mask > 0), 0.0)


def ppo_clip(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
             cfg: LossConfig, ref_logp: Tensor | None = None,
             weights: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate, -min(ratio * A, clip(ratio) * A), per token.

    The min makes clipping one-sided: a token stops pushing only once the ratio has
    already moved past the bound in the direction its advantage wants.
    """
    logp, old_logp, adv, mask, ref_logp = _prepare(logp, old_logp, advantages, mask, ref_logp)
    ratio = torch.exp(logp - old_logp)
    clipped = ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high)
    pg = _weighted(-torch.minimum(ratio * adv, clipped * adv), weights, mask)
    with torch.no_grad():
        low = (adv < 0) & (ratio < 1 - cfg.clip_low)
        high = (adv > 0) & (ratio > 1 + cfg.clip_high)
        metrics = {
            "clip_frac_low": _masked_mean(low.to(mask.dtype), mask),
            "clip_frac_high": _masked_mean(high.to(mask.dtype), mask),
            "clip_frac": _masked_mean((low | high).to(mask.dtype), mask),
        }
    return _finish(pg, logp, old_logp, mask, cfg, ref_logp, metrics)


def reinforce(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
              cfg: LossConfig, ref_logp: Tensor | None = None,
              weights: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Plain policy gradient, -A * logp per token: no ratio, so unbiased only on-policy.
    `old_logp` only feeds the metrics; clip fractions are reported as 0 (nothing clips)."""
    logp, old_logp, adv, mask, ref_logp = _prepare(logp, old_logp, advantages, mask, ref_logp)
    pg = _weighted(-adv * logp, weights, mask)
    metrics = {"clip_frac_low": 0.0, "clip_frac_high": 0.0, "clip_frac": 0.0}
    return _finish(pg, logp, old_logp, mask, cfg, ref_logp, metrics)


LOSSES: dict[str, Callable[..., tuple[Tensor, dict[str, float]]]] = {
    "ppo_clip": ppo_clip,
    "reinforce": reinforce,
}
