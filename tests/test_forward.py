"""rlvr's lean forward pass (rlvr/models/forward.py) against Hugging Face's `model(...)`.

The engine and the RL trainer both run their own forward instead of HF's, so it must
give HF's logits exactly: on a left-padded batch, with the oneDNN-packed weights, with
shared prompt prefixes (the prompt computed once, its K/V reused by each completion)
and through backward. Qwen2 (the tiny preset, q/k/v biases), Qwen3 (q_norm/k_norm,
head_dim != hidden/heads) and a GQA Llama are all checked. Tiny random-init models, so
the whole file runs in a few seconds:

    .venv/bin/python -m pytest tests/test_forward.py -q
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from rlvr.models.forward import forward, left_pad, parts_of, prefix_mask
from rlvr.models.tiny import build_tiny_model
from rlvr.models.tokenizer import build_char_tokenizer

QUESTIONS = ["1+2", "12+345", "7", "99*9=?", "3-1"]


def _small_config(kind: str, tok, **extra):
    """A 2-layer model of another Llama-family architecture, random init."""
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  max_position_embeddings=256, initializer_range=0.1, tie_word_embeddings=False,
                  bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if kind == "qwen3":  # per-head q/k RMSNorm, GQA, and head_dim * heads != hidden
        return Qwen3ForCausalLM(Qwen3Config(num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                                            **common, **extra))
    if kind == "llama_gqa":  # one KV head for four query heads
        return LlamaForCausalLM(LlamaConfig(num_attention_heads=4, num_key_value_heads=1, **common, **extra))
    raise ValueError(kind)


def make_model(kind: str, seed: int = 0, **extra):
    if kind == "micro":
        model, tok = build_tiny_model("micro", seed=seed)
    else:
        tok = build_char_tokenizer()
        torch.manual_seed(seed)
        model = _small_config(kind, tok, **extra)
    return model.eval(), tok


def chat_ids(tok, question: str) -> list[int]:
    return tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                   tokenize=True, return_dict=False)


def hf_logits(model, ids, valid, pos):
    return model(input_ids=ids, attention_mask=valid.long(), position_ids=pos).logits


KINDS = ["micro", "qwen3", "llama_gqa"]


# (a) + (d): a left-padded batch, plain and packed weights, three architectures.
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("packed,tol", [(False, 1e-5), (True, 1e-4)])
def test_padded_batch_matches_hf(kind, packed, tol):
    model, tok = make_model(kind)
    ids, valid, pos = left_pad([chat_ids(tok, q) for q in QUESTIONS], tok.pad_token_id)
    assert not bool(valid.all())  # the batch really is padded
    with torch.no_grad():
        hidden, kv = forward(parts_of(model, packed=packed), ids, pos, mask=prefix_mask(valid))
        ours = model.lm_head(hidden)
        ref = hf_logits(model, ids, valid, pos)
    assert kv is None
    torch.testing.assert_close(ours[valid], ref[valid], atol=tol, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_unpadded_batch_uses_causal_path(kind):
    model, tok = make_model(kind)
    seqs = [chat_ids(tok, q) for q in ["12+34", "56+78"]]  # equal lengths: no mask at all
    ids, valid, pos = left_pad(seqs, tok.pad_token_id)
    assert prefix_mask(valid) is None
    with torch.no_grad():
        hidden, _ = forward(parts_of(model), ids, pos)
        torch.testing.assert_close(model.lm_head(hidden), model(input_ids=ids).logits, atol=1e-5, rtol=0)


# (b): the shared-prefix path.
def _group_batch(tok, n: int, seed: int = 1):
    """Prompts of different lengths and n completions each, of different lengths (right-padded)."""
    g = torch.Generator().manual_seed(seed)
    prompts = [chat_ids(tok, q) for q in QUESTIONS[:3]]
    comps = [torch.randint(6, len(tok), (int(L),), generator=g).tolist()
             for L in torch.randint(2, 9, (len(prompts) * n,), generator=g)]
    return prompts, comps


def prefix_inputs(prompts, comps, n, pad_id):
    """Everything the prefix path needs: prompt batch, completion batch, index, positions, mask."""
    p_ids, p_valid, p_pos = left_pad(prompts, pad_id)
    B, C = len(comps), max(len(c) for c in comps)
    c_ids = torch.full((B, C), pad_id, dtype=torch.long)
    c_valid = torch.zeros(B, C, dtype=torch.bool)
    for b, c in enumerate(comps):
        c_ids[b, :len(c)] = torch.tensor(c)
        c_valid[b, :len(c)] = True
    index = torch.arange(len(prompts)).repeat_interleave(n)
    c_pos = p_valid.sum(1)[index, None] + torch.arange(C)[None]
    # A completion token sees its prompt's real tokens, then its own tokens causally.
    # Right padding is harmless: a real token never looks ahead, pad rows are ignored.
    see_prompt = p_valid[index][:, None, :].expand(B, C, -1)
    causal = torch.ones(C, C, dtype=torch.bool).tril().expand(B, C, C)
    mask = torch.cat([see_prompt, causal], dim=-1)[:, None]
    return (p_ids, p_valid, p_pos), (c_ids, c_valid, c_pos), index, mask


def prefix_path_logits(model, prompts, comps, n, pad_id, packed=False):
    (p_ids, p_valid, p_pos), (c_ids, c_valid, c_pos), index, mask = prefix_inputs(prompts, comps, n, pad_id)
    parts = parts_of(model, packed=packed)
    _, kv = forward(parts, p_ids, p_pos, mask=prefix_mask(p_valid), return_kv=True)
    assert len(kv) == len(parts.layers) and kv[0][0].shape[:3] == (len(prompts), parts.n_kv, p_ids.shape[1])
    hidden, _ = forward(parts, c_ids, c_pos, mask=mask, prefix=kv, prefix_index=index)
    return model.lm_head(hidden), c_valid


def full_sequence_logits(model, prompts, comps, n):
    """HF on each whole prompt+completion sequence, alone; logits at the completion tokens."""
    out = []
    for b, c in enumerate(comps):
        p = prompts[b // n]
        ids = torch.tensor([p + c])
        out.append(model(input_ids=ids).logits[0, len(p):])
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("packed,tol", [(False, 1e-5), (True, 1e-4)])
def test_prefix_path_matches_full_sequences(kind, packed, tol):
    model, tok = make_model(kind)
    n = 2
    prompts, comps = _group_batch(tok, n)
    with torch.no_grad():
        ours, c_valid = prefix_path_logits(model, prompts, comps, n, tok.pad_token_id, packed=packed)
        refs = full_sequence_logits(model, prompts, comps, n)
    for b, ref in enumerate(refs):
        torch.testing.assert_close(ours[b, c_valid[b]], ref, atol=tol, rtol=0)


# (c): gradients through the shared prefix equal those of the plain full-sequence path.
def _loss(logits_rows, comps, weights):
    """A weighted sum of next-token log-probs over each completion (targets: its next tokens)."""
    total = 0.0
    for b, (lg, c) in enumerate(zip(logits_rows, comps)):
        lp = torch.log_softmax(lg[:-1], -1).gather(1, torch.tensor(c[1:])[:, None]).squeeze(1)
        total = total + (weights[b] * lp).sum()
    return total


@pytest.mark.parametrize("kind", ["micro", "qwen3"])
def test_prefix_path_gradients_match_full_sequences(kind):
    model, tok = make_model(kind)
    n = 3
    prompts, comps = _group_batch(tok, n, seed=2)
    weights = torch.linspace(-1.0, 2.0, len(comps))
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
             "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight",
             "model.layers.1.mlp.down_proj.weight", "model.layers.1.input_layernorm.weight", "model.norm.weight"]
    if kind == "qwen3":
        names.append("model.layers.0.self_attn.k_norm.weight")
    else:
        names.append("model.layers.0.self_attn.k_proj.bias")
    params = dict(model.named_parameters())

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {k: params[k].grad.clone() for k in names}

    ours, c_valid = prefix_path_logits(model, prompts, comps, n, tok.pad_token_id)
    g_prefix = grads(_loss([ours[b, c_valid[b]] for b in range(len(comps))], comps, weights))
    g_full = grads(_loss(full_sequence_logits(model, prompts, comps, n), comps, weights))
    for k in names:
        assert g_full[k].abs().max() > 0, k  # the parameter is really on the path
        torch.testing.assert_close(g_prefix[k], g_full[k], atol=1e-5, rtol=1e-4, msg=k)


def test_unsupported_architecture_raises():
    with pytest.raises(NotImplementedError):
        parts_of(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("rope", ["dynamic", "longrope"])
def test_a_rope_scaling_that_depends_on_the_length_is_refused(rope):
    """transformers picks these frequencies from the longest position of each call, so the
    prompt pass, every decode step and training would each rotate differently."""
    extra = {"original_max_position_embeddings": 16} if rope == "longrope" else {}
    params = {"rope_type": rope, "factor": 2.0, **({"short_factor": [1.0] * 8, "long_factor": [1.0] * 8}
                                                    if rope == "longrope" else {})}
    model, _ = make_model("llama_gqa", rope_parameters=params, **extra)
    with pytest.raises(NotImplementedError, match=f"RoPE scaling '{rope}' changes with the sequence length"):
        parts_of(model)
    for fine in ("linear", "llama3", "yarn"):  # the same at every length: these match HF (engine tests)
        params = {"rope_type": fine, "factor": 2.0}
        if fine == "llama3":
            params.update(low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64)
        parts_of(make_model("llama_gqa", rope_parameters=params)[0])


def test_a_sliding_window_matches_hf_inside_it_and_is_refused_past_it():
    """rlvr attends to every earlier token: the same as Mistral's sliding window while a
    sequence fits in it, so longer ones are refused, never silently computed otherwise."""
    from transformers import MistralConfig, MistralForCausalLM

    from rlvr.engine import TorchEngine
    from rlvr.types import Sampling

    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, sliding_window=24, initializer_range=0.1,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).eval()
    prompt = [chat_ids(tok, "1+2")]
    # the last token sampled is never fed: 25 - P new tokens feed 24 (the window), 26 - P feed 25
    inside = Sampling(temperature=0.0, max_new_tokens=25 - len(prompt[0]), ignore_eos=True)
    ours = TorchEngine(model, tok).generate(prompt, 1, inside)[0][0].completion_ids
    hf = model.generate(torch.tensor(prompt), max_new_tokens=inside.max_new_tokens, do_sample=False,
                        eos_token_id=None)[0, len(prompt[0]):].tolist()
    assert ours == hf
    past = Sampling(temperature=0.0, max_new_tokens=26 - len(prompt[0]), ignore_eos=True)
    with pytest.raises(NotImplementedError, match=r"longer than the model's sliding attention window \(24\)"):
        TorchEngine(model, tok).generate(prompt, 1, past)


# A known gap, kept visible: the packed (oneDNN) layer fuses q/k/v, o, gate/up and down
# weights but carries only the q/k/v bias, so a Llama with attention_bias=True (o_proj
# bias) or mlp_bias=True computes different logits on CPU, where the engine packs.
def test_unpacked_keeps_output_and_mlp_biases():
    # Control for the test below: through the model's own modules, biases are kept.
    model, tok = _biased_llama(attention_bias=True, mlp_bias=True)
    ids, valid, pos = left_pad([chat_ids(tok, q) for q in QUESTIONS], tok.pad_token_id)
    with torch.no_grad():
        hidden, _ = forward(parts_of(model), ids, pos, mask=prefix_mask(valid))
        torch.testing.assert_close(model.lm_head(hidden)[valid], hf_logits(model, ids, valid, pos)[valid],
                                   atol=1e-5, rtol=0)


def _biased_llama(**bias):
    model, tok = make_model("llama_gqa", **bias)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if name.endswith("bias"):
                prm.normal_(0, 0.5)  # HF initialises biases at zero, which would hide a dropped one
    return model, tok


@pytest.mark.parametrize("bias", ["attention_bias", "mlp_bias"])
def test_packed_keeps_output_and_mlp_biases(bias):
    model, tok = _biased_llama(**{bias: True})
    ids, valid, pos = left_pad([chat_ids(tok, q) for q in QUESTIONS], tok.pad_token_id)
    with torch.no_grad():
        hidden, _ = forward(parts_of(model, packed=True), ids, pos, mask=prefix_mask(valid))
        torch.testing.assert_close(model.lm_head(hidden)[valid], hf_logits(model, ids, valid, pos)[valid],
                                   atol=1e-4, rtol=0)
