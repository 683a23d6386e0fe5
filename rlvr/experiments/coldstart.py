"""`rlvr experiment coldstart`: what makes RL after a cold start help or hurt, by ablation.

For each seed this builds (or reuses) the regimes experiment's distill + RL pipeline
in RUN_DIR/seed_N: a base, a teacher, its verified solutions, and a student SFT'd on
them with `sft_share` of the budget. Then it runs the RL stage once per variant, every
one from the same student to the same FLOP budget, and compares each run's final
held-out pass@1 with the student's. A variant is a set of `rlvr rl` keys over the
`reference` settings (one factor at a time), or the current defaults; `sft_share` in a
variant gives it a student of its own. With `zero`, the same settings also run zero
RL from the base, so that a fix for the cold start is seen not to slow RL from a weak
start.

    rlvr experiment coldstart --seeds 0,1,2                         # every variant
    rlvr experiment coldstart --variants '["defaults", "lr 5e-5"]'
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from pydantic import Field
from rich.console import Console
from rich.table import Table

from rlvr.atomic import write_json
from rlvr.config import Config
from rlvr.fields import RLEvalEvery
from rlvr.eval_metrics import paired_change
from rlvr.experiments import grid, regimes, seeds
from rlvr.experiments.seeds import Seeds
from rlvr.train import rl, sft

# The RL settings before the fix: the cold-start runs of EXPERIMENTS.md used these.
REFERENCE = {"lr": 2e-4, "lr_schedule": "constant", "lr_by_signal": False, "drop_uniform_groups": False,
             "kl_coef": 0.0, "group_size": 8, "prompts": 64}
VARIANTS: dict[str, dict[str, Any]] = {
    "reference (lr 2e-4 constant)": {},
    "lr 5e-5": {"lr": 5e-5},
    "lr 1e-4": {"lr": 1e-4},
    "cosine to the budget": {"lr_schedule": "cosine"},
    "dynamic sampling": {"drop_uniform_groups": True},
    "KL 0.05 to the start": {"kl_coef": 0.05},
    "group 16 x 32 prompts": {"group_size": 16, "prompts": 32},
    "SFT share 0.7": {"sft_share": 0.7},
    "lr by signal": {"lr_by_signal": True},
    "lr 5e-4 cosine by signal": {"lr": 5e-4, "lr_schedule": "cosine", "lr_by_signal": True},
    "cosine + dynamic sampling": {"lr_schedule": "cosine", "drop_uniform_groups": True},
    # From a sharper student (70% of the budget in SFT): where RL has the most to lose.
    "SFT 0.7 + lr 5e-5": {"sft_share": 0.7, "lr": 5e-5},
    "SFT 0.7 + cosine": {"sft_share": 0.7, "lr_schedule": "cosine"},
    "SFT 0.7 + dynamic sampling": {"sft_share": 0.7, "drop_uniform_groups": True},
    "SFT 0.7 + KL 0.05": {"sft_share": 0.7, "kl_coef": 0.05},
    "SFT 0.7 + lr by signal": {"sft_share": 0.7, "lr_by_signal": True},
    "SFT 0.7 + cosine + lr by signal": {"sft_share": 0.7, "lr_schedule": "cosine", "lr_by_signal": True},
    "SFT 0.7 + lr 5e-4 cosine by signal": {"sft_share": 0.7, "lr": 5e-4, "lr_schedule": "cosine", "lr_by_signal": True},
    "defaults": None,  # rlvr rl's own defaults, whatever they are now
    "SFT 0.7 + defaults": {"sft_share": 0.7, "defaults": True},
}


class ColdstartConfig(Config):
    run_dir: str = Field("runs/coldstart", description="Experiment directory: seed_N/ (the pipeline), seed_N/coldstart/ (the variants), results.json.")
    variants: list[str] = Field(list(VARIANTS), description=f"Which variants to run, of {list(VARIANTS)}.")
    seeds: Seeds = Field([0], description="Seeds: each builds its own base, teacher and student (base_seed = seed).")
    budget_flops: float = Field(4e12, gt=0, description="FLOPs each run may spend, the student's included (as in the regimes experiment).")
    sft_share: float = Field(0.4, gt=0, lt=1, description="Share of the budget spent on distillation and SFT (a variant may set its own).")
    zero: list[str] = Field(["reference (lr 2e-4 constant)", "defaults"], description="Variants also run as zero RL from the base, to see that a fix for the cold start does not slow RL from a weak start ([] for none).")
    rl_eval_every: RLEvalEvery = 5


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _settings(name: str) -> dict[str, Any]:
    variant = VARIANTS[name]
    if variant is None:
        return {}
    if variant.get("defaults"):  # rlvr rl's defaults, from another student
        return {k: v for k, v in variant.items() if k != "defaults"}
    return {**REFERENCE, **variant}


def _curve(run_dir: Path) -> list[float]:
    return [p for _, p in grid.curve(run_dir)]


def main(cfg: ColdstartConfig) -> dict[str, Any]:
    unknown = (set(cfg.variants) | set(cfg.zero)) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    console, root, t0 = Console(), Path(cfg.run_dir), time.time()
    rows: dict[str, list[dict[str, Any]]] = {}
    for seed in cfg.seeds:
        console.rule(f"seed {seed}")
        rcfg = regimes.RegimesConfig(run_dir=str(root / f"seed_{seed}"), regimes=["distill_rl"], seed=seed,
                                     base_seed=seed, budget_flops=cfg.budget_flops, sft_share=cfg.sft_share,
                                     rl_eval_every=cfg.rl_eval_every)
        seed_dir = Path(rcfg.run_dir)
        if not (seed_dir / "sft-short" / "summary.json").exists():
            # base, teacher, distillation, the student (and RL with the defaults of its day); once
            # there, never again: a full `experiment regimes` in the same directory keeps its report
            regimes.main(rcfg)
        base = _model_of(seed_dir / "sft-short")  # the pretrained base the student started from
        env = regimes.pretrain.DEMO_ENV
        for name in cfg.variants:
            settings = _settings(name)
            share = settings.pop("sft_share", cfg.sft_share)
            student = seed_dir / "sft-short"
            if share != cfg.sft_share:
                student = seed_dir / f"sft-share-{share:g}"
                if not (student / "summary.json").exists():
                    sft.main(regimes.sft_config(rcfg, env, base, str(seed_dir / "distill-correct" / "data.jsonl"),
                                                share * cfg.budget_flops).model_copy(update={"run_dir": str(student)}))
            run_dir = seed_dir / "coldstart" / _slug(name)
            _rl_stage(rcfg, env, str(student), run_dir, settings, cfg, console, name)
            start, end = grid.final(student), grid.final(run_dir)
            curve = _curve(run_dir)
            rows.setdefault(name, []).append({
                "seed": seed, "start": start["mean"], "start_ci": start["ci"], "end": end["mean"], "end_ci": end["ci"],
                "min": min(curve), "delta": end["mean"] - start["mean"], "steps": grid.steps(run_dir), **held(start, end)})
        for name in cfg.zero:
            run_dir = seed_dir / "coldstart" / f"zero-{_slug(name)}"
            _rl_stage(rcfg, env, base, run_dir, _settings(name), cfg, console, f"zero RL, {name}")
            curve = _curve(run_dir)
            rows.setdefault(f"zero RL, {name}", []).append({
                "seed": seed, "start": curve[0], "end": grid.final(run_dir)["mean"], "min": min(curve),
                "delta": grid.final(run_dir)["mean"] - curve[0], "steps": grid.steps(run_dir),
                "curve": curve})
    table = Table(title=f"RL after a cold start (SFT on {cfg.sft_share:.0%} of {cfg.budget_flops:.3g} FLOPs), "
                        f"seeds {cfg.seeds}: held-out pass@1, mean [min, max] over seeds")
    for col in ("variant", "start", "end", "end - start", "lowest eval", "held (no significant loss, paired)", "RL steps"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    summary = {}
    for name, runs in rows.items():
        s = {k: seeds.spread([r[k] for r in runs]) for k in ("start", "end", "delta", "min", "steps")}
        n_held = sum(r.get("held", True) for r in runs)
        summary[name] = {**s, "held": n_held, "runs": runs}
        table.add_row(name, seeds.show(s["start"]), seeds.show(s["end"]), seeds.show(s["delta"]), seeds.show(s["min"]),
                      f"{n_held} of {len(runs)}" if "held" in runs[0] else "-", seeds.show(s["steps"], percent=False))
    console.print(table)
    out = {"variants": summary, "reference": REFERENCE, "defaults": _defaults(), "seconds": time.time() - t0,
           "config": cfg.model_dump(mode="json")}
    write_json(root / "results.json", out)
    console.print(f"results: {root / 'results.json'}   ({out['seconds']:.0f} s)")
    return out


def held(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """Whether RL kept the student's pass@1: not significantly lower by a paired bootstrap
    over the held-out problems both evaluated (`change` is its mean and 95% CI). Runs that
    kept no per-problem scores fall back to the old, weaker rule: the end's interval
    reaches the start's."""
    if "per_problem" in start and "per_problem" in end:
        change = paired_change(start["per_problem"], end["per_problem"])
        return {"held": change["ci"][1] >= 0, "change": change}
    return {"held": end["ci"][1] >= start["ci"][0]}


def _rl_stage(rcfg, env, model: str, run_dir: Path, settings: dict[str, Any], cfg: ColdstartConfig, console,
              name: str) -> None:
    if (run_dir / "summary.json").exists():
        console.print(f"[green]{name}[/]: done before, reused")
        return
    console.print(f"[bold]{name}[/] {settings or '(rlvr rl defaults)'}")
    rl.main(regimes.rl_config(rcfg, env, model, steps=regimes.ENDLESS, budget_flops=cfg.budget_flops,
                              eval_every=cfg.rl_eval_every, run_dir=str(run_dir),
                              resume=(run_dir / "metrics.jsonl").exists(), **settings))


def _model_of(run_dir: Path) -> str:
    import yaml
    return yaml.safe_load((run_dir / "config.yaml").read_text())["model"]




def _defaults() -> dict[str, Any]:
    fields = rl.RLConfig.model_fields
    return {k: fields[k].default for k in REFERENCE}
