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

import inspect
from typing import Any

from rlvr.config import InputError
from rlvr.envs.arithmetic import Arithmetic
from rlvr.envs.base import ProceduralEnv
from rlvr.envs.countdown import Countdown
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
                         "pyfunc": PyFunctions, "humaneval": HumanEval}

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


def _make_env(spec: str | dict[str, Any]):
    name = spec.get("name") if isinstance(spec, dict) else spec
    if name == "curriculum":  # one environment at a ladder of difficulties (rlvr.envs.curriculum)
        from rlvr.envs.curriculum import make_curriculum
        return make_curriculum(spec if isinstance(spec, dict) else {})
    if name == "noisy" or (isinstance(name, str) and name.startswith("noisy:")):  # a verifier that errs (rlvr.envs.noisy)
        from rlvr.envs.noisy import Noisy, parse_noisy_spec
        if isinstance(spec, dict):
            params = {k: v for k, v in spec.items() if k != "name"}
            if "env" not in params:
                raise ValueError(f"env spec {spec!r}: a noisy env needs 'env' (the environment it wraps)")
            return Noisy(make_env(params.pop("env")), **params)
        params, inner = parse_noisy_spec(spec)
        return Noisy(make_env(inner), **params)
    if name == "lenient" or (isinstance(name, str) and name.startswith("lenient:")):  # planted holes (rlvr.envs.lenient)
        from rlvr.envs.lenient import Lenient, parse_lenient_spec
        if isinstance(spec, dict):
            if "env" not in spec:
                raise ValueError(f"env spec {spec!r}: a lenient env needs 'env' (the strict environment it wraps)")
            return Lenient(make_env(spec["env"]), **{k: v for k, v in spec.items() if k not in ("name", "env")})
        hole, inner = parse_lenient_spec(spec)
        return Lenient(make_env(inner), hole)
    # Another answer format, a system prompt, few-shot examples (rlvr.envs.prompting).
    if name == "prompt" or (isinstance(name, str) and name.startswith("prompt:")):
        from rlvr.envs.prompting import make_prompted
        return make_prompted(spec)
    if isinstance(name, str) and name.startswith("gym:"):  # any reasoning-gym task, by name (rlvr.envs.gym)
        from rlvr.envs.gym import make_gym_env
        return make_gym_env(spec)
    if isinstance(spec, dict):
        params = dict(spec)
        if "name" not in params:
            raise ValueError(f"env spec {spec!r} has no 'name'; valid names: {sorted(ENVS)}")
        name, raw = params.pop("name"), None
    else:
        name, _, rest = spec.partition(":")
        params, raw = {}, _key_values(spec, rest)
    if name not in ENVS:
        raise ValueError(f"unknown env {name!r}; valid names: {sorted(ENVS)}")
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

