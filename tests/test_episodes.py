"""Episodes: multi-turn rollouts are token-exact, masked, accounted and trainable.

The model's turns enter the token stream as the engine sampled them, observations as
token ids marked as the environment's (mask 0, no behaviour log-prob), and the trainer
recomputes the behaviour log-probs of the model's tokens from the whole stream.
"""

import dataclasses
import json

import pytest
import torch

from rlvr.algos import compute_advantages
from rlvr.engine import TorchEngine
from rlvr.envs import make_env, make_mixture
from rlvr.models import build_tiny_model, load_model
from rlvr.models.forward import parts_of
from rlvr.rollout import episode_of, generate_rollouts, observation_ids, token_counts
from rlvr.train.batch import make_batch, policy_logprobs
from rlvr.types import MultiTurn, Sampling, Step, Turn


class Recording:
    """An engine that keeps every completion it sampled, to compare with the streams."""

    def __init__(self, engine):
        self.engine, self.tok, self.calls = engine, engine.tok, []

    @property
    def version(self):
        return self.engine.version

    def generate(self, prompts, n, sampling):
        out = self.engine.generate(prompts, n, sampling)
        self.calls.append((prompts, out))
        return out


def _episodes(model, tok, spec="guess:max_turns=3,max_episode_tokens=120", problems=3, n=4, seed=1):
    env = make_env(spec)
    it = env.problems("train", 0)
    engine = Recording(TorchEngine(model, tok))
    rollouts = generate_rollouts(engine, env, [next(it) for _ in range(problems)], n,
                                 Sampling(max_new_tokens=10, seed=seed, temperature=0.9))
    return env, engine, rollouts


def test_a_multi_turn_stream_holds_the_sampled_tokens_and_the_trainer_recomputes_their_logprobs():
    model, tok = build_tiny_model("micro", seed=3)
    env, engine, rollouts = _episodes(model, tok)
    assert isinstance(env, MultiTurn) and len(engine.calls) == 3  # one engine call per turn, all episodes together
    samples = [s for r in rollouts for s in r.samples]
    assert max(s.turns for s in samples) == 3
    sampled = [c for _, out in engine.calls for group in out for c in group]
    for s in samples:
        assert len(s.completion_ids) == len(s.logprobs) == len(s.source) <= 120
        assert s.mask() == s.source and s.generated_tokens == sum(s.source)
        assert all(lp == 0.0 for lp, src in zip(s.logprobs, s.source) if src == 0)
        # The model's tokens, turn by turn, are exactly completions the engine sampled.
        runs, cur = [], []
        for t, src in zip(s.completion_ids, s.source):
            if src:
                cur.append(t)
            elif cur:
                runs.append(cur)
                cur = []
        runs += [cur] if cur else []
        assert len(runs) == s.turns
        assert all(any(run == c.completion_ids[:len(run)] for c in sampled) for run in runs)
    ended = {s.ended for s in samples}
    assert ended <= {"answer", "turns", "length"} and ended & {"turns", "length"}
    for r in rollouts:
        for s, v in zip(r.samples, r.verdicts):
            assert {"turns": "max_turns", "length": "truncated"}.get(s.ended, "") in v.flags | {""}
    # Compute: the model's tokens are generated, the environment's and re-read contexts prefilled.
    counts = token_counts(rollouts)
    assert counts["generated_tokens"] == sum(s.generated_tokens for s in samples)
    assert counts["prompt_tokens"] > sum(len(r.samples[0].prompt_ids) for r in rollouts)
    # The trainer's log-probs of the model's tokens, computed over the whole stream, are the engine's.
    compute_advantages(rollouts, "dr_grpo")
    batch = make_batch(rollouts, tok.pad_token_id)
    with torch.no_grad():
        logp, _ = policy_logprobs(parts_of(model), batch, temperature=0.9)
    m = batch.mask.bool()
    assert m.sum() < (batch.ids != tok.pad_token_id).sum()  # environment tokens are in the batch, masked
    assert torch.allclose(logp[m], batch.old_logp[m], atol=1e-4)


def test_a_bpe_model_trains_on_the_ids_it_sampled_which_decode_then_encode_would_change(bpe_llama):
    model, tok = load_model(bpe_llama)
    _, engine, rollouts = _episodes(model, tok, spec="guess:max_turns=2,max_episode_tokens=80", problems=2)
    streams = [s.completion_ids for r in rollouts for s in r.samples]
    retokenized = [tok(tok.decode(ids), add_special_tokens=False)["input_ids"] for ids in streams]
    assert any(a != b for a, b in zip(streams, retokenized))  # what re-tokenizing would have trained on
    first = {tuple(c.completion_ids) for group in engine.calls[0][1] for c in group}
    assert all(tuple(s.completion_ids[:s.source.index(0) if 0 in s.source else None]) in first
               for r in rollouts for s in r.samples)


@pytest.mark.parametrize("closed", [True, False])
def test_an_observation_continues_the_chat_template_exactly(bpe_llama, closed):
    _, tok = load_model(bpe_llama)
    user = [{"role": "user", "content": "Guess a number."}]
    prompt = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    said = tok("#### 50", add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if closed else [])
    ids = tok(prompt, add_special_tokens=False)["input_ids"] + said
    ids += observation_ids(tok, Step(observation="Higher."), said)
    expected = tok.apply_chat_template(user + [{"role": "assistant", "content": "#### 50"},
                                               {"role": "user", "content": "Higher."}],
                                       add_generation_prompt=True, tokenize=False)
    assert tok.decode(ids) == expected
    assert observation_ids(tok, Step(observation=[7, 8, 9]), said) == [7, 8, 9]  # ids pass through


def test_the_engine_stops_on_stop_text_and_ids_per_request_keeping_the_sampled_prefix():
    model, tok = build_tiny_model("micro", seed=3)
    engine = TorchEngine(model, tok)
    prompt = tok("12+34=", add_special_tokens=False)["input_ids"]
    free = engine.generate([prompt], 16, Sampling(max_new_tokens=30, seed=1))[0]
    text = engine.generate([prompt], 16, Sampling(max_new_tokens=30, seed=1, stop=("a",)))[0]
    ids = engine.generate([prompt], 16, Sampling(max_new_tokens=30, seed=1,
                                                 stop_ids=tuple(tok("a", add_special_tokens=False)["input_ids"])))[0]
    stopped = 0
    for f, t, i in zip(free, text, ids):
        assert t.completion_ids == i.completion_ids == f.completion_ids[:len(t.completion_ids)]
        if "a" in f.text:
            assert t.text.endswith("a") and t.text.count("a") == 1 and t.finish_reason == "stop"
            stopped += 1
        else:
            assert t.completion_ids == f.completion_ids
    assert stopped > 0


def test_wrappers_are_multi_turn_exactly_when_what_they_wrap_is():
    for spec, multi in (("guess", True), ("noisy:fp=0.1:guess", True), ("prompt:shots=1:guess", True),
                        ("lenient:substring:guess", True), ("arithmetic", False), ("noisy:fp=0.1:arithmetic", False),
                        ("prompt:format=boxed:arithmetic", False)):
        assert isinstance(make_env(spec), MultiTurn) == multi, spec
    mixed = make_mixture(["arithmetic", "guess:max_turns=4"])
    assert isinstance(mixed, MultiTurn) and mixed.max_turns == 4
    assert not isinstance(make_mixture(["arithmetic", "countdown"]), MultiTurn)
    curriculum = make_env({"name": "curriculum", "env": "guess", "param": "high", "levels": [20, 200]})
    assert isinstance(curriculum, MultiTurn)
    # A noisy verifier flips the episode's final verdict, keeping the truth beside it.
    noisy = make_env("noisy:fn=0.999:guess")
    problem = next(noisy.problems("train", 0))
    step = episode_of(noisy, problem).step(Turn(f"#### {problem.answer}", [], "stop"))
    assert not step.verdict.correct and step.verdict.truth.correct
    lower = episode_of(noisy, problem).step(Turn(f"#### {problem.answer + 1}", [], "stop"))
    assert lower.verdict is None and lower.observation == "Lower."
    with pytest.raises(ValueError, match="own answer format"):
        episode_of(make_env("prompt:format=boxed:guess"), problem)


def test_rl_trains_on_multi_turn_episodes_and_logs_them(micro_base, tmp_path):
    from rlvr.train import rl

    rl.main(rl.RLConfig(model=str(micro_base), env="guess:max_turns=3,max_episode_tokens=96",
                        run_dir=str(tmp_path / "rl"), steps=2, prompts=4, group_size=4, max_new_tokens=12,
                        eval_problems=4, eval_samples=2, save_every=0, seed=0, drop_void_turns=True))
    rows = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["turns"] >= 1 for r in rows)
    assert rows[-1]["compute/prompt_tokens"] > 0 and rows[-1]["compute/generated_tokens"] > 0
    # Per episode: void turns, how episodes ended; SimpleTIR's filter masked the episodes with a void turn.
    assert all(abs(sum(v for k, v in r.items() if k.startswith("ended_")) - 1) < 1e-9 for r in rows)
    assert all("void_turns" in r and ("masked_void" in r or r["updates"] == 0) for r in rows)
    samples = [json.loads(line) for line in (tmp_path / "rl" / "samples.jsonl").read_text().splitlines()]
    assert samples and all("Higher." in s["completion"] or "Lower." in s["completion"] or "####" in s["completion"]
                           for s in samples if s["tokens"] > 40)
    # samples.jsonl shows whole episodes: the stream as runs of text, each marked trained or not.
    for s in samples:
        assert s["ended"] in {"answer", "turns", "length"} and [t for t, _ in s["segments"]]
        assert s["trained_tokens"] == 0 if s["counts"]["void_turns"] else s["trained_tokens"] > 0
        assert {trained for _, trained in s["segments"]} <= {0, 1}


def test_a_lenient_wrapper_judges_the_last_turn_and_keeps_the_strict_verdict_for_the_monitor():
    from rlvr.train.monitor import HackMonitor
    from rlvr.types import Rollout, Sample

    env = make_env("lenient:substring:guess")
    problem = next(env.problems("train", 0))
    # The gold appears in the turn, but not after ####: the hole pays, the strict verifier would not.
    turn = Turn(f"{problem.answer} maybe? #### {problem.answer + 1}", [], "stop")
    step = episode_of(env, problem).step(turn)
    assert step.verdict is None  # the inner game goes on ("Lower."): the hole is read only at the end
    right = episode_of(env, problem).step(Turn(f"#### {problem.answer}", [], "stop"))
    assert right.verdict.correct and right.verdict.truth is None  # both agree: nothing kept aside
    monitor = HackMonitor(env, samples=4)
    sample = Sample(problem, [1], [2, 3], [0.0, 0.0], 0, "stop", text="stream", source=[1, 0])
    hacked = dataclasses.replace(right.verdict, truth=dataclasses.replace(right.verdict, correct=False, reward=0.0))
    m = monitor([Rollout(problem, [sample], [hacked])], step=0)
    assert m["hack/rate"] == 1.0 and m["hack/heldout"] == 0.0
