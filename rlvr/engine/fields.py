"""The `engine` and `engine_options` keys, shared by every command that generates.

The trainers get them with their model keys (rlvr/train/setup.py); eval, serve, distill
(its local teacher) and noise-audit inherit them here. Both are checked when the config
is read, so a typo in a backend's name or option fails at start naming the valid ones,
not after a model has loaded:

    rlvr eval --model runs/rl --engine torch --engine_options='{kv_budget_gb: 2}'
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from rlvr.config import Config
from rlvr.engine.registry import ENGINES, backend, engine_options


class EngineFields(Config):
    engine: str = Field("torch", description=f"Generation backend: {' | '.join(sorted(ENGINES))}. torch is rlvr's "
                                             "own engine (CPU or GPU); another backend is one file in rlvr/engine/ "
                                             "(its __init__ says how to add one).")
    engine_options: dict[str, Any] = Field({}, description="The backend's own options, e.g. "
                                                           "--engine_options='{kv_budget_gb: 2}' (torch: max_batch, "
                                                           "kv_budget_gb, reuse_cache; see rlvr/engine/torch_engine.py).")

    @field_validator("engine")
    @classmethod
    def _known(cls, name: str) -> str:
        backend(name)
        return name

    @field_validator("engine_options")
    @classmethod
    def _valid(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "engine" in info.data:  # else the engine's own error says what is wrong
            engine_options(info.data["engine"], options)
        return options
