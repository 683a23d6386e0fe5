"""One RL update: a batch of rollout groups in, `epochs` x `mini_batches` optimizer steps out.

    metrics = train_on(rollouts, model, parts, reference, opt, cfg, pad_id, max_tokens)

It runs in three parts, each a function here:

  learnable, with_advantages   the groups that can teach something, and their advantages
                               (`algos.ADVANTAGES[advantage]`, DAPO's overlong filtering)
  plan                         the groups in near-equal mini-batches (`split_groups`), each
                               cut into micro-batches of similar lengths; groups whose every
                               token's signal is 0 are left out, but still counted in what
                               the aggregation divides by
  optimize                     per mini-batch, the micro-batches' gradients accumulated and
                               one optimizer step, over `epochs` passes

Which estimator, loss and correction run are names in the config, never branches here.
`rlvr.train.rl` calls `train_on` once a step.

Under torchrun (`par`, rlvr/train/parallel.py) each rank holds whole groups (so
advantages are the group's) and trains on its own; what the aggregation divides by,
the signal and the number of mini-batches are all-reduced, and the gradients summed
before each optimizer step, so N ranks take the step one process takes on their union
of groups (with --mini_batches > 1, each mini-batch is the union of every rank's k-th).
Under fsdp a rank with fewer micro-batches than another adds zero-weight ones (`par.pad`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from rlvr.algos import AGG_WEIGHT, LOSSES, LossConfig, compute_advantages, mask_truncated
from rlvr.algos.void import mask_void_turns
from rlvr.algos.offpolicy import NEEDS_PROXIMAL, OFFPOLICY
from rlvr.train.batch import TrainBatch, idle_batch, make_batch, plan_micro_batches, policy_logprobs
from rlvr.train.parallel import SINGLE, Parallel
from rlvr.types import Rollout

if TYPE_CHECKING:
    from rlvr.train.rl import RLConfig

Reference = Callable[[TrainBatch], torch.Tensor]  # the frozen starting policy's log-probs, for the KL term


def train_on(rollouts: list[Rollout], model, parts, reference: Reference | None, opt, cfg: RLConfig, pad_id: int,
             max_tokens: int | None = None, reward_weight: float = 1.0, par: Parallel = SINGLE) -> dict[str, float]:
    """Advantages, then epochs x mini_batches optimizer steps on one batch of rollouts.

    Each optimizer step accumulates gradients over micro-batches of at most
    `micro_batch` completions and `max_tokens` tokens (`batch.micro_batch_tokens`), of
    similar lengths (`batch.plan_micro_batches`: less padding, prompts shared where it
    pays); each micro-batch's loss is weighted by its share of what the aggregation
    averages over, so the gradient equals the whole mini-batch's. The off-policy
    correction (`algos.OFFPOLICY[offpolicy]`) sets what the loss's ratio is taken against
    and weighs or masks tokens; the proximal policy it may read is the model's own
    log-probs before this step's first update. `reward_weight` scales the groups'
    advantages (on-policy distillation weighs them against a teacher's per-token signal).
    """
    rollouts = learnable(rollouts)
    groups, = par.sum([len(rollouts)])
    if not groups:  # e.g. dynamic sampling found no group with a learning signal
        return {"trained_tokens": 0, "loss_tokens": 0, "updates": 0}
    masked = with_advantages(rollouts, cfg, reward_weight) if rollouts else 0
    voided = mask_void_turns(rollouts) if cfg.drop_void_turns and rollouts else 0  # SimpleTIR (rlvr/algos/void.py)
    informative = {id(r) for r in rollouts if r.has_signal()}
    n_informative, = par.sum([len(informative)])
    # No group with a learning signal (or a KL term alone, at a rate scaled to 0): no
    # forward, no backward, no update.
    if not n_informative and (cfg.kl_coef == 0 or cfg.lr_by_signal):
        return {"trained_tokens": 0, "loss_tokens": 0, "updates": 0, "skipped_groups": 1.0, "signal": 0.0}
    work = plan(rollouts, informative, cfg, pad_id, next(model.parameters()).device, max_tokens, par)
    signal = n_informative / groups
    if cfg.lr_by_signal:  # the trainer sets each step's rate afresh, so this does not compound
        for g in opt.param_groups:
            g["lr"] *= signal
    out = optimize(work, model, parts, reference, opt, cfg, par)
    out["skipped_groups"], out["signal"] = work.skipped / max(len(rollouts), 1), signal
    out["micro_batches"] = sum(len(micro) for micro in work.micro)
    if cfg.mask_truncated:
        out["masked_truncated"] = masked / max(sum(len(r.samples) for r in rollouts), 1)
    if cfg.drop_void_turns:
        out["masked_void"] = voided / max(sum(len(r.samples) for r in rollouts), 1)
    return out


# -- 1. what can be learned ------------------------------------------------------------
def learnable(rollouts: list[Rollout]) -> list[Rollout]:
    """The groups that can teach something. A group cut to one sample (its others undecided
    by the verifier) has no baseline, and nothing to learn from unless its tokens carry a
    signal of their own."""
    return [r for r in rollouts if len(r.samples) > 1 or r.has_signal()]


def with_advantages(rollouts: list[Rollout], cfg: RLConfig, reward_weight: float = 1.0) -> int:
    """Fill each group's advantages (times `reward_weight`); with --mask_truncated, mask cut
    completions. Returns how many were masked."""
    compute_advantages(rollouts, cfg.advantage, cfg.reward_correction, cfg.noise_fp, cfg.noise_fn,
                       cfg.max_new_tokens, cfg.overlong_buffer)
    if reward_weight != 1.0:
        for r in rollouts:
            r.advantages = [reward_weight * a for a in r.advantages]
    return mask_truncated(rollouts) if cfg.mask_truncated else 0


# -- 2. the plan -------------------------------------------------------------------------
@dataclass
class Plan:
    micro: list[list[TrainBatch]]  # per mini-batch, the micro-batches to compute
    totals: list[float]  # per mini-batch, what its aggregation divides by (left-out groups included)
    skipped: int  # groups left out
    device: torch.device | str = "cpu"


def plan(rollouts: list[Rollout], informative: set[int], cfg: RLConfig, pad_id: int, device,
         max_tokens: int | None, par: Parallel = SINGLE) -> Plan:
    """Mini-batches of groups, each as micro-batches. A group whose every token's signal is 0
    (equal rewards and no per-token signal) adds exactly nothing to the policy gradient, so
    it is not computed at all; it still counts in what the aggregation divides by, so the
    gradient is the whole batch's. (Not with a KL term, which every token feels.) Under
    torchrun every rank cuts its groups into the same number of mini-batches, and each
    divides by what the mini-batch divides by over all ranks."""
    skip = cfg.kl_coef == 0
    weigh = AGG_WEIGHT[cfg.agg]
    micro, totals, skipped = [], [], 0
    parts = int(par.min([min(cfg.mini_batches, len(rollouts))])[0]) if par.world > 1 else cfg.mini_batches
    chunks = split_groups(rollouts, parts) if parts else [[]]  # a rank without groups still takes the steps
    for chunk in chunks:
        totals.append(weigh(_mask_of(chunk)) if chunk else 0.0)
        live = [r for r in chunk if not skip or id(r) in informative]
        skipped += len(chunk) - len(live)
        micro.append([make_batch(m, pad_id, device) for m in plan_micro_batches(live, cfg.micro_batch, max_tokens)]
                     if live else [])
    return Plan(micro, par.sum(totals), skipped, device)


def split_groups(rollouts: list[Rollout], parts: int) -> list[list[Rollout]]:
    """`parts` mini-batches of groups (fewer only when there are fewer groups), their sizes
    within one of each other: 10 groups in 4 are 3, 3, 2, 2, not 3, 3, 3, 1."""
    parts = min(parts, len(rollouts))
    size, extra = divmod(len(rollouts), parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [rollouts[a:b] for a, b in zip(bounds, bounds[1:])]


def _mask_of(rollouts: list[Rollout]) -> torch.Tensor:
    """The loss mask of these rollouts' samples, padded [B, T] (what an aggregation counts)."""
    masks = [s.mask() for r in rollouts for s in r.samples]
    out = torch.zeros(len(masks), max(1, max(len(m) for m in masks)))
    for b, m in enumerate(masks):
        out[b, :len(m)] = torch.tensor(m, dtype=torch.float)
    return out


# -- 3. the optimizer steps ----------------------------------------------------------------
def loss_config(cfg: RLConfig) -> LossConfig:
    return LossConfig(clip_low=cfg.clip_low, clip_high=cfg.clip_high, kl_coef=cfg.kl_coef, agg=cfg.agg,
                      max_tokens=cfg.max_new_tokens)


def optimize(work: Plan, model, parts, reference: Reference | None, opt, cfg: RLConfig,
             par: Parallel = SINGLE) -> dict[str, float]:
    """`epochs` passes over the mini-batches, one optimizer step each. Metrics average over
    the trained samples, weighted as the loss weighs them; token counts are sums."""
    weigh = AGG_WEIGHT[cfg.agg]
    counts = [len(micro) for micro in work.micro]
    most = [int(n) for n in par.max(counts + [sum(counts)])]  # per mini-batch, and in all, over ranks

    def idle() -> torch.Tensor:  # a micro-batch that trains nothing (fsdp: `par.pad`)
        return policy_logprobs(parts, idle_batch(work.device), with_entropy=False)[0]

    proximal = par.run(lambda: proximal_logprobs(work, parts, cfg))
    if proximal is not None:
        par.pad(most[-1] - sum(counts), idle, grad=False)  # fsdp: every rank's forwards pair up
    sums: dict[str, float] = {}
    updates, weight = 0, 0.0
    for _ in range(cfg.epochs):
        for c, micro in enumerate(work.micro):
            if not most[c]:  # a rank with none still takes the step another rank computes
                continue
            for m, batch in enumerate(micro):
                share = weigh(batch.mask) / max(work.totals[c], 1.0)
                sums["trained_tokens"] = sums.get("trained_tokens", 0.0) + batch.forward_tokens
                loss, metrics = par.run(lambda: loss_of(batch, proximal[c][m] if proximal is not None else None, parts,
                                                        reference, cfg))
                (loss * share).backward()
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v * share
                weight += share
                sums["loss_tokens"] = sums.get("loss_tokens", 0.0) + batch.tokens
            par.pad(most[c] - len(micro), idle)  # fsdp: as many micro-batches as the rank with the most
            par.sync_grads(model)
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            opt.step()
            opt.zero_grad(set_to_none=True)
            updates += 1
    out = {k: v / max(weight, 1e-12) for k, v in sums.items()}
    out["grad_norm"] = sums["grad_norm"] / updates
    out["trained_tokens"], out["loss_tokens"] = sums.get("trained_tokens", 0), sums.get("loss_tokens", 0)
    out["updates"] = updates
    if proximal is not None:  # one forward of every trained token, charged by the caller
        out["proximal_tokens"] = sum(b.forward_tokens for micro in work.micro for b in micro)
    return out


def proximal_logprobs(work: Plan, parts, cfg: RLConfig) -> list[list[torch.Tensor]] | None:
    """The policy's log-probs before the step's first update, for a correction that reads
    them; None when the step makes one update (the current log-probs are the proximal ones)."""
    if cfg.offpolicy not in NEEDS_PROXIMAL or cfg.epochs * len(work.micro) <= 1:
        return None
    with torch.no_grad():
        return [[policy_logprobs(parts, b, cfg.temperature, with_entropy=False)[0] for b in micro]
                for micro in work.micro]


def loss_of(batch: TrainBatch, proximal: torch.Tensor | None, parts, reference: Reference | None,
            cfg: RLConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """One micro-batch's loss (the caller adds its gradient at its share of the mini-batch's); its metrics."""
    logp, entropy = policy_logprobs(parts, batch, cfg.temperature)
    prox = proximal if proximal is not None else logp.detach()
    off = OFFPOLICY[cfg.offpolicy](logp, batch.old_logp, prox, batch.mask, cfg.offpolicy_cap)
    ref_logp = reference(batch) if reference is not None else None
    loss, metrics = LOSSES[cfg.loss](logp, off.anchor, batch.advantages, batch.mask, loss_config(cfg), ref_logp,
                                     off.weights)
    metrics["entropy"] = float((entropy * batch.mask).sum() / batch.mask.sum().clamp(min=1))
    return loss, {**metrics, **off.metrics}
