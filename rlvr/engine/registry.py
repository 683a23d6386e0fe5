"""The engine registry: generation backends by name, and `make_engine`, the one way rlvr builds an engine.

Commands say what they need from an engine in terms every backend understands (its
`role`, the version of the weights it starts with, at most how many completions it may
decode together) and the user picks the backend (the `engine` config key, rlvr/engine/
fields.py); the backend maps the role onto its own machinery (the torch engine: whether
it shares the trainer's weights and prepacks them). Options that only one backend has
(the torch engine's KV-cache budget) travel as that backend's `options`, a pydantic
model it registers, so an unknown or bad option fails when the config is read, by name.

    engine = make_engine(model, tok, "torch", role="inference")
    groups = engine.generate([prompt_ids], n=8, sampling=Sampling(temperature=1.0))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from pydantic import ValidationError

from rlvr.config import Config, InputError
from rlvr.types import Engine

Role = Literal["trainer", "snapshot", "inference"]

# What each role promises the caller; a backend honours all three.
ROLES: dict[str, str] = {
    "trainer": "generates from the trainer's live weights between its steps (synchronous RL, rs, evaluation "
               "during training): no copy of the weights; `sync_weights` says they changed and stamps the version",
    "snapshot": "holds its own copy of the weights, changed only by `sync_weights` (a producer generating ahead "
                "of the trainer, a Ray rollout worker, a check of a model its caller goes on training)",
    "inference": "generates from weights nothing trains (eval, serve, a local teacher, noise-audit): no copy, "
                 "and whatever makes generation fastest",
}


class NoOptions(Config):
    """A backend without options of its own."""


@dataclass(frozen=True)
class Backend:
    """A registered backend. `build(model, tok, role=, version=, max_batch=, options=)` returns
    an `Engine` (rlvr.types); `options` is the pydantic model of its own options, each
    documented in its Field, validated before `build` sees them."""

    build: Callable[..., Engine]
    options: type[Config] = NoOptions


ENGINES: dict[str, Backend] = {}


def register_engine(name: str, build: Callable[..., Engine], options: type[Config] = NoOptions) -> None:
    """Make backend `name` available to `make_engine` and to the `engine` config key."""
    ENGINES[name] = Backend(build, options)


def backend(name: str) -> Backend:
    try:
        return ENGINES[name]
    except KeyError:
        raise InputError(f"unknown engine {name!r}: the engines are {', '.join(sorted(ENGINES))} "
                         "(rlvr/engine/__init__.py says how to add one)") from None


def engine_options(name: str, options: Mapping[str, Any] | None) -> Config:
    """`options` validated as backend `name`'s own; an unknown or bad one fails by name."""
    model = backend(name).options
    unknown = sorted(set(options or {}) - set(model.model_fields))
    if unknown:
        known = ", ".join(model.model_fields) or "none"
        raise InputError(f"engine {name!r} has no option {unknown[0]!r} (its options: {known})")
    try:
        return model(**(options or {}))
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(f"engine {name!r}: option {'.'.join(map(str, err['loc']))!r}: {err['msg']} "
                         f"(got {err.get('input')!r})") from None


def make_engine(model, tok, engine: str = "torch", *, role: Role, version: int = 0, max_batch: int | None = None,
                options: Mapping[str, Any] | None = None) -> Engine:
    """An engine of backend `engine` for `model` and its tokenizer `tok`, in `role` (ROLES),
    holding weights of `version`. `max_batch`: the caller's cap on completions decoded
    together (serve's), None for the backend's own; `options`: the backend's own options."""
    if role not in ROLES:
        raise ValueError(f"unknown engine role {role!r}: the roles are {', '.join(ROLES)}")
    chosen = backend(engine)
    return chosen.build(model, tok, role=role, version=version, max_batch=max_batch,
                        options=engine_options(engine, options))
