"""`rlvr envs` and `rlvr audit ENV`: look at environments before training on them.

`rlvr verify-audit` measures math equivalence (precision, recall) on a hand-labelled
set of answer pairs, beside a naive string match. `rlvr envs` lists every registered environment with one sample problem and its gold
answer. `rlvr audit ENV` throws hack probes at an environment's verifier (an empty
answer, several answers, every option listed, the format around garbage, text that
tells the grader the answer is right, an answer cut short...) and prints how many
problems each probe fooled: every cell must be 0. A multi-turn environment (guess,
tools:...) also meets episode probes played through the rollout: a forged tool result,
the answer smuggled into a tool call, an episode that never ends, void turns.

    rlvr envs
    rlvr envs --gym                  every reasoning-gym task, for --env gym:TASK
    rlvr audit countdown --problems 50
    rlvr audit tools:calculator+python:arithmetic
    rlvr verify-audit
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from rlvr.config import Config
from rlvr.verify.formats import FORMATS


class EnvsConfig(Config):
    seed: int = Field(0, description="Seed of the sample problem shown for each environment.")
    gym: bool = Field(False, description="List the reasoning-gym tasks instead (each one is --env gym:TASK).")


class VerifyAuditConfig(Config):
    timeout: float = Field(5.0, gt=0, description="Seconds math-verify may spend on one pair.")


class AuditConfig(Config):
    positional: ClassVar[str] = "env"
    env: Any = Field("arithmetic", description="Environment spec to audit (a name, 'name:key=value,...' or a mapping).")
    problems: int = Field(20, ge=1, description="Problems each probe is tried on.")
    seed: int = Field(0, description="Seed of the problem stream.")
    answer_format: Literal[("all", *FORMATS)] = Field(
        "all", description="Answer format the probes are written in: all (every format the env accepts; code "
                           f"environments accept only hashes) or one of {' | '.join(FORMATS)}.")


def list_envs(cfg: EnvsConfig) -> list[dict[str, str]]:
    from rlvr.envs import ENVS, make_env

    rows = []
    for name in sorted(ENVS) + ["gym:basic_arithmetic"]:  # the last stands for every reasoning-gym task
        try:
            env = make_env(name)
            problem = next(env.problems("train", cfg.seed))
            prompt = problem.prompt if isinstance(problem.prompt, str) else problem.prompt[-1]["content"]
            rows.append({"env": name, "prompt": prompt, "gold": env.gold_text(problem)})
        except Exception as e:  # an optional dependency missing: say so, keep listing
            rows.append({"env": name, "prompt": f"(unavailable: {e})", "gold": ""})
    return rows


def envs_main(cfg: EnvsConfig) -> list[dict[str, str]]:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if cfg.gym:
        from rlvr.envs.gym import gym_tasks
        tasks = gym_tasks()
        print("\n".join(f"gym:{t}" for t in tasks))
        return [{"env": f"gym:{t}"} for t in tasks]
    rows = list_envs(cfg)
    table = Table(title="environments (rlvr rl --env NAME; the answer follows ####, or any answer format of "
                        f"{', '.join(FORMATS)} with --answer_format or a prompt:format=F:NAME spec)", show_lines=True)
    for col in ("env", "sample prompt", "gold"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*(escape(r[k]) for k in ("env", "prompt", "gold")))  # `[i]` in code is text, not markup
    Console().print(table)
    return rows


def audit_main(cfg: AuditConfig) -> list[dict[str, Any]]:
    """The probes in each answer format; every row carries its `format`."""
    from rlvr.envs import make_env
    from rlvr.envs.prompting import Prompted, accepts_format, is_prompted
    from rlvr.types import MultiTurn
    from rlvr.verify.probes import format_audit, run_audit

    env = make_env(cfg.env)
    if is_prompted(env):  # its prompt: spec chose the format: audit that one
        rows = run_audit(env, n_problems=cfg.problems, seed=cfg.seed)
        print(f"format set by the env spec:\n{format_audit(rows)}")
        return [{**r, "format": getattr(env, "answer_format", "mixed")} for r in rows]
    formats = list(FORMATS) if cfg.answer_format == "all" else [cfg.answer_format]
    rows = []
    for name in formats:
        if cfg.answer_format == "all" and not accepts_format(env, name):
            print(f"format {name}: skipped ({env.name} reads only ####)\n")
            continue
        if cfg.answer_format == "all" and name != "hashes" and isinstance(env, MultiTurn):
            print(f"format {name}: skipped ({env.name} is multi-turn: its episodes keep their own answer format)\n")
            continue
        some = run_audit(env if name == "hashes" else Prompted(env, name), n_problems=cfg.problems, seed=cfg.seed)
        print(f"format {name}:\n{format_audit(some)}\n")
        rows += [{**r, "format": name} for r in some]
    return rows


def verify_audit_main(cfg: VerifyAuditConfig) -> dict[str, Any]:
    """Precision and recall of rlvr's math equivalence on the labelled audit set."""
    from rlvr.verify.audit_set import audit_verifier, format_audit

    result = audit_verifier(cfg.timeout)
    print(format_audit(result))
    return result
