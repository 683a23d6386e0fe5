"""A lean forward pass over a Hugging Face Llama-family model, with explicit KV and masks.

Why not `model(...)`: the engine and the RL trainer both need what HF's forward does
not give cheaply: a static KV cache written in place while decoding, and *shared
prompt prefixes* (the n completions of one prompt attend to one copy of the prompt's
keys and values, so a prompt is computed once per group, not n times).

Each decoder layer is seen through `Layer`, a handful of callables. `parts_of(model)`
builds them from the model's own submodules, so gradients, LoRA adapters and dtypes
are exactly the model's (training, GPU); they read the weights at call time, and a
layer sharded as its own FSDP unit is entered through it (`ENTER`, rlvr/train/parallel.py),
so the unit gathers its weights around the layer's computation.
`parts_of(model, packed=True)` fuses q/k/v and gate/up into single weights prepacked for
oneDNN, ~1.4x faster on CPU for the small batched matmuls of decoding (inference only;
rebuild after weights change).
Tested to match `model(...)` logits and `generate` output.

Supported: decoders laid out like Llama's (llama, qwen2, qwen3, mistral; support.py
keeps the list, and refuses the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint as recompute

from rlvr.models.lora import base_of, dense_bias, dense_weight
from rlvr.models.support import unsupported

KV = list[tuple[Tensor, Tensor]]  # per layer: keys, values [B, H_kv, S, D]
Fn = Callable[[Tensor], Tensor]


@dataclass
class Layer:
    in_norm: Fn
    post_norm: Fn
    qkv: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]  # h [B,T,E] -> flat q, k, v
    o: Fn
    mlp: Fn
    q_norm: Fn | None = None  # qwen3 normalises q and k per head
    k_norm: Fn | None = None
    module: torch.nn.Module | None = None  # the decoder layer these read from (`ENTER`)


# A decoder layer sharded as its own FSDP unit carries this method (rlvr/train/parallel.py):
# `forward` runs the layer as `module.rlvr_enter(fn, *args)`, inside the unit's hooks, which
# gather the layer's weights before, free them after, and do the same again in backward.
ENTER = "rlvr_enter"


@dataclass
class Parts:
    embed: torch.nn.Module
    layers: list[Layer]
    norm: torch.nn.Module
    lm_head: Fn
    rotary: torch.nn.Module
    n_heads: int
    n_kv: int
    head_dim: int
    checkpoint: bool = False  # activation checkpointing: recompute each layer in backward
    window: int | None = None  # sliding attention window: longer sequences are refused (check_window)


def _module_layer(m) -> Layer:
    a = m.self_attn
    return Layer(_fused_norm(m.input_layernorm, train=True), _fused_norm(m.post_attention_layernorm, train=True),
                 lambda h: (a.q_proj(h), a.k_proj(h), a.v_proj(h)), a.o_proj, m.mlp,
                 getattr(a, "q_norm", None), getattr(a, "k_norm", None), m)


def _packed_linear(*linears) -> Fn:
    """One oneDNN-prepacked matmul for these linears side by side (their outputs
    concatenated); under LoRA the effective weights, base + adapters."""
    w = torch.ops.mkldnn._reorder_linear_weight(torch.cat([dense_weight(x) for x in linears]).contiguous(), 64)
    biases = [dense_bias(x) for x in linears]
    b = None if biases[0] is None else torch.cat(biases)
    lin = torch.ops.mkldnn._linear_pointwise
    return lambda h: lin(h, w, b, "none", [], "")


def _packed_layer(m) -> Layer:
    a, mlp = m.self_attn, m.mlp
    qkv, o = _packed_linear(a.q_proj, a.k_proj, a.v_proj), _packed_linear(a.o_proj)
    sizes = [a.q_proj.out_features, a.k_proj.out_features, a.v_proj.out_features]
    gate_up, down = _packed_linear(mlp.gate_proj, mlp.up_proj), _packed_linear(mlp.down_proj)
    inter, act = mlp.gate_proj.out_features, mlp.act_fn

    def gated(h):
        gu = gate_up(h)
        return down(act(gu[..., :inter]) * gu[..., inter:])

    return Layer(_fused_norm(m.input_layernorm), _fused_norm(m.post_attention_layernorm),
                 lambda h: qkv(h).split(sizes, dim=-1), o, gated,
                 *(_fused_norm(n) if n is not None else None for n in (getattr(a, "q_norm", None), getattr(a, "k_norm", None))))


def _fused_norm(norm: torch.nn.Module, train: bool = False) -> Fn:
    """One fused op instead of HF RMSNorm's six (same math in fp32; half the memory
    traffic in backward). `train` keeps the live parameter so gradients reach it."""
    if not hasattr(norm, "variance_epsilon") or next(norm.parameters()).dtype != torch.float32:
        return norm  # bf16 and unknown norms: the module's own upcasting code
    eps = norm.variance_epsilon
    if train:
        return lambda x: F.rms_norm(x, norm.weight.shape, norm.weight, eps)
    weight = norm.weight.detach()
    return lambda x: F.rms_norm(x, weight.shape, weight, eps)


def can_pack(model: torch.nn.Module) -> bool:
    p = next(model.parameters())
    return (p.device.type == "cpu" and p.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


# From this many tokens on a vocabulary is a real one: the engine packs its LM head and
# samples it by inverse CDF. Smaller ones (the tiny models) keep the plain paths, which
# cost nothing there and keep their rounding, so seeded tiny-model runs repeat their records.
REAL_VOCAB = 4096

def attention_window(cfg) -> int | None:
    """The sliding attention window of a config that uses one (Mistral's `sliding_window`,
    Qwen's `use_sliding_window` through `layer_types`), or None. rlvr attends to every
    earlier token, which is the same computation only while sequences fit the window."""
    window = getattr(cfg, "sliding_window", None)
    sliding = getattr(cfg, "model_type", None) == "mistral" or "sliding_attention" in (getattr(cfg, "layer_types", None) or ())
    return int(window) if window and sliding else None


def check_window(p: "Parts", length: int) -> None:
    """Refuses a sequence longer than the model's sliding window (see `attention_window`)."""
    if p.window is not None and length > p.window:
        raise NotImplementedError(f"a sequence of {length} tokens is longer than the model's sliding attention window "
                                  f"({p.window}), which rlvr's forward does not implement: keep prompt + new tokens "
                                  f"within {p.window}")


def parts_of(model: torch.nn.Module, packed: bool = False, checkpoint: bool = False) -> Parts:
    """The model's layers as `Parts` (a peft model's adapters included). `checkpoint`
    recomputes each layer's activations in backward instead of keeping them."""
    model = base_of(model)
    inner = getattr(model, "model", None)
    cfg = getattr(model, "config", None)
    why = unsupported(cfg) or (None if inner is not None and hasattr(inner, "rotary_emb") else
                               f"no decoder with rotary embeddings in {type(model).__name__}")
    if why:
        raise NotImplementedError(f"{type(model).__name__}: {why}")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    make = _packed_layer if packed else _module_layer
    # Packed, a real vocabulary's LM head is ~2x faster at decoding's few rows (49k-vocab
    # SmolLM2, 32 rows: 128 against 65 GFLOP/s), at the price of a copy when it is tied to
    # the embedding.
    big = model.lm_head.out_features >= REAL_VOCAB
    head = _packed_linear(model.lm_head) if packed and big else model.lm_head
    return Parts(inner.embed_tokens, [make(m) for m in inner.layers], inner.norm, head,
                 inner.rotary_emb, cfg.num_attention_heads,
                 cfg.num_key_value_heads or cfg.num_attention_heads, head_dim, checkpoint, attention_window(cfg))


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _qkv(layer: Layer, h: Tensor, cos: Tensor, sin: Tensor, p: Parts) -> tuple[Tensor, Tensor, Tensor]:
    """Normed hidden [B, T, E] -> q [B, H, T, D], k and v [B, H_kv, T, D], rotated."""
    B, T, _ = h.shape
    q, k, v = layer.qkv(h)
    q, k = q.view(B, T, -1, p.head_dim), k.view(B, T, -1, p.head_dim)
    if layer.q_norm is not None:
        q, k = layer.q_norm(q), layer.k_norm(k)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q, k = _rope(q.transpose(1, 2), cos, sin), _rope(k.transpose(1, 2), cos, sin)
    return q, k, v.view(B, T, -1, p.head_dim).transpose(1, 2)


def _finish_layer(layer: Layer, h: Tensor, attn: Tensor) -> Tensor:
    """attn [B, H, T, D] -> residual stream after the attention output and the MLP."""
    B, _, T, _ = attn.shape
    h = h + layer.o(attn.transpose(1, 2).reshape(B, T, -1))
    return h + layer.mlp(layer.post_norm(h))


def forward(p: Parts, ids: Tensor, pos: Tensor, mask: Tensor | None = None,
            prefix: KV | None = None, prefix_index: Tensor | None = None,
            return_kv: bool = False) -> tuple[Tensor, KV | None]:
    """Run the decoder on `ids` [B, T] at positions `pos` [B, T]; returns final hidden states.

    `mask` [B, 1, T, S] (bool, True = may attend) covers all keys; None means causal.
    `prefix`: per-layer K/V of shared prompts [G, H, P, D]; row b attends to prompt
    prefix_index[b] first, then to its own tokens (the training path: each prompt is
    computed once per group). `return_kv` also returns the new tokens' per-layer K/V.
    """
    check_window(p, ids.shape[1] + (0 if prefix is None else prefix[0][0].shape[2]))
    h = p.embed(ids)
    cos, sin = p.rotary(h, pos)
    new_kv: KV = []
    run = _recomputed if p.checkpoint and torch.is_grad_enabled() else _layer
    for i, layer in enumerate(p.layers):
        args = (layer, h, cos, sin, mask, None if prefix is None else prefix[i], prefix_index, p)
        enter = None if layer.module is None else getattr(layer.module, ENTER, None)
        h, k, v = run(*args) if enter is None else enter(run, *args)
        if return_kv:
            new_kv.append((k, v))
    return p.norm(h), (new_kv if return_kv else None)


def _recomputed(*args) -> tuple[Tensor, Tensor, Tensor]:
    """`_layer`, its activations recomputed in backward instead of kept."""
    return recompute(_layer, *args, use_reentrant=False)


def _layer(layer: Layer, h: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, prefix: tuple[Tensor, Tensor] | None,
           prefix_index: Tensor | None, p: Parts) -> tuple[Tensor, Tensor, Tensor]:
    """One decoder layer: the new residual stream and this call's own keys and values."""
    q, k, v = _qkv(layer, layer.in_norm(h), cos, sin, p)
    keys, values = k, v
    if prefix is not None:
        pk, pv = prefix
        if prefix_index is not None:
            pk, pv = pk.index_select(0, prefix_index), pv.index_select(0, prefix_index)
        keys, values = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
    # SDPA's is_causal aligns the diagonal top-left, right only without a prefix;
    # with one the caller passes the full mask.
    attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=mask is None and prefix is None,
                                          enable_gqa=p.n_kv != p.n_heads)
    return _finish_layer(layer, h, attn), k, v


@dataclass
class DecodeCache:
    """A static KV cache for one-token decoding: per layer [B * H_kv, S_max, D].

    Decoding attends over the whole buffer with an additive mask (-inf on left padding
    and on positions not written yet) instead of slicing it: on CPU, batched matmuls
    over contiguous buffers beat both SDPA and sliced views at these sizes.
    """

    keys: list[Tensor]
    values: list[Tensor]
    mask: Tensor  # [B * H_kv, 1, S_max] additive
    kv_heads: int

    @classmethod
    def from_prefill(cls, kv: KV, valid: Tensor, n: int, new_tokens: int) -> "DecodeCache":
        G, H, P, D = kv[0][0].shape
        B, S = G * n, P + new_tokens
        keys, values = [], []
        for k, v in kv:
            ck = k.new_zeros(B, H, S, D)
            cv = torch.zeros_like(ck)
            ck[:, :, :P] = k.repeat_interleave(n, 0)
            cv[:, :, :P] = v.repeat_interleave(n, 0)
            keys.append(ck.view(B * H, S, D))
            values.append(cv.view(B * H, S, D))
        mask = k.new_full((B, H, 1, S), float("-inf"))
        prompt = torch.zeros(valid.shape, dtype=k.dtype, device=k.device).masked_fill(~valid, float("-inf"))
        mask[:, :, 0, :P] = prompt.repeat_interleave(n, 0)[:, None]
        return cls(keys, values, mask.view(B * H, 1, S), H)

    def keep(self, rows: Tensor) -> None:
        """Keep only cache rows `rows` (indices, in order): finished completions leave the batch."""
        def pick(x: Tensor) -> Tensor:
            return x.view(-1, self.kv_heads, *x.shape[1:]).index_select(0, rows).flatten(0, 1)
        self.keys, self.values = [pick(k) for k in self.keys], [pick(v) for v in self.values]
        self.mask = pick(self.mask)


def decode_step(p: Parts, tok: Tensor, pos: Tensor, cache: DecodeCache, at: int) -> Tensor:
    """Feed one token per row (tok, pos: [B]) and write cache slot `at`; returns hidden [B, E]."""
    check_window(p, at + 1)
    h = p.embed(tok[:, None])
    cos, sin = p.rotary(h, pos[:, None])
    cache.mask[:, :, at] = 0.0
    B, groups, scale = tok.shape[0], p.n_heads // p.n_kv, p.head_dim ** -0.5
    for i, layer in enumerate(p.layers):
        q, k, v = _qkv(layer, layer.in_norm(h), cos, sin, p)
        K, V = cache.keys[i], cache.values[i]
        K.view(B, p.n_kv, -1, p.head_dim)[:, :, at] = k[:, :, 0]
        V.view(B, p.n_kv, -1, p.head_dim)[:, :, at] = v[:, :, 0]
        # Query heads sharing a KV head become rows of one matmul (GQA without copies).
        scores = torch.baddbmm(cache.mask, q.reshape(B * p.n_kv, groups, p.head_dim),
                               K.transpose(1, 2), alpha=scale)
        attn = torch.bmm(torch.softmax(scores, -1), V).view(B, p.n_heads, 1, p.head_dim)
        h = _finish_layer(layer, h, attn)
    return p.norm(h)[:, 0]


def left_pad(seqs: list[list[int]], pad_id: int, device=None) -> tuple[Tensor, Tensor, Tensor]:
    """Left-pad to a batch: ids [B, P], valid [B, P] bool, positions [B, P] (0 at first real token)."""
    P = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), P), pad_id, dtype=torch.long)
    valid = torch.zeros((len(seqs), P), dtype=torch.bool)
    for b, s in enumerate(seqs):
        if s:
            ids[b, P - len(s):] = torch.tensor(s, dtype=torch.long)
            valid[b, P - len(s):] = True
    pos = (valid.long().cumsum(1) - 1).clamp(min=0)
    return ids.to(device), valid.to(device), pos.to(device)


def share_prompts(prompts: list[list[int]], completions: list[list[int]], pad_id: int,
                  device=None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Completions that continue prompts, each distinct prompt once: its ids, valid and
    positions [G, P] (left-padded), `group` [B] (the prompt row each completion continues),
    the completions' ids [B, T] (right-padded) and their positions [B, T]."""
    index: dict[tuple[int, ...], int] = {}
    rows: list[list[int]] = []
    group = []
    for p in prompts:
        key = tuple(p)
        if key not in index:
            index[key] = len(rows)
            rows.append(list(p))
        group.append(index[key])
    p_ids, p_valid, p_pos = left_pad(rows, pad_id)
    T = max(1, max((len(c) for c in completions), default=1))
    ids = torch.full((len(completions), T), pad_id, dtype=torch.long)
    for b, c in enumerate(completions):
        if c:
            ids[b, :len(c)] = torch.tensor(c, dtype=torch.long)
    group_t = torch.tensor(group, dtype=torch.long)
    pos = p_valid.sum(1)[group_t][:, None] + torch.arange(T)[None, :]
    return tuple(t.to(device) for t in (p_ids, p_valid, p_pos, group_t, ids, pos))  # type: ignore[return-value]


def completion_logprobs(p: Parts, prompt_ids: Tensor, prompt_valid: Tensor, prompt_pos: Tensor, group: Tensor,
                        ids: Tensor, pos: Tensor, temperature: float = 1.0, with_entropy: bool = True,
                        boundary: Callable[[list[Tensor]], list[Tensor]] | None = None) -> tuple[Tensor, Tensor | None]:
    """Per-token log-probs [B, T] (at `temperature`) of completions `ids` after their shared
    prompts (`share_prompts`' tensors), and entropies: each prompt computed once, its keys
    and values attended to by every completion that continues it. `boundary` sees the
    prompt pass's outputs (its last hidden state, then each layer's K and V) before the
    completions read them (the trainer frees the prompt's graph there)."""
    from rlvr.models.lm_head import head_logprobs

    h_prompt, kv = forward(p, prompt_ids, prompt_pos, mask=prefix_mask(prompt_valid), return_kv=True)
    tensors = [h_prompt[:, -1]] + [t for pair in kv for t in pair]
    last, *flat = boundary(tensors) if boundary else tensors
    kv = list(zip(flat[0::2], flat[1::2]))
    B, T = ids.shape
    P = prompt_ids.shape[1]
    own = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
    mask = torch.cat([prompt_valid[group][:, None, None, :].expand(B, 1, T, P),
                      own[None, None].expand(B, 1, T, T)], dim=-1)
    h, _ = forward(p, ids, pos, mask=mask, prefix=kv, prefix_index=group)
    # Token t is predicted from position t-1; the first from the prompt's last position.
    h = torch.cat([last[group][:, None], h[:, :-1]], dim=1)
    return head_logprobs(p.lm_head, h, ids, temperature, with_entropy)


def prefix_mask(valid: Tensor) -> Tensor | None:
    """Causal mask over a left-padded prompt batch [B, 1, P, P]; None if nothing is padded.

    Pad queries may see themselves, so no softmax row is empty (an all-masked row gives
    NaN, which would leak into gradients).
    """
    if bool(valid.all()):
        return None
    P = valid.shape[1]
    causal = torch.ones(P, P, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(P, dtype=torch.bool, device=valid.device)
    return ((causal & valid[:, None, :]) | eye)[:, None]
