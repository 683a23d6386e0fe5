"""Evaluation: pass@1, unbiased pass@k, maj@k and greedy accuracy, each with a 95% CI.

The held-out set is the first `problems` distinct problems of each environment's "eval"
split at a fixed seed, so every evaluation of every run sees the same problems. pass@1
is the mean over samples at the sampling temperature; greedy accuracy is reported beside
it because a base whose greedy answer is already right makes RL look better than it is.

    rlvr eval --model runs/demo/rl --env arithmetic --problems 200 --samples 16
    rlvr eval --model smollm2-135m --env arithmetic:digits=2 --answer_format answer_is

A model that was not trained on rlvr's ``####`` answers (any instruct model) is asked
for its own habit with `--answer_format` (``boxed``, ``answer_is``), optionally with a
`--system_prompt` and `--few_shot` worked examples (rlvr.envs.prompting).

A model behind any OpenAI-compatible chat endpoint (a teacher, a frontier API) is
evaluated the same way with `--base_url` (`--model` is then the endpoint's model name):
the same held-out problems, verifiers, metrics and flags, every answer cached on disk
(`--cache_dir`, default RUN_DIR/api_cache) so that a rerun asks nothing twice. A
multi-turn environment's episodes (`guess`, `tools:...`) are played as conversations
with the endpoint (rlvr/chat_rollout.py), with the same ending breakdown.

    rlvr eval --base_url http://127.0.0.1:8000/v1 --model teacher --env arithmetic --run_dir runs/eval-teacher
    rlvr eval --base_url http://127.0.0.1:8000/v1 --model teacher --env tools:calculator:arithmetic --run_dir runs/eval-tools
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import Field

from rlvr.engine.fields import EngineFields
from rlvr.fields import DEMO_BASE, Device, DType, EnvSpec
from rlvr.envs.prompting import PromptFields
from rlvr.eval_metrics import summarize
from rlvr.rollout import ending, episode_stats, generate_rollouts, judge_turn
from rlvr.types import Environment, MultiTurn, Problem, Sample, Sampling, Turn, VerifierError

UNJUDGED = "unjudged"  # the verifier failed on the sample (a crashed worker, a broken sandbox)


class EvalConfig(PromptFields, EngineFields):
    model: str = Field(DEMO_BASE, description=f"Model to evaluate: HF directory, checkpoint, run dir, .gguf or a registered name ({DEMO_BASE}: the base `rlvr demo` pretrained).")
    env: EnvSpec
    device: Device
    dtype: DType
    problems: int = Field(200, description="Held-out problems per environment.")
    samples: int = Field(16, description="Samples per problem at `temperature` (pass@k needs k <= samples).")
    ks: list[int] = Field([1, 4, 16], description="k values for pass@k and maj@k.")
    temperature: float = Field(1.0, description="Sampling temperature for pass@k.")
    top_p: float = Field(1.0, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(64, description="Token limit per completion; a cut completion scores 0.")
    greedy: bool = Field(True, description="Also measure greedy (temperature 0) accuracy.")
    seed: int = Field(0, description="Seed of the eval problem stream and of sampling.")
    run_dir: str | None = Field(None, description="Where to write eval.json (default: print only).")
    base_url: str = Field("", description="Evaluate a model behind this OpenAI-compatible endpoint (--model: its name there) instead of a local one.")
    api_key_env: str = Field("", description="Environment variable holding the endpoint's API key (never written anywhere); empty: none.")
    max_concurrency: int = Field(8, ge=1, description="Requests to the endpoint in flight at once.")
    cache_dir: str = Field("", description="Where the endpoint's answers are cached (default: RUN_DIR/api_cache; none without --run_dir).")



# Draws in a row that bring no new problem before a held-out split counts as exhausted,
# per distinct problem found (at least 1000): of m equally likely problems, about
# m e^(-PATIENCE) are still missing then.
PATIENCE = 10


def eval_problems(env: Environment, n: int, seed: int = 0) -> list[Problem]:
    """The first `n` distinct problems of the eval split's stream at `seed`, distinct as the
    environment judges (its `canonical` form).

    A stream draws with replacement, and a small problem space repeats itself ("7+7" nine
    times in 100 draws of one-digit sums): each repeat would count as another independent
    problem in every interval. Where the split holds fewer than `n` distinct problems, those
    found are returned (all of them, but for a few in e^10 of a large space), with a warning.
    """
    it, out, seen, dry = env.problems("eval", seed), [], set(), 0
    while len(out) < n and dry < max(1000, PATIENCE * len(out)):
        p = next(it)
        key = env.canonical(p)  # 3+4 and 4+3 are one problem to the environment: one in the set
        if key in seen:
            dry += 1
            continue
        seen.add(key)
        out.append(p)
        dry = 0
    if len(out) < n:
        warnings.warn(f"{env.name}: its eval split holds only {len(out)} distinct problems, not {n}: "
                      f"evaluating on those (a larger space, e.g. more digits, gives more)",
                      RuntimeWarning, stacklevel=2)
    return out


def evaluate(engine, env: Environment, problems: list[Problem], samples: int, ks: list[int],
             sampling: Sampling, greedy: bool = True) -> dict[str, Any]:
    """Metrics per environment name (a mixture reports each child) plus "all"."""
    # The truth, also behind a noisy verifier (rlvr.envs.noisy): evaluation measures the model.
    # A sample the verifier could not judge (rlvr.rollout) counts as not correct, flagged
    # `unjudged`: dropping it would take it out of the denominator.
    rows = [_row(r.problem, r.verdicts, r.dropped, r.samples)
            for r in generate_rollouts(engine, env, problems, samples, sampling)]
    if greedy:
        g = Sampling(temperature=0.0, max_new_tokens=sampling.max_new_tokens)
        for row, r in zip(rows, generate_rollouts(engine, env, problems, 1, g)):
            row["greedy"] = [bool(r.verdicts) and r.verdicts[0].true_correct]
    return metrics_of(rows, ks, greedy)


def _row(problem: Problem, verdicts: list, dropped: int, samples: list[Sample]) -> dict[str, Any]:
    """One problem's samples as the metrics read them."""
    return {"env": problem.env, "id": problem.id,
            "correct": [v.true_correct for v in verdicts] + [False] * dropped,
            "answers": [v.parsed for v in verdicts] + [None] * dropped,
            "flags": [sorted(v.flags) for v in verdicts] + [[UNJUDGED]] * dropped,
            "endings": [ending(s) for s in samples] + [UNJUDGED] * dropped, "samples": samples}


def evaluate_api(client, env: Environment, problems: list[Problem], samples: int, ks: list[int],
                 sampling: Sampling, greedy: bool = True) -> dict[str, Any]:
    """`evaluate` for a model behind a chat endpoint (`client`: rlvr.distill.teacher's
    HTTPTeacher): each problem's messages asked for `samples` answers, judged as a rollout
    judges a turn; a multi-turn environment's episodes played as conversations."""
    from rlvr.chat_rollout import play
    from rlvr.distill.teacher_cache import ChatRequest

    multi = isinstance(env, MultiTurn)  # each sample an episode, a conversation (rlvr/chat_rollout.py)
    judged = _played if multi else partial(_judged, env)

    def ask(n: int, temperature: float) -> list:
        if multi:
            return play(client, env, problems, n, replace(sampling, temperature=temperature))
        return client.complete([ChatRequest(messages=p.messages(), n=n, temperature=temperature, top_p=sampling.top_p,
                                            max_tokens=sampling.max_new_tokens, seed=sampling.seed)
                                for p in problems])

    rows = [_row(p, *judged(p, res)) for p, res in zip(problems, ask(samples, sampling.temperature))]
    if greedy:
        for row, p, res in zip(rows, problems, ask(1, 0.0)):
            verdicts, _, _ = judged(p, res)
            row["greedy"] = [bool(verdicts) and verdicts[0].true_correct]
    return metrics_of(rows, ks, greedy)


def _played(problem: Problem, episodes: list) -> tuple[list, int, list[Sample]]:
    """(verdicts, episodes the verifier could not judge, the judged ones as samples) of one
    problem's episodes played against an endpoint."""
    judged = [e for e in episodes if e.verdict is not None]
    return [e.verdict for e in judged], len(episodes) - len(judged), [e.sample() for e in judged]


def _judged(env: Environment, problem: Problem, result) -> tuple[list, int, list[Sample]]:
    """(verdicts, answers the verifier could not judge, the judged answers as samples: text
    and how each ended) of one endpoint answer."""
    verdicts, dropped, samples = [], 0, []
    for text, reason in zip(result.texts, result.finish_reasons):
        finish = "length" if reason == "length" else "stop"
        try:
            verdicts.append(judge_turn(env, problem, Turn(text, [], finish)))
        except VerifierError:
            dropped += 1
            continue
        samples.append(Sample(problem, [], [], [], 0, finish, text=text))
    return verdicts, dropped, samples


def metrics_of(rows: list[dict[str, Any]], ks: list[int], greedy: bool) -> dict[str, Any]:
    """Metrics per environment name (a mixture reports each child) plus "all", from rows of
    per-sample correctness, answers and flags."""
    by_env: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_env.setdefault(row["env"], []).append(row)
    out: dict[str, Any] = {}
    for name, rows in sorted(by_env.items()) + ([("all", [p for v in by_env.values() for p in v])]
                                                if len(by_env) > 1 else []):
        out[name] = summarize(rows, ks)
        # Each problem's pass@1, for a paired comparison of two evaluations on the same set.
        out[name]["pass@1"]["per_problem"] = {p["id"]: sum(p["correct"]) / len(p["correct"]) for p in rows}
        if any("endings" in p for p in rows):
            out[name]["endings"] = endings(rows)
            out[name].update({"episodes": episode_stats([s for p in rows for s in p["samples"]])}
                             if any(s.source is not None for p in rows for s in p["samples"]) else {})
        if greedy:
            out[name]["greedy"] = summarize([{"correct": p["greedy"], "answers": [None]} for p in rows], [])["pass@1"]
    return out


def endings(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """How the samples ended (answer, length, turns, void, forged, unjudged ...): per
    ending, how many and the share of them that were correct."""
    tally: dict[str, list[int]] = {}
    for row in rows:
        for why, correct in zip(row["endings"], row["correct"]):
            tally.setdefault(why, [0, 0])
            tally[why][0] += 1
            tally[why][1] += bool(correct)
    return {why: {"count": n, "pass_rate": c / n} for why, (n, c) in sorted(tally.items())}


def headline(metrics: dict[str, Any], ks: list[int]) -> dict[str, float]:
    """Flat numbers of one environment's metrics, for tables and demo.json."""
    flat = {"pass_at_1": metrics["pass@1"]["mean"]}
    for k in ks:
        if k > 1 and f"pass@{k}" in metrics:
            flat[f"pass_at_{k}"] = metrics[f"pass@{k}"]["mean"]
    if "greedy" in metrics:
        flat["greedy"] = metrics["greedy"]["mean"]
    return flat


def main(cfg: EvalConfig) -> dict[str, Any]:
    from rlvr.engine import make_engine
    from rlvr.envs import make_env
    from rlvr.models import load_model
    from rlvr.run import last_model
    from rlvr.atomic import write_json
    from rlvr.train.setup import resolve_device, resolve_dtype

    env = make_env(cfg.prompted(cfg.env))
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p,
                        max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    problems = eval_problems(env, cfg.problems, cfg.seed)
    if cfg.base_url:
        from rlvr.distill.teacher import HTTPTeacher, TeacherConfig

        cache = cfg.cache_dir or (str(Path(cfg.run_dir) / "api_cache") if cfg.run_dir else None)
        client = HTTPTeacher(TeacherConfig(base_url=cfg.base_url, model=cfg.model, api_key_env=cfg.api_key_env or None,
                                           max_concurrency=cfg.max_concurrency, cache_dir=cache))
        result = evaluate_api(client, env, problems, cfg.samples, cfg.ks, sampling, cfg.greedy)
    else:
        device = resolve_device(cfg.device)
        model, tok = load_model(last_model(cfg.model), device, resolve_dtype(cfg.dtype, device))
        engine = make_engine(model, tok, cfg.engine, role="inference", options=cfg.engine_options)
        result = evaluate(engine, env, problems, cfg.samples, cfg.ks, sampling, cfg.greedy)
    result = {"model": str(cfg.model), "config": cfg.model_dump(mode="json"), "metrics": result}
    if cfg.run_dir:
        write_json(Path(cfg.run_dir) / "eval.json", result)
    return result


def print_table(metrics: dict[str, Any]) -> None:
    """Accuracy per environment with the share of each verdict flag beside it: a bare 0
    has a reason (no answer written, truncated, a format error, several answers)."""
    from rich.console import Console
    from rich.table import Table

    flags = sorted({f for m in metrics.values() for f in m.get("flags", {})})
    table = Table(title="evaluation (95% CIs); flags: share of all samples")
    for col in ["env", "pass@1", "greedy", *flags]:
        table.add_column(col, justify="left" if col == "env" else "right")
    notes = []
    for name, m in metrics.items():
        p, g = m["pass@1"], m.get("greedy")
        table.add_row(name, f"{p['mean']:.1%} [{p['ci'][0]:.0%}, {p['ci'][1]:.0%}]",
                      f"{g['mean']:.1%}" if g else "-", *[f"{m.get('flags', {}).get(f, 0.0):.1%}" for f in flags])
        missing = m.get("flags", {}).get("no_answer", 0.0)
        if missing >= 0.5:
            notes.append(f"{name}: {missing:.0%} of completions never wrote an answer in the format the verifier "
                         "reads: the model does not follow this answer format (see the environment's prompt; "
                         "--answer_format boxed or answer_is asks in another)")
        if m.get("flags", {}).get("truncated", 0.0) >= 0.5:
            notes.append(f"{name}: most completions hit the token limit: raise --max_new_tokens")
    console = Console()
    console.print(table)
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")
    if any(len(m.get("endings", {})) > 1 or "episodes" in m for m in metrics.values()):
        console.print(endings_table(metrics))


def endings_table(metrics: dict[str, Any]):
    """Per environment, how its samples ended: ending -> count, pass rate; and what a
    multi-turn episode did on average (turns, tool calls, errors, void turns)."""
    from rich.table import Table

    table = Table(title="how episodes ended (pass rate of each ending); per episode: turns, tool calls, errors ...")
    for col in ("env", "ending", "count", "pass rate", "per episode"):
        table.add_column(col, justify="left" if col in ("env", "ending", "per episode") else "right")
    for name, m in metrics.items():
        per = ", ".join(f"{k} {v:.2f}" for k, v in m.get("episodes", {}).items() if not k.startswith("ended_"))
        for i, (why, e) in enumerate(m.get("endings", {}).items()):
            table.add_row(name if i == 0 else "", why, str(e["count"]), f"{e['pass_rate']:.1%}", per if i == 0 else "")
    return table
