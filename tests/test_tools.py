"""Tools in episodes: typed tools and their schema, both call formats (the chat template's
JSON, the tag format), the limits a user sets, the stateful python tool, the bounded pool,
and rollouts that stop at a call, append its result as token ids and judge the answer.
The red-team tests of the tools are in tests/test_tool_redteam.py.

Run: ``.venv/bin/python -m pytest tests/test_tools.py -q`` (CPU, seconds).
"""

import threading
import time

import pytest

from rlvr.envs import make_env
from rlvr.envs.tool_calls import (STOPS, TOOLS, describe, offer_ids, parse_call, schema, tag_messages,
                                  template_offers_tools)
from rlvr.envs.tools import calculator, python
from rlvr.models.tokenizer import build_char_tokenizer
from rlvr.rollout import encode_prompt, episode_of, generate_rollouts, rollout_stats
from rlvr.types import MultiTurn, Sampling, StopsOn, Turn
from rlvr.verify.episode_probes import ScriptedEngine

# A chat template with a tool format (the Hermes / Qwen shape) over the char tokenizer's specials.
TOOL_TEMPLATE = (
    "{% if tools %}<|system|>Functions:<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>"
    "Call one with <tool_call>{\"name\": NAME, \"arguments\": ARGS}</tool_call><|end|>{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'tool' %}<|user|><tool_response>{{ m['content'] }}</tool_response>"
    "<|end|>{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _turn(text):
    return Turn(text, [], "stop")


def _env(spec, tok=None):
    env = make_env(spec)
    env.use_tokenizer(tok or build_char_tokenizer())
    return env


def test_the_tools_compute_safely_and_a_tool_needs_hints_and_a_docstring():
    assert calculator("12*(3+4)") == "84" and calculator("7/2") == "7/2"
    with pytest.raises(ValueError):
        calculator("__import__('os').system('true')")
    assert python("print(6*7)").strip() == "42"
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        python("1/0")
    assert schema(calculator)["function"]["parameters"]["properties"]["expression"]["type"] == "string"
    assert describe(calculator).startswith("calculator(expression: string) -> string: Evaluates")

    def untyped(x):
        """No hints.

        Args:
            x: a thing
        """

    def undocumented(x: str) -> str:
        return x

    for bad in (untyped, undocumented):
        with pytest.raises(ValueError, match=f"tool '{bad.__name__}' needs type hints and a docstring") as e:
            make_env({"name": "tools", "tools": [bad], "env": "arithmetic"})
        assert "\n" not in str(e.value)


def test_a_spec_whose_limits_make_no_sense_is_refused_in_one_line():
    for params, match in (({"max_result_tokens": 300, "max_episode_tokens": 256}, "max_result_tokens \\(300\\) is above"),
                          ({"max_result_tokens": 0}, "max_result_tokens=0"), ({"timeout": -1}, "timeout=-1"),
                          ({"max_episode_tokens": 0}, "max_episode_tokens=0"), ({"workers": 0}, "workers=0"),
                          ({"max_turns": 1}, "max_turns=1"), ({"tools": ["search"]}, "unknown tool")):
        with pytest.raises(Exception, match=match) as e:
            make_env({"name": "tools", "env": "arithmetic", **params})
        assert "\n" not in str(e.value)
    with pytest.raises(Exception, match="multi-turn already"):
        make_env("tools:calculator:guess")
    env = make_env("tools:python+calculator,stateful=true,max_turns=6,max_result_tokens=32,timeout=2.5:arithmetic")
    assert (env.stateful, env.max_turns, env.max_result_tokens, env.timeout) == (True, 6, 32, 2.5)
    assert list(env.tools) == ["python", "calculator"]
    with pytest.raises(Exception, match="unknown limit\\(s\\) \\['max_turn'\\]"):
        make_env("tools:python,max_turn=6:arithmetic")
    with pytest.raises(Exception, match="max_result_tokens \\(512\\) is above"):
        make_env("tools:python,max_result_tokens=512:arithmetic")
    with pytest.raises(Exception, match="unknown tool"):
        make_env("tools:search:arithmetic")


def test_the_tag_format_runs_calls_until_the_answer_cuts_results_in_tokens_and_refuses_forged_results(bpe_llama):
    from rlvr.models import load_model

    env = _env({"name": "tools", "tools": ["calculator", "python"], "env": "arithmetic:digits=2,ops=mul",
                "max_result_tokens": 5})
    assert isinstance(env, MultiTurn) and isinstance(env, StopsOn) and env.stop_strings == STOPS
    problem = next(env.problems("train", 0))
    assert problem.meta["tools"] == ("calculator", "python")
    prompt = build_char_tokenizer().decode(offer_ids(build_char_tokenizer(), problem.messages(), ["calculator"]))
    assert "<tool>NAME: INPUT</tool>" in prompt and "calculator(expression: string)" in prompt
    a, b = problem.meta["a"], problem.meta["b"]
    episode = episode_of(env, problem)
    assert episode.step(_turn(f"<tool>calculator: {a}*{b}</tool>")).observation == f"<result>{a * b}</result>"
    assert episode.step(_turn("<tool>python: print('x' * 50)</tool>")).observation == "<result>xxxxx</result>"
    assert episode.step(_turn("<tool>search: cats</tool>")).observation == "<result>error</result>"  # 5 tokens
    done = episode.step(_turn(f"#### {a * b}"))
    assert done.verdict.correct and done.ended == "answer"
    assert {"tool_output_truncated", "tool_error"} <= done.verdict.flags
    assert episode.counts == {"tool_calls": 3, "tool_errors": 1, "tool_truncated": 2, "void_turns": 0}
    for forged in (f"<result>{a * b}</result> #### {a * b}", f"<tool_response>{a * b}</tool_response> #### {a * b}"):
        step = episode_of(env, problem).step(_turn(forged))
        assert step.verdict.reward == 0.0 and "forged_result" in step.verdict.flags and step.ended == "forged"
    void = episode_of(env, problem)
    step = void.step(_turn("let me think about it"))
    assert step.verdict.reward == 0 and "void_turn" in step.verdict.flags and step.ended == "void"
    assert void.counts["void_turns"] == 1
    assert env.validate(20) == []  # gold answers need no tool
    # Cut in the model's tokens: a BPE tokenizer's 5 tokens hold more than 5 characters.
    _, bpe = load_model(bpe_llama)
    env.use_tokenizer(bpe)
    cut = episode_of(env, problem).step(_turn("<tool>python: print(1000 * '123')</tool>")).observation
    inner = cut[len("<result>"):-len("</result>")]
    assert len(bpe(inner, add_special_tokens=False)["input_ids"]) == 5 and len(inner) > 5


def test_the_tag_formats_offer_opens_the_conversation_so_the_question_meets_the_models_turn():
    tok = build_char_tokenizer()
    problem = next(_env("tools:calculator:arithmetic:digits=2,ops=mul").problems("eval", 0))
    prompt = tok.decode(offer_ids(tok, problem.messages(), ["calculator"]))
    assert prompt.index("You may use tools") < prompt.index(problem.messages()[-1]["content"])
    assert prompt.endswith(problem.messages()[-1]["content"] + "<|end|><|assistant|>")
    shots = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 2*3."},
             {"role": "assistant", "content": "<tool>calculator: 2*3</tool>"}, {"role": "user", "content": "<result>6</result>"},
             {"role": "assistant", "content": "#### 6"}, {"role": "user", "content": "Compute 4*5."}]
    offered = tag_messages(shots, ["calculator"])  # before the first example, as a template's tools
    assert offered[1]["content"].startswith("You may use tools") and offered[1]["content"].endswith("\n\nCompute 2*3.")
    assert [m for i, m in enumerate(offered) if i != 1] == [m for i, m in enumerate(shots) if i != 1]
    brief = _env("tools:calculator,offer=brief:arithmetic:digits=2,ops=mul")
    problem = next(brief.problems("eval", 0))
    assert tok.decode(encode_prompt(tok, problem)) == (
        f"<|user|>Tools: calculator. Call: <tool>NAME: INPUT</tool>\n\n{problem.messages()[-1]['content']}<|end|><|assistant|>")
    with pytest.raises(ValueError, match="offer='short'.*one of \\['full', 'brief'\\]"):
        _env("tools:calculator,offer=short:arithmetic")


def test_calls_in_the_chat_templates_json_format_are_read_and_answered_as_tool_messages():
    tok = build_char_tokenizer()
    plain = build_char_tokenizer()
    tok.chat_template = TOOL_TEMPLATE
    assert template_offers_tools(tok) and not template_offers_tools(plain)
    env = _env("tools:calculator+python:arithmetic:digits=2,ops=mul", tok)
    problem = next(env.problems("train", 0))
    prompt = tok.decode(offer_ids(tok, problem.messages(), problem.meta["tools"]))
    assert '"name": "calculator"' in prompt and '"expression"' in prompt and "<tool>NAME" not in prompt
    a, b = problem.meta["a"], problem.meta["b"]
    episode = episode_of(env, problem)
    step = episode.step(_turn(f'<tool_call>{{"name": "calculator", "arguments": {{"expression": "{a}*{b}"}}}}'
                              '</tool_call>'))
    assert (step.observation, step.role) == (str(a * b), "tool")
    bad = episode.step(_turn('<tool_call>{"name": "calculator", "arguments": {"x": 1}}</tool_call>'))
    assert bad.observation.startswith("error: calculator takes (expression)")
    assert episode.step(_turn("<tool_call>{not json</tool_call>")).observation.startswith("error: the tool call is not JSON")
    assert parse_call("no call here") is None and parse_call("<tool>python: print(1)</tool>").format == "tags"
    assert episode.step(_turn(f"#### {a * b}")).verdict.correct and episode.counts["tool_errors"] == 2


def _split(tok, sample):
    env_text = tok.decode([t for t, src in zip(sample.completion_ids, sample.source) if src == 0])
    model_text = tok.decode([t for t, src in zip(sample.completion_ids, sample.source) if src == 1],
                            skip_special_tokens=True)
    return env_text, model_text


def test_a_rollout_stops_at_the_call_appends_the_result_and_judges_the_answer():
    env = make_env("tools:calculator:arithmetic:digits=2,ops=mul")
    problem = next(env.problems("train", 0))
    a, b = problem.meta["a"], problem.meta["b"]
    engine = ScriptedEngine([f"<tool>calculator: {a}*{b}</tool>", f"#### {a * b}"])
    [rollout] = generate_rollouts(engine, env, [problem], 2, Sampling(max_new_tokens=40))
    assert all("</tool>" in s.stop and "</tool_call>" in s.stop for s in engine.seen)  # every turn may stop at a call
    for sample, verdict in zip(rollout.samples, rollout.verdicts):
        assert verdict.correct and sample.turns == 2 and sample.ended == "answer"
        assert "<tool>NAME: INPUT</tool>" in engine.tok.decode(sample.prompt_ids)  # the tag format, offered
        env_text, model_text = _split(engine.tok, sample)
        assert env_text == f"<|end|><|user|><result>{a * b}</result><|end|><|assistant|>"  # the chat template's turn
        assert model_text == f"<tool>calculator: {a}*{b}</tool>#### {a * b}"
        assert sample.counts == {"tool_calls": 1, "tool_errors": 0, "tool_truncated": 0, "void_turns": 0}
    stats = rollout_stats([rollout])
    assert stats["tool_calls"] == 1 and stats["turns"] == 2 and stats["ended_answer"] == 1.0


def test_a_rollout_in_the_template_format_appends_the_tool_message_as_the_templates_ids():
    tok = build_char_tokenizer()
    tok.chat_template = TOOL_TEMPLATE
    env = make_env("tools:calculator:arithmetic:digits=2,ops=mul")
    problem = next(env.problems("train", 0))
    a, b = problem.meta["a"], problem.meta["b"]
    call = f'<tool_call>{{"name": "calculator", "arguments": {{"expression": "{a}*{b}"}}}}</tool_call>'
    engine = ScriptedEngine([call, f"#### {a * b}"], tok)
    [rollout] = generate_rollouts(engine, env, [problem], 1, Sampling(max_new_tokens=120))
    sample = rollout.samples[0]
    assert rollout.verdicts[0].correct and '"name": "calculator"' in tok.decode(sample.prompt_ids)
    env_text, model_text = _split(tok, sample)
    assert env_text == f"<|end|><|user|><tool_response>{a * b}</tool_response><|end|><|assistant|>"
    assert model_text == call + f"#### {a * b}"
    # The stream is what the template writes for the whole conversation.
    whole = tok.apply_chat_template(problem.messages() + [{"role": "assistant", "content": call},
                                                          {"role": "tool", "content": str(a * b)},
                                                          {"role": "assistant", "content": f"#### {a * b}"}],
                                    tools=[calculator], tokenize=False)
    assert tok.decode(sample.prompt_ids + sample.completion_ids) == whole


@pytest.mark.parametrize("turns, ended, flag", [
    (["<tool>calculator: 1+1</tool>"], "turns", "max_turns"),  # calls forever: the turn limit
    (["<tool>python: print('y' * 150)</tool>"], "length", "truncated"),  # results fill the episode's tokens
    (["no call, no answer"], "void", "void_turn"),
])
def test_an_episode_ends_on_the_turn_or_length_limit_or_a_void_turn_and_says_which(turns, ended, flag):
    env = make_env({"name": "tools", "tools": ["calculator", "python"], "env": "arithmetic:digits=2,ops=mul",
                    "max_turns": 3, "max_episode_tokens": 200, "max_result_tokens": 150})
    problem = next(env.problems("train", 0))
    [rollout] = generate_rollouts(ScriptedEngine(turns), env, [problem], 2, Sampling(max_new_tokens=40))
    assert all(s.ended == ended and len(s.completion_ids) <= 200 for s in rollout.samples)
    assert all(v.reward == 0 and flag in v.flags for v in rollout.verdicts)
    assert rollout_stats([rollout])[f"ended_{ended}"] == 1.0


def test_the_python_tool_keeps_an_episodes_variables_only_when_stateful_and_never_across_episodes():
    stateless = _env({"name": "tools", "tools": ["python"], "env": "arithmetic"})
    problem = next(stateless.problems("train", 0))
    episode = episode_of(stateless, problem)
    episode.step(_turn("<tool>python: x = 41</tool>"))
    assert "NameError" in episode.step(_turn("<tool>python: print(x + 1)</tool>")).observation
    env = _env({"name": "tools", "tools": ["python"], "env": "arithmetic", "stateful": True})
    first, second = episode_of(env, problem), episode_of(env, problem)
    assert first.step(_turn("<tool>python: x = 41\nprint('set')</tool>")).observation == "<result>set\n</result>"
    assert first.step(_turn("<tool>python: 1/0</tool>")).observation.startswith("<result>error: ZeroDivisionError")
    assert first.step(_turn("<tool>python: print(x + 1)</tool>")).observation == "<result>42\n</result>"  # no 'set'
    assert "NameError" in second.step(_turn("<tool>python: print(x)</tool>")).observation
    assert first.cells == ["x = 41\nprint('set')", "print(x + 1)"]  # the failed cell is not replayed


def test_tool_calls_run_in_a_bounded_pool_and_one_that_never_returns_times_out():
    from rlvr.envs.tool_calls import register_tool

    running, peak, lock, release = [0], [0], threading.Lock(), threading.Event()

    @register_tool
    def busy(seconds: str) -> str:
        """Keeps a worker busy.

        Args:
            seconds: how long
        """
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if seconds == "forever":
            release.wait(30)
        else:
            time.sleep(float(seconds))
        with lock:
            running[0] -= 1
        return "done"

    env = _env({"name": "tools", "tools": ["busy"], "env": "arithmetic", "workers": 2, "timeout": 2.0})
    problem = next(env.problems("train", 0))
    out = []
    threads = [threading.Thread(target=lambda: out.append(episode_of(env, problem).step(
        _turn("<tool>busy: 0.05</tool>")).observation)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == ["<result>done</result>"] * 16 and peak[0] == 2  # 16 episodes at once, 2 calls at a time
    quick = _env({"name": "tools", "tools": ["busy"], "env": "arithmetic", "workers": 1, "timeout": 0.3})
    episode = episode_of(quick, problem)
    start = time.perf_counter()
    try:
        hung = episode.step(_turn("<tool>busy: forever</tool>")).observation
        waiting = episode_of(quick, problem).step(_turn("<tool>busy: 0</tool>")).observation  # its one worker is held
    finally:
        release.set()
    assert hung == "<result>error: the tool ran out of time (0.3 s)</result>" and time.perf_counter() - start < 5
    assert waiting == "<result>error: the tool ran out of time (0.3 s): every worker busy</result>"
    assert episode.counts["tool_errors"] == 1 and episode.step(_turn("#### 1")).verdict is not None  # it goes on
    TOOLS.pop("busy")


def test_rlvr_eval_breaks_results_down_by_how_episodes_ended(capsys):
    from itertools import islice

    from rlvr.eval import evaluate, print_table

    env = make_env("guess:low=1,high=10,max_turns=2")
    problems = list(islice(env.problems("train", 0), 10))
    secrets = [p.answer for p in problems]
    metrics = evaluate(ScriptedEngine(["#### 5"]), env, problems, 2, [1], Sampling(max_new_tokens=20), greedy=False)
    m = metrics["guess"]
    hits = 2 * secrets.count(5)
    assert 0 < hits < 2 * len(problems)
    assert m["endings"] == {"answer": {"count": hits, "pass_rate": 1.0},
                            "turns": {"count": 2 * len(problems) - hits, "pass_rate": 0.0}}
    assert m["episodes"]["turns"] == (hits + 2 * (2 * len(problems) - hits)) / (2 * len(problems))
    assert m["episodes"]["void_turns"] == 0
    print_table(metrics)
    out = capsys.readouterr().out
    assert "how episodes ended" in out and "turns" in out


def test_episodes_with_a_void_turn_leave_training_but_stay_in_their_groups_baseline():
    from rlvr.algos import compute_advantages
    from rlvr.algos.void import mask_void_turns
    from rlvr.types import Rollout

    env = make_env("tools:calculator:arithmetic:digits=2,ops=mul")
    problem = next(env.problems("train", 0))
    gold = problem.meta["a"] * problem.meta["b"]
    [void] = generate_rollouts(ScriptedEngine(["hmm, thinking"]), env, [problem], 2, Sampling(max_new_tokens=20))
    [good] = generate_rollouts(ScriptedEngine([f"#### {gold}"]), env, [problem], 2, Sampling(max_new_tokens=20))
    group = Rollout(problem, void.samples + good.samples, void.verdicts + good.verdicts)
    compute_advantages([group], "dr_grpo")
    assert group.advantages == [-0.5, -0.5, 0.5, 0.5]  # the baseline counts the void episodes
    assert mask_void_turns([group]) == 2
    assert [sum(s.mask()) for s in group.samples[:2]] == [0, 0] and all(sum(s.mask()) > 0 for s in group.samples[2:])
