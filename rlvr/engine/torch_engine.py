"""The torch engine: batched sampling with a preallocated KV cache, on CPU or GPU.

Each prompt is prefilled once and its keys and values are copied to its n samples'
rows of a static cache; decoding then writes one position per step in place. Prompts
are left-padded so every row decodes at the same cache position.

Whose weights: by default the engine owns a copy, so the trainer changes its model
freely (a producer thread generating ahead, an older snapshot) and hands new weights
over with `sync_weights(state, version)`, which is also the seam a Ray rollout worker
implements. With `share=True` the engine generates from the trainer's own model, one
copy of the weights in memory (synchronous RL, evaluation between steps), and
`sync_weights` only records the version. On CPU the weights are fused and prepacked
for oneDNN (see models/forward.py; under LoRA the packed weights include the
adapters). A shared engine builds them at its first `generate` after `sync_weights`
(the trainer's signal that the weights changed), and by default only when they are
small: for a real model the packed copy is a second copy of the weights (0.42 GB for
SmolLM2-135M) and buys 7-16% of generation speed, so a trainer's shared engine of a real
model generates through the model's own modules. An inference-only command (eval,
serve, a local teacher) shares and packs (`pack=True`): one copy plus the packed one.

A multi-turn batch of episodes goes on in `turn_batch()` (rlvr/engine/turns.py): each
live episode keeps its keys and values between turns, so a later turn prefills only
the observation and the turn's last token, not the whole stream (`reuse_cache=False`
prefills it all, as `generate` would).

rlvr's commands build it as the "torch" backend of `make_engine` (rlvr/engine/registry.py),
which maps each role onto these settings (`ROLE_SETTINGS`) and reads the engine's own
options, `TorchOptions`, from `--engine_options` (e.g. `--engine_options='{kv_budget_gb: 4}'`).

    engine = TorchEngine(model, tok)
    groups = engine.generate([prompt_ids], n=8, sampling=Sampling(temperature=1.0))
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field
from torch import Tensor

from rlvr.config import Config
from rlvr.engine.registry import register_engine
from rlvr.engine.sampling import sample_next
from rlvr.engine.turns import CachedTurns, Keep, Leave, Prefill, Reprefill
from rlvr.models.forward import (DecodeCache, can_pack, completion_logprobs, decode_step, forward, left_pad, parts_of,
                                 prefix_mask, share_prompts)
from rlvr.types import Sample, Sampling, TurnBatch


# A shared engine packs weights for oneDNN only below this size (tiny models: packing is
# ~1.4x faster there and the copy costs nothing).
SHARED_PACK_BYTES = 64 * 2**20


def stop_token_ids(model: torch.nn.Module, tokenizer) -> Tensor:
    """The tokens that end a completion: the tokenizer's EOS and every id of the model's
    generation config (often a list: Llama-3.x-Instruct ends a turn with <|eot_id|>,
    Qwen2.5-Instruct with <|im_end|> or <|endoftext|>), as `transformers` `generate` stops."""
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    ids = {tokenizer.eos_token_id} | set(extra if isinstance(extra, (list, tuple)) else [extra])
    ids.discard(None)
    if not ids:
        raise ValueError("the model has no end-of-sequence token (neither its tokenizer nor its generation "
                         "config names one), so no completion could finish")
    return torch.tensor(sorted(ids), dtype=torch.long, device=next(model.parameters()).device)


class TorchEngine:
    def __init__(self, model: torch.nn.Module, tokenizer, version: int = 0, max_batch: int = 1024,
                 share: bool = False, kv_budget_gb: float = 0.5, pack: bool | None = None, reuse_cache: bool = True):
        self.shared, self.pack, self.reuse_cache = share, pack, reuse_cache
        self.model = model if share else copy.deepcopy(model).eval().requires_grad_(False)
        self.tok = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.stop_ids = stop_token_ids(self.model, tokenizer)
        self.version = version
        self.max_batch = max_batch  # completions decoded together at most
        self.kv_budget = kv_budget_gb * 2**30  # and no more than this KV cache holds (and keeps between turns)
        self.parts = None if share else self._build()

    def _build(self):
        # Prepacked fused weights on CPU; the model's own modules elsewhere (GPU), and for a
        # shared engine whose packed copy would be large.
        pack = self.pack
        if pack is None:
            pack = not self.shared or sum(p.numel() * p.element_size() for p in self.model.parameters()) <= SHARED_PACK_BYTES
        return parts_of(self.model, packed=pack and can_pack(self.model))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def sync_weights(self, state: dict[str, Tensor], version: int, partial: bool = False) -> None:
        """New weights, all of them, or with `partial` only those `state` names (a Ray worker
        under LoRA gets the adapters alone; its frozen base never changes)."""
        if self.shared:  # the trainer's own weights: current, but any packed copy of them is not
            self.version, self.parts = version, None
            return
        own = self.model.state_dict()
        unknown = set(state) - set(own)
        if unknown:
            raise KeyError(f"sync_weights: the engine's model has no {sorted(unknown)[:5]}")
        missing = set(own) - set(state)
        if missing and not partial:
            raise KeyError(f"sync_weights: state lacks {sorted(missing)[:5]}")
        for name, t in state.items():
            own[name].copy_(t)
        self.version = version
        self.parts = self._build()

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], n: int, sampling: Sampling) -> list[list[Sample]]:
        return self.generate_chunks(prompts, n, sampling)

    def turn_batch(self) -> TurnBatch:
        """The episodes of a multi-turn batch (rlvr/rollout.py): with `reuse_cache` each
        keeps its KV cache between turns (rlvr/engine/turns.py), else every turn
        prefills the whole stream again."""
        return CachedTurns(self) if self.reuse_cache else Reprefill(self)

    @torch.inference_mode()
    def generate_chunks(self, prompts: list[list[int]], n: int, sampling: Sampling,
                        prefill: Prefill | None = None, keep: Keep | None = None) -> list[list[Sample]]:
        """`generate`, chunk by chunk within the KV budget. `prefill` builds a chunk's cache
        (default: each prompt once, shared by its n samples); `keep(cache, valid, first)`,
        given, returns what to call with the rows leaving the cache (CachedTurns keeps them)."""
        if n < 1 or not prompts:
            raise ValueError(f"generate needs n >= 1 and at least one prompt (got n={n}, {len(prompts)} prompts)")
        gen = None
        if sampling.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(sampling.seed)
        per_chunk = max(1, self.rows_per_chunk(max(len(p) for p in prompts) + sampling.max_new_tokens) // n)
        out: list[list[Sample]] = []
        if self.parts is None:
            self.parts = self._build()
        parts = self.parts
        for start in range(0, len(prompts), per_chunk):
            out.extend(self._generate_chunk(parts, prompts[start:start + per_chunk], n, sampling, gen, start * n,
                                            prefill or self._prefill, keep))
        return out

    @torch.inference_mode()
    def score(self, prompts: list[list[int]], completions: list[list[int]], max_tokens: int = 16384) -> list[list[float]]:
        """The log-prob, at temperature 1, of each completion token after its prompt and
        the tokens before it: a teacher's view of sampled text. Each distinct prompt is
        computed once and its completions attend to its keys and values (a group's n
        samples cost one prompt, not n), in chunks of about `max_tokens` tokens."""
        if len(prompts) != len(completions):
            raise ValueError(f"score needs one completion per prompt (got {len(prompts)} and {len(completions)})")
        if any(c and not p for p, c in zip(prompts, completions)):
            raise ValueError("score needs a prompt of at least one token before each completion")
        if self.parts is None:
            self.parts = self._build()
        out: list[list[float]] = [[] for _ in prompts]
        for chunk in score_chunks(prompts, completions, max_tokens):
            shared = share_prompts([prompts[i] for i in chunk], [completions[i] for i in chunk], self.pad_id,
                                   self.device)
            logp, _ = completion_logprobs(self.parts, *shared, with_entropy=False)
            rows = logp.float().tolist()
            for row, i in zip(rows, chunk):
                out[i] = row[:len(completions[i])]
        return out

    def rows_per_chunk(self, seq_len: int) -> int:
        """Completions decoded together: `max_batch`, or fewer when their KV cache would pass
        the budget (a real model's cache is ~8 MB per row at 170 tokens: 400 rows are 3 GB)."""
        cfg = self.model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        per_row = 2 * cfg.num_hidden_layers * kv_heads * head_dim * seq_len * next(self.model.parameters()).element_size()
        return max(1, min(self.max_batch, int(self.kv_budget // per_row)))

    def _prefill(self, p, prompts: list[list[int]], n: int, new_tokens: int, first: int):
        """Each prompt once, its keys and values copied to its n samples' rows: (the cache,
        the last logits, the next position and the valid prefilled slots of each row)."""
        ids, valid, pos = left_pad(prompts, self.pad_id, self.device)
        hidden, kv = forward(p, ids, pos, mask=prefix_mask(valid), return_kv=True)
        cache = DecodeCache.from_prefill(kv, valid, n, new_tokens)
        del kv
        logits = p.lm_head(hidden[:, -1]).repeat_interleave(n, 0)
        return cache, logits, valid.sum(1).repeat_interleave(n), valid.repeat_interleave(n, 0)

    def _generate_chunk(self, p, prompts, n, sampling: Sampling, gen, first: int, prefill: Prefill,
                        keep: Keep | None) -> list[list[Sample]]:
        cache, logits, next_pos, valid = prefill(p, prompts, n, sampling.max_new_tokens, first)
        leave = None if keep is None else keep(cache, valid, first)
        out = self._decode(p, cache, logits, next_pos, valid.shape[1], sampling, gen, leave)
        return self._to_samples(prompts, n, *out)

    def _decode(self, p, cache: DecodeCache, logits: Tensor, next_pos: Tensor, P: int, sampling: Sampling, gen,
                leave: Leave | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Sample up to `max_new_tokens` for every row from its `logits`, writing cache slot
        P + t at step t; `leave(rows, cache_rows, lengths)` hears of rows as they leave the
        cache (finished ones dropped, the rest at the end)."""
        dev = self.device
        B, T = logits.shape[0], sampling.max_new_tokens
        tokens = torch.full((B, T), self.pad_id, dtype=torch.long, device=dev)
        logps = torch.zeros((B, T), device=dev)
        lengths = torch.full((B,), T, dtype=torch.long, device=dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        stop_ids = self.stop_ids
        if sampling.stop_ids:
            stop_ids = torch.cat([stop_ids, torch.tensor(sampling.stop_ids, dtype=torch.long, device=dev)])
        live = None  # the batch rows the cache still decodes; None: all of them
        for t in range(T):
            # Every row samples, finished ones too (their tokens are cut off below), so the
            # random stream, and with it every live row's tokens, does not depend on when
            # finished rows left the batch.
            tok, lp = sample_next(logits, sampling, gen)
            tokens[:, t], logps[:, t] = tok, lp
            if not sampling.ignore_eos:  # rows only finish at EOS
                ended = torch.isin(tok, stop_ids) & ~done
                if sampling.stop:
                    ended |= self._ends_in_stop_text(tokens, t, ~done & ~ended, sampling.stop)
                lengths = torch.where(ended, t + 1, lengths)
                done |= ended
                # The rows out of the batch have all finished: one count of the rows still
                # decoded says both whether all are done and whether to drop some.
                finished = done if live is None else done[live]
                n_done = int(finished.sum())
                if n_done == finished.shape[0]:
                    break
                if t + 1 < T:
                    live = self._drop_finished(cache, live, finished, n_done, leave, lengths)
            if t + 1 == T:
                break
            if live is None:
                logits = p.lm_head(decode_step(p, tok, next_pos + t, cache, at=P + t))
            else:
                logits[live] = p.lm_head(decode_step(p, tok[live], next_pos[live] + t, cache, at=P + t))
        if leave is not None:
            rows = torch.arange(B, device=dev) if live is None else live
            leave(rows, torch.arange(rows.shape[0], device=dev), lengths)
        return tokens, logps, lengths, done

    def _ends_in_stop_text(self, tokens: Tensor, t: int, rows: Tensor, stop: tuple[str, ...]) -> Tensor:
        """Which of `rows` have just completed one of the `stop` strings with their token `t`.
        Only a window of the last tokens is decoded: long enough to hold the longest stop
        string even when tokens are single bytes of a multi-byte character; an earlier
        occurrence would already have stopped the row."""
        hit = torch.zeros_like(rows)
        live = rows.nonzero().squeeze(1)
        if live.numel() == 0:
            return hit
        window = 4 * max(len(x) for x in stop) + 1
        tails = self.tok.batch_decode(tokens[live, max(0, t + 1 - window):t + 1].tolist(), skip_special_tokens=True)
        found = [any(x in text for x in stop) for text in tails]
        hit[live] = torch.tensor(found, dtype=torch.bool, device=hit.device)
        return hit

    @staticmethod
    def _drop_finished(cache: DecodeCache, live: Tensor | None, finished: Tensor, n_done: int,
                       leave: Leave | None, lengths: Tensor) -> Tensor | None:
        """Once a quarter of the rows being decoded (`finished`: which of them have, `n_done`
        of them) have finished, drop them from the cache: the rest decode without computing
        the finished rows' padding (a group's lengths vary widely; the longest sets the
        loop's length). Returns the rows still decoded."""
        if 4 * n_done < finished.shape[0]:
            return live
        if leave is not None:
            gone = finished.nonzero().squeeze(1)
            leave(gone if live is None else live[gone], gone, lengths)
        keep = (~finished).nonzero().squeeze(1)
        cache.keep(keep)
        return keep if live is None else live[keep]

    def _to_samples(self, prompts, n, tokens, logps, lengths, done) -> list[list[Sample]]:
        tokens, logps = tokens.tolist(), logps.float().tolist()
        lengths, done = lengths.tolist(), done.tolist()
        comps = [tokens[b][:lengths[b]] for b in range(len(tokens))]
        texts = self.tok.batch_decode(comps, skip_special_tokens=True)
        groups = []
        for g, prompt in enumerate(prompts):
            groups.append([
                Sample(problem=None, prompt_ids=list(prompt), completion_ids=comps[b],
                       logprobs=logps[b][:lengths[b]], policy_version=self.version,
                       finish_reason="stop" if done[b] else "length", text=texts[b])
                for b in range(g * n, (g + 1) * n)])
        return groups


class TorchOptions(Config):
    """The torch engine's own options (`--engine_options`)."""

    max_batch: int = Field(1024, ge=1, description="Completions decoded together at most; a command's own cap "
                                                   "(serve's --max_batch) lowers it.")
    kv_budget_gb: float = Field(0.5, gt=0, description="KV cache one decoding chunk may hold, GB: fewer completions "
                                                       "decode together when theirs would pass it (a real model's "
                                                       "is ~8 MB a completion at 170 tokens). Raise it on a large GPU.")
    reuse_cache: bool = Field(True, description="Multi-turn episodes keep their KV cache between turns, so a turn "
                                                "prefills only the tokens added since the last (up to kv_budget_gb "
                                                "of kept cache); false prefills the whole stream every turn.")


# Whose weights each role generates from, and whether they are prepacked (the docstring
# above): `pack=None` packs an own copy always and shared weights only when small.
ROLE_SETTINGS = {
    "trainer": {"share": True, "pack": None},
    "snapshot": {"share": False, "pack": None},
    "inference": {"share": True, "pack": True},
}


def build(model: torch.nn.Module, tok, *, role: str, version: int, max_batch: int | None,
          options: TorchOptions) -> TorchEngine:
    cap = options.max_batch if max_batch is None else min(max_batch, options.max_batch)
    return TorchEngine(model, tok, version=version, max_batch=cap, kv_budget_gb=options.kv_budget_gb,
                       reuse_cache=options.reuse_cache, **ROLE_SETTINGS[role])


register_engine("torch", build, TorchOptions)


def score_chunks(prompts: list[list[int]], completions: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Indices of the sequences to score together: whole groups of one prompt, in the order
    their prompts first appear; a chunk is closed before its padded tokens (its distinct
    prompts padded to the longest, its completions padded to the longest) would pass
    `max_tokens` (a group alone may)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(tuple(p), []).append(i)
    chunks: list[list[int]] = []
    chunk: list[int] = []
    n_prompts = prompt_len = completion_len = 0
    for key, rows in groups.items():
        longest = max(len(completions[i]) for i in rows)
        grown = ((n_prompts + 1) * max(prompt_len, len(key)) + (len(chunk) + len(rows)) * max(completion_len, longest, 1))
        if chunk and grown > max_tokens:
            chunks.append(chunk)
            chunk, n_prompts, prompt_len, completion_len = [], 0, 0, 0
        chunk += rows
        n_prompts, prompt_len, completion_len = n_prompts + 1, max(prompt_len, len(key)), max(completion_len, longest)
    return chunks + ([chunk] if chunk else [])
