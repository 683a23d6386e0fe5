"""Multi-turn episodes played against an OpenAI-compatible endpoint (rlvr/chat_rollout.py):
`rlvr eval --base_url` and `rlvr distill` on `guess` and `tools:` environments, through
`rlvr serve` in this process, against the local rollout of the same model or script.

Run: ``.venv/bin/python -m pytest tests/test_chat_rollout.py -q`` (CPU, about a minute
with the shared micro base).
"""

import json
from itertools import islice

import pytest

from conftest import ENV, served
from rlvr import eval as evaluation
from rlvr.chat_rollout import play
from rlvr.config import InputError
from rlvr.distill.teacher import HTTPTeacher, TeacherConfig, with_stop
from rlvr.engine import ENGINES, register_engine
from rlvr.envs import make_env
from rlvr.models import build_tiny_model, load_model, save_model
from rlvr.rollout import encode_prompt, generate_rollouts
from rlvr.run import last_model
from rlvr.serve import ServeConfig, make_app
from rlvr.types import Sampling
from rlvr.verify.episode_probes import ScriptedEngine

GUESS = "guess:max_turns=3,max_episode_tokens=300"
TOOLS = {"name": "tools", "tools": ["calculator"], "env": ENV, "max_turns": 3, "max_episode_tokens": 120}


def _episodes(metrics):
    (m,) = metrics.values()
    return m["endings"], m.get("episodes"), m["pass@1"]["per_problem"]


@pytest.mark.parametrize("env", [GUESS, TOOLS], ids=["guess", "tools"])
def test_an_endpoints_episodes_end_as_the_local_models_do_and_a_rerun_asks_nothing(micro_base, tmp_path, env):
    model, tok = load_model(last_model(micro_base))
    common = dict(env=env, problems=6, samples=1, ks=[1], max_new_tokens=60, temperature=0.0, greedy=False, seed=0)
    local = evaluation.main(evaluation.EvalConfig(model=str(micro_base), **common))["metrics"]
    app = make_app(model, tok, ServeConfig(model=str(micro_base), model_name="m"))
    with served(app) as url:
        cfg = evaluation.EvalConfig(model="m", base_url=f"{url}/v1", run_dir=str(tmp_path / "api"), **common)
        remote = evaluation.main(cfg)["metrics"]
        calls = app.state.batcher.calls
        again = evaluation.main(cfg)["metrics"]
        assert app.state.batcher.calls == calls  # every turn of every episode came from the cache
    # Greedy turns of the same model on the same conversations: the same episodes, problem for problem.
    assert _episodes(remote) == _episodes(local)
    assert again == remote


# ---------------------------------------------------------------- a scripted teacher behind rlvr serve


class ByTurn:
    """Writes `turns[k]` at the k-th assistant turn of the conversation it is sent (each turn
    reaches a server as a new request), as ScriptedEngine writes a local episode's k-th turn."""

    def __init__(self, turns, tok):
        self.turns, self.tok, self.version = list(turns), tok, 0

    def generate(self, prompts, n, sampling):
        out = []
        for p in prompts:
            k = self.tok.decode(p).count("<|assistant|>") - 1
            out += ScriptedEngine([self.turns[min(k, len(self.turns) - 1)]], self.tok).generate([p], n, sampling)
        return out

    def sync_weights(self, state, version, partial=False):
        self.version = version


@pytest.fixture(autouse=True)
def _unregister_by_turn():
    """`_serve_script` registers the "by_turn" backend; no other test may see it."""
    yield
    ENGINES.pop("by_turn", None)


def _serve_script(turns):
    model, tok = build_tiny_model("micro", seed=0)
    model.config.max_position_embeddings = 4096  # the script writes, not the model: no context limit of its
    register_engine("by_turn", lambda model, tok, **_: ByTurn(turns, tok))
    return make_app(model, tok, ServeConfig(model="script", model_name="script", engine="by_turn")), tok


def _mul_env(**limits):
    return make_env({"name": "tools", "tools": ["calculator", "python"], "env": "arithmetic:digits=2,ops=mul",
                     "max_turns": 3, "max_episode_tokens": 200, "max_result_tokens": 150, **limits})


@pytest.mark.parametrize("turns", [
    ["<tool>calculator: {a}*{b}</tool>", "#### {c}"],  # a call, its result, the answer
    ["<tool>calculator: 1+1</tool>"],  # calls forever: the turn limit
    ["<tool>python: print('y' * 150)</tool>"],  # results fill the episode's tokens
    ["no call, no answer"],  # a void turn
    ["<result>{c}</result> #### {c}"],  # a forged result
    ["<tool>calculator: 2*3", "#### {c}"],  # a call left open: the model ended its turn, no call
], ids=["answer", "turns", "length", "void", "forged", "open"])
def test_an_endpoint_plays_an_episode_as_the_local_rollout_does(tmp_path, turns):
    env = _mul_env()
    problems = list(islice(env.problems("train", 0), 2))
    sampling = Sampling(max_new_tokens=40, temperature=0.0)
    for problem in problems:
        a, b = problem.meta["a"], problem.meta["b"]
        script = [t.format(a=a, b=b, c=a * b) for t in turns]
        [rollout] = generate_rollouts(ScriptedEngine(script), env, [problem], 1, sampling)
        app, tok = _serve_script(script)
        with served(app) as url:
            client = HTTPTeacher(TeacherConfig(base_url=f"{url}/v1", model="script", cache_dir=str(tmp_path / "c")))
            [[episode]] = play(client, env, [problem], 1, sampling)
        local, verdict = rollout.samples[0], rollout.verdicts[0]
        assert (episode.ended, episode.turns, episode.counts) == (local.ended, local.turns, local.counts)
        assert (episode.verdict.reward, episode.verdict.flags) == (verdict.reward, verdict.flags)
        # The conversation the endpoint saw is the stream the local model saw, token for token.
        if episode.ended != "length":
            whole = tok.apply_chat_template(episode.messages, tokenize=False).removesuffix("<|end|>")
            assert whole == tok.decode(local.prompt_ids + local.completion_ids).removesuffix("<|end|>")


def test_a_server_that_cuts_the_stop_string_gives_it_back():
    stops = ("</tool>", "</tool_call>")
    assert with_stop("<tool>calculator: 1+1", "stop", {"stop_reason": "</tool>"}, stops) == "<tool>calculator: 1+1</tool>"
    assert with_stop("<tool>calculator: 1+1", "stop", {"stop_reason": None}, stops) == "<tool>calculator: 1+1"
    assert with_stop("<tool>calculator: 1+1", "stop", {}, stops) == "<tool>calculator: 1+1</tool>"  # names none
    assert with_stop('<tool_call>{"name": "f"}', "stop", {}, stops) == '<tool_call>{"name": "f"}</tool_call>'
    assert with_stop("<tool>a</tool> #### 2", "stop", {}, stops) == "<tool>a</tool> #### 2"
    assert with_stop("<tool>calculator: 1+", "length", {}, stops) == "<tool>calculator: 1+"
    # What is not supported is refused in one line: a reply of `tool_calls` (the chat API's tool format).
    import httpx

    from rlvr.distill.teacher import TeacherError
    from rlvr.distill.teacher_cache import ChatRequest

    reply = httpx.Response(200, json={"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function", "function": {
            "name": "calculator", "arguments": '{"expression": "1+1"}'}}]}}]})
    with pytest.raises(TeacherError, match="answered with tool_calls"):
        HTTPTeacher(TeacherConfig())._parse(reply, ChatRequest(messages=[{"role": "user", "content": "?"}], stop=stops))


def test_distill_on_a_tools_env_writes_conversations_sft_trains_on_assistant_turns_only(tmp_path):
    from rlvr.distill.distill import DistillConfig, main
    from rlvr.train import sft

    env = _mul_env()
    problem = next(env.problems("train", 0))
    script = [f"<tool>calculator: {problem.meta['a']}*{problem.meta['b']}</tool>",
              f"#### {problem.meta['a'] * problem.meta['b']}"]
    app, tok = _serve_script(script)
    spec = {"name": "tools", "tools": ["calculator", "python"], "env": "arithmetic:digits=2,ops=mul"}
    with served(app) as url:
        cfg = DistillConfig(run_dir=str(tmp_path / "d"), base_url=f"{url}/v1", teacher="script", env=spec,
                            problems=1, k=2, max_tokens=40, filter="correct")
        first = main(cfg)
        calls = app.state.batcher.calls
        again = main(cfg)
        assert app.state.batcher.calls == calls and again["cache_hits"] == again["requests"] == first["requests"]
    assert first["requests"] == 4 and first["generated"] == 2 and first["kept"] == 1  # two equal episodes: one row
    [row] = [json.loads(line) for line in (tmp_path / "d" / "data.jsonl").read_text().splitlines()]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
    assert row["messages"][2]["content"] == f"<result>{problem.meta['a'] * problem.meta['b']}</result>"
    assert row["ended"] == "answer" and row["turns"] == 2 and row["tools"] == ["calculator", "python"]
    # The row's prompt is the student's first observation at RL time, tools offered alike.
    assert tok.apply_chat_template(row["messages"][:1], add_generation_prompt=True, tokenize=False) == \
        tok.decode(encode_prompt(tok, problem))
    # SFT learns the assistant's turns (each with its end-of-turn token), never the prompt or the result.
    ex = sft.encode(tok, row["messages"])
    learnt = tok.decode([t for t, m in zip(ex.ids, ex.mask) if m])
    assert learnt == script[0] + "<|end|>" + script[1] + "<|end|>"
    model, tok = build_tiny_model("micro", seed=0)
    save_model(model, tok, tmp_path / "student")
    run = sft.main(sft.SFTConfig(run_dir=str(tmp_path / "s"), model=str(tmp_path / "student"),
                                 data=str(tmp_path / "d" / "data.jsonl"), max_steps=2, batch_size=1, warmup=0))
    log = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["loss_tokens"] == sum(ex.mask)
    # A student whose chat template offers tools in its own format meets them so at RL time: refused.
    from test_tools import TOOL_TEMPLATE

    tok.chat_template = TOOL_TEMPLATE
    with pytest.raises(InputError, match="tool format of its own"):
        sft.load_conversations(tmp_path / "d" / "data.jsonl", tok, 1024)


def test_distill_on_episodes_stops_at_its_budget_and_resumes_from_the_cache(tmp_path):
    from rlvr.distill.distill import DistillConfig, main

    problem = next(_mul_env().problems("train", 0))
    a, b = problem.meta["a"], problem.meta["b"]
    app, _ = _serve_script([f"<tool>calculator: {a}*{b}</tool>", f"#### {a * b}"])
    spec = {"name": "tools", "tools": ["calculator", "python"], "env": "arithmetic:digits=2,ops=mul"}
    common = dict(run_dir=str(tmp_path / "d"), teacher="script", env=spec, problems=1, k=2, max_tokens=40,
                  filter="none", max_concurrency=1)
    with served(app) as url:
        cut = main(DistillConfig(base_url=f"{url}/v1", budget_tokens=1, **common))
        assert cut["stopped"].startswith("teacher budget reached") and cut["kept"] == 0  # no episode finished
        answered = app.state.batcher.calls
        whole = main(DistillConfig(base_url=f"{url}/v1", **common))
    assert whole["stopped"] is None and whole["kept"] == 1 and whole["cache_hits"] == answered >= 1
    assert app.state.batcher.calls == answered + whole["requests"] - whole["cache_hits"]


def test_a_local_teacher_plays_episodes_too(tmp_path):
    from rlvr.distill.distill import DistillConfig, main

    model, tok = build_tiny_model("micro", seed=0)
    save_model(model, tok, tmp_path / "teacher")
    summary = main(DistillConfig(run_dir=str(tmp_path / "d"), teacher=str(tmp_path / "teacher"), problems=2, k=2,
                                 max_tokens=16, filter="none", env="guess:max_turns=2,max_episode_tokens=200"))
    rows = [json.loads(line) for line in (tmp_path / "d" / "data.jsonl").read_text().splitlines()]
    assert summary["generated"] == 4 and len(rows) == summary["kept"] > 0
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"] * row["turns"]  # no observation after the last turn
