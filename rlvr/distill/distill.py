"""`rlvr distill`: a teacher writes worked solutions; the verifier decides what the student sees.

For `problems` train-split problems of an environment (or a mixture) the teacher writes
`k` solutions each; every solution is verified with the environment's own verifier and
the kept ones become an SFT dataset: JSONL, one chat conversation a line (loadable with
HF `datasets` and readable by `rlvr sft`), each with its provenance (teacher, sampling
parameters, verdict). Filters: `none` (pure imitation: errors and all), `correct` (only
verified solutions) and `best_of_k` (one per problem, the best verified).

On a multi-turn environment (`guess`, `tools:...`) the teacher plays `k` episodes of
each problem instead (rlvr/chat_rollout.py), and a kept episode is one row holding the
whole conversation (the observations as user or tool messages), with how it ended, its
turns and counts; `rlvr sft` learns its assistant turns.

The teacher is any OpenAI-compatible endpoint (`--base_url`; the key is read from the
environment variable named by `--api_key_env`, never written anywhere) or a local
checkpoint (`--teacher` path). Requests are cached on disk in the run directory, so a
killed run resumes without sending again any request that was already answered.

    rlvr serve runs/teacher --port 8000 &
    rlvr distill --base_url http://127.0.0.1:8000/v1 --teacher teacher --env arithmetic --k 4
    rlvr sft --model runs/base --data runs/distill/data.jsonl
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rlvr.atomic import write_text
from rlvr.compute import Compute
from rlvr.config import InputError
from rlvr.engine.fields import EngineFields
from rlvr.fields import Device, DType, Tensorboard, Wandb, WandbProject
from rlvr.distill.teacher import BudgetExceeded, ChatRequest, HTTPTeacher, LocalTeacher, TeacherConfig
from rlvr.envs import make_env
from rlvr.models import count_parameters
from rlvr.rollout import judge_turn
from rlvr.run import Run, last_model
from rlvr.types import MultiTurn, Sampling, Turn
from rlvr.verify.filters import FILTERS, keep


class DistillConfig(EngineFields):
    run_dir: str = Field("runs/distill", description="Run directory: data.jsonl, the request cache, summary.json.")
    env: Any = Field("arithmetic", description="Environment spec whose train-split problems are distilled (the rows carry its prompts).")
    teacher_env: Any = Field(None, description="Ask the teacher with this spec's prompts instead, e.g. more worked examples (context distillation: prompt:shots=8:ENV teaches prompt:shots=0:ENV); it must pose the same problems (another prompt: wrapper of the same single-turn environment). None: --env's.")
    problems: int = Field(200, ge=1, description="Problems to ask the teacher about.")
    k: int = Field(4, ge=1, description="Solutions asked per problem.")
    filter: Literal[tuple(FILTERS)] = Field("correct", description="Which solutions to keep: none | correct | one_per_problem | shortest | best_of_k (see rlvr/verify/filters.py).")
    teacher: str = Field("teacher", description="Model name at --base_url, or a local model (checkpoint, run dir, HF dir, registered name) when base_url is empty.")
    device: Device  # of a local teacher
    dtype: DType
    base_url: str = Field("", description="OpenAI-compatible endpoint root (e.g. http://127.0.0.1:8000/v1); empty: local teacher.")
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the API key.")
    temperature: float = Field(1.0, ge=0, description="Teacher sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Teacher nucleus sampling threshold.")
    max_tokens: int = Field(256, ge=1, description="Teacher completion token limit, of each turn in an episode (a cut solution is never kept as correct).")
    max_concurrency: int = Field(8, ge=1, description="Requests in flight at once (HTTP teacher).")
    budget_tokens: int | None = Field(None, ge=1, description="Teacher tokens this run may spend; it stops cleanly and says so.")
    chunk: int = Field(32, ge=1, description="Problems sent per batch (progress and resumption granularity).")
    cache_dir: str = Field("", description="Request cache (default: RUN_DIR/teacher_cache); share it to reuse answers.")
    seed: int = Field(0, description="Seed of the problem stream and of the teacher's sampling.")
    tensorboard: Tensorboard
    wandb: Wandb
    wandb_project: WandbProject
    teacher_params: int = Field(0, ge=0, description="The teacher's parameter count, for its FLOPs (0: unknown; a local teacher is counted).")


def make_teacher(cfg: DistillConfig, cache_dir: Path):
    if cfg.base_url:
        return HTTPTeacher(TeacherConfig(base_url=cfg.base_url, model=cfg.teacher, api_key_env=cfg.api_key_env,
                                         max_concurrency=cfg.max_concurrency, budget_tokens=cfg.budget_tokens,
                                         cache_dir=str(cache_dir)))
    from rlvr.train.setup import resolve_device, resolve_dtype

    device = resolve_device(cfg.device)
    return LocalTeacher(model_path=last_model(cfg.teacher), cache_dir=cache_dir, default_max_tokens=cfg.max_tokens,
                        engine=cfg.engine, engine_options=cfg.engine_options, device=device,
                        dtype=resolve_dtype(cfg.dtype, device))


def main(cfg: DistillConfig) -> dict[str, Any]:
    run_dir = Path(cfg.run_dir)
    # Always resumable: a rerun replays every answered request from the cache, so its
    # per-chunk log starts afresh.
    summary_file = run_dir / "summary.json"
    if (run_dir / "checkpoints").exists() or (
            summary_file.exists() and json.loads(summary_file.read_text()).get("command", "distill") != "distill"):
        raise FileExistsError(f"{run_dir} holds another command's run; choose another --run_dir")
    env = make_env(cfg.env)
    stream = env.problems("train", cfg.seed)
    problems = [next(stream) for _ in range(cfg.problems)]
    prompts = {p.id: q.messages() for p, q in zip(problems, teacher_problems(cfg, env, problems))}
    new = not run_dir.exists()
    run = Run(run_dir, cfg, resume=True)
    run.restart_logs()
    try:
        teacher = make_teacher(cfg, Path(cfg.cache_dir) if cfg.cache_dir else run_dir / "teacher_cache")
    except BaseException:
        if new:  # a teacher that cannot load leaves no run behind
            run.discard()
        raise
    provenance = {"teacher": cfg.teacher, "base_url": cfg.base_url or None, "n": cfg.k, "temperature": cfg.temperature,
                  "top_p": cfg.top_p, "max_tokens": cfg.max_tokens, "seed": cfg.seed,
                  **({"teacher_env": cfg.teacher_env} if cfg.teacher_env is not None else {})}
    rows: list[dict[str, Any]] = []
    counts = {"requests": 0, "cache_hits": 0, "generated": 0, "correct": 0, "kept": 0, "rejected": 0}
    # What the data cost its teacher, cache hits included: a second filter over the same
    # cached answers is charged the same tokens (compute.py); `spent_tokens` is what this run paid.
    n_teacher = cfg.teacher_params or _local_params(teacher)
    compute = Compute(0, "distill")
    stopped = None
    progress = Progress(TextColumn("[bold]distill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[counts]}"))
    with progress:
        task = progress.add_task("distill", total=len(problems), counts="")
        for start in range(0, len(problems), cfg.chunk):
            chunk = problems[start:start + cfg.chunk]
            asked, stopped = (_episodes(teacher, env, chunk, cfg) if isinstance(env, MultiTurn)
                              else _answers(teacher, env, chunk, cfg, prompts))
            for problem, answers in zip(chunk, asked):
                if answers is None:  # not sent: the budget ran out first
                    continue
                counts["requests"] += answers.requests
                counts["cache_hits"] += answers.cached
                counts["generated"] += len(answers.scored)
                counts["correct"] += sum(v.correct for _, v in answers.scored)
                compute.teacher(answers.completion_tokens, 2.0 * n_teacher * answers.total_tokens)
                kept = keep(answers.scored, cfg.filter)
                counts["kept"] += len(kept)
                counts["rejected"] += len(answers.scored) - len(kept)
                rows += [{"messages": answers.messages[text], "problem_id": problem.id, "env": problem.env,
                          "provenance": provenance, **answers.extra.get(text, {}),
                          "verdict": {"reward": v.reward, "correct": v.correct, "parsed": v.parsed,
                                      "flags": sorted(v.flags)}}
                         for text, v in kept]
            progress.update(task, advance=len(chunk), counts=" ".join(f"{k}={v}" for k, v in counts.items()))
            run.log(start // cfg.chunk + 1, {**counts, **compute.metrics()})
            if stopped:
                break
    write_text(run_dir / "data.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in rows))
    total = compute.total()
    summary = {"command": "distill", **counts, "teacher_tokens": total.teacher_tokens, "spent_tokens": teacher.spent_tokens,
               "teacher_pass_rate": counts["correct"] / max(1, counts["generated"]), "teacher": cfg.teacher,
               "teacher_params": n_teacher or None, "problems": len(problems), "filter": cfg.filter,
               "seconds": total.wall_seconds, "stopped": stopped, "data": str(run_dir / "data.jsonl"),
               **compute.summary()}
    run.finish(summary)
    if stopped:
        print(f"rlvr distill: stopped early, {stopped}; kept what was answered ({counts['kept']} rows)")
    return summary


@dataclass
class Answers:
    """A problem's solutions as the filters read them, (text, verdict), where the text is a
    single answer or, for an episode, its conversation after the prompt (so duplicates are
    whole episodes); each text's SFT `messages` and any further keys of its row; what the
    teacher was asked for them."""

    scored: list[tuple[str, Any]]
    messages: dict[str, list[dict[str, Any]]]
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: int = 0
    cached: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def teacher_problems(cfg: DistillConfig, env, problems: list) -> list:
    """The problems as the teacher is asked them: `problems` themselves, or (`teacher_env`)
    the same problems in that spec's prompts, checked to be the same problems."""
    if cfg.teacher_env is None:
        return problems
    if isinstance(env, MultiTurn):
        raise InputError(f"teacher_env asks a teacher for single answers; env {cfg.env!r} is multi-turn")
    stream = make_env(cfg.teacher_env).problems("train", cfg.seed)
    asked = [next(stream) for _ in problems]
    for p, q in zip(problems, asked):
        if (p.id, p.answer) != (q.id, q.answer):
            raise InputError(f"teacher_env {cfg.teacher_env!r} poses other problems than env {cfg.env!r} "
                             f"({q.id!r} where {p.id!r} was expected): it must wrap the same environment")
    return asked


def _answers(teacher, env, chunk: list, cfg: DistillConfig,
             prompts: dict[str, list]) -> tuple[list[Answers | None], str | None]:
    """`k` answers of each problem (asked in `prompts`, by problem id), one request a problem;
    None where the budget left it unasked."""
    requests = [ChatRequest(messages=prompts[p.id], n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens, seed=cfg.seed) for p in chunk]
    stopped = None
    try:
        results = teacher.complete(requests)
    except BudgetExceeded as e:  # what was answered (and paid for) is still kept
        stopped = f"teacher budget reached: {e.spent} of {e.budget} tokens spent"
        results = e.results
    out: list[Answers | None] = []
    for problem, result in zip(chunk, results):
        if result is None:
            out.append(None)
            continue
        scored = [(text, judge_turn(env, problem, Turn(text, [], reason)))
                  for text, reason in zip(result.texts, result.finish_reasons)]
        out.append(Answers(scored, {t: problem.messages() + [{"role": "assistant", "content": t}] for t, _ in scored},
                           requests=1, cached=int(result.cached), total_tokens=result.total_tokens,
                           completion_tokens=result.usage.get("completion_tokens", 0)))
    return out, stopped


def _episodes(teacher, env, chunk: list, cfg: DistillConfig) -> tuple[list[Answers | None], str | None]:
    """`k` episodes of each problem played by the teacher (rlvr/chat_rollout.py); an
    episode the budget left unfinished is not a solution, nor one the verifier could not judge."""
    from rlvr.chat_rollout import UNFINISHED, play

    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_tokens, seed=cfg.seed)
    played = play(teacher, env, chunk, cfg.k, sampling)
    stopped = (f"teacher budget reached: {teacher.spent_tokens} of {cfg.budget_tokens} tokens spent"
               if any(e.ended == UNFINISHED for group in played for e in group) else None)
    out: list[Answers | None] = []
    for group in played:
        answers = Answers([], {}, requests=sum(e.requests for e in group), cached=sum(e.cached for e in group),
                          completion_tokens=sum(e.completion_tokens for e in group),
                          total_tokens=sum(e.tokens for e in group))
        for e in group:
            if e.verdict is None:
                continue
            text = json.dumps(e.messages[e.prompt_len:], ensure_ascii=False)
            answers.scored.append((text, e.verdict))
            answers.messages[text] = e.messages
            answers.extra[text] = {"ended": e.ended, "turns": e.turns, "counts": e.counts,
                                   **({"tools": list(e.problem.meta["tools"])} if e.problem.meta.get("tools") else {})}
        out.append(answers if answers.requests else None)
    return out, stopped


def _local_params(teacher) -> int:
    engine = getattr(teacher, "engine", None)
    return count_parameters(engine.model) if engine is not None else 0
