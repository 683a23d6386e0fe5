"""Rollouts -> training tensors, and the policy's per-token log-probs on them.

The token ids are the engine's, untouched. A group of n completions of one prompt
shares one copy of the prompt: the prompt runs through the model once per group and
its keys/values are shared by the group's completions (see models/forward.py), which
saves (n - 1) prompt forwards and backwards per group.

    batch = make_batch(rollouts, pad_id)
    logp, entropy = policy_logprobs(parts_of(model), batch, temperature=1.0)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from rlvr.models.forward import Parts, completion_logprobs, forward, share_prompts
from rlvr.types import Rollout


@dataclass
class TrainBatch:
    prompt_ids: Tensor  # [G, P] left-padded, one row per distinct prompt
    prompt_valid: Tensor  # [G, P] bool
    prompt_pos: Tensor  # [G, P]
    group: Tensor  # [B] row of prompt_ids each completion continues
    ids: Tensor  # [B, T] completions, right-padded
    pos: Tensor  # [B, T]
    mask: Tensor  # [B, T] float: 1 on tokens to train on
    old_logp: Tensor  # [B, T] behaviour log-probs from the engine
    advantages: Tensor  # [B, T] per-token learning signal (a sequence's advantage, broadcast, plus any per-token one)
    versions: Tensor  # [B] policy version that generated each completion

    @property
    def tokens(self) -> int:
        return int(self.mask.sum())

    @property
    def forward_tokens(self) -> int:
        """Tokens a forward pass computes usefully: each distinct prompt once, plus the trained completion tokens."""
        return int(self.prompt_valid.sum()) + self.tokens


# What one more forward/backward costs beyond its tokens (kernel launches, per-layer
# Python), in completion tokens: a split must save at least this much padding.
MICRO_OVERHEAD_TOKENS = 64


def cut_sorted(lengths: list[int], max_rows: int, max_tokens: int | None = None,
               overhead: int = MICRO_OVERHEAD_TOKENS, shared: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """Cut items sorted longest first into consecutive spans [start, end) computing as few
    tokens as possible: a span costs its rows padded to its first (longest) item, plus,
    with `shared` ((key, tokens) per item: a prompt its samples share), each distinct
    key's tokens once, plus `overhead`; at most `max_rows` items and `max_tokens` tokens a
    span (an item longer than that goes alone). An exact dynamic programme,
    O(items x max_rows)."""
    n = len(lengths)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        keys: set[int] = set()
        prefix = 0
        for start in range(end - 1, max(0, end - max_rows) - 1, -1):
            if shared is not None and shared[start][0] not in keys:
                keys.add(shared[start][0])
                prefix += shared[start][1]
            tokens = (end - start) * max(1, lengths[start]) + prefix
            if max_tokens is not None and tokens > max_tokens and end - start > 1:
                break  # longer spans only grow: their first item is at least as long
            cost = best[start] + tokens + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    spans, end = [], n
    while end > 0:
        spans.append((cut[end], end))
        end = cut[end]
    return spans[::-1]


def plan_micro_batches(rollouts: list[Rollout], max_rows: int, max_tokens: int | None = None,
                       overhead: int = MICRO_OVERHEAD_TOKENS) -> list[list[Rollout]]:
    """Split rollouts' samples into micro-batches of at most `max_rows` completions and
    `max_tokens` tokens (padded completions plus their prompts; a longer sample goes
    alone), of similar lengths, computing as few tokens as possible.

    A micro-batch pads every completion to its longest, and a group's longest sets the
    whole group's length; with lengths that vary (a few completions run to the token limit,
    most stop early) a fifth to a half of the tokens can be padding. Samples are sorted by
    length and cut where it pays (`cut_sorted`): the cost of a micro-batch is its padded
    completion tokens, plus each distinct prompt once (its prefix is computed for every
    micro-batch that holds one of its samples), plus `overhead`. The gradient is
    unchanged: every aggregation is over tokens or sequences, and each micro-batch's loss
    is weighted by its share. Returns lists of rollouts (copies holding the chosen samples
    and their advantages).
    """
    items = sorted(((len(s.completion_ids), g, i) for g, r in enumerate(rollouts) for i, s in enumerate(r.samples)),
                   key=lambda x: -x[0])
    prompt = [len(r.samples[0].prompt_ids) if r.samples else 0 for r in rollouts]
    out = []
    for start, end in cut_sorted([x[0] for x in items], max_rows, max_tokens, overhead,
                                 shared=[(g, prompt[g]) for _, g, _ in items]):
        chosen: dict[int, list[int]] = {}
        for _, g, i in items[start:end]:
            chosen.setdefault(g, []).append(i)
        out.append([_subset(rollouts[g], sorted(idx)) for g, idx in sorted(chosen.items())])
    return out


def plan_rows(lengths: list[int], max_tokens: int | None, overhead: int = MICRO_OVERHEAD_TOKENS) -> list[list[int]]:
    """Indices of rows (SFT's sequences) in micro-batches of at most `max_tokens` padded
    tokens, each as long as its longest row; all of them in their own order when they fit
    in one (so a batch that fits computes exactly what it did unplanned)."""
    if max_tokens is None or len(lengths) * max(lengths, default=1) <= max_tokens:
        return [list(range(len(lengths)))]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [sorted(order[a:b]) for a, b in cut_sorted([lengths[i] for i in order], len(order), max_tokens, overhead)]


def activation_bytes_per_token(parts: Parts, probe: tuple[int, int] = (8, 24)) -> float:
    """Bytes a training forward keeps for backward per token through the decoder, measured
    for this model as it trains (dtype, LoRA, device): two small forwards under autograd's
    saved-tensor hooks, their difference over the difference in tokens, so the weights
    and other constants cancel. Under activation checkpointing a token keeps its layer
    inputs, plus one layer's activations while that layer is recomputed. The LM head is
    left out: it is computed in chunks of bounded size (models/lm_head.py)."""
    device = parts.embed.weight.device

    def saved(tokens: int) -> int:
        storages: dict[int, int] = {}

        def pack(t: Tensor) -> Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        ids = torch.zeros(1, tokens, dtype=torch.long, device=device)
        pos = torch.arange(tokens, device=device)[None]
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            forward(replace(parts, checkpoint=False), ids, pos)
        return sum(storages.values())

    full = (saved(probe[1]) - saved(probe[0])) / (probe[1] - probe[0])
    if not parts.checkpoint:
        return full
    layers = len(parts.layers)
    return layers * parts.embed.weight.shape[1] * parts.embed.weight.element_size() + full / layers


def micro_batch_tokens(parts: Parts, budget_gb: float) -> int:
    """The most tokens a micro-batch may hold so its activations fit `budget_gb`."""
    return max(1, int(budget_gb * 2**30 // max(activation_bytes_per_token(parts), 1.0)))


def _subset(r: Rollout, idx: list[int]) -> Rollout:
    if len(idx) == len(r.samples):
        return r
    pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
    return replace(r, samples=pick(r.samples), verdicts=pick(r.verdicts), advantages=pick(r.advantages))


def make_batch(rollouts: list[Rollout], pad_id: int, device: torch.device | str = "cpu") -> TrainBatch:
    samples = []
    for r in rollouts:
        if r.advantages is None:
            raise ValueError(f"rollout of {r.problem.id} has no advantages: run algos.compute_advantages first")
        samples += list(zip(r.samples, r.advantages))
    shared = p_ids, p_valid, p_pos, group, ids, pos = share_prompts([s.prompt_ids for s, _ in samples],
                                                                    [s.completion_ids for s, _ in samples], pad_id)
    B, T = ids.shape
    mask, old_logp, advantages = torch.zeros((B, T)), torch.zeros((B, T)), torch.zeros((B, T))
    for b, (s, a) in enumerate(samples):
        n = len(s.completion_ids)
        mask[b, :n] = torch.tensor(s.mask(), dtype=torch.float)
        old_logp[b, :n] = torch.tensor(s.logprobs, dtype=torch.float)
        advantages[b, :n] = torch.tensor(s.advantages(a), dtype=torch.float)
    to = dict(device=device)
    return TrainBatch(*(t.to(**to) for t in shared), mask.to(**to), old_logp.to(**to), advantages.to(**to),
                      torch.tensor([s.policy_version for s, _ in samples], **to))


def idle_batch(device: torch.device | str = "cpu") -> TrainBatch:
    """A one-token prompt and a one-token completion that train nothing: the micro-batch a
    rank with fewer than another runs under fsdp (`Parallel.pad`)."""
    one = torch.zeros(1, 1, dtype=torch.long, device=device)
    zero = torch.zeros(1, 1, device=device)
    return TrainBatch(one, one == 0, one, one[0], one, one + 1, zero, zero, zero, one[0])


class _PromptBoundary(torch.autograd.Function):
    """Where the completions read the prompt pass's outputs (its last hidden state and every
    layer's keys and values): identity forward; in backward, once the completions' gradient
    for all of them is in, it runs the prompt pass's own backward.

    Why: every weight is used by both passes, and autograd adds a weight's two gradient
    contributions in a buffer before they reach `.grad`: the completions' gradient of every
    weight waited there until the prompt's backward, a second copy of all the gradients
    (SmolLM2, full fine-tuning, the second micro-batch of a step: +0.5 GB at the peak). Cut
    here, the completions' backward accumulates into `.grad` layer by layer, then the prompt's.
    For `.backward()` (what the trainers call): `torch.autograd.grad(loss, params)` or
    `backward(inputs=...)` would not reach the prompt pass, and the graph backs up once.
    """

    @staticmethod
    def forward(ctx, attached: list[Tensor], *detached: Tensor) -> tuple[Tensor, ...]:
        ctx.attached = attached
        return tuple(t.view_as(t) for t in detached)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        if ctx.attached is None:
            raise RuntimeError("policy_logprobs' graph backs up once (its prompt pass's graph is freed by the first)")
        attached, ctx.attached = ctx.attached, None  # the prompt's outputs live no longer than its graph
        pairs = [(t, g) for t, g in zip(attached, grads) if g is not None and t.requires_grad]
        if pairs:
            torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
        return (None,) * (1 + len(grads))


def _cut(tensors: list[Tensor]) -> list[Tensor]:
    """The prompt pass's outputs as the completions' pass should read them (see `_PromptBoundary`)."""
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
        return tensors
    return list(_PromptBoundary.apply(tensors, *(t.detach().requires_grad_() for t in tensors)))


def policy_logprobs(parts: Parts, batch: TrainBatch, temperature: float = 1.0,
                    with_entropy: bool = True) -> tuple[Tensor, Tensor | None]:
    """Per-token log-probs [B, T] of the completions (at `temperature`), and entropies."""
    return completion_logprobs(parts, batch.prompt_ids, batch.prompt_valid, batch.prompt_pos, batch.group,
                               batch.ids, batch.pos, temperature, with_entropy, boundary=_cut)
