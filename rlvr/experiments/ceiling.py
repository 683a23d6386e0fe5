"""`rlvr experiment ceiling`: can a distilled student pass its teacher, and what does RL add?

1. A teacher of known accuracy T (50–75% pass@1): the demo's pretrained base, RL-trained
   in short chunks until its held-out pass@1 enters the band.
2. The teacher is served by `rlvr serve` in a subprocess and reached over HTTP by the
   teacher client, exactly as a frontier model's API would be.
3. Two students start from the same weak base and are fine-tuned (`rlvr sft`) on the
   teacher's solutions: unfiltered (pure imitation) and correct-only.
4. RL (`rlvr rl`) on each student.
5. One table: pass@1 (T=1) with its 95% CI and greedy accuracy for every model, on the
   same held-out problems, with the tokens each stage generated and trained on.

    rlvr experiment ceiling            # ~10 minutes on 2 CPU cores
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field
from rich.console import Console
from rich.table import Table

from rlvr.atomic import write_json
from rlvr.config import Config
from rlvr.fields import BaseSeed, DistillProblems, PipelineSeed, PretrainSteps, TeacherSolutions
from rlvr.distill import distill
from rlvr.engine import make_engine
from rlvr.envs import make_env
from rlvr.eval import eval_problems, evaluate
from rlvr.models import load_model
from rlvr.demo import pretrained_base
from rlvr.experiments import grid, seeds
from rlvr.experiments.seeds import PerSeed
from rlvr.train import pretrain, rl, sft
from rlvr.types import Sampling


class CeilingConfig(Config):
    run_dir: str = Field("runs/ceiling", description="Experiment directory (one sub-run per stage, results.json).")
    pretrain_steps: PretrainSteps
    teacher_band: tuple[float, float] = Field((0.5, 0.75), description="Teacher pass@1 wanted (low, high).")
    teacher_chunk: int = Field(5, ge=1, description="RL steps between teacher evaluations.")
    teacher_max_steps: int = Field(60, ge=1, description="Give up growing the teacher after this many RL steps.")
    distill_problems: DistillProblems = 1000
    k: TeacherSolutions
    sft_epochs: int = Field(2, ge=1, description="SFT passes over the distilled data.")
    sft_lr: float = Field(5e-4, gt=0, description="SFT learning rate.")
    rl_steps: int = Field(40, ge=1, description="RL steps on each distilled student.")
    eval_problems: int = Field(200, ge=1, description="Held-out problems for every evaluation.")
    eval_samples: int = Field(8, ge=1, description="Samples per held-out problem (pass@1 is their mean).")
    seed: PipelineSeed
    seeds: PerSeed
    base_seed: BaseSeed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`rlvr serve MODEL` in a subprocess on 127.0.0.1, stopped on exit."""

    def __init__(self, model: Path, name: str = "teacher"):
        self.port, self.name = _free_port(), name
        self.proc = subprocess.Popen([sys.executable, "-m", "rlvr.cli", "serve", str(model), "--port", str(self.port),
                                      "--model_name", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "Served":
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rlvr serve exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError("rlvr serve did not come up in 120 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _spent(run_dir: Path) -> dict[str, float]:
    """Tokens sampled to make a model (its own and its teacher's) and trained on, inherited
    stages included (rlvr/compute.py): a student is charged its teacher's answers."""
    total = json.loads((run_dir / "summary.json").read_text())["total"]
    return {"generated": total["generated_tokens"] + total["teacher_tokens"], "trained": total["trained_tokens"]}


def main(cfg: CeilingConfig) -> dict[str, Any]:
    if cfg.seeds:
        out = seeds.over_seeds(main, cfg, cfg.seeds, figures)
        seeds.print_spread(f"the ceiling experiment over seeds {cfg.seeds}: mean [min, max]", out["spread"],
                           {"pass@1": True, "greedy": True, "teacher RL steps": False}, len(cfg.seeds))
        return out
    console, root, t0 = Console(), Path(cfg.run_dir), time.time()
    pre = pretrain.PretrainConfig(steps=cfg.pretrain_steps, seed=cfg.base_seed)
    base_model = pretrained_base(pre, console=console)
    env_spec = pre.env
    env = make_env(env_spec)
    problems = eval_problems(env, cfg.eval_problems)  # one held-out set for every seed
    sampling = Sampling(temperature=1.0, max_new_tokens=32, seed=cfg.seed)

    def measure(model_dir: Path) -> dict[str, Any]:
        model, tok = load_model(model_dir)
        engine = make_engine(model, tok, role="snapshot")
        return evaluate(engine, env, problems, cfg.eval_samples, [1], sampling)[env.name]

    def rl_run(name: str, start: Path, steps: int) -> Path:
        run_dir = root / name  # a stage a killed experiment left is resumed, a finished one kept
        if not (run_dir / "summary.json").exists() or grid.steps(run_dir) < steps:
            rl.main(rl.RLConfig(run_dir=str(run_dir), model=str(start), env=env_spec, steps=steps, seed=cfg.seed,
                                max_new_tokens=32, eval_problems=0, save_every=0,
                                resume=(run_dir / "metrics.jsonl").exists(), **grid.RATE_BEFORE))
        return run_dir

    # 1. A teacher of known accuracy: RL in chunks until pass@1 enters the band.
    console.print("[bold]1/4 growing a teacher[/] of pass@1 in", cfg.teacher_band)
    steps, teacher = 0, None
    if (root / "teacher" / "summary.json").exists():  # a resumed experiment: where the teacher got to
        steps = grid.steps(root / "teacher")
        teacher = measure(root / "teacher" / "checkpoints" / "last" / "model")
    while steps < cfg.teacher_max_steps and (teacher is None or teacher["pass@1"]["mean"] < cfg.teacher_band[0]):
        steps += cfg.teacher_chunk
        run_dir = rl_run("teacher", base_model, steps)
        teacher = measure(run_dir / "checkpoints" / "last" / "model")
        console.print(f"  teacher after {steps} RL steps: pass@1 {teacher['pass@1']['mean']:.1%}")
    teacher_model = root / "teacher" / "checkpoints" / "last" / "model"

    # 2-3. Serve the teacher, distill over HTTP, fine-tune one student per filter.
    rows: dict[str, dict[str, Any]] = {"base": {"metrics": measure(base_model), "generated": 0, "trained": 0},
                                       "teacher": {"metrics": teacher, **_spent(root / "teacher")}}
    console.print("[bold]2/4 distilling[/] over HTTP from `rlvr serve`")
    with Served(teacher_model) as server:
        for filt in ("none", "correct"):
            if (root / f"distill-{filt}" / "summary.json").exists():
                continue
            distill.main(distill.DistillConfig(
                run_dir=str(root / f"distill-{filt}"), env=env_spec, problems=cfg.distill_problems, k=cfg.k,
                filter=filt, teacher=server.name, base_url=server.url, max_tokens=32, seed=cfg.seed,
                cache_dir=str(root / "teacher_cache")))  # one set of teacher answers, two filters; resumes
    console.print("[bold]3/4 fine-tuning the students[/]")
    for filt in ("none", "correct"):
        run_dir = root / f"sft-{filt}"
        if not (run_dir / "summary.json").exists():
            sft.main(sft.SFTConfig(run_dir=str(run_dir), model=str(base_model), seed=cfg.seed,
                                   data=str(root / f"distill-{filt}" / "data.jsonl"), epochs=cfg.sft_epochs,
                                   batch_size=64, lr=cfg.sft_lr, max_length=64, resume=(run_dir / "metrics.jsonl").exists()))
        # Both students read the same teacher samples (the second distill run is served
        # from the cache); each is charged the teacher tokens behind its data.
        rows[f"student ({filt})"] = {"metrics": measure(run_dir / "checkpoints" / "last" / "model"), **_spent(run_dir)}

    # 4. RL on each student.
    console.print(f"[bold]4/4 RL on each student[/] ({cfg.rl_steps} steps)")
    for filt in ("none", "correct"):
        run_dir = rl_run(f"rl-{filt}", root / f"sft-{filt}" / "checkpoints" / "last" / "model", cfg.rl_steps)
        rows[f"student ({filt}) + RL"] = {"metrics": measure(run_dir / "checkpoints" / "last" / "model"),
                                          **_spent(run_dir)}

    table = Table(title=f"the ceiling experiment ({cfg.eval_problems} held-out 3-digit additions)")
    for col in ("model", "pass@1 (T=1) [95% CI]", "greedy", "generated tokens", "trained tokens"):
        table.add_column(col, justify="left" if col == "model" else "right")
    results = {}
    for name, row in rows.items():
        m = row["metrics"]
        p, g = m["pass@1"], m["greedy"]
        table.add_row(name, f"{p['mean']:.1%} [{p['ci'][0]:.1%}, {p['ci'][1]:.1%}]", f"{g['mean']:.1%}",
                      f"{int(row['generated']):,}", f"{int(row['trained']):,}")
        results[name] = {"pass@1": p, "greedy": g, "generated_tokens": row["generated"], "trained_tokens": row["trained"]}
    console.print(table)
    out = {"results": results, "teacher_rl_steps": steps, "seconds": time.time() - t0,
           "config": cfg.model_dump(mode="json")}
    write_json(root / "results.json", out)
    console.print(f"results: {root / 'results.json'}   ({out['seconds']:.0f} s)")
    return out


def figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{model: {column: value}} of one run, for the spread over seeds."""
    rows = {name: {"pass@1": r["pass@1"]["mean"], "greedy": r["greedy"]["mean"]} for name, r in result["results"].items()}
    rows["teacher"]["teacher RL steps"] = result["teacher_rl_steps"]
    return rows
