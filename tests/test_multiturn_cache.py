"""Kept KV caches between turns sample what prefilling the whole stream each turn samples.

The torch engine keeps each live episode's keys and values between turns and prefills
only the new tokens (rlvr/engine/turns.py); `reuse_cache=False` prefills every turn's
whole stream. Both must give the same tokens (seeded and greedy) and the same
behaviour log-probs to float rounding, on the guessing game and on the tools
environment, while the kept caches prefill a fraction of the tokens.

    .venv/bin/python -m pytest -q tests/test_multiturn_cache.py
"""

import pytest
import torch

from rlvr.engine import TorchEngine, make_engine
from rlvr.engine.turns import CachedTurns, Reprefill
from rlvr.envs import make_env
from rlvr.models import build_tiny_model
from rlvr.rollout import generate_rollouts, observation_ids, token_counts
from rlvr.types import KeepsCache, Sampling, Step

CALL = "<tool>calculator: 6*7</tool>"


@pytest.fixture(scope="module")
def micro():
    return build_tiny_model("micro", seed=3)


@pytest.fixture(scope="module")
def caller():
    """The micro model with a whole tool call as one extra token, favoured by a bias on
    the LM head: a random model that calls the calculator often, and sometimes answers."""
    model, tok = build_tiny_model("micro", seed=3)
    tok.add_tokens([CALL])
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    head = torch.nn.Linear(model.lm_head.in_features, len(tok), bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[-1] = 2.5
    model.lm_head = head
    return model, tok


def _both(model, tok, spec, sampling, problems=3, n=4):
    env = make_env(spec)
    it = env.problems("train", 0)
    batch = [next(it) for _ in range(problems)]
    return [generate_rollouts(TorchEngine(model, tok, reuse_cache=reuse), env, batch, n, sampling)
            for reuse in (True, False)]


CASES = [("guess:max_turns=4,max_episode_tokens=150", "micro"), ("tools:calculator:arithmetic:digits=2,ops=mul", "caller")]


@pytest.mark.parametrize("spec,model", CASES)
@pytest.mark.parametrize("temperature", [0.9, 0.0])
def test_kept_caches_sample_the_tokens_and_logprobs_of_reprefilling(spec, model, temperature, request):
    model, tok = request.getfixturevalue(model)
    kept, again = _both(model, tok, spec, Sampling(max_new_tokens=16, seed=1, temperature=temperature))
    pairs = [(a, b) for ra, rb in zip(kept, again) for a, b in zip(ra.samples, rb.samples)]
    assert len(pairs) == 12
    for a, b in pairs:
        assert a.completion_ids == b.completion_ids and a.source == b.source
        assert (a.turns, a.ended, a.finish_reason) == (b.turns, b.ended, b.finish_reason)
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)
    assert [v.reward for r in kept for v in r.verdicts] == [v.reward for r in again for v in r.verdicts]
    assert max(a.turns for a, _ in pairs) >= 3
    if spec.startswith("tools") and temperature:  # episodes end at different turns, freeing their caches
        assert len({a.turns for a, _ in pairs}) > 1 and len({a.ended for a, _ in pairs}) > 1
    # What was prefilled: with kept caches only each turn's new tokens, a fraction of the streams.
    assert token_counts(kept)["generated_tokens"] == token_counts(again)["generated_tokens"]
    assert sum(r.prefilled_tokens for r in kept) * 3 < sum(r.prefilled_tokens for r in again)


def test_the_first_turn_is_generate_exactly(micro):
    model, tok = micro
    engine = TorchEngine(model, tok)
    prompts = [tok("12+34=", add_special_tokens=False)["input_ids"], tok("7*8=", add_special_tokens=False)["input_ids"]]
    sampling = Sampling(max_new_tokens=16, seed=3, temperature=1.0)
    plain = engine.generate(prompts, 3, sampling)
    turns = engine.turn_batch()
    first = turns.start(prompts, 3, sampling)
    assert [[(s.completion_ids, s.logprobs) for s in g] for g in plain] == [[(s.completion_ids, s.logprobs) for s in g]
                                                                             for g in first]
    assert set(turns.kept) == set(range(6))  # every sequence keeps its cache: its prompt and turn less its last token
    assert all(len(turns.kept[g * 3 + i].ids) == len(prompts[g]) + len(s.completion_ids) - 1
               for g, group in enumerate(first) for i, s in enumerate(group))
    turns.close()
    assert not turns.kept and turns.bytes == 0


def _streams(tok, samples, seqs, text="Higher."):
    return [s.prompt_ids + s.completion_ids + observation_ids(tok, Step(observation=text), s.completion_ids)
            for s in (samples[q] for q in seqs)]


SAMPLING = Sampling(max_new_tokens=12, seed=5, temperature=1.0)


def _started(micro, n):
    """A torch engine's batch of `n` episodes of one prompt after their first turn."""
    model, tok = micro
    prompts = [tok("Guess: ", add_special_tokens=False)["input_ids"]]
    engine = TorchEngine(model, tok)
    turns = engine.turn_batch()
    return engine, turns, prompts, [s for g in turns.start(prompts, n, SAMPLING) for s in g]


def test_extend_frees_ended_sequences_reuses_a_common_prefix_and_stays_within_its_budget(micro):
    model, tok = micro
    sampling = SAMPLING
    engine, turns, prompts, first = _started(micro, 4)
    streams = _streams(tok, first, [0, 2, 3])
    streams[1] = streams[1][:len(prompts[0]) + 2] + [5, 6, 7]  # a stream that left its turn early: a shorter reuse
    samples, prefilled = turns.extend([0, 2, 3], streams, sampling)
    assert set(turns.kept) == {0, 2, 3}  # sequence 1 ended: its cache is gone
    reference = [g[0] for g in engine.generate(streams, 1, sampling)]
    assert [s.completion_ids for s in samples] == [s.completion_ids for s in reference]
    assert torch.allclose(torch.tensor(sum((s.logprobs for s in samples), [])),
                          torch.tensor(sum((s.logprobs for s in reference), [])), atol=1e-5, rtol=0)
    # Only what the cache lacked was prefilled: the observation and the turn's last token.
    assert prefilled[0] == len(streams[0]) - (len(prompts[0]) + len(first[0].completion_ids) - 1)
    assert prefilled[1] == 3  # its first two tokens of the turn were kept; the three new ones prefilled
    assert turns.bytes == sum(k.size for k in turns.kept.values()) > 0
    turns.close()
    # A budget too small for any cache keeps none: every turn prefills its whole stream, the same samples.
    small = TorchEngine(model, tok, kv_budget_gb=1e-7)
    turns = small.turn_batch()
    first = [s for g in turns.start(prompts, 4, sampling) for s in g]
    assert not turns.kept
    samples, prefilled = turns.extend([0, 2, 3], streams, sampling)
    assert prefilled == [len(s) for s in streams]
    assert [s.completion_ids for s in samples] == [g[0].completion_ids for g in small.generate(streams, 1, sampling)]


def test_an_episodes_last_turn_keeps_no_cache_and_samples_the_same(micro):
    tok, sampling = micro[1], SAMPLING
    engine, turns, prompts, first = _started(micro, 3)
    streams = _streams(tok, first, [0, 2])
    samples, prefilled = turns.extend([0, 2], streams, sampling, last=True)
    assert not turns.kept and turns.bytes == 0  # nothing copied out for a turn nothing follows
    assert prefilled[0] < len(streams[0])  # the kept caches of the turn before were still used
    assert [s.completion_ids for s in samples] == [g[0].completion_ids for g in engine.generate(streams, 1, sampling)]
    turns.close()


def test_bad_calls_fail_by_name_and_the_option_selects_reprefilling(micro):
    model, tok = micro
    turns = TorchEngine(model, tok).turn_batch()
    prompt = tok("1+1=", add_special_tokens=False)["input_ids"]
    turns.start([prompt], 2, Sampling(max_new_tokens=4, seed=0))
    with pytest.raises(ValueError, match="started already"):
        turns.start([prompt], 2, Sampling(max_new_tokens=4))
    for seqs, streams, why in (([2], [prompt], "0..1"), ([0, 0], [prompt, prompt], "repeats"),
                               ([0], [prompt, prompt], "one stream per sequence"), ([1], [[]], "at least one token")):
        with pytest.raises(ValueError, match=why):
            turns.extend(seqs, streams, Sampling(max_new_tokens=4))
    engine = make_engine(model, tok, role="inference", options={"reuse_cache": False})
    assert isinstance(engine, KeepsCache) and isinstance(engine.turn_batch(), Reprefill)
    assert isinstance(make_engine(model, tok, role="inference").turn_batch(), CachedTurns)
