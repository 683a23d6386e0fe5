"""`rlvr noise-audit`: estimate a verifier's false-positive and false-negative rates.

A correction for a noisy verifier (rlvr/algos/noise.py) needs its error rates. This
command measures them against something you trust more, in one of two ways:

- a **labelled set** (`--labelled FILE.jsonl`, one object a line: `problem` with the
  fields of rlvr.types.Problem, `completion`, and `correct`, the true label), or
- **agreement with a stricter held-out verifier on rollouts** (`--model`): the model
  answers `problems` training problems `samples` times each, and every completion is
  judged by the environment's verifier and by the held-out one (the environment's
  own `heldout` check, as `noisy:` and `lenient:` environments name one, or the
  environment given as `--reference`).

fp = P(verifier accepts | truth rejects), fn = P(verifier rejects | truth accepts),
each with a 95% Wilson interval and its counts; `--out FILE.json` writes them in the
form `rlvr rl --noise_rates FILE.json` reads.

    rlvr noise-audit --env noisy:fn=0.2,fp=0.05:arithmetic:digits=3,ops=add --model runs/base --out rates.json
    rlvr rl --env noisy:fn=0.2,fp=0.05:arithmetic:digits=3,ops=add --reward_correction backward --noise_rates rates.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from pydantic import Field

from rlvr.config import InputError
from rlvr.engine.fields import EngineFields
from rlvr.eval_metrics import wilson


class NoiseAuditConfig(EngineFields):
    env: Any = Field("arithmetic", description="Environment whose verifier is audited (its spec).")
    model: str = Field("", description="Model whose rollouts are judged twice (HF dir, checkpoint, run dir, .gguf).")
    labelled: str = Field("", description="A labelled JSONL (problem, completion, correct) instead of rollouts.")
    reference: Any = Field(None, description="A stricter environment whose verdict counts as the truth (default: the env's own held-out check).")
    problems: int = Field(200, ge=1, description="Training problems answered (rollouts).")
    samples: int = Field(4, ge=1, description="Completions per problem at T=1 (rollouts).")
    max_new_tokens: int = Field(64, ge=1, description="Completion token limit (rollouts).")
    seed: int = Field(0, description="Seed of the problems and of sampling.")
    out: str = Field("", description="Write the estimates here as JSON (what rlvr rl --noise_rates reads).")


def rates(pairs: Iterable[tuple[bool, bool]]) -> dict[str, Any]:
    """(verifier accepted, truly correct) pairs -> fp and fn with intervals and counts."""
    tp = fp = fn = tn = 0
    for accepted, correct in pairs:
        if correct:
            tp += accepted
            fn += not accepted
        else:
            fp += accepted
            tn += not accepted
    out: dict[str, Any] = {"counts": {"true_positive": tp, "false_positive": fp, "false_negative": fn,
                                      "true_negative": tn}}
    for name, errors, n in (("fp", fp, fp + tn), ("fn", fn, fn + tp)):
        out[name] = {"estimate": errors / n if n else 0.0, "ci": list(wilson(errors, n)), "n": n}
    return out


def _labelled(path: Path, env) -> list[tuple[bool, bool]]:
    from rlvr.jsonl import read_jsonl
    from rlvr.types import Problem

    pairs = []
    for line, row in read_jsonl(path):
        try:
            problem = Problem(**row["problem"])
            pairs.append((env.verify(problem, row["completion"]).correct, bool(row["correct"])))
        except (KeyError, TypeError) as e:
            raise InputError(f"{path}:{line}: a row needs problem (Problem fields), completion and correct ({e})") from None
    return pairs


def _rollouts(cfg: NoiseAuditConfig, env) -> list[tuple[bool, bool]]:
    from rlvr.engine import make_engine
    from rlvr.envs import make_env
    from rlvr.models import load_model
    from rlvr.rollout import generate_rollouts
    from rlvr.run import last_model
    from rlvr.types import HeldOut
    from rlvr.types import Sampling

    truth = make_env(cfg.reference).verify if cfg.reference is not None else (env.heldout if isinstance(env, HeldOut) else None)
    if truth is None:
        raise InputError(f"env {cfg.env!r} names no held-out verifier: pass --reference ENV (a stricter one) "
                         "or --labelled FILE")
    model, tok = load_model(last_model(cfg.model))
    stream = env.problems("train", cfg.seed)
    problems = [next(stream) for _ in range(cfg.problems)]
    sampling = Sampling(temperature=1.0, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    engine = make_engine(model, tok, cfg.engine, role="inference", options=cfg.engine_options)
    rollouts = generate_rollouts(engine, env, problems, cfg.samples, sampling)
    return [(v.correct, truth(r.problem, s.text).correct)
            for r in rollouts for s, v in zip(r.samples, r.verdicts) if s.finish_reason == "stop"]


def main(cfg: NoiseAuditConfig) -> dict[str, Any]:
    from rlvr.atomic import write_json
    from rlvr.envs import make_env

    env = make_env(cfg.env)
    if bool(cfg.model) == bool(cfg.labelled):
        raise InputError("noise-audit needs exactly one of --model (rollouts) and --labelled (a labelled JSONL)")
    pairs = _labelled(Path(cfg.labelled), env) if cfg.labelled else _rollouts(cfg, env)
    result = {**rates(pairs), "env": cfg.env, "source": cfg.labelled or cfg.model, "pairs": len(pairs)}
    for name in ("fp", "fn"):
        r = result[name]
        print(f"{name}: {r['estimate']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] over {r['n']} "
              f"{'truly wrong' if name == 'fp' else 'truly right'} completions")
    if cfg.out:
        write_json(Path(cfg.out), result)
    return result
