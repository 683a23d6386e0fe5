"""`tools:TOOL[+TOOL][,limit=value...]:ENV`: any single-turn environment with tools offered, as an episode.

Tools are plain Python functions with type hints and a docstring (an ``Args:`` line per
argument), registered by name in `TOOLS` (`register_tool` adds yours); a tool that
lacks either, or a name not registered, is refused when the environment is made. The
problems carry the names of the tools they offer (``meta["tools"]``), and the rollout
offers them in the model's own format (rlvr/envs/tool_calls.py): its chat template's
tool format where it has one (``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``,
results as ``role: tool`` messages), else the documented tag format that every tokenizer
can write, the tiny model's included:

    <tool>calculator: 12*(3+4)</tool>    ->    <result>84</result>

Generation stops at a call's closing tag; the tool runs and its output is the next
observation. A turn without a call is the answer, judged by the wrapped environment's
verifier; a turn the model ends that is neither a call nor an answer is a void turn
(SimpleTIR; a turn cut by a token limit is the limit's, flag ``truncated``): the
episode ends with reward 0 (flag ``void_turn``, ``Sample.ended`` "void"), and RL may
leave such episodes out of training (``rlvr rl --drop_void_turns``). A turn that writes a
result's opening tag itself forges one: reward 0 (flag ``forged_result``).

Limits a user sets, each refused at start when it makes no sense: `max_turns` (model
turns), `max_episode_tokens` (the whole stream after the prompt), `max_result_tokens`
(a result is cut to this many tokens of the model's tokenizer, flag
``tool_output_truncated``; at most `max_episode_tokens`) and `timeout` (seconds per
call). Calls run in a bounded pool of `workers` (rlvr/envs/tool_pool.py). A tool that
raises or runs out of time answers with its error's last line (flag ``tool_error``);
the episode goes on. Each episode counts its tool calls, errors, truncated results and
void turns (`counts`, summed into the rollout's statistics).

`offer=brief` states the tag format in one line, the tools' names and the call's form
(``Tools: calculator. Call: <tool>NAME: INPUT</tool>``), for a small model that learned
the format in pretraining (the tools experiment's corpus): the full offer's ~300
characters dilute its attention, and it no longer copies the question's operands into a
call. A template's own tool format ignores it.

- ``calculator``: + - * / on integers, exact, with the safe parser (rlvr/verify/expr.py).
- ``python``: the code runs in rlvr's sandbox (namespaces, resource limits, no network,
  host paths hidden; rlvr/verify/sandbox.py) and what it printed comes back. Stateless by
  default: every call a fresh interpreter. With ``stateful=true`` a call sees the
  variables of the episode's earlier calls: the sandbox re-runs the episode's earlier
  successful cells, silently, before the new one (so their side effects happen again;
  their time counts against the call's); nothing outlives the episode.

    env = make_env("tools:calculator+python:arithmetic:digits=5,ops=mul")
    env = make_env("tools:python,stateful=true,max_turns=6,max_result_tokens=32:arithmetic")
    env = make_env({"name": "tools", "tools": ["python"], "env": "arithmetic", "stateful": True})

Run its tests: ``.venv/bin/python -m pytest tests/test_tools.py tests/test_tool_redteam.py -q``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

from rlvr.envs.tool_calls import FORGED, OFFERS, STOPS, TOOLS, Call, bind, parse_call, register_tool, result_message
from rlvr.envs.tool_pool import pool, seconds_left
from rlvr.types import Environment, Problem, Step, Turn, Verdict

COUNTS = ("tool_calls", "tool_errors", "tool_truncated", "void_turns")


@register_tool
def calculator(expression: str) -> str:
    """Evaluates an arithmetic expression of non-negative integers with + - * / and
    parentheses, exactly (a fraction where it does not divide).

    Args:
        expression: the expression, e.g. 12*(3+4)
    """
    from rlvr.verify.expr import evaluate

    value, _ = evaluate(expression.strip())
    return str(value)


@register_tool
def python(code: str) -> str:
    """Runs Python code in a sandbox and returns what it printed.

    Args:
        code: the program; print what you want to see
    """
    from rlvr.verify.sandbox import run_python

    result = run_python(code, timeout=seconds_left(5.0))
    if result.timed_out:
        raise TimeoutError("the code ran out of time")
    if result.returncode != 0:
        lines = (result.stderr or "").strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit status {result.returncode}")
    return result.stdout


def replay(cells: list[str], code: str) -> str:
    """A program that runs the earlier `cells` with their output discarded, then `code`:
    one interpreter that holds an episode's variables (the python tool's stateful mode)."""
    head = "import contextlib as _rc, io as _rio\n"
    if cells:
        head += "with _rc.redirect_stdout(_rio.StringIO()), _rc.redirect_stderr(_rio.StringIO()):\n"
        head += "".join(f"    exec(compile({c!r}, '<cell {i}>', 'exec'))\n" for i, c in enumerate(cells, 1))
    return head + f"exec(compile({code!r}, '<cell>', 'exec'))\n"


class Tools:
    """A single-turn environment's problems, asked with tools on offer; its verifier judges
    the answer turn. Multi-turn (rlvr/types.py `MultiTurn`), stopping on a call's closing tag."""

    def __init__(self, env: Environment, tools: tuple[str | Callable[..., Any], ...] = ("calculator",),
                 max_turns: int = 4, max_episode_tokens: int = 256, max_result_tokens: int = 64,
                 timeout: float = 5.0, stateful: bool = False, workers: int = 4, offer: str = "full"):
        from rlvr.types import MultiTurn

        if isinstance(env, MultiTurn):
            raise ValueError(f"tools: {env.name!r} is multi-turn already; tools are offered in single-turn environments")
        names = tuple(register_tool(t).__name__ if callable(t) else t for t in tools)
        unknown = [t for t in names if t not in TOOLS]
        if not names or unknown:
            raise ValueError(f"tools: unknown tool(s) {unknown}; choose from {sorted(TOOLS)} or register your own")
        limits = {"max_episode_tokens": max_episode_tokens, "max_result_tokens": max_result_tokens,
                  "timeout": timeout, "workers": workers}
        bad = [f"{k}={v!r}" for k, v in limits.items() if isinstance(v, bool) or not v > 0]
        if bad or max_turns < 2:
            raise ValueError(f"tools: max_turns must be >= 2 (a call and an answer) and every limit > 0; got "
                             f"{', '.join(bad or [f'max_turns={max_turns}'])}")
        if offer not in OFFERS:
            raise ValueError(f"tools: offer={offer!r}; the tag format's offer is one of {list(OFFERS)}")
        if max_result_tokens > max_episode_tokens:
            raise ValueError(f"tools: max_result_tokens ({max_result_tokens}) is above max_episode_tokens "
                             f"({max_episode_tokens}): no result that long fits in an episode")
        self.env, self.name, self.routes = env, env.name, {env.name: self}
        self.tools = {n: TOOLS[n] for n in names}
        self.max_turns, self.max_episode_tokens, self.max_result_tokens = max_turns, max_episode_tokens, max_result_tokens
        self.timeout, self.stateful, self.workers, self.offer = float(timeout), bool(stateful), workers, offer
        self.stop_strings = STOPS
        self.tok = None  # the model's tokenizer, bound by the rollout (`use_tokenizer`): results are cut in its tokens

    def use_tokenizer(self, tok) -> None:
        self.tok = tok

    def problems(self, split: str, seed: int):
        offered = {"tools": tuple(self.tools), **({"tool_offer": self.offer} if self.offer != "full" else {})}
        return (dataclasses.replace(p, meta={**p.meta, **offered}) for p in self.env.problems(split, seed))

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return self.env.verify(problem, completion)

    def canonical(self, problem: Problem) -> str:
        return self.env.canonical(problem)

    def validate(self, n: int = 100) -> list[str]:
        return self.env.validate(n)

    def gold_text(self, problem: Problem) -> str:
        from rlvr.verify.probes import gold_text
        return gold_text(self.env, problem)

    def episode(self, problem: Problem) -> "ToolEpisode":
        return ToolEpisode(self, problem)


class ToolEpisode:
    def __init__(self, env: Tools, problem: Problem):
        self.env, self.problem, self.flags = env, problem, set()
        self.counts = dict.fromkeys(COUNTS, 0)
        self.cells: list[str] = []  # the stateful python tool's successful code, this episode's only

    def step(self, turn: Turn) -> Step:
        if any(marker in turn.text for marker in FORGED):
            return Step(verdict=Verdict(0.0, False, flags=frozenset({"forged_result"})), ended="forged")
        call = parse_call(turn.text)
        if call is None:  # the answer
            verdict = self.env.env.verify(self.problem, turn.text)
            # Neither a call nor an answer, in a turn the model ended itself (a cut one is the limit's).
            void = "no_answer" in verdict.flags and turn.finish_reason == "stop"
            self.counts["void_turns"] += void
            flags = verdict.flags | self.flags | ({"void_turn"} if void else set())
            return Step(verdict=dataclasses.replace(verdict, flags=frozenset(flags)), ended="void" if void else "answer")
        self.counts["tool_calls"] += 1
        output = self._run(call)
        text, role = result_message(self._cut(output), call.format)
        return Step(observation=text, role=role)

    def _run(self, call: Call) -> str:
        tool = self.env.tools.get(call.name)
        try:
            if call.error is not None:
                raise ValueError(call.error)
            if tool is None:
                raise ValueError(f"no tool {call.name!r}; tools: {', '.join(self.env.tools)}")
            kwargs = bind(tool, call)
            code = kwargs.get("code") if tool is python else None
            if self.env.stateful and code is not None:
                kwargs["code"] = replay(self.cells, code)
            output = str(pool(self.env.workers).call(tool, kwargs, self.env.timeout))
            if self.env.stateful and code is not None:
                self.cells.append(code)
            return output
        except Exception as e:  # the model's call broke the tool: it reads why, the episode goes on
            self.flags.add("tool_error")
            self.counts["tool_errors"] += 1
            lines = str(e).strip().splitlines()
            return f"error: {lines[-1] if lines else type(e).__name__}"

    def _cut(self, output: str) -> str:
        """`output` cut to `max_result_tokens` tokens of the model's tokenizer."""
        tok = self.env.tok
        if tok is None:
            raise ValueError("tools: the model's tokenizer is not bound (env.use_tokenizer(tok); rollouts do it)")
        ids = tok(output, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.env.max_result_tokens:
            return output
        self.flags.add("tool_output_truncated")
        self.counts["tool_truncated"] += 1
        return tok.decode(ids[:self.env.max_result_tokens], skip_special_tokens=True)


def make_tools(spec: str | dict[str, Any]) -> Tools:
    """``tools:calculator+python[,key=value...]:ENV`` (limits after the tools) or
    ``{"name": "tools", "tools": [...], "env": ENV, ...limits}``."""
    from rlvr.envs import make_env

    if isinstance(spec, dict):
        params = {k: v for k, v in spec.items() if k != "name"}
        if "env" not in params:
            raise ValueError(f"env spec {spec!r}: a tools env needs 'env' (the environment it offers tools in)")
        inner = make_env(params.pop("env"))
        if isinstance(params.get("tools"), str):
            params["tools"] = (params["tools"],)
        return Tools(inner, **{k: tuple(v) if k == "tools" else v for k, v in params.items()})
    from rlvr.envs import _coerce, _key_values

    _, _, rest = spec.partition(":")
    head, sep, inner = rest.partition(":")
    names, _, limits = head.partition(",")
    if not sep or not inner or not names or "=" in names:
        raise ValueError(f"env spec {spec!r}: expected tools:TOOL[+TOOL][,key=value...]:ENV with tools from "
                         f"{sorted(TOOLS)}")
    defaults = inspect.signature(Tools).parameters
    params = _key_values(spec, limits)
    unknown = sorted(set(params) - set(defaults) - {"env", "tools"}) or sorted(set(params) & {"env", "tools"})
    if unknown:
        raise ValueError(f"env spec {spec!r}: unknown limit(s) {unknown}; valid: {list(defaults)[2:]}")
    return Tools(make_env(inner), tuple(names.split("+")),
                 **{k: _coerce(k, v, defaults[k].default) for k, v in params.items()})
