"""`rlvr experiment noise`: RL from one base behind verifiers that err, with and without corrections.

Zero RL from the demo's base on its environment, once per cell of the grid: the
verifier's false-negative rate `fns` x false-positive rate `fps` x the correction
(`none`, `backward`, `forward`; rlvr/algos/noise.py, given the true rates), plus the
control whose reward is a fair coin. The verifier is `noisy:` (rlvr/envs/noisy.py);
every evaluation measures the true accuracy. The table: final true pass@1 with its 95%
CI, its paired change from the clean verifier's run (fn = fp = 0, uncorrected; the same
held-out problems), the training reward against the true one, and the RL steps to reach
`target`; the clean run's change from its step-0 evaluation (the base, same problems) is
C1's paired figure. (backward at fn = fp = 0 is the uncorrected run and is not repeated.)
`--seeds 0,1,2` runs the grid once per seed (its own base): each figure as mean [min, max],
and RUN_DIR/noise.png draws each cell's mean curve over the seeds with its range shaded.

    rlvr experiment noise                    # ~40 minutes on 2 CPU cores
    rlvr experiment noise --seeds 0,1,2
    rlvr experiment noise --fns '[0, 0.2]' --fps '[0]' --steps 30
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field
from rich.console import Console
from rich.table import Table

from rlvr.algos import REWARD_CORRECTIONS
from rlvr.experiments import grid, seeds
from rlvr.train import rl


class NoiseConfig(grid.GridConfig):
    run_dir: str = Field("runs/noise", description="Experiment directory: one RL run per cell, results.json.")
    fns: list[float] = Field([0.0, 0.2, 0.4], description="False-negative rates of the verifier.")
    fps: list[float] = Field([0.0, 0.1], description="False-positive rates of the verifier.")
    corrections: Annotated[list[str], grid.names_in(REWARD_CORRECTIONS)] = Field(["none", "backward", "forward"], description="Reward corrections (rlvr.algos.noise).")
    control: bool = Field(True, description="Also run the control whose reward is a fair coin.")


def _cells(cfg: NoiseConfig) -> list[tuple[str, dict[str, Any]]]:
    cells = []
    for fn in cfg.fns:
        for fp in cfg.fps:
            for correction in cfg.corrections:
                if correction == "backward" and fn == fp == 0:
                    continue  # identical to the uncorrected run
                cells.append((f"fn={fn:g} fp={fp:g} {correction}", {"fn": fn, "fp": fp, "correction": correction}))
    if cfg.control:
        cells.append(("coin-flip reward", {"random": True, "correction": "none"}))
    return cells


CLEAN = "fn=0 fp=0 none"
TITLE = "zero RL behind a noisy verifier: true held-out pass@1"


def main(cfg: NoiseConfig) -> dict[str, Any]:
    if cfg.seeds:
        return seeds.run_and_show(main, cfg, figures, "zero RL behind a noisy verifier",
                                  {"pass@1": True, "vs base (paired)": True, "vs clean (paired)": True,
                                   "true reward": True, "steps to target": False},
                                  lambda out, over: _plot(grid.seed_results(out), Path(cfg.run_dir) / "noise.png",
                                                          f"{TITLE} ({cfg.steps} steps), {over}", cfg.target))
    console, root, t0 = Console(), Path(cfg.run_dir), time.time()
    env, base = grid.start(cfg, console)
    results: dict[str, Any] = {}
    for label, cell in _cells(cfg):
        run_dir = root / label.replace(" ", "_").replace("=", "")
        noisy = {"name": "noisy", "env": env, "seed": cfg.seed,
                 **({"random": 1} if cell.get("random") else {"fn": cell["fn"], "fp": cell["fp"]})}
        if not (run_dir / "summary.json").exists():
            console.print(f"[bold]{label}[/]")
            rl.main(rl.RLConfig(
                run_dir=str(run_dir), model=base, env=noisy, eval_env=env, steps=cfg.steps, lr=cfg.lr,
                lr_schedule="cosine", lr_by_signal=False, max_new_tokens=32, reward_correction=cell["correction"],
                noise_fp=cell.get("fp", 0.0), noise_fn=cell.get("fn", 0.0), eval_every=cfg.eval_every,
                eval_problems=cfg.eval_problems, eval_samples=cfg.eval_samples, save_every=0, seed=cfg.seed,
                resume=(run_dir / "metrics.jsonl").exists()))
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        trained = [r for r in rows if "reward" in r]
        end = grid.final(run_dir)
        results[label] = {**cell, "pass@1": end, "curve": grid.curve(run_dir),
                          "vs_base": grid.paired(grid.initial(run_dir), end),
                          "reward": sum(r["reward"] for r in trained[-5:]) / min(5, len(trained)),
                          # a step whose completions were all cut off has no noisy verdict: its reward is the truth
                          "true_reward": sum(r.get("true_reward", r["reward"]) for r in trained[-5:]) / min(5, len(trained)),
                          "steps_to_target": grid.steps_to(run_dir, cfg.target), "run_dir": str(run_dir)}
    clean = results.get(CLEAN)
    for r in results.values():
        r["vs_clean"] = grid.paired(clean["pass@1"], r["pass@1"]) if clean and clean is not r else None
    _plot(results, root / "noise.png", f"{TITLE} ({cfg.steps} steps)", cfg.target)
    table = Table(title=f"zero RL behind a noisy verifier ({cfg.steps} steps; true held-out pass@1)")
    for col in ("verifier / correction", "pass@1 [95% CI]", "vs base (paired)", "vs clean (paired)", "reward (last 5)", "true reward (last 5)",
                f"steps to {cfg.target:.0%}"):
        table.add_column(col, justify="left" if col.startswith("verifier") else "right")
    for label, r in results.items():
        table.add_row(label, grid.ci_text(r["pass@1"]), grid.change_text(r["vs_base"]), grid.change_text(r["vs_clean"]), f"{r['reward']:.1%}",
                      f"{r['true_reward']:.1%}", str(r["steps_to_target"] or "not reached"))
    console.print(table)
    return grid.save(root, {"results": results, "seconds": time.time() - t0, "config": cfg.model_dump(mode="json")},
                     root / "noise.png", console)


def figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{cell: {column: value}} of one run, for the spread over seeds."""
    return {label: {"pass@1": r["pass@1"]["mean"], "vs base (paired)": (r.get("vs_base") or {}).get("mean"),
                    "vs clean (paired)": (r.get("vs_clean") or {}).get("mean"),
                    "true reward": r["true_reward"], "steps to target": r["steps_to_target"]}
            for label, r in result["results"].items()}


def _plot(results: dict[str, Any], path: Path, title: str, target: float) -> Path:
    """A panel per noise level (and the control), a line per correction, the clean run grey in each."""
    clean = results.get(CLEAN)
    panels: dict[str, dict[str, Any]] = {}
    for label, r in results.items():
        if r is not clean:
            panel = "control" if r.get("random") else f"fn {r['fn']:g}, fp {r['fp']:g}"
            panels.setdefault(panel, {})[label if r.get("random") else r["correction"]] = r["curve"]
    grid.plot_curves(panels or {"clean": {}}, path, title, target,
                     reference=("clean verifier", clean["curve"]) if clean else None)
    return path
