"""The environment registry: build environments from short specs.

A spec is a name (``"arithmetic"``), a name with parameters
(``"arithmetic:digits=2,ops=add+sub"``) or a dict (``{"name": "countdown",
"count": 3}``). In the string form a value is converted to the type of the
parameter's default (``+`` separates tuple items); use the dict form for values
containing ``,`` or ``=`` such as templates. Unknown names and parameters fail
with a message listing the valid ones, so a typo in a config never silently
falls back to a default.

Wrappers take the spec of the environment they wrap: ``noisy:fn=0.2:ENV``
(rlvr.envs.noisy), ``lenient:HOLE:ENV`` (rlvr.envs.lenient),
``prompt:format=boxed,shots=2:ENV`` (rlvr.envs.prompting: another answer format, a
system prompt, few-shot examples; `with_prompting` builds it from the
``--answer_format``, ``--system_prompt`` and ``--few_shot`` keys), and the dict
forms ``{"name": "noisy" | "lenient" | "prompt", ..., "env": ENV}``.

    from rlvr.envs import make_env, make_mixture
    env = make_env("countdown:count=3")
    env = make_env("prompt:format=answer_is:countdown:count=3")

Run its tests: ``.venv/bin/python -m pytest tests/test_envs.py -q``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from rlvr.config import InputError
from rlvr.envs.arithmetic import Arithmetic
from rlvr.envs.base import ProceduralEnv
from rlvr.envs.countdown import Countdown
from rlvr.envs.guess import Guess
from rlvr.envs.humaneval import HumanEval
from rlvr.envs.linear import LinearEquation
from rlvr.envs.lists import ListOps
from rlvr.envs.math_jsonl import MathJSONL
from rlvr.envs.mixture import Mixture
from rlvr.envs.prompting import Prompted, with_prompting
from rlvr.envs.pyfunc import PyFunctions
from rlvr.envs.word_problems import WordProblems
from rlvr.verify.extract import parse_int

ENVS: dict[str, type] = {"arithmetic": Arithmetic, "countdown": Countdown,
                         "linear": LinearEquation, "lists": ListOps, "word_problems": WordProblems,
                         "math": MathJSONL,
                         "pyfunc": PyFunctions, "humaneval": HumanEval, "guess": Guess}

__all__ = ["ENVS", "Arithmetic", "Countdown", "Mixture", "ProceduralEnv", "Prompted", "make_env", "make_mixture",
           "with_prompting"]


def make_env(spec: str | dict[str, Any]):
    """An environment instance from a spec (see the module docstring). A spec that names
    no environment, or parameters an environment refuses, is an `InputError` naming both."""
    try:
        return _make_env(spec)
    except InputError:
        raise
    except ValueError as e:
        raise InputError(f"env {spec!r}: {e}") from None


# Environments built from a spec of their own form, each by a function of its module,
# imported when first named (reasoning-gym is slow to import; the wrappers build their
# inner environment with `make_env`). The key is the spec's name up to its first ':'.
WRAPPERS: dict[str, str] = {
    "curriculum": "rlvr.envs.curriculum:make_curriculum",  # one environment at a ladder of difficulties
    "noisy": "rlvr.envs.noisy:make_noisy",  # a verifier that errs
    "lenient": "rlvr.envs.lenient:make_lenient",  # planted verifier holes
    "prompt": "rlvr.envs.prompting:make_prompted",  # another answer format, a system prompt, few-shot examples
    "gym": "rlvr.envs.gym:make_gym_env",  # any reasoning-gym task, by name
    "hf": "rlvr.envs.hf:make_hf_env",  # math problems from a dataset `datasets` reads (hub id or local file)
    "tools": "rlvr.envs.tools:make_tools",  # a single-turn environment with tools offered (multi-turn)
}


def _make_env(spec: str | dict[str, Any]):
    name = spec.get("name") if isinstance(spec, dict) else spec
    builder = WRAPPERS.get(name.partition(":")[0]) if isinstance(name, str) else None
    if builder is not None:
        module, _, function = builder.partition(":")
        return getattr(importlib.import_module(module), function)(spec)
    if isinstance(spec, dict):
        params = dict(spec)
        if "name" not in params:
            raise ValueError(f"env spec {spec!r} has no 'name'; valid names: {sorted(ENVS)}")
        name, raw = params.pop("name"), None
    else:
        name, _, rest = spec.partition(":")
        params, raw = {}, _key_values(spec, rest)
    if name not in ENVS:
        raise ValueError(f"unknown env {name!r}; valid names: {sorted(ENVS)}, and the wrappers {sorted(WRAPPERS)}")
    cls = ENVS[name]
    signature = inspect.signature(cls).parameters
    unknown = sorted(set(raw if raw is not None else params) - set(signature))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for env {name!r}; valid: {list(signature)}")
    if raw is not None:
        params = {k: _coerce(k, v, signature[k].default) for k, v in raw.items()}
    return cls(**params)


def make_mixture(specs: list, weights: list[float] | None = None, name: str = "mixture") -> Mixture:
    """A `Mixture` of `make_env(spec)` for each spec."""
    return Mixture([make_env(s) for s in specs], weights, name)


def _key_values(spec: str, text: str) -> dict[str, str]:
    """"k=v,k=v" (the parameters part of `spec`) -> {k: v} as text; an item without ``=`` fails."""
    raw = {}
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"env spec {spec!r}: expected key=value, got {item!r}")
        raw[key.strip()] = value.strip()
    return raw


def _coerce(key: str, value: str, default: Any) -> Any:
    """`value` as the type of `default`; strings that look like ints become ints otherwise."""
    try:
        if isinstance(default, bool):
            return {"true": True, "false": False, "1": True, "0": False}[value.lower()]
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            return tuple(_atom(v) for v in value.split("+"))
    except (KeyError, ValueError):
        raise ValueError(f"bad value {value!r} for parameter {key!r} (expected {type(default).__name__})") from None
    return value if isinstance(default, str) else _atom(value)


def _atom(value: str) -> int | str:
    number = parse_int(value)
    return value if number is None else number

