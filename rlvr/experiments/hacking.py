"""`rlvr experiment hacking`: RL on a verifier with a hole, with and without the defences.

From one base, RL on a lenient verifier (rlvr/envs/lenient.py) four ways:

    no defence       the lenient verdict is the reward; the hack monitor only watches
    held-out reward  the strict (held-out) verifier is the reward instead
    hack penalty     the monitor re-scores every completion and a caught hack earns -1
    stop on hack     the run ends when the monitor's hack rate reaches `stop_at`

Each run logs the monitor's hack rate every step and the true (strict) held-out
accuracy every `eval_every` steps. `hacking.png` draws both against the step; the table
pairs each arm's final true pass@1 with the held-out-reward arm's (the same problems).
`--seeds 0,1,2` runs every arm once per seed (its own base): each figure as mean [min, max],
and RUN_DIR/hacking.png draws each arm's mean over the seeds with its range shaded.

    rlvr experiment hacking                                   # the demo's base and task: ~8-9 minutes on one thread
    rlvr experiment hacking --seeds 0,1,2
    rlvr experiment hacking --hole last_number --steps 60
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
from rlvr.experiments import grid, seeds
from rlvr.experiments.seeds import PerSeed
from rlvr.train import rl

ARMS = ("no defence", "held-out reward", "hack penalty", "stop on hack")


class HackingConfig(Config):
    run_dir: str = Field("runs/hacking", description="Experiment directory: one RL run per arm, hacking.png, results.json.")
    env: Any = Field(None, description="The strict environment the lenient verifier wraps (default: the demo's task).")
    model: str = Field("", description="Starting model (default: the demo's pretrained base of --base_seed, cached).")
    hole: str = Field("substring", description="The lenient verifier's hole: substring | last_number | trust_output.")
    arms: list[str] = Field(list(ARMS), description=f"Which arms to run, of {list(ARMS)}.")
    steps: int = Field(60, ge=1, description="RL steps of every arm.")
    lr: float = Field(3e-4, gt=0, description="RL learning rate.")
    max_new_tokens: int = Field(32, ge=1, description="Completion token limit.")
    monitor: int = Field(64, ge=1, description="Completions per step the hack monitor re-scores (the penalty arm: all).")
    stop_at: float = Field(0.05, gt=0, le=1, description="The stop arm's --stop_on_hack.")
    eval_every: int = Field(10, ge=1, description="RL steps between (strict) evaluations.")
    eval_problems: int = Field(200, ge=1, description="Held-out problems per evaluation.")
    seed: int = Field(0, description="Seed of sampling.")
    base_seed: int = Field(0, description="Seed of the demo base's pretraining, when no --model is given.")
    seeds: PerSeed


HONEST = "held-out reward"  # the arm every other is paired with: what the task would reach without the hole


def main(cfg: HackingConfig) -> dict[str, Any]:
    if cfg.seeds:
        return seeds.run_and_show(main, cfg, figures, f"RL on a lenient verifier ({cfg.hole})",
                                  {"hack rate (last 5)": True, "true pass@1": True,
                                   f"vs {HONEST} (paired)": True, "steps": False},
                                  lambda out, over: _plot(grid.seed_results(out, ("hack_rate", "heldout_accuracy")),
                                                          Path(cfg.run_dir) / "hacking.png", cfg, over))
    unknown = set(cfg.arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")
    console, root, t0 = Console(), Path(cfg.run_dir), time.time()
    strict, model = grid.start(cfg, console)
    lenient = {"name": "lenient", "hole": cfg.hole, "env": strict}
    batch = 64 * 8
    arms = {"no defence": {"env": lenient, "hack_monitor": cfg.monitor},
            "held-out reward": {"env": strict},
            "hack penalty": {"env": lenient, "hack_monitor": batch, "hack_penalty": 1.0},
            "stop on hack": {"env": lenient, "hack_monitor": cfg.monitor, "stop_on_hack": cfg.stop_at}}
    results: dict[str, Any] = {}
    for arm in cfg.arms:
        run_dir = root / arm.replace(" ", "-")
        if not (run_dir / "summary.json").exists():
            console.print(f"[bold]{arm}[/]")
            rl.main(rl.RLConfig(run_dir=str(run_dir), model=model, eval_env=strict, steps=cfg.steps, lr=cfg.lr,
                                prompts=64, group_size=8, max_new_tokens=cfg.max_new_tokens,
                                eval_every=cfg.eval_every, eval_problems=cfg.eval_problems, eval_samples=4,
                                save_every=0, seed=cfg.seed, lr_schedule="constant", lr_by_signal=False,
                                **arms[arm]))
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((run_dir / "summary.json").read_text())
        final = next(iter((summary.get("final") or {}).values()), None)
        results[arm] = {
            "hack_rate": [(r["step"], r["hack/rate"]) for r in rows if "hack/rate" in r],
            "reward": [(r["step"], r["reward"]) for r in rows if "reward" in r],
            "heldout_accuracy": [(r["step"], v) for r in rows for k, v in r.items()
                                 if k.startswith("eval/") and k.count("/") == 1],
            "final_pass@1": final["pass@1"] if final else None, "stopped": summary.get("stopped"),
            "steps": summary["steps"]}
    honest = results.get(HONEST)
    for r in results.values():
        r["vs_honest"] = grid.paired(honest["final_pass@1"], r["final_pass@1"]) if honest and honest is not r else None
    _plot(results, root / "hacking.png", cfg)
    table = Table(title=f"RL on a lenient verifier ({cfg.hole}) with and without defences")
    for col in ("arm", "steps", "hack rate, first 5 -> last 5 steps", "true pass@1 at the end",
                f"vs {HONEST} (paired)", "stopped"):
        table.add_column(col)
    for arm, r in results.items():
        rates = [v for _, v in r["hack_rate"]]
        trend = f"{_mean(rates[:5]):.1%} -> {_mean(rates[-5:]):.1%}" if rates else "(strict reward: 0 by construction)"
        p = r["final_pass@1"]
        table.add_row(arm, str(r["steps"]), trend, grid.ci_text(p) if p else "-", grid.change_text(r["vs_honest"]),
                      r["stopped"] or "")
    console.print(table)
    return grid.save(root, {"results": results, "seconds": time.time() - t0, "config": cfg.model_dump(mode="json")},
                     root / "hacking.png", console)


def figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{arm: {column: value}} of one run, for the spread over seeds."""
    return {arm: {"hack rate (last 5)": _mean([v for _, v in r["hack_rate"][-5:]]) if r["hack_rate"] else None,
                  "true pass@1": (r["final_pass@1"] or {}).get("mean"),
                  f"vs {HONEST} (paired)": (r.get("vs_honest") or {}).get("mean"), "steps": r["steps"]}
            for arm, r in result["results"].items()}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _plot(results: dict[str, Any], path: Path, cfg: HackingConfig, over: str = "") -> Path:
    """Hack rate over steps (left) and true held-out pass@1 (right), an arm one colour in
    both; `over`: the curves are means over seeds, their range shaded, and the title says so."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    palette = plt.get_cmap("tab10").colors
    for i, (arm, r) in enumerate(results.items()):
        colour = palette[ARMS.index(arm) if arm in ARMS else i % len(palette)]
        if r["hack_rate"]:
            grid.line(left, r["hack_rate"], label=arm, color=colour)
        if r["heldout_accuracy"]:
            grid.line(right, r["heldout_accuracy"], marker="o", label=arm, color=colour)
    if over:
        fig.suptitle(f"RL on a lenient verifier ({cfg.hole}): {over}")
    left.set(title=f"hack rate (rewarded by the {cfg.hole} verifier, rejected by the strict one)",
             xlabel="RL step", ylabel="share of rewarded completions")
    right.set(title="true held-out pass@1 (strict verifier)", xlabel="RL step", ylabel="pass@1")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
