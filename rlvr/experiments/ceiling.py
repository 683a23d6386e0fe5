"""`rlvr experiment ceiling`: can a distilled student pass its teacher, and what does RL add?

1. A teacher of known accuracy T (50–75% pass@1): the demo's pretrained base, RL-trained
   in short chunks until its held-out pass@1 enters the band.
2. The teacher is served by `rlvr serve` in a subprocess and reached over HTTP by the
   teacher client, exactly as a frontier model's API would be.
3. Two students start from the same weak base and are fine-tuned (`rlvr sft`) on the
   teacher's solutions: unfiltered (pure imitation) and correct-only.
4. On-policy distillation (`rlvr opd`, the teacher scoring every token the student
   samples) from the base, and after the unfiltered SFT, each until the teacher has
   scored as many tokens as it wrote for the SFT data: equal teacher tokens.
5. RL (`rlvr rl`) on each student.
6. One table: pass@1 (T=1) with its 95% CI and greedy accuracy for every model, on the
   same held-out problems, with the tokens each stage generated and trained on, how far
   each student ends above or below its teacher, and the teacher tokens (written for SFT
   data, or read to score) behind the first evaluation at the teacher's pass@1.

    rlvr experiment ceiling            # ~5 minutes on 2 CPU cores before the on-policy arms, which
                                       # add two distillations and two RL runs
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
from rlvr.train import opd, pretrain, rl, sft
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
    opd_prompts: int = Field(32, ge=1, description="On-policy distillation: problems per step (4 samples each).")
    opd_eval_every: int = Field(2, ge=1, description="On-policy distillation: steps between evaluations (the teacher tokens to the teacher's pass@1 are read from them).")
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
    """Tokens sampled to make a model (its own and its teacher's), its teacher's alone, and
    trained on, inherited stages included (rlvr/compute.py): a student is charged its
    teacher's answers, or what its teacher read to score it."""
    total = json.loads((run_dir / "summary.json").read_text())["total"]
    return {"generated": total["generated_tokens"] + total["teacher_tokens"], "teacher": total["teacher_tokens"],
            "trained": total["trained_tokens"]}


def teacher_tokens_to(run_dir: Path, final: float, target: float) -> int | None:
    """The teacher tokens behind a run's first evaluation at pass@1 >= `target`: from its
    evaluations during training (evals.jsonl), else its final one (`final`, whose teacher
    tokens are the run's total); None if none reached it."""
    evals = run_dir / "evals.jsonl"
    for line in evals.read_text().splitlines() if evals.exists() else []:
        row = json.loads(line)
        if grid._first_env(row["metrics"])["pass@1"]["mean"] >= target:
            return int(row["compute"]["teacher_tokens"])
    return int(_spent(run_dir)["teacher"]) if final >= target else None


def main(cfg: CeilingConfig) -> dict[str, Any]:
    if cfg.seeds:
        return seeds.run_and_show(main, cfg, figures, "the ceiling experiment",
                                  {"pass@1": True, "greedy": True,
                                   "vs teacher": True, "teacher tokens to teacher": False, "teacher RL steps": False})
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
    console.print("[bold]1/5 growing a teacher[/] of pass@1 in", cfg.teacher_band)
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
    rows: dict[str, dict[str, Any]] = {"base": {"metrics": measure(base_model), "generated": 0, "teacher": 0,
                                                "trained": 0},
                                       "teacher": {"metrics": teacher, **_spent(root / "teacher")}}
    console.print("[bold]2/5 distilling[/] over HTTP from `rlvr serve`")
    with Served(teacher_model) as server:
        for filt in ("none", "correct"):
            if (root / f"distill-{filt}" / "summary.json").exists():
                continue
            distill.main(distill.DistillConfig(
                run_dir=str(root / f"distill-{filt}"), env=env_spec, problems=cfg.distill_problems, k=cfg.k,
                filter=filt, teacher=server.name, base_url=server.url, max_tokens=32, seed=cfg.seed,
                cache_dir=str(root / "teacher_cache")))  # one set of teacher answers, two filters; resumes
    console.print("[bold]3/5 fine-tuning the students[/]")
    for filt in ("none", "correct"):
        run_dir = root / f"sft-{filt}"
        if not (run_dir / "summary.json").exists():
            sft.main(sft.SFTConfig(run_dir=str(run_dir), model=str(base_model), seed=cfg.seed,
                                   data=str(root / f"distill-{filt}" / "data.jsonl"), epochs=cfg.sft_epochs,
                                   batch_size=64, lr=cfg.sft_lr, max_length=64, resume=(run_dir / "metrics.jsonl").exists()))
        # Both students read the same teacher samples (the second distill run is served
        # from the cache); each is charged the teacher tokens behind its data.
        rows[f"student ({filt})"] = {"metrics": measure(run_dir / "checkpoints" / "last" / "model"), "run": run_dir,
                                     **_spent(run_dir)}

    # 4. On-policy distillation at the SFT data's teacher tokens: the teacher (its weights,
    # loaded locally: the served copy scores the same) reads what the student samples.
    written = int(rows["student (none)"]["teacher"])
    console.print(f"[bold]4/5 on-policy distillation[/] until the teacher has scored {written:,} tokens")
    for name, start in (("opd", base_model), ("opd-after-none", root / "sft-none" / "checkpoints" / "last" / "model")):
        run_dir = root / name
        if not (run_dir / "summary.json").exists():
            opd.main(opd.OPDConfig(run_dir=str(run_dir), model=str(start), teacher=str(teacher_model), env=env_spec,
                                   budget_tokens=written, steps=OPD_MAX_STEPS, prompts=cfg.opd_prompts, group_size=4,
                                   lr_schedule="constant", max_new_tokens=32, seed=cfg.seed, save_every=10,
                                   eval_every=cfg.opd_eval_every, eval_problems=cfg.eval_problems,
                                   eval_samples=cfg.eval_samples, resume=(run_dir / "metrics.jsonl").exists()))
        rows[STUDENTS[name]] = {"metrics": measure(run_dir / "checkpoints" / "last" / "model"), "run": run_dir,
                                **_spent(run_dir)}

    # 5. RL on each student.
    console.print(f"[bold]5/5 RL on each student[/] ({cfg.rl_steps} steps)")
    for name in ("sft-none", "sft-correct", "opd", "opd-after-none"):
        run_dir = rl_run(f"rl-{name.removeprefix('sft-')}", root / name / "checkpoints" / "last" / "model",
                         cfg.rl_steps)
        rows[STUDENTS[name] + " + RL"] = {"metrics": measure(run_dir / "checkpoints" / "last" / "model"),
                                          "run": run_dir, **_spent(run_dir)}

    bar = teacher["pass@1"]["mean"]
    table = Table(title=f"the ceiling experiment ({cfg.eval_problems} held-out 3-digit additions)")
    for col in ("model", "pass@1 (T=1) [95% CI]", "greedy", "vs teacher", "generated tokens", "teacher tokens",
                "trained tokens", "teacher tokens to the teacher's pass@1"):
        table.add_column(col, justify="left" if col == "model" else "right")
    results = {}
    for name, row in rows.items():
        m = row["metrics"]
        p, g = m["pass@1"], m["greedy"]
        reached = teacher_tokens_to(row["run"], p["mean"], bar) if "run" in row else None
        table.add_row(name, f"{p['mean']:.1%} [{p['ci'][0]:.1%}, {p['ci'][1]:.1%}]", f"{g['mean']:.1%}",
                      f"{p['mean'] - bar:+.1%}" if "run" in row else "", f"{int(row['generated']):,}",
                      f"{int(row['teacher']):,}", f"{int(row['trained']):,}",
                      "" if "run" not in row else "not reached" if reached is None else f"{reached:,}")
        results[name] = {"pass@1": p, "greedy": g, "generated_tokens": row["generated"], "teacher_tokens": row["teacher"],
                         "trained_tokens": row["trained"]}
        if "run" in row:
            results[name] |= {"vs_teacher": p["mean"] - bar, "teacher_tokens_to_teacher": reached}
    console.print(table)
    on_policy = [n for n in results if "opd" in n and results[n]["vs_teacher"] >= 0]
    console.print("on-policy students at or past their teacher's pass@1: " + (", ".join(on_policy) or "none"))
    out = {"results": results, "teacher_rl_steps": steps, "teacher_tokens_written": written,
           "seconds": time.time() - t0, "config": cfg.model_dump(mode="json")}
    write_json(root / "results.json", out)
    console.print(f"results: {root / 'results.json'}   ({out['seconds']:.0f} s)")
    return out


OPD_MAX_STEPS = 100_000  # the teacher-token budget is what stops on-policy distillation
STUDENTS = {"sft-none": "student (none)", "sft-correct": "student (correct)", "opd": "student (opd)",
            "opd-after-none": "student (none) + opd"}  # row names of the run directories


def figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{model: {column: value}} of one run, for the spread over seeds."""
    rows = {name: {"pass@1": r["pass@1"]["mean"], "greedy": r["greedy"]["mean"], "vs teacher": r.get("vs_teacher"),
                   "teacher tokens to teacher": r.get("teacher_tokens_to_teacher")}
            for name, r in result["results"].items()}
    rows["teacher"]["teacher RL steps"] = result["teacher_rl_steps"]
    return rows
