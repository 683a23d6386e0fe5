"""Choosing the next token: greedy, temperature, top-p; and the behaviour log-prob.

The log-prob returned is that of the temperature-scaled distribution *before* top-p
truncation, the same quantity the trainer recomputes (logits / temperature), so the
importance ratio between trainer and engine is 1 on-policy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr.types import Sampling


def sample_next(logits: Tensor, sampling: Sampling, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """logits [B, V] -> (token ids [B], behaviour log-probs [B])."""
    logits = logits.float()
    if sampling.temperature <= 0:
        tok = logits.argmax(-1)
        return tok, torch.log_softmax(logits, -1).gather(1, tok[:, None]).squeeze(1)
    logp = torch.log_softmax(logits / sampling.temperature, -1)
    probs = logp.exp()
    if sampling.top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        # Drop a token when the mass before it already reaches top_p (the first always stays).
        drop = (sorted_p.cumsum(-1) - sorted_p) >= sampling.top_p
        probs = probs.scatter(1, order, sorted_p.masked_fill(drop, 0.0))
    tok = torch.multinomial(probs, 1, generator=gen).squeeze(1)
    return tok, logp.gather(1, tok[:, None]).squeeze(1)
