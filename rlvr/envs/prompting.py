"""`prompt:`: any environment asked for in another answer format, with a system prompt and few-shot turns.

Environments ask for ``#### <answer>`` and grade it; rlvr's tiny model is trained on
exactly that. A real instruct model is not: it works the sum out ("60 + 34 = 94 ...
the answer is 94") and never writes ``####``, so it scores 0 for the prompt's sake.
`Prompted` wraps an environment so that it asks for, and reads, one of the answer
formats of rlvr.verify.formats (``hashes``, ``boxed``, ``answer_is``):

- problems: the inner environment's problems (ids, answers, meta unchanged, so the
  splits stay disjoint) with the prompt's ``####`` instruction sentence rewritten
  to the format's ("End with #### and the result." -> "End with \\boxed{} containing
  the result."), an optional system message first, and `shots` worked examples
  before the question: user and assistant turns of problems drawn deterministically
  from the inner environment's *train* split (never eval, never the problem itself or
  a twin of it), each answered with its gold in the format. Without system and shots
  a text prompt stays text; otherwise the prompt becomes chat messages. With
  ``tool_shots=true`` each example computes its answer with the calculator first, in
  the tag format, as an episode of ``tools:calculator:...`` runs: the assistant's call
  ``<tool>calculator: 23*47</tool>``, the result as the next user message
  ``<result>1081</result>``, then the answer (arithmetic problems; for a model whose
  template has no tools, e.g. SmolLM2, wrapped in ``tools:``).
- verify: the format extracts the answer (None: reward 0 with the format's flags);
  the inner environment then grades ``#### <answer>``, so its own checks apply
  unchanged. In ``hashes`` the completion goes to the inner environment as it is.
- `answer_format` says which format, so the hack probes (``rlvr audit``) and
  `validate` write golds and probes in it; every format passes the probes.
- `format_reward` w (0 by default; R1-Zero's format reward): a completion whose answer
  the format reads earns w + (1 - w) x the inner reward, so a right answer still earns
  1 and one in the wrong shape 0; what earns w alone is a well-formed wrong answer.

Code environments (pyfunc, humaneval) read a code block after ``####`` and accept
only ``hashes``. A prompt that contains ``####`` in a sentence the rewrite does not
know fails at its first problem, naming the environment. The wrapper composes with
mixtures, curricula, `noisy:` and `lenient:` (noise belongs outside:
``noisy:fn=0.2:prompt:format=boxed:arithmetic`` flips the verdicts of format
failures too).

    env = make_env("prompt:format=boxed,shots=2:arithmetic:digits=2")
    env = make_env("tools:calculator:prompt:format=answer_is,shots=2,tool_shots=true:arithmetic:digits=2,ops=mul")
    env = make_env({"name": "prompt", "format": "answer_is", "system": "You are a careful solver.",
                    "shots": 2, "env": "arithmetic:digits=2"})
    spec = with_prompting("arithmetic", answer_format="boxed")   # what --answer_format does

Run its tests: ``.venv/bin/python -m pytest tests/test_formats.py -q``.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import threading
from typing import Any, Literal

from pydantic import Field

from rlvr.config import Config

from rlvr.envs.base import wrapper_spec
from rlvr.envs.forwarding import Forwarding
from rlvr.types import CodeEnv, Environment, HeldOut, Message, Problem, Routing, Verdict
from rlvr.verify.extract import ANSWER_MARKER
from rlvr.verify.formats import DEFAULT_FORMAT, FORMATS, get_format
from rlvr.verify.probes import gold_text as _gold_text

# The instruction sentences environments end their prompts with: "End with #### and the
# result." (procedural envs), "End your response with #### followed by the final answer."
# (gym, math). `what` is what they ask for; the format's instruction asks for the same.
_INSTRUCTION = re.compile(r"End (?:with|your response with) #### (?:and|followed by) (?P<what>.+?)\.(?=\s|$)")
CODE_ENVS = ("pyfunc", "humaneval")  # their answer is a code block after ####: hashes only
SHOTS_SEED = 0  # the train stream the examples come from: fixed, so every prompt of a run has the same ones
MAX_SHOT_DRAWS = 10_000  # train problems scanned for one environment's examples (mixtures interleave)
KEYS = ("format", "system", "shots", "format_reward", "tool_shots")


class Prompted(Forwarding):
    def __init__(self, env: Environment, format: str = DEFAULT_FORMAT, system: str | None = None, shots: int = 0,
                 format_reward: float = 0.0, tool_shots: bool = False):
        self.fmt = get_format(format, key="format")
        if isinstance(format_reward, bool) or not isinstance(format_reward, (int, float)) or not 0 <= format_reward < 1:
            raise ValueError(f"prompt: 'format_reward' must be a number in [0, 1), got {format_reward!r}")
        if is_prompted(env):
            raise ValueError("prompt: the environment it wraps has a prompt: wrapper already; give format, system and "
                             "shots in one wrapper")
        if type(shots) is not int or shots < 0:
            raise ValueError(f"prompt: 'shots' must be an int >= 0, got {shots!r}")
        if system is not None and not isinstance(system, str):
            raise ValueError(f"prompt: 'system' must be text, got {system!r}")
        if not accepts_format(env, format):
            code = sorted({leaf.name for leaf in _leaves(env) if _is_code(leaf)})
            raise ValueError(f"prompt: format {format!r} cannot be used with {code}: code environments read "
                             f"a code block after ####, so their 'format' must be {DEFAULT_FORMAT!r}")
        self.env, self.answer_format, self.system, self.shots = env, format, system or None, shots
        self.format_reward = float(format_reward)
        if not isinstance(tool_shots, bool):
            raise ValueError(f"prompt: 'tool_shots' must be true or false, got {tool_shots!r}")
        self.tool_shots = tool_shots
        self.name = env.name
        # Every name the inner env answers for routes here, so an outer mixture sends its
        # problems (and the probes read the format) through this wrapper.
        self.routes = {name: self for name in (env.routes if isinstance(env, Routing) else {env.name: env})}
        self._examples: dict[str, list[Problem]] = {}
        self._lock = threading.Lock()  # the RL producer thread and the trainer may both draw problems

    def problems(self, split: str, seed: int):
        stream = self.env.problems(split, seed)  # checks the split name now, not at the first next()
        return (dataclasses.replace(p, prompt=self.prompt(p)) for p in stream)

    def prompt(self, problem: Problem):
        """`problem`'s prompt as this wrapper asks it (see the module docstring)."""
        messages = self._rewrite(problem)
        if self.system is None and not self.shots and isinstance(problem.prompt, str):
            return messages[0]["content"]
        head = [m for m in messages if m["role"] == "system"]
        if self.system is not None:
            if head:
                raise ValueError(f"prompt: {problem.env!r} prompts already have a system message; "
                                 "'system' would add a second one")
            head = [{"role": "system", "content": self.system}]
        turns = []
        for shot in self.examples(problem):
            turns += [m for m in self._rewrite(shot) if m["role"] != "system"] + self._call_turns(shot)
            turns.append({"role": "assistant", "content": self.fmt.render(self.gold_text(shot))})
        return head + turns + [m for m in messages if m["role"] != "system"]

    def _call_turns(self, shot: Problem) -> list[Message]:
        """A tool-using example's calculator call and its result (`tool_shots`), as an episode writes them."""
        if not self.tool_shots:
            return []
        from rlvr.envs.tool_calls import result_message, tag_call
        from rlvr.envs.tools import calculator
        from rlvr.envs.arithmetic import expression

        text, role = result_message(calculator(expression(shot)), "tags")
        return [{"role": "assistant", "content": tag_call("calculator", expression(shot))},
                {"role": role, "content": text}]

    def examples(self, problem: Problem) -> list[Problem]:
        """The `shots` worked examples for `problem`: train problems of its own environment,
        the same for every problem but never the problem itself or a twin of it (`canonical`)."""
        if not self.shots:
            return []
        with self._lock:
            if problem.env not in self._examples:
                self._draw_examples(problem.env)
            pool = self._examples[problem.env]
        return [p for p in pool if self.canonical(p) != self.canonical(problem)][:self.shots]

    def _draw_examples(self, env_name: str) -> None:
        # One spare, so that a train problem can skip itself and still have `shots` examples.
        need = self.shots + 1
        stream = self.env.problems("train", SHOTS_SEED)
        for p in itertools.islice(stream, MAX_SHOT_DRAWS):
            pool = self._examples.setdefault(p.env, [])
            if len(pool) < need and all(self.canonical(q) != self.canonical(p) for q in pool):
                pool.append(p)
            if len(self._examples.get(env_name, ())) >= need:
                return
        raise RuntimeError(f"prompt: found fewer than {need} train problems of {env_name!r} for the few-shot "
                           f"examples in {MAX_SHOT_DRAWS} draws; lower 'shots'")

    def _rewrite(self, problem: Problem) -> list[Message]:
        """`problem`'s messages with the ``####`` instruction asked in this format."""
        if self.answer_format == DEFAULT_FORMAT:
            return problem.messages()
        out = []
        for m in problem.messages():
            content = _INSTRUCTION.sub(lambda match: self.fmt.instruction(match["what"]), m["content"])
            if ANSWER_MARKER in _INSTRUCTION.sub("", m["content"]):  # (a format's own sentence may name ####)
                raise ValueError(f"prompt: env {problem.env!r} asks for {ANSWER_MARKER} in a sentence the "
                                 f"{self.answer_format!r} rewrite does not know (expected e.g. 'End with #### and "
                                 f"the result.'): {m['content'][-200:]!r}")
            out.append({**m, "content": content})
        return out

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return self._grade(self.env.verify, problem, completion)

    def episode(self, problem: Problem):
        if self.format_reward:
            raise ValueError(f"prompt: 'format_reward' grades one answer; {self.env.name!r} is multi-turn")
        if self.answer_format != DEFAULT_FORMAT:  # each turn is read by the inner environment, in its own format
            raise ValueError(f"prompt: a multi-turn environment ({self.env.name!r}) reads its own answer format; "
                             f"'format' {self.answer_format!r} cannot change it")
        return super().episode(problem)

    def _grade(self, grade, problem: Problem, completion: str) -> Verdict:
        answer, flags = self.fmt.extract(completion)
        if answer is None and self.answer_format != DEFAULT_FORMAT:
            return Verdict(reward=0.0, correct=False, parsed=None, flags=flags)
        # The inner environment grades its own format, so its checks apply unchanged.
        verdict = grade(problem, completion if self.answer_format == DEFAULT_FORMAT
                        else get_format(DEFAULT_FORMAT).render(answer))
        if not self.format_reward or answer is None:
            return verdict
        return dataclasses.replace(verdict, reward=self.format_reward + (1 - self.format_reward) * verdict.reward)

    def gold_text(self, problem: Problem) -> str:
        return _gold_text(self.env, problem)

    def canonical(self, problem: Problem) -> str:
        return self.env.canonical(problem)

    def validate(self, n: int = 100) -> list[str]:
        """The inner environment's own checks, then golds in this format through this wrapper."""
        from rlvr.envs.base import SPLITS, check_golds

        failures = self.env.validate(n)
        if self.answer_format != DEFAULT_FORMAT or self.shots or self.system:
            failures += check_golds(self, {s: itertools.islice(self.problems(s, seed=0), n) for s in SPLITS})
        return failures

    def __getattr__(self, name: str) -> Any:
        # The held-out verifier of a wrapped noisy or lenient env, read in this format (and
        # absent when it has none); the rest a wrapper forwards (rlvr/envs/forwarding.py).
        if name == "heldout" and isinstance(vars(self).get("env"), HeldOut):
            return lambda problem, completion: self._grade(self.env.heldout, problem, completion)
        return super().__getattr__(name)


def accepts_format(env, answer_format: str) -> bool:
    """Whether `env` can be asked in `answer_format`: all can but code environments (hashes only)."""
    return answer_format == DEFAULT_FORMAT or not any(_is_code(leaf) for leaf in _leaves(env))


def is_prompted(env) -> bool:
    """Whether a `prompt:` wrapper already sits anywhere in `env` (it sets the answer format)."""
    return any(isinstance(node, Prompted) for node in _nodes(env))


def _inner(env) -> list:
    """The environments `env` is made of: a mixture's children, a wrapper's inner env, a curriculum's level."""
    inner = [e for e in getattr(env, "routes", {}).values() if e is not env]
    if not inner and hasattr(env, "env"):
        inner = [env.env]
    if not inner and getattr(env, "levels", None):
        inner = list(env.levels[:1])
    return inner


def _nodes(env) -> list:
    return [env] + [node for e in _inner(env) for node in _nodes(e)]


def _leaves(env) -> list:
    return [node for node in _nodes(env) if not _inner(node)]


def _is_code(env) -> bool:
    return getattr(env, "name", "") in CODE_ENVS or isinstance(env, CodeEnv)


def parse_prompt_spec(spec: str) -> tuple[dict[str, Any], str]:
    """"prompt:format=boxed,shots=2:INNER" -> ({"format": "boxed", "shots": 2}, "INNER")."""
    usage = (f"prompt:format=F[,shots=N][,system=TEXT][,format_reward=W][,tool_shots=true]:INNER_SPEC with F one of "
             f"{sorted(FORMATS)}")
    params: dict[str, Any]
    params, inner = wrapper_spec(spec, KEYS, usage)
    for key, cast, what in (("shots", int, "an int >= 0"), ("format_reward", float, "a number in [0, 1)")):
        if key in params:
            try:
                params[key] = cast(params[key])
            except ValueError:
                raise ValueError(f"env spec {spec!r}: bad value {params[key]!r} for {key!r} ({what})") from None
    if "tool_shots" in params:
        if str(params["tool_shots"]).lower() not in ("true", "false"):
            raise ValueError(f"env spec {spec!r}: bad value {params['tool_shots']!r} for 'tool_shots' (true or false)")
        params["tool_shots"] = str(params["tool_shots"]).lower() == "true"
    return params, inner


def make_prompted(spec: str | dict[str, Any]) -> Prompted:
    """A `Prompted` env from a ``prompt:...`` string or a ``{"name": "prompt", ...}`` mapping."""
    from rlvr.envs import make_env

    if isinstance(spec, str):
        params, inner = parse_prompt_spec(spec)
        return Prompted(make_env(inner), **params)
    params = {k: v for k, v in spec.items() if k != "name"}
    if "env" not in params:
        raise ValueError(f"env spec {spec!r}: a prompt env needs 'env' (the environment it wraps)")
    unknown = sorted(set(params) - {"env", *KEYS})
    if unknown:
        raise ValueError(f"env spec {spec!r}: unknown key(s) {unknown} for prompt; valid: {['env', *KEYS]}")
    return Prompted(make_env(params.pop("env")), **params)


def with_prompting(spec: Any, answer_format: str = DEFAULT_FORMAT, system_prompt: str | None = None,
                   few_shot: int = 0, format_reward: float = 0.0) -> Any:
    """`spec` wrapped in a ``prompt`` spec when any of the four is set, else `spec` unchanged.

    What the ``--answer_format``, ``--system_prompt``, ``--few_shot`` and ``--format_reward``
    keys of a command do; a bad value fails here, naming its key."""
    get_format(answer_format, key="answer_format")
    if type(few_shot) is not int or few_shot < 0:
        raise ValueError(f"'few_shot' must be an int >= 0, got {few_shot!r}")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ValueError(f"'system_prompt' must be text, got {system_prompt!r}")
    if answer_format == DEFAULT_FORMAT and not system_prompt and not few_shot and not format_reward:
        return spec
    return {"name": "prompt", "format": answer_format, "system": system_prompt or None, "shots": few_shot,
            **({"format_reward": format_reward} if format_reward else {}), "env": spec}


class PromptFields(Config):
    """The keys of every command that asks an environment's problems (eval, the trainers)."""

    answer_format: Literal[tuple(FORMATS)] = Field(
        DEFAULT_FORMAT, description=f"How prompts ask for the final answer and the verifier reads it: {' | '.join(FORMATS)} "
                                    "(#### <answer>, what rlvr's tiny models learn; \\boxed{<answer>}; 'The answer is "
                                    "<answer>.', what instruct models write; <think>...</think> then #### <answer>, R1's template; code envs: hashes only).")
    system_prompt: str | None = Field(None, description="A system message before every prompt (default: none).")
    few_shot: int = Field(0, ge=0, description="Worked examples (train problems with their gold answers, in the "
                                               "answer format) before every prompt.")
    format_reward: float = Field(0.0, ge=0, lt=1, description="Reward W for an answer the format reads (R1-Zero's "
                                 "format reward): such a completion earns W + (1 - W) x its reward (0: none).")

    def prompted(self, spec: Any) -> Any:
        """`spec` as these keys ask for it (unchanged at their defaults)."""
        return with_prompting(spec, self.answer_format, self.system_prompt, self.few_shot, self.format_reward)
