"""Log-probs of chosen tokens through the LM head, without the whole [tokens, vocab] logits.

A real model's vocabulary is large (49k for SmolLM2, 150k for Qwen): the logits of
32 completions x 64 tokens are 400 MB in fp32, their log-softmax as much again, and
autograd keeps both for backward. `token_logprobs` computes the head in chunks of
tokens and keeps only each token's log-normaliser; backward recomputes a chunk's
logits and forms the gradient from them (d logp / d logits = onehot - softmax), so
memory holds one chunk's logits at a time. The values and gradients are those of
`log_softmax(h @ W.T / T).gather(ids)` (tested).

    logp, entropy = token_logprobs(hidden, model.lm_head.weight, ids, temperature=1.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

# Logits per chunk: ~64 MB of fp32, whatever the vocabulary.
CHUNK_ELEMENTS = 1 << 24


def chunk_rows(vocab: int) -> int:
    return max(16, CHUNK_ELEMENTS // max(vocab, 1))


def _acc(dtype: torch.dtype) -> torch.dtype:
    """Softmax precision: at least fp32 (bf16 logits lose the small probabilities)."""
    return torch.promote_types(dtype, torch.float32)


class _TokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, ids: Tensor, temperature: float, rows: int):
        N, acc = hidden.shape[0], _acc(hidden.dtype)
        logp, lse, entropy = (hidden.new_empty(N, dtype=acc) for _ in range(3))
        for s in range(0, N, rows):  # in place where it can: a chunk's temporaries are its memory
            logits = (hidden[s:s + rows] @ weight.T).to(acc).div_(temperature)
            lse[s:s + rows] = torch.logsumexp(logits, -1)
            logp[s:s + rows] = logits.gather(-1, ids[s:s + rows, None]).squeeze(-1) - lse[s:s + rows]
            entropy[s:s + rows] = lse[s:s + rows] - torch.softmax(logits, -1).mul_(logits).sum(-1)
        ctx.save_for_backward(hidden, weight, ids, lse)
        ctx.temperature, ctx.rows = temperature, rows
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp: Tensor, _grad_entropy: Tensor):
        hidden, weight, ids, lse = ctx.saved_tensors
        T, rows = ctx.temperature, ctx.rows
        grad_h = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        acc = _acc(hidden.dtype)
        grad_w = torch.zeros_like(weight, dtype=acc) if ctx.needs_input_grad[1] else None
        for s in range(0, hidden.shape[0], rows):
            h = hidden[s:s + rows]
            # d logp_i / d logits = onehot(id_i) - softmax; times the incoming gradient, / T.
            g = (h @ weight.T).to(acc).div_(T).sub_(lse[s:s + rows, None]).exp_().neg_()
            g.scatter_add_(-1, ids[s:s + rows, None], torch.ones_like(g[:, :1]))
            g.mul_((grad_logp[s:s + rows] / T)[:, None])
            g = g.to(hidden.dtype)
            if grad_h is not None:
                grad_h[s:s + rows] = g @ weight
            if grad_w is not None:
                grad_w += (g.T @ h).to(acc)
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None


def token_logprobs(hidden: Tensor, weight: Tensor, ids: Tensor, temperature: float = 1.0,
                   rows: int | None = None) -> tuple[Tensor, Tensor]:
    """log p(ids) [...] and the entropy of each position's distribution [...] (no gradient),
    for hidden states [..., E] through an LM head `weight` [V, E] at `temperature`."""
    shape = ids.shape
    logp, entropy = _TokenLogprobs.apply(hidden.reshape(-1, hidden.shape[-1]), weight, ids.reshape(-1),
                                         float(temperature), rows or chunk_rows(weight.shape[0]))
    return logp.view(shape), entropy.view(shape)


def chunked(head: torch.nn.Module, tokens: int) -> bool:
    """Whether the head over `tokens` positions is worth chunking: a plain linear head
    whose logits would not fit in one chunk (a tiny vocabulary never is)."""
    return type(head) is torch.nn.Linear and head.bias is None and tokens > chunk_rows(head.out_features)


def head_logprobs(head: torch.nn.Module, hidden: Tensor, ids: Tensor, temperature: float = 1.0,
                  with_entropy: bool = True) -> tuple[Tensor, Tensor | None]:
    """Per-token log-probs of `ids` (and entropies, no gradient) through the LM head:
    chunked when the vocabulary is large, the plain log-softmax otherwise."""
    if chunked(head, ids.numel()):
        logp, entropy = token_logprobs(hidden, head.weight, ids, temperature)
        return logp, entropy if with_entropy else None
    logits = head(hidden).float()
    if temperature != 1.0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, ids[..., None]).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy
