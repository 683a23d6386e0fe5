"""`tools:TOOL[+TOOL]:ENV`: any single-turn environment with tools offered, as an episode.

Tools are plain typed Python functions of one text argument with a docstring
(`TOOLS`); the prompt lists each with its signature and docstring. The model calls one
in a documented tag format that every tokenizer can write (the tiny model's included):

    <tool>calculator: 12*(3+4)</tool>

Generation stops at ``</tool>`` (a stop string of the environment); the tool runs and its
output comes back as the next observation, ``<result>84</result>``, and the model goes on.
A turn without a tool call is the model's answer, judged by the wrapped environment's
verifier on that turn's text. Limits a user sets: `max_turns`, `max_episode_tokens`,
`max_result_chars` (longer output is cut, flag ``tool_output_truncated``) and `timeout`
(seconds per call). A tool that fails answers with its error as the result (flag
``tool_error``); the episode goes on. A turn that writes ``<result>`` itself forges a
tool's answer: the episode ends with reward 0 (flag ``forged_result``).

- ``calculator``: + - * / on integers, exact, with the safe parser (rlvr/verify/expr.py),
  never `eval`.
- ``python``: the model's code runs in rlvr's sandbox (namespaces, resource limits, no
  network, host paths hidden; rlvr/verify/sandbox.py) and its stdout comes back, or the
  error's last line. Every call is a fresh interpreter: nothing survives a call, let
  alone an episode. Calls run one at a time in the rollout's thread, so a batch of
  episodes never starts more than one interpreter at once.

    env = make_env("tools:calculator:arithmetic:digits=5,ops=mul")

Run its tests: ``.venv/bin/python -m pytest tests/test_tools.py -q``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
from typing import Any, Callable

from rlvr.types import Environment, Problem, Step, Turn, Verdict

CALL = re.compile(r"<tool>\s*([A-Za-z_]\w*)\s*:(.*)</tool>\s*$", re.S)
FORGED = "<result>"


def calculator(expression: str) -> str:
    """Evaluates an arithmetic expression of non-negative integers with + - * / and
    parentheses, exactly (a fraction where it does not divide)."""
    from rlvr.verify.expr import evaluate

    value, _ = evaluate(expression.strip())
    return str(value)


def python(code: str) -> str:
    """Runs Python code in a sandbox and returns what it printed (or the error's last line)."""
    from rlvr.verify.sandbox import run_python

    result = run_python(code, timeout=5.0)
    if result.timed_out:
        raise TimeoutError("the code ran out of time")
    if result.returncode != 0:
        lines = (result.stderr or "").strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit status {result.returncode}")
    return result.stdout


TOOLS: dict[str, Callable[[str], str]] = {"calculator": calculator, "python": python}


def describe(tool: Callable[[str], str]) -> str:
    """`name(arg: type) -> type`: the docstring, as the prompt lists a tool. A tool without
    type hints or a docstring is refused: the model reads nothing else about it."""
    hints = inspect.get_annotations(tool, eval_str=True)
    params = list(inspect.signature(tool).parameters)
    if len(params) != 1 or set(params) | {"return"} != set(hints) or not inspect.getdoc(tool):
        raise ValueError(f"tool {tool.__name__!r} must take one typed argument, declare its return type and "
                         "have a docstring")
    arg = params[0]
    doc = " ".join(inspect.getdoc(tool).split())
    return f"{tool.__name__}({arg}: {hints[arg].__name__}) -> {hints['return'].__name__}: {doc}"


class Tools:
    """A single-turn environment's problems, asked with tools on offer; its verifier judges
    the answer turn. Multi-turn (rlvr/types.py `MultiTurn`), stopping on ``</tool>``."""

    def __init__(self, env: Environment, tools: tuple[str, ...] = ("calculator",), max_turns: int = 4,
                 max_episode_tokens: int = 256, max_result_chars: int = 200, timeout: float = 5.0):
        from rlvr.types import MultiTurn

        if isinstance(env, MultiTurn):
            raise ValueError(f"tools: {env.name!r} is multi-turn already; tools are offered in single-turn environments")
        unknown = [t for t in tools if t not in TOOLS]
        if not tools or unknown:
            raise ValueError(f"tools: unknown tool(s) {unknown}; choose from {sorted(TOOLS)}")
        if max_turns < 2 or max_episode_tokens < 1 or max_result_chars < 1 or timeout <= 0:
            raise ValueError("tools: max_turns must be >= 2 (a call and an answer), and max_episode_tokens, "
                             "max_result_chars and timeout > 0")
        self.env, self.name, self.routes = env, env.name, {env.name: self}
        self.tools = {t: TOOLS[t] for t in tools}
        self.max_turns, self.max_episode_tokens = max_turns, max_episode_tokens
        self.max_result_chars, self.timeout = max_result_chars, timeout
        self.stop_strings = ("</tool>",)
        self.instructions = ("You may use tools. To call one, write <tool>NAME: INPUT</tool> and stop; its output "
                             "comes back as <result>OUTPUT</result>. Tools:\n"
                             + "\n".join(f"- {describe(t)}" for t in self.tools.values()))

    def problems(self, split: str, seed: int):
        return (dataclasses.replace(p, prompt=self._prompt(p.prompt)) for p in self.env.problems(split, seed))

    def _prompt(self, prompt):
        if isinstance(prompt, str):
            return f"{prompt}\n\n{self.instructions}"
        messages = [dict(m) for m in prompt]
        messages[-1]["content"] = f"{messages[-1]['content']}\n\n{self.instructions}"
        return messages

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

    def step(self, turn: Turn) -> Step:
        if FORGED in turn.text:
            return Step(verdict=Verdict(0.0, False, flags=frozenset({"forged_result"})), ended="forged")
        call = CALL.search(turn.text)
        if call is None:  # the answer
            verdict = self.env.env.verify(self.problem, turn.text)
            return Step(verdict=dataclasses.replace(verdict, flags=verdict.flags | self.flags))
        name, arg = call.group(1), textwrap.dedent(call.group(2)).strip()  # "python: print(1)" runs print(1)
        output = self._run(name, arg)
        if len(output) > self.env.max_result_chars:
            output = output[:self.env.max_result_chars]
            self.flags.add("tool_output_truncated")
        return Step(observation=f"<result>{output}</result>")

    def _run(self, name: str, arg: str) -> str:
        tool = self.env.tools.get(name)
        if tool is None:
            self.flags.add("tool_error")
            return f"error: no tool {name!r}; tools: {', '.join(self.env.tools)}"
        try:
            return str(tool(arg))
        except Exception as e:  # the model's input broke the tool: it reads why, the episode goes on
            self.flags.add("tool_error")
            return f"error: {e}"


def make_tools(spec: str | dict[str, Any]) -> Tools:
    """``tools:calculator+python:ENV`` or ``{"name": "tools", "tools": [...], "env": ENV, ...limits}``."""
    from rlvr.envs import make_env

    if isinstance(spec, dict):
        params = {k: v for k, v in spec.items() if k != "name"}
        if "env" not in params:
            raise ValueError(f"env spec {spec!r}: a tools env needs 'env' (the environment it offers tools in)")
        inner = make_env(params.pop("env"))
        if isinstance(params.get("tools"), str):
            params["tools"] = (params["tools"],)
        return Tools(inner, **{k: tuple(v) if k == "tools" else v for k, v in params.items()})
    _, _, rest = spec.partition(":")
    names, sep, inner = rest.partition(":")
    if not sep or not inner or not names:
        raise ValueError(f"env spec {spec!r}: expected tools:TOOL[+TOOL]:ENV with tools from {sorted(TOOLS)}")
    return Tools(make_env(inner), tuple(names.split("+")))
