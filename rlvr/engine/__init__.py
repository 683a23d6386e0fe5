"""Engines turn prompt token ids into samples and take new weights by version.

rlvr builds every engine through `make_engine(model, tok, engine, role=...)`
(registry.py): `engine` names a backend registered in `ENGINES` (the `engine` config key
of every command that generates, fields.py; default "torch", rlvr's own, torch_engine.py),
and `role` says what the caller needs in terms every backend understands (`ROLES`):
"trainer" (generate from the trainer's live weights), "snapshot" (an own copy of the
weights, fed by `sync_weights`) or "inference" (weights nothing trains).

Adding a backend (vLLM, a remote OpenAI-compatible server, ...) is one new file in this
folder, `NAME_engine.py`: every `*_engine.py` here is imported with `rlvr.engine`, and
registers itself.

1. An engine class with what the `Engine` protocol (rlvr/types.py) asks: `tok`,
   `version`, `generate(prompts, n, sampling)` (token ids in; per prompt, n `Sample`s
   with each completion token's behaviour log-prob) and `sync_weights(state, version,
   partial)`.
2. Its own options, if it has any, as a `rlvr.config.Config` with one documented Field
   each (a server's `base_url` and `api_key_env`, vLLM's `gpu_memory_utilization`): users
   pass them as `--engine_options='{base_url: http://...}'`, and a bad one fails when
   the config is read.
3. `build(model, tok, *, role, version, max_batch, options)` returning the engine, and
   `register_engine("NAME", build, Options)` at the end of the file. `build` honours each
   role: a backend that cannot generate from the trainer's memory (vLLM, a server)
   serves "trainer" as it serves "snapshot": whoever holds a trainer-role engine hands
   it the whole state by `sync_weights` before generating from new weights. A backend
   that loads weights itself finds them from `model` (`model.config.name_or_path`) or
   its options; `max_batch`, when not None, caps completions decoded together.
4. Import the backend's own library inside `build`, not at the top of the file: every
   backend file is imported wherever rlvr.engine is, so `--engine NAME` is checked, and
   the other backends run, where that library is not installed.

`--engine NAME` then selects it in rl, rs, sft's evaluations, eval, serve, distill's
local teacher and noise-audit; tests/test_engine_registry.py registers a fake backend
and runs an evaluation through it.
"""

import importlib
import pkgutil

from rlvr.engine.registry import ENGINES, ROLES, Role, engine_options, make_engine, register_engine
from rlvr.engine.torch_engine import TorchEngine

# Each backend file registers itself when imported: importing every one here makes its
# name known wherever rlvr.engine is (config validation, a Ray worker's process).
for _module in pkgutil.iter_modules(__path__):
    if _module.name.endswith("_engine"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ENGINES", "ROLES", "Role", "TorchEngine", "engine_options", "make_engine", "register_engine"]
