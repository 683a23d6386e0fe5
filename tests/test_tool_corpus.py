"""The corpus with a calculator (rlvr/train/tool_corpus.py), few-shot examples that call a
tool (`prompt:...,tool_shots=true`), and `rlvr experiment tools` end to end at toy size.

Run: ``.venv/bin/python -m pytest tests/test_tool_corpus.py -q`` (CPU; the end-to-end
test is slow-marked).
"""

import itertools
import json
import string

import pytest

from rlvr.envs import make_env
from rlvr.models.tokenizer import CHARS, build_char_tokenizer
from rlvr.rollout import generate_rollouts
from rlvr.envs.arithmetic import expression
from rlvr.train.tool_corpus import tool_document, tool_documents
from rlvr.types import Sampling
from rlvr.verify.episode_probes import ScriptedEngine

SPEC = "tools:calculator:arithmetic:digits=3,ops=add,template={expr}"


def _episode_stream(env, tok, problem, turns):
    """The token ids an RL episode feeds the model when it writes `turns`: prompt and whole stream."""
    engine = ScriptedEngine(turns, tok)
    [rollout] = generate_rollouts(engine, env, [problem], 1, Sampling(max_new_tokens=400))
    sample = rollout.samples[0]
    return sample.prompt_ids + sample.completion_ids, rollout.verdicts[0]


@pytest.mark.parametrize("spec", [SPEC, SPEC.replace("calculator:", "calculator,offer=brief:")])
def test_a_tool_document_is_token_for_token_the_episode_that_calls_the_tool(spec):
    tok, env = build_char_tokenizer(), make_env(spec)
    problem = next(env.problems("train", 0))
    call = f"<tool>calculator: {expression(problem)}</tool>"
    doc = tool_document(env, tok, problem, offer=True, use_tool=True, slip=0.7, rng=None)
    stream, verdict = _episode_stream(env, tok, problem, [call, f"#### {problem.answer}"])
    assert verdict.correct
    assert tok(doc, add_special_tokens=False)["input_ids"] == stream
    assert "<result>" in doc and doc.endswith(f"#### {problem.answer}{tok.eos_token}")
    assert doc.startswith("<|user|>Tools: calculator." if "brief" in spec else "<|user|>You may use tools.")


def test_head_work_with_and_without_the_offer_is_what_an_episode_and_the_plain_corpus_feed():
    import random

    from rlvr.train.corpus import documents

    tok, env = build_char_tokenizer(), make_env(SPEC)
    problem = next(env.problems("train", 0))
    offered = tool_document(env, tok, problem, offer=True, use_tool=False, slip=0.7, rng=random.Random(1))
    work = offered.rsplit("<|assistant|>", 1)[1].removesuffix(tok.eos_token)
    stream, _ = _episode_stream(env, tok, problem, [work])
    assert tok(offered, add_special_tokens=False)["input_ids"] == stream and "You may use tools" in offered
    plain = tool_document(env, tok, problem, offer=False, use_tool=False, slip=0.7, rng=random.Random(1))
    first = next(documents(make_env(SPEC.split(":", 2)[2]), tok, 0.7, 0, 0.35))  # corpus.py's, of the same problem
    assert plain.split("<|assistant|>")[0] == first.split("<|assistant|>")[0] == f"<|user|>{problem.prompt}<|end|>"
    assert "tool" not in plain


def test_an_episode_that_calls_is_charged_its_results_and_second_turn():
    from rlvr.rollout import rollout_stats, token_counts

    tok, env = build_char_tokenizer(), make_env(SPEC)
    problem = next(env.problems("train", 0))
    turns = [f"<tool>calculator: {expression(problem)}</tool>", f"#### {problem.answer}"]
    [rollout] = generate_rollouts(ScriptedEngine(turns, tok), env, [problem], 1, Sampling(max_new_tokens=400))
    sample = rollout.samples[0]
    environment = sum(1 for s in sample.source if s == 0)  # the result's turn, prefilled
    counts = token_counts([rollout])
    assert environment > 0 and counts["prompt_tokens"] >= len(sample.prompt_ids) + environment
    assert counts["generated_tokens"] == sum(sample.source)  # both model turns
    [head] = generate_rollouts(ScriptedEngine([f"#### {problem.answer}"], tok), env, [problem], 1,
                               Sampling(max_new_tokens=40))
    assert rollout_stats([rollout, head])["tool_call_rate"] == 0.5  # the share of episodes that called


def test_the_stream_mixes_offers_calls_and_head_work_in_its_shares_and_repeats():
    tok, env = build_char_tokenizer(), make_env(SPEC)
    docs = list(itertools.islice(tool_documents(env, tok, 0.7, 0, offer_share=0.5, tool_share=0.4, slip_later=0.35),
                                 400))
    assert docs == list(itertools.islice(tool_documents(env, tok, 0.7, 0, 0.5, 0.4, 0.35), 400))
    offered = [d for d in docs if "You may use tools" in d]
    calls = [d for d in offered if "<tool>calculator:" in d.split("<|assistant|>", 1)[1]]
    assert 0.4 < len(offered) / len(docs) < 0.6 and 0.3 < len(calls) / len(offered) < 0.5


def test_the_char_tokenizer_writes_every_character_of_the_tag_format():
    from rlvr.envs.tool_calls import tag_instructions

    tok = build_char_tokenizer()
    text = tag_instructions(["calculator", "python"]) + "<tool>calculator: 12*(3+4)</tool><result>84</result>"
    assert set(text) <= set(CHARS) and set(string.punctuation) <= set(CHARS)
    assert tok.unk_token_id not in tok(text, add_special_tokens=False)["input_ids"]


def test_few_shot_examples_can_call_the_calculator_as_an_episode_does():
    from rlvr.envs.prompting import parse_prompt_spec

    env = make_env("tools:calculator:prompt:format=answer_is,shots=2,tool_shots=true:arithmetic:digits=2,ops=mul")
    problem = next(env.problems("eval", 0))
    roles = [m["role"] for m in problem.prompt]
    assert roles == ["user", "assistant", "user", "assistant"] * 2 + ["user"]
    call, result, answer = problem.prompt[1:4]
    a, op, b = call["content"].removeprefix("<tool>calculator: ").removesuffix("</tool>").partition("*")
    assert op == "*" and result["content"] == f"<result>{int(a) * int(b)}</result>"
    assert answer["content"] == f"The answer is {int(a) * int(b)}."
    plain = make_env("prompt:format=answer_is,shots=2:arithmetic:digits=2,ops=mul")
    assert len(next(plain.problems("eval", 0)).prompt) == 5  # without tool_shots: question, answer
    with pytest.raises(ValueError, match="tool_shots"):
        parse_prompt_spec("prompt:tool_shots=maybe:arithmetic")


@pytest.mark.slow
def test_experiment_tools_runs_both_arms_at_equal_flops(tmp_path, monkeypatch):
    """Toy size: a random micro base (no demo base needed), a few steps, a tiny budget."""
    from rlvr.experiments import tools
    from rlvr.models import build_tiny_model

    monkeypatch.chdir(tmp_path)
    model, tok = build_tiny_model("micro", seed=0)
    model.save_pretrained(tmp_path / "init")
    tok.save_pretrained(tmp_path / "init")
    monkeypatch.setattr(tools.ToolsConfig, "base_config", lambda self: tools.ToolsPretrainConfig(
        env=self.env, init=str(tmp_path / "init"), preset="micro", steps=2, batch_size=4, check_every=0, warmup=1,
        tool_share=1.0, offer_share=0.5, offer=self.offer))
    cfg = tools.ToolsConfig(run_dir=str(tmp_path / "exp"), budget_flops=4e8, prompts=2, group_size=2,
                            eval_problems=3, eval_samples=2)
    out = tools.main(cfg)
    arms = out["arms"]
    assert set(arms) == {"tool", "no tool"}
    for arm in arms.values():
        for stage in ("before", "after"):
            assert 0 <= arm[stage]["pass@1"]["mean"] <= 1 and arm[stage]["greedy"] is not None
        assert arm["steps"] >= 1 and arm["flops"] >= cfg.budget_flops
    assert arms["tool"]["after"]["tool_call_rate"] is not None and arms["no tool"]["after"]["tool_call_rate"] is None
    assert arms["tool"]["vs no tool"] is not None
    # Equal FLOPs: each arm stops at the first step past the budget, so within one step of it.
    for name, arm in arms.items():
        rows = [json.loads(line) for line in (tmp_path / "exp" / f"rl-{name.replace(' ', '-')}" /
                                             "metrics.jsonl").read_text().splitlines()]
        step_flops = max(b["compute/flops"] - a["compute/flops"] for a, b in zip([{"compute/flops": 0}] + rows, rows))
        assert arm["flops"] - cfg.budget_flops <= step_flops
    assert json.loads((tmp_path / "exp" / "results.json").read_text())["arms"]["tool"]["steps"] == arms["tool"]["steps"]
