"""`rlvr experiment regimes`: which post-training regime buys how much, at equal compute?

From the same pretrained base, on the same environment (the demo's 3-digit addition),
each regime gets the same FLOP budget (rlvr/compute.py: 6·N per trained token,
2·N per generated or prompt token, teacher inference included):

    zero RL            rlvr rl from the base
    best-of-N self-SFT rlvr rs from the base (sample N, keep the verified, fine-tune, repeat)
    distill (all)      rlvr distill (every teacher solution), rlvr sft from the base
    distill (correct)  rlvr distill (verified solutions only), rlvr sft from the base
    distill + RL       the correct-only distillation with `sft_share` of the budget, then rlvr rl
    on-policy distill  rlvr opd from the base: the student samples, the teacher scores every
                       token (its forward passes charged to the budget)

The teacher is the base after `teacher_steps` of RL: a stronger model of the same
family, as a frontier API is to a student. Its own training is not charged to the
students (a teacher is given); its inference for their data is. Every run evaluates
on the same held-out problems as it trains, with its compute at that moment, and
`rlvr compare` draws them all against tokens and FLOPs, with the teacher as a line.
Each stage is skipped when its run already finished, so a killed experiment resumes.

    rlvr experiment regimes                       # ~15 minutes on 2 CPU cores
    rlvr experiment regimes --budget_flops 8e12   # a longer race
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from pydantic import Field
from rich.console import Console

from rlvr.atomic import write_json
from rlvr.config import Config
from rlvr.fields import BaseSeed, DistillProblems, HeldOutProblems, PipelineSeed, PretrainSteps, RLEvalEvery, TeacherSolutions
from rlvr.demo import pretrained_base
from rlvr.distill import distill
from rlvr import report
from rlvr.experiments import grid, seeds
from rlvr.experiments.seeds import PerSeed
from rlvr.train import opd, pretrain, rl, rs, sft

REGIMES = ("rl", "rs", "distill", "distill_rl", "opd")


class RegimesConfig(Config):
    run_dir: str = Field("runs/regimes", description="Experiment directory: one run per stage, report/, results.json.")
    regimes: list[str] = Field(list(REGIMES), description=f"Which regimes to run, of {list(REGIMES)} (distill runs both filters).")
    budget_flops: float = Field(4e12, gt=0, description="FLOPs each regime may spend (inherited compute included).")
    target: float = Field(0.8, gt=0, le=1, description="pass@1 whose cost (tokens, FLOPs) the report compares.")
    pretrain_steps: PretrainSteps
    teacher_steps: int = Field(80, ge=1, description="RL steps that make the teacher from the base.")
    distill_problems: DistillProblems = 2000
    k: TeacherSolutions
    sft_share: float = Field(0.4, gt=0, lt=1, description="distill + RL: share of the budget spent on distillation and SFT.")
    sft_lr: float = Field(5e-4, gt=0, description="Learning rate of every SFT (distillation and best-of-N).")
    rs_problems: int = Field(512, ge=1, description="Best-of-N: problems per round.")
    rs_n: int = Field(8, ge=1, description="Best-of-N: samples per problem.")
    rl_eval_every: RLEvalEvery = 5
    sft_eval_every: int = Field(40, ge=1, description="SFT steps between evaluations.")
    rs_eval_every: int = Field(2, ge=1, description="Best-of-N rounds between evaluations.")
    eval_problems: HeldOutProblems = 200
    eval_samples: int = Field(8, ge=1, description="Samples per problem during training (pass@1 is their mean).")
    final_eval_samples: int = Field(64, ge=1, description="Samples per problem at each run's final evaluation (pass@k to k=64).")
    seed: PipelineSeed
    seeds: PerSeed
    base_seed: BaseSeed


def main(cfg: RegimesConfig) -> dict[str, Any]:
    if cfg.seeds:
        return seeds.run_and_show(main, cfg, figures, f"the regimes at {cfg.budget_flops:.3g} FLOPs each",
                                  {"pass@1": True, "greedy": True, "pass@64": True, "FLOPs to target": False})
    unknown = set(cfg.regimes) - set(REGIMES)
    if unknown:
        raise ValueError(f"unknown regimes {sorted(unknown)}; choose from {list(REGIMES)}")
    console, root, t0 = Console(), Path(cfg.run_dir), time.time()
    root.mkdir(parents=True, exist_ok=True)
    pre = pretrain.PretrainConfig(steps=cfg.pretrain_steps, seed=cfg.base_seed)
    base = str(pretrained_base(pre, console=console))
    env, B = pre.env, cfg.budget_flops
    evals = _evals(cfg)

    def stage(name: str, fn: Callable, config) -> str:
        run_dir = root / name
        if (run_dir / "summary.json").exists():
            console.print(f"[green]{name}[/]: done before, reused")
        else:
            console.print(f"[bold]{name}[/]")
            fn(config.model_copy(update={"run_dir": str(run_dir), "resume": (run_dir / "metrics.jsonl").exists()})
               if "resume" in type(config).model_fields else config.model_copy(update={"run_dir": str(run_dir)}))
        return str(run_dir)

    def rl_cfg(model: str, **kw) -> rl.RLConfig:
        return rl_config(cfg, env, model, **kw)

    def sft_cfg(data: str, budget: float) -> sft.SFTConfig:
        return sft_config(cfg, env, base, data, budget)

    # The teacher is given, not a regime: made as every seed's teacher was made so far.
    teacher = stage("teacher", rl.main, rl_cfg(base, steps=cfg.teacher_steps, **grid.RATE_BEFORE))
    runs: dict[str, str] = {}
    if "rl" in cfg.regimes:
        runs["zero RL"] = stage("rl-zero", rl.main, rl_cfg(base, steps=ENDLESS, budget_flops=B,
                                                          eval_every=cfg.rl_eval_every))
    if "rs" in cfg.regimes:
        runs["best-of-N self-SFT"] = stage("rs", rs.main, rs.RSConfig(
            model=base, env=env, rounds=ENDLESS, problems=cfg.rs_problems, n=cfg.rs_n, sft_lr=cfg.sft_lr,
            sft_max_length=64, budget_flops=B, eval_every=cfg.rs_eval_every, **evals))
    if {"distill", "distill_rl"} & set(cfg.regimes):
        for filt in ("none", "correct"):  # one set of teacher answers (a shared cache), two filters
            stage(f"distill-{filt}", distill.main, distill.DistillConfig(
                env=env, problems=cfg.distill_problems, k=cfg.k, filter=filt, max_tokens=32, seed=cfg.seed,
                teacher=str(Path(teacher) / "checkpoints" / "last" / "model"), cache_dir=str(root / "teacher_cache")))
    if "distill" in cfg.regimes:
        for filt, label in (("none", "distill (all)"), ("correct", "distill (correct)")):
            runs[label] = stage(f"sft-{filt}", sft.main, sft_cfg(str(root / f"distill-{filt}" / "data.jsonl"), B))
    if "distill_rl" in cfg.regimes:
        student = stage("sft-short", sft.main, sft_cfg(str(root / "distill-correct" / "data.jsonl"), cfg.sft_share * B))
        runs["distill (correct) + RL"] = stage("rl-after-sft", rl.main, rl_cfg(
            student, steps=ENDLESS, budget_flops=B, eval_every=cfg.rl_eval_every))
    if "opd" in cfg.regimes:
        runs["on-policy distill"] = stage("opd", opd.main, rl_config(
            cfg, env, base, cls=opd.OPDConfig, teacher=teacher, steps=ENDLESS, budget_flops=B,
            eval_every=cfg.rl_eval_every))

    console.print("[bold]report[/]")
    rep = report.main(report.CompareConfig(runs=list(runs.values()), labels=list(runs), out=str(root / "report"),
                                           teacher=teacher, target=cfg.target))
    print(Path(rep["markdown"]).read_text())
    results = {"budget_flops": B, "target": cfg.target, "seconds": time.time() - t0, "report": rep["html"],
               "teacher": grid.final(Path(teacher)), "regimes": {label: _row(row) for label, row in zip(runs, rep["rows"])},
               "config": cfg.model_dump(mode="json")}
    write_json(root / "results.json", results)
    console.print(f"report: {rep['html']}   results: {root / 'results.json'}   ({results['seconds']:.0f} s)")
    return results


ENDLESS = 100_000  # steps, rounds, epochs: the budget is what stops a regime


def _evals(cfg: RegimesConfig) -> dict[str, Any]:
    return dict(eval_problems=cfg.eval_problems, eval_samples=cfg.eval_samples,
                final_eval_samples=cfg.final_eval_samples, seed=cfg.seed)


def rl_config(cfg: RegimesConfig, env: Any, model: str, cls=rl.RLConfig, **kw) -> rl.RLConfig:
    """An RL stage of the experiment (or one on RL's loop, `cls`: opd): RL's own defaults, the
    experiment's evaluation."""
    return cls(model=model, env=env, max_new_tokens=32, save_every=20, **{**_evals(cfg), **kw})


def sft_config(cfg: RegimesConfig, env: Any, base: str, data: str, budget: float) -> sft.SFTConfig:
    """An SFT stage: the data's epochs until `budget` FLOPs (inherited included) are spent."""
    return sft.SFTConfig(model=base, data=data, epochs=ENDLESS, batch_size=64, lr=cfg.sft_lr, max_length=64,
                         budget_flops=budget, eval_env=env, eval_every=cfg.sft_eval_every, save_every=100,
                         eval_max_new_tokens=32, **_evals(cfg))


def figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{regime: {column: value}} of one run, for the spread over seeds."""
    rows = {"teacher": {"pass@1": result["teacher"]["mean"]}}
    for label, row in result["regimes"].items():
        rows[label] = {"pass@1": row["pass@1"]["mean"], "greedy": (row.get("greedy") or {}).get("mean"),
                       "pass@64": (row.get("pass@64") or {}).get("mean"),
                       "FLOPs to target": (row.get("target") or {}).get("flops")}
    return rows


def _row(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("pass@1", "greedy", "flops", "tokens", "wall_seconds", "target", "pass@64", "maj@64")
    return {k: row[k] for k in keep if k in row}
