"""Tools in episodes: the calculator and the sandboxed python tool, the tag format, limits,
forged results, and a rollout that stops at a call and answers with its result."""

import pytest

from rlvr.envs import make_env
from rlvr.envs.tools import calculator, describe, python
from rlvr.models.tokenizer import build_char_tokenizer
from rlvr.rollout import episode_of, generate_rollouts
from rlvr.types import MultiTurn, Sample, Sampling, StopsOn, Turn


def _turn(text):
    return Turn(text, [], "stop")


def test_the_tools_compute_safely_and_say_what_went_wrong():
    assert calculator("12*(3+4)") == "84" and calculator("7/2") == "7/2"
    with pytest.raises(ValueError):
        calculator("__import__('os').system('true')")
    assert python("print(6*7)").strip() == "42"
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        python("1/0")

    def untyped(x):
        """No hints."""
    with pytest.raises(ValueError, match="one typed argument"):
        describe(untyped)
    assert describe(calculator).startswith("calculator(expression: str) -> str: Evaluates")


def test_an_episode_runs_calls_until_the_answer_and_refuses_forged_results():
    env = make_env({"name": "tools", "tools": ["calculator", "python"], "env": "arithmetic:digits=2,ops=mul",
                    "max_result_chars": 5})
    assert isinstance(env, MultiTurn) and isinstance(env, StopsOn) and env.stop_strings == ("</tool>",)
    problem = next(env.problems("train", 0))
    assert "<tool>NAME: INPUT</tool>" in problem.prompt and "calculator(expression: str)" in problem.prompt
    a, b = problem.meta["a"], problem.meta["b"]
    episode = episode_of(env, problem)
    assert episode.step(_turn(f"<tool>calculator: {a}*{b}</tool>")).observation == f"<result>{a * b}</result>"
    assert episode.step(_turn("<tool>python: print('x' * 50)</tool>")).observation == "<result>xxxxx</result>"
    assert episode.step(_turn("<tool>search: cats</tool>")).observation == "<result>error</result>"  # cut to 5 characters
    done = episode.step(_turn(f"#### {a * b}"))
    assert done.verdict.correct and {"tool_output_truncated", "tool_error"} <= done.verdict.flags
    forged = episode_of(env, problem).step(_turn(f"<result>{a * b}</result> #### {a * b}"))
    assert forged.verdict.reward == 0.0 and "forged_result" in forged.verdict.flags
    assert env.validate(20) == []  # gold answers need no tool
    with pytest.raises(Exception, match="unknown tool"):
        make_env("tools:search:arithmetic")
    with pytest.raises(Exception, match="multi-turn already"):
        make_env("tools:calculator:guess")


class Scripted:
    """An engine that writes given turns (as a model would), in order, for every episode."""

    def __init__(self, turns):
        self.tok, self.version, self.turns, self.seen = build_char_tokenizer(), 0, list(turns), []

    def generate(self, prompts, n, sampling):
        self.seen.append(sampling)
        text = self.turns[len(self.seen) - 1]
        ids = self.tok(text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id] * (not text.endswith(">"))
        return [[Sample(None, list(p), list(ids), [-0.5] * len(ids), 0, "stop", text=text) for _ in range(n)]
                for p in prompts]


def test_a_rollout_stops_at_the_call_appends_the_result_and_judges_the_answer():
    env = make_env("tools:calculator:arithmetic:digits=2,ops=mul")
    problem = next(env.problems("train", 0))
    a, b = problem.meta["a"], problem.meta["b"]
    engine = Scripted([f"<tool>calculator: {a}*{b}</tool>", f"#### {a * b}"])
    [rollout] = generate_rollouts(engine, env, [problem], 2, Sampling(max_new_tokens=40))
    assert all("</tool>" in s.stop for s in engine.seen)  # every turn may stop at a call
    for sample, verdict in zip(rollout.samples, rollout.verdicts):
        assert verdict.correct and sample.turns == 2
        tok = engine.tok
        env_text = tok.decode([t for t, src in zip(sample.completion_ids, sample.source) if src == 0])
        assert env_text == f"<|end|><|user|><result>{a * b}</result><|end|><|assistant|>"  # the chat template's turn
        model_text = tok.decode([t for t, src in zip(sample.completion_ids, sample.source) if src == 1],
                                skip_special_tokens=True)
        assert model_text == f"<tool>calculator: {a}*{b}</tool>#### {a * b}"
