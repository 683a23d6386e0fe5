"""Multi-turn episodes from turn to turn: each live episode's KV cache kept, only new tokens prefilled.

Why: every later turn of a multi-turn episode (rlvr/rollout.py) continues the whole
stream so far: the prompt, the earlier turns, the environment's observations.
Prefilling that stream again each turn costs, by the fourth turn, more forward work
than the turn samples. The torch engine instead keeps the keys and values of every
episode still going, and a turn prefills only what its cache lacks: the observation
the environment appended and the last token of the model's turn (sampled, never fed).

The seam is `TurnBatch` (rlvr/types.py), which an engine with the `KeepsCache`
capability hands out for each batch of episodes:

    turns = engine.turn_batch()
    groups = turns.start(prompts, n, sampling)          # sequences 0 .. len(prompts) * n - 1
    samples, prefilled = turns.extend([0, 3], [stream_0, stream_3], sampling)  # the others ended
    turns.close()

A caller that knows a turn is its episodes' last (the turn limit) says so (`last=True`):
nothing is copied out of the decoding cache for them, and the rows are freed with it.
`extend` takes each sequence's whole stream, not only its new tokens: a kept cache is
used as far as its tokens are a prefix of the stream, so a turn cut short by the
caller, or a cache not kept, stays exact without the engine assuming anything. Its
samples are those of `generate(streams, 1, sampling)`: the same chunks and the same
random draws, with log-probs equal to float rounding (cached keys come from decoding
steps, not from one prefill), so greedy and seeded turns sample the same tokens
(tests/test_multiturn_cache.py).

A kept cache is compact (its sequence's valid slots only, in order), and all of them
together stay within the engine's `kv_budget_gb`: a sequence whose cache would pass it
keeps none and is prefilled whole on its next turn. `Reprefill` is the same seam over
any engine's `generate`, every turn prefilling its whole stream: the torch engine's
option `reuse_cache=false`, and the episode loop's way with backends without the
capability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from rlvr.models.forward import DecodeCache, forward, left_pad
from rlvr.types import Sample, Sampling

# What the torch engine's chunked generation (TorchEngine.generate_chunks) calls:
# Prefill(parts, prompts, n, new_tokens, first row) -> (cache, last logits, next positions,
#                                                      valid prefilled slots [B, P]);
# Keep(cache, valid prefilled slots, first row) -> Leave(rows, their cache rows, lengths),
# told of each row as it leaves the cache.
Prefill = Callable[..., tuple[DecodeCache, Tensor, Tensor, Tensor]]
Leave = Callable[[Tensor, Tensor, Tensor], None]
Keep = Callable[[DecodeCache, Tensor, int], Leave]


def _check(seqs: list[int], streams: list[list[int]], started: int) -> None:
    if len(seqs) != len(streams) or not seqs:
        raise ValueError(f"extend needs one stream per sequence and at least one (got {len(seqs)} sequences, "
                         f"{len(streams)} streams)")
    bad = [s for s in seqs if not isinstance(s, int) or not 0 <= s < started]
    if bad or len(set(seqs)) != len(seqs):
        raise ValueError(f"extend: sequences must be distinct ids of started ones (0..{started - 1}), got "
                         f"{bad[0] if bad else 'repeats'}")
    if not all(streams):
        raise ValueError("extend: every stream needs at least one token")


class Reprefill:
    """A batch of episodes over `engine.generate`: every turn prefills its whole stream."""

    def __init__(self, engine):
        self.engine, self.started = engine, 0

    def start(self, prompts: list[list[int]], n: int, sampling: Sampling) -> list[list[Sample]]:
        groups = self.engine.generate(prompts, n, sampling)
        self.started = len(prompts) * n
        return groups

    def extend(self, seqs: list[int], streams: list[list[int]], sampling: Sampling,
               last: bool = False) -> tuple[list[Sample], list[int]]:
        _check(seqs, streams, self.started)
        return [g[0] for g in self.engine.generate(streams, 1, sampling)], [len(s) for s in streams]

    def close(self) -> None:
        pass


@dataclass
class _Kept:
    ids: list[int]  # the tokens whose keys and values `kv` holds, in order
    kv: list[tuple[Tensor, Tensor]]  # per layer: keys and values [H_kv, len(ids), D]
    size: int  # bytes


def _common_prefix(a: list[int], b: list[int]) -> int:
    if b[:len(a)] == a:  # the usual case: the stream goes on from what the cache holds
        return len(a)
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


class CachedTurns:
    """A batch of episodes on a TorchEngine, each keeping its KV cache between turns."""

    def __init__(self, engine):
        self.engine = engine
        self.started = 0
        self.kept: dict[int, _Kept] = {}
        self.bytes = 0  # of all kept caches
        self._left: dict[int, tuple[list[tuple[Tensor, Tensor]], int]] = {}  # this call's rows, as they left

    def start(self, prompts: list[list[int]], n: int, sampling: Sampling) -> list[list[Sample]]:
        if self.started:
            raise ValueError("start: this batch of episodes has started already; extend it, or take a new one")
        count = len(prompts) * n
        groups = self.engine.generate_chunks(prompts, n, sampling, keep=self._keeper(list(range(count))))
        self.started = count
        self._record(list(range(count)), [p for p in prompts for _ in range(n)], [s for g in groups for s in g])
        return groups

    def extend(self, seqs: list[int], streams: list[list[int]], sampling: Sampling,
               last: bool = False) -> tuple[list[Sample], list[int]]:
        _check(seqs, streams, self.started)
        going = set(seqs)
        for seq in [s for s in self.kept if s not in going]:  # ended: free its cache
            self._drop(seq)
        history = [self._take(seq, stream) for seq, stream in zip(seqs, streams)]
        groups = self.engine.generate_chunks(streams, 1, sampling, prefill=self._prefill(history),
                                             keep=None if last else self._keeper(seqs))
        samples = [g[0] for g in groups]
        self._record(seqs, streams, samples)
        return samples, [len(stream) - m for stream, (m, _) in zip(streams, history)]

    def close(self) -> None:
        self.kept.clear()
        self._left.clear()
        self.bytes = 0

    def _drop(self, seq: int) -> _Kept | None:
        kept = self.kept.pop(seq, None)
        if kept is not None:
            self.bytes -= kept.size
        return kept

    def _take(self, seq: int, stream: list[int]) -> tuple[int, list[tuple[Tensor, Tensor]] | None]:
        """How many of `stream`'s first tokens the sequence's cache holds (at least one token
        is left to prefill: its logits give the first sample), and that cache."""
        kept = self._drop(seq)
        if kept is None:
            return 0, None
        return min(_common_prefix(kept.ids, stream), len(stream) - 1), kept.kv

    def _prefill(self, history: list[tuple[int, list | None]]) -> Prefill:
        """A chunk's cache: each row's kept keys and values (left-padded to the longest),
        then its new tokens, prefilled against them."""
        engine = self.engine

        def prefill(p, streams: list[list[int]], n: int, new_tokens: int, first: int):
            assert n == 1, "a continued sequence samples one completion"
            rows = history[first:first + len(streams)]
            dev = engine.device
            held = [m for m, _ in rows]
            M = max(held)
            ids, new_valid, pos = left_pad([s[m:] for s, m in zip(streams, held)], engine.pad_id, dev)
            pos = pos + torch.tensor(held, device=dev)[:, None]
            B, N = ids.shape
            past_valid = torch.zeros((B, M), dtype=torch.bool, device=dev)
            dtype = p.embed.weight.dtype
            past = [(torch.zeros((B, p.n_kv, M, p.head_dim), dtype=dtype, device=dev),
                     torch.zeros((B, p.n_kv, M, p.head_dim), dtype=dtype, device=dev)) for _ in p.layers]
            for b, (m, kv) in enumerate(rows):
                if m:
                    past_valid[b, M - m:] = True
                    for (k, v), (ck, cv) in zip(past, kv):
                        k[b, :, M - m:], v[b, :, M - m:] = ck[:, :m], cv[:, :m]
            # New tokens see the row's kept tokens and, causally, each other; a pad query sees itself.
            own = (torch.ones((N, N), dtype=torch.bool, device=dev).tril() & new_valid[:, None, :]) | torch.eye(
                N, dtype=torch.bool, device=dev)
            mask = torch.cat([past_valid[:, None, :].expand(B, N, M), own], 2)[:, None]
            hidden, kv = forward(p, ids, pos, mask=mask, prefix=past, return_kv=True)
            kv = [(torch.cat([pk, k], 2), torch.cat([pv, v], 2)) for (pk, pv), (k, v) in zip(past, kv)]
            valid = torch.cat([past_valid, new_valid], 1)
            cache = DecodeCache.from_prefill(kv, valid, 1, new_tokens)
            next_pos = torch.tensor([len(s) for s in streams], device=dev)
            return cache, p.lm_head(hidden[:, -1]), next_pos, valid

        return prefill

    def _keeper(self, seqs: list[int]) -> Keep:
        """Copies each row's valid cache slots out as it leaves the decoding cache, within budget."""
        def keep(cache: DecodeCache, valid: Tensor, first: int) -> Leave:
            P, H = valid.shape[1], cache.kv_heads

            def leave(rows: Tensor, cache_rows: Tensor, lengths: Tensor) -> None:
                for b, r in zip(rows.tolist(), cache_rows.tolist()):
                    # The last sampled token was never fed: slots P .. P + length - 2 hold the rest.
                    fed = max(int(lengths[b]) - 1, 0)
                    idx = torch.cat([valid[b].nonzero().squeeze(1), torch.arange(P, P + fed, device=valid.device)])
                    kv = [(k.view(-1, H, *k.shape[1:])[r].index_select(1, idx),
                           v.view(-1, H, *v.shape[1:])[r].index_select(1, idx)) for k, v in zip(cache.keys, cache.values)]
                    size = sum(k.numel() * k.element_size() * 2 for k, _ in kv)
                    if self.bytes + size <= self.engine.kv_budget:
                        self._left[seqs[first + b]] = kv, size
                        self.bytes += size
            return leave

        return keep

    def _record(self, seqs: list[int], streams: list[list[int]], samples: list[Sample]) -> None:
        """The caches of this call's rows, with the tokens they hold: the stream, then the
        turn less its last token."""
        for seq, stream, sample in zip(seqs, streams, samples):
            left = self._left.pop(seq, None)
            if left is not None:
                ids = list(stream) + sample.completion_ids[:-1]
                assert len(ids) == left[0][0][0].shape[1], "a kept cache must hold exactly its tokens"
                self.kept[seq] = _Kept(ids, *left)
