"""The torch engine (rlvr/engine/torch_engine.py) against Hugging Face `generate` and a recomputation.

What the rest of rlvr relies on: greedy decoding is HF's greedy decoding (left-padded
batches, GQA, chunking); the behaviour log-probs are what the trainer will recompute;
samples come back grouped, versioned, stopped at EOS or cut at max_new_tokens; seeds
reproduce; `sync_weights` really swaps the weights. Micro models (one trained for a
fraction of a second so that it answers and stops), so the file runs in seconds:

    .venv/bin/python -m pytest tests/test_engine.py -q
"""

from __future__ import annotations

import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from rlvr.engine import TorchEngine
from rlvr.models.forward import left_pad
from rlvr.models.tiny import build_tiny_model
from rlvr.models.tokenizer import build_char_tokenizer
from rlvr.types import Sampling

QUESTIONS = ["1+2", "12+34", "7+80", "99+9", "3+1", "45+45"]


def chat_ids(tok, question: str) -> list[int]:
    return tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                   tokenize=True, return_dict=False)


def prompts_of(tok, questions=QUESTIONS) -> list[list[int]]:
    return [chat_ids(tok, q) for q in questions]


def other_arch(kind: str, seed: int = 0):
    """A random-init 2-layer Qwen3 (q/k norm) or GQA Llama sharing the char tokenizer."""
    tok = build_char_tokenizer()
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  max_position_embeddings=256, initializer_range=0.1, tie_word_embeddings=False,
                  bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if kind == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(num_attention_heads=4, num_key_value_heads=2, head_dim=24, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(num_attention_heads=4, num_key_value_heads=1, **common))
    return model.eval(), tok


@pytest.fixture(scope="module")
def trained():
    """The micro model after 80 steps on "a+b" chats: it answers in digits and stops with EOS."""
    model, tok = build_tiny_model("micro", seed=0)
    rng = random.Random(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(80):
        seqs = []
        for _ in range(32):
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            seqs.append(chat_ids(tok, f"{a}+{b}") + tok.encode(str(a + b), add_special_tokens=False)
                        + [tok.eos_token_id])
        ids, valid, pos = left_pad(seqs, tok.pad_token_id)
        logits = model(input_ids=ids, attention_mask=valid.long(), position_ids=pos).logits
        keep = valid[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1][keep], ids[:, 1:][keep])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok


def hf_greedy(model, tok, prompts, max_new_tokens) -> list[list[int]]:
    """HF greedy completions of a left-padded batch, cut after the first EOS."""
    ids, valid, _ = left_pad(prompts, tok.pad_token_id)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=valid.long(), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
    comps = []
    for row in out[:, ids.shape[1]:].tolist():
        comps.append(row[:row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row)
    return comps


def completions(groups) -> list[list[int]]:
    return [s.completion_ids for g in groups for s in g]


GREEDY = Sampling(temperature=0.0, max_new_tokens=12)


@pytest.mark.parametrize("kind", ["trained", "random", "qwen3", "llama_gqa"])
def test_greedy_matches_hf_generate(kind, request):
    if kind == "trained":
        model, tok = request.getfixturevalue("trained")
    elif kind == "random":
        model, tok = build_tiny_model("micro", seed=3)
        model.eval()
    else:
        model, tok = other_arch(kind)
    prompts = prompts_of(tok)
    groups = TorchEngine(model, tok).generate(prompts, n=1, sampling=GREEDY)
    ours, ref = completions(groups), hf_greedy(model, tok, prompts, GREEDY.max_new_tokens)
    assert ours == ref
    for s in (g[0] for g in groups):
        if s.finish_reason == "stop":
            assert s.completion_ids[-1] == tok.eos_token_id
        else:
            assert len(s.completion_ids) == GREEDY.max_new_tokens
    if kind == "trained":  # the trained model really exercises the EOS path
        assert all(g[0].finish_reason == "stop" for g in groups)
        assert all(g[0].text.isdigit() for g in groups)


def test_logprobs_match_full_recomputation(trained):
    model, tok = trained
    prompts = prompts_of(tok)[:4]
    sampling = Sampling(temperature=0.7, max_new_tokens=10, seed=0)
    groups = TorchEngine(model, tok).generate(prompts, n=3, sampling=sampling)
    checked = 0
    for prompt, group in zip(prompts, groups):
        for s in group:
            assert len(s.logprobs) == len(s.completion_ids) > 0
            full = torch.tensor([prompt + s.completion_ids])
            with torch.no_grad():
                logits = model(input_ids=full).logits[0, len(prompt) - 1:-1]
            ref = torch.log_softmax(logits / sampling.temperature, -1)
            ref = ref.gather(1, torch.tensor(s.completion_ids)[:, None]).squeeze(1)
            torch.testing.assert_close(torch.tensor(s.logprobs), ref, atol=1e-4, rtol=0)
            checked += len(s.logprobs)
    assert checked >= 12


def test_n_samples_grouped_with_prompts_and_version(trained):
    model, tok = trained
    prompts = prompts_of(tok)[:4]
    groups = TorchEngine(model, tok, version=7).generate(prompts, n=3, sampling=Sampling(max_new_tokens=6, seed=1))
    assert len(groups) == len(prompts)
    for prompt, group in zip(prompts, groups):
        assert len(group) == 3
        for s in group:
            assert s.prompt_ids == prompt
            assert s.policy_version == 7
            assert len(s.logprobs) == len(s.completion_ids)
            assert all(lp <= 0.0 for lp in s.logprobs)
            assert s.text == tok.decode(s.completion_ids, skip_special_tokens=True)


def test_finish_reasons_stop_and_length():
    # Random init is close to uniform over ~100 tokens: with 32 samples of 24 tokens,
    # some hit EOS by chance and some do not (the seed makes it deterministic).
    model, tok = build_tiny_model("micro", seed=0)
    engine = TorchEngine(model, tok)
    eos, T = tok.eos_token_id, 24
    samples = [s for g in engine.generate(prompts_of(tok)[:2], n=16, sampling=Sampling(max_new_tokens=T, seed=0))
               for s in g]
    reasons = {s.finish_reason for s in samples}
    assert reasons == {"stop", "length"}
    for s in samples:
        if s.finish_reason == "stop":
            assert s.completion_ids[-1] == eos and eos not in s.completion_ids[:-1]
            assert len(s.completion_ids) <= T
        else:
            assert len(s.completion_ids) == T and eos not in s.completion_ids
    # ignore_eos: every sample runs to the full length, EOS or not.
    samples = [s for g in engine.generate(prompts_of(tok)[:2], n=16,
                                          sampling=Sampling(max_new_tokens=T, seed=0, ignore_eos=True)) for s in g]
    assert all(s.finish_reason == "length" and len(s.completion_ids) == T for s in samples)
    assert any(eos in s.completion_ids for s in samples)


def test_every_end_token_of_the_generation_config_stops_as_in_hf_generate():
    """Instruct models end a turn with one of several ids (Llama-3.x: <|eot_id|> or
    <|end_of_text|>), listed in the generation config, not only the tokenizer's EOS."""
    model, tok = build_tiny_model("micro", seed=0)
    prompt = prompts_of(tok)[:1]
    greedy = Sampling(temperature=0.0, max_new_tokens=12)
    first = TorchEngine(model, tok).generate(prompt, 1, greedy)[0][0]
    other = first.completion_ids[0]  # pretend this token is a second end-of-turn id
    assert other != tok.eos_token_id and first.finish_reason == "length"
    model.generation_config.eos_token_id = [tok.eos_token_id, other]
    hf = model.generate(torch.tensor(prompt), max_new_tokens=12, do_sample=False)[0, len(prompt[0]):].tolist()
    ours = TorchEngine(model, tok).generate(prompt, 1, greedy)[0][0]
    assert ours.completion_ids == hf == [other] and ours.finish_reason == "stop"


def test_seed_reproduces_and_differs():
    model, tok = build_tiny_model("micro", seed=0)
    engine, prompts = TorchEngine(model, tok), prompts_of(tok)[:3]

    def run(seed):
        return completions(engine.generate(prompts, n=4, sampling=Sampling(max_new_tokens=8, seed=seed)))

    a = run(11)
    assert a == run(11)
    assert a != run(12)


def test_tiny_top_p_is_greedy(trained):
    model, tok = trained
    engine, prompts = TorchEngine(model, tok), prompts_of(tok)
    greedy = completions(engine.generate(prompts, n=2, sampling=GREEDY))
    nucleus = completions(engine.generate(prompts, n=2, sampling=Sampling(temperature=1.0, top_p=1e-6,
                                                                          max_new_tokens=12, seed=5)))
    assert nucleus == greedy


def test_sync_weights(trained):
    model, tok = trained
    other, _ = build_tiny_model("micro", seed=1)
    other.eval()
    prompts = prompts_of(tok)
    engine = TorchEngine(model, tok)
    before = completions(engine.generate(prompts, n=1, sampling=GREEDY))
    engine.sync_weights(other.state_dict(), version=3)
    after = engine.generate(prompts, n=1, sampling=GREEDY)
    assert completions(after) != before
    assert completions(after) == hf_greedy(other, tok, prompts, GREEDY.max_new_tokens)
    assert engine.version == 3 and all(g[0].policy_version == 3 for g in after)
    # And back: the engine's weights are its own copy, so the trainer's model is intact.
    engine.sync_weights(model.state_dict(), version=4)
    assert completions(engine.generate(prompts, n=1, sampling=GREEDY)) == before

    state = dict(other.state_dict())
    state.pop("model.layers.0.mlp.up_proj.weight")
    with pytest.raises(KeyError):
        engine.sync_weights(state, version=5)
    assert engine.version == 4


def test_engine_does_not_alias_the_trainer_model(trained):
    model, tok = trained
    prompts = prompts_of(tok)
    engine = TorchEngine(model, tok)
    before = completions(engine.generate(prompts, n=1, sampling=GREEDY))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm))
    try:
        assert completions(engine.generate(prompts, n=1, sampling=GREEDY)) == before
    finally:
        model.load_state_dict(saved)


def test_chunking_gives_same_greedy_results(trained):
    model, tok = trained
    prompts = prompts_of(tok)  # 6 prompts x n=2 = 12 completions, in chunks of 3 or 1 prompts
    whole = TorchEngine(model, tok).generate(prompts, n=2, sampling=GREEDY)
    for max_batch in (7, 2, 1):
        chunked = TorchEngine(model, tok, max_batch=max_batch).generate(prompts, n=2, sampling=GREEDY)
        assert [[s.completion_ids for s in g] for g in chunked] == [[s.completion_ids for s in g] for g in whole]
        assert [[s.prompt_ids for s in g] for g in chunked] == [[s.prompt_ids for s in g] for g in whole]


def test_bad_arguments_raise(trained):
    model, tok = trained
    engine = TorchEngine(model, tok)
    with pytest.raises(ValueError):
        engine.generate(prompts_of(tok), n=0, sampling=GREEDY)
    with pytest.raises(ValueError):
        engine.generate([], n=1, sampling=GREEDY)


def test_inverse_cdf_draw_follows_the_distribution():
    """Large vocabularies sample by inverse CDF (one uniform per row): the draws follow the
    probabilities, never pick a token without mass, and repeat under a seed."""
    from rlvr.engine.sampling import draw
    from rlvr.models.forward import REAL_VOCAB

    V = REAL_VOCAB * 2
    probs = torch.zeros(V)
    probs[[0, 7, V // 2, V - 1]] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    rows = probs.expand(20000, V) * 3.0  # unnormalised rows are fine
    tok = draw(rows, torch.Generator().manual_seed(0))
    assert set(tok.tolist()) <= {0, 7, V // 2, V - 1}
    freq = torch.stack([(tok == i).float().mean() for i in (0, 7, V // 2, V - 1)])
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.015)
    again = draw(rows, torch.Generator().manual_seed(0))
    assert torch.equal(tok, again)


def test_packed_parts_pack_a_large_vocabularys_head():
    """A real vocabulary's LM head is prepacked with the layers (decoding's few rows run ~2x
    faster); its logits are the module's to rounding. A small vocabulary's head stays the module."""
    from rlvr.models.forward import parts_of

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=5000, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    h = torch.randn(3, 7, 64)
    packed = parts_of(model, packed=True)
    assert packed.lm_head is not model.lm_head
    with torch.no_grad():
        assert torch.allclose(packed.lm_head(h), model.lm_head(h), atol=1e-4)
    small, _ = build_tiny_model("micro", seed=0)
    assert parts_of(small, packed=True).lm_head is small.lm_head


def test_dropping_finished_rows_changes_no_sample(monkeypatch):
    """Rows that hit EOS leave the decode batch; every sample, tokens and log-probs, is what
    decoding all rows to the end gives (finished rows still draw, so the stream is the same)."""
    model, tok = build_tiny_model("micro", seed=0)
    engine, prompts = TorchEngine(model, tok), prompts_of(tok)[:3]
    drops = []
    real = TorchEngine._drop_finished

    def spy(cache, live, finished, n_done, *hear):
        out = real(cache, live, finished, n_done, *hear)
        drops.append(0 if out is None else out.numel())
        return out

    def run():
        return [s for g in engine.generate(prompts, n=16, sampling=Sampling(max_new_tokens=40, seed=2)) for s in g]

    monkeypatch.setattr(TorchEngine, "_drop_finished", staticmethod(spy))
    dropped = run()
    assert any(0 < rows < 48 for rows in drops)  # the batch did shrink
    monkeypatch.setattr(TorchEngine, "_drop_finished", staticmethod(lambda cache, live, finished, n_done, *hear: live))
    full = run()
    assert {s.finish_reason for s in full} == {"stop", "length"}
    for a, b in zip(dropped, full):
        assert a.completion_ids == b.completion_ids and a.finish_reason == b.finish_reason
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def test_score_gives_each_sampled_token_the_logprob_the_engine_sampled_it_with():
    """A teacher's view of text: one forward per sequence, any chunking, equals sampling's log-probs at T=1."""
    from rlvr.models import build_tiny_model

    model, tok = build_tiny_model("micro", seed=3)
    engine = TorchEngine(model, tok)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ("12+34=", "7*8=")]
    groups = engine.generate(prompts, 3, Sampling(max_new_tokens=12, seed=1))
    samples = [s for g in groups for s in g]
    mixed = [samples[i] for i in (0, 3, 1, 4, 2, 5)]  # the groups interleaved: answers keep the order asked
    for budget in (16384, 40, 1):
        for batch in (samples, mixed):
            scored = engine.score([s.prompt_ids for s in batch], [s.completion_ids for s in batch], max_tokens=budget)
            for s, lp in zip(batch, scored):
                assert len(lp) == len(s.completion_ids)
                assert max(abs(a - b) for a, b in zip(lp, s.logprobs)) < 1e-4


def test_score_chunks_keep_a_prompts_group_whole_and_under_the_token_budget():
    from rlvr.engine.torch_engine import score_chunks

    prompts = [[1, 2, 3], [4, 5], [1, 2, 3], [4, 5], [6], [1, 2, 3]]
    completions = [[7] * 4, [7] * 2, [7] * 5, [], [7], [7]]
    assert score_chunks(prompts, completions, 10_000) == [[0, 2, 5, 1, 3, 4]]
    # group [0, 2, 5]: one prompt of 3 + 3 rows x 5 = 18 tokens; adding [1, 3] would make 2 x 3 + 5 x 5 = 31
    assert score_chunks(prompts, completions, 30) == [[0, 2, 5], [1, 3, 4]]
    assert score_chunks(prompts, completions, 1) == [[0, 2, 5], [1, 3], [4]]  # a group alone may pass it
    assert score_chunks([], [], 10) == []
