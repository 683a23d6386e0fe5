"""`rlvr experiment humans`: distilling from humans (expert-written solutions) against distilling from models.

From the demo's base, SFT on the same number of solutions to the same train problems,
written three ways, each then followed by RL to the same total FLOPs:

    human     the environment's own correct solutions, as an expert writes them
              (rlvr/train/corpus.py `correct_solution`), never sampled from a model, in
              `human_style`: "worked", the corpus's procedure without a slip (the gold
              answer where the corpus writes none); "sums", column addition's totals as a
              person jots them (`13 14 8 #### 843`), the same work in a form the base never
              read; "answer", the answer line alone, as an answer key prints it.
    teacher   the teacher's verified solutions (the regimes experiment's teacher: the base
              after `teacher_steps` of RL, `k` answers a problem, one verified kept)
    self      the model's own best-of-N: `rs_n` samples of the base a problem, one verified kept
              (the data of one `rlvr rs` round)

The problems are the first `solutions` that both the teacher and the base solved (so
that every arm sees the same problems, one solution each); the data's making is charged
to no arm. Held-out pass@1, pass@16 and greedy after SFT and after RL, on the same
problems; each arm is paired with the human arm after each stage.

    rlvr experiment humans                      # the demo's task: 9 runs after the demo's base (not yet timed)
    rlvr experiment humans --seeds 0,1,2        # each figure as mean [min, max]
    rlvr experiment humans --human_style sums   # the expert's work written as a person jots it

The teacher learned from the base's corpus, so with "worked" its solutions are the
expert's text (EXPERIMENTS.md); the other styles ask whether the form, not the source,
is what a student learns from.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field
from rich.console import Console
from rich.table import Table

from rlvr.atomic import write_json, write_text
from rlvr.demo import pretrained_base
from rlvr.distill import distill
from rlvr.envs import make_env
from rlvr.experiments import grid, regimes, seeds
from rlvr.experiments.midtrain import STAGE_FIGURES, PipelineConfig, flops, stage_figures, teacher_model, teacher_traces
from rlvr.jsonl import read_jsonl
from rlvr.train import rl, sft
from rlvr.train.corpus import SOLUTION_STYLES, correct_solution

ARMS = ("human", "teacher", "self")


class HumansConfig(PipelineConfig):
    run_dir: str = Field("runs/humans", description="Experiment directory: one run per stage, data/, results.json.")
    arms: Annotated[list[str], grid.names_in(dict.fromkeys(ARMS))] = Field(list(ARMS), description=f"Which arms to run, of {list(ARMS)}.")
    solutions: int = Field(500, ge=1, description="Solutions (one a problem) every arm is fine-tuned on; fewer when fewer problems were solved by both the teacher and the base.")
    budget_flops: float = Field(4e12, gt=0, description="FLOPs of SFT and RL together, for every arm.")
    sft_epochs: int = Field(2, ge=1, description="SFT passes over the solutions.")
    rs_n: int = Field(8, ge=1, description="Self: samples per problem (the N of best-of-N).")
    human_style: Literal[SOLUTION_STYLES] = Field("worked", description="How the human arm's solutions are written: worked (the corpus's procedure, without a slip), sums (each column's total, units first: `13 14 8 #### 843`) or answer (the answer line alone). Its data and runs are named by it (sft-human-sums/, ...) when not worked.")


def _by_problem(data: Path) -> dict[str, dict[str, Any]]:
    return {row["problem_id"]: row for _, row in read_jsonl(data)}


def main(cfg: HumansConfig) -> dict[str, Any]:
    if cfg.seeds:
        return seeds.run_and_show(main, cfg, figures, "SFT on human, teacher or own solutions, then RL,", COLUMNS)
    console, root, t0 = Console(), Path(cfg.run_dir), time.time()
    root.mkdir(parents=True, exist_ok=True)
    pre = cfg.base_config()
    env_spec, B = pre.env, cfg.budget_flops
    base = pretrained_base(pre, console=console)

    console.print("[bold]the solutions[/]: the teacher's and the base's own, verified, one a problem")
    teacher = _by_problem(teacher_traces(cfg, root, env_spec, teacher_model(cfg, root, env_spec, base, console),
                                         "one_per_problem", console))
    own = _by_problem(grid.stage(root / "self-best-of-n", distill.main, distill.DistillConfig(
        env=env_spec, problems=cfg.distill_problems, k=cfg.rs_n, filter="one_per_problem", max_tokens=32,
        seed=cfg.seed, teacher=str(base), cache_dir=str(root / "self_cache")), console) / "data.jsonl")
    chosen = [pid for pid in teacher if pid in own][:cfg.solutions]
    if not chosen:
        raise ValueError("no train problem was solved by both the teacher and the base: raise --distill_problems")
    env = make_env(env_spec)
    stream = env.problems("train", cfg.seed)  # the problems distill asked, in its order
    problems = {p.id: p for p in (next(stream) for _ in range(cfg.distill_problems))}
    human = {pid: {"messages": problems[pid].messages() + [{"role": "assistant", "content": correct_solution(
        env, problems[pid], cfg.human_style)}]} for pid in chosen}
    named = {"human": "human" + ("" if cfg.human_style == "worked" else f"-{cfg.human_style}"),
             "teacher": "teacher", "self": "self"}  # a style's runs never reuse another's
    data = {}
    for arm, rows in (("human", human), ("teacher", teacher), ("self", own)):
        data[arm] = root / "data" / f"{named[arm]}.jsonl"
        write_text(data[arm], "".join(json.dumps({"messages": rows[pid]["messages"], "problem_id": pid}) + "\n"
                                      for pid in chosen))

    arms: dict[str, dict[str, Any]] = {}
    for arm in cfg.arms:
        console.rule(arm)
        tuned = grid.stage(root / f"sft-{named[arm]}", sft.main, regimes.sft_config(cfg, env_spec, str(base), str(data[arm]), 0.0)
                           .model_copy(update={"epochs": cfg.sft_epochs}), console)
        after = grid.stage(root / f"rl-{named[arm]}", rl.main, regimes.rl_config(
            cfg, env_spec, str(tuned / "checkpoints" / "last" / "model"), steps=regimes.ENDLESS, budget_flops=B,
            eval_every=cfg.rl_eval_every, **cfg.rl), console)
        arms[arm] = {"stages": {"sft": grid.scores(tuned), "rl": grid.scores(after)},
                     "sft_flops": flops(tuned), "flops": flops(after)}
    base_scores = grid.scores(grid.measure(base, env_spec, root / "eval-base", cfg.eval_problems,
                                           cfg.final_eval_samples, cfg.seed))
    for r in arms.values():
        for stage in ("sft", "rl"):
            ref = arms.get("human")
            r[f"vs human, {stage}"] = grid.paired(ref["stages"][stage]["pass@1"], r["stages"][stage]["pass@1"]) \
                if ref and ref is not r else None
    _table(arms, base_scores, len(chosen), cfg, console)
    out = {"arms": arms, "base": base_scores, "solutions": len(chosen), "budget_flops": B,
           "seconds": time.time() - t0, "config": cfg.model_dump(mode="json")}
    write_json(root / "results.json", out)
    console.print(f"results: {root / 'results.json'}   ({out['seconds']:.0f} s)")
    return out


def _table(arms: dict[str, Any], base: dict[str, Any], n: int, cfg: HumansConfig, console) -> None:
    def triple(s: dict[str, Any]) -> str:
        return " / ".join(f"{s[k]['mean']:.1%}" if s.get(k) else "-" for k in STAGE_FIGURES)

    table = Table(title=f"SFT on {n} solutions written by humans ({cfg.human_style}), a teacher or the model itself, then RL to "
                        f"{cfg.budget_flops:.3g} FLOPs (held-out pass@1 / pass@16 / greedy; base {triple(base)})")
    for col in ("arm", "after SFT", "vs human (paired)", "after RL", "vs human (paired)", "SFT + RL FLOPs"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for arm, r in arms.items():
        table.add_row(arm, triple(r["stages"]["sft"]), grid.change_text(r["vs human, sft"]),
                      triple(r["stages"]["rl"]), grid.change_text(r["vs human, rl"]),
                      f"{r['sft_flops']:.3g} + {r['flops'] - r['sft_flops']:.3g}")
    console.print(table)


COLUMNS = {f"{f} {stage}": True for stage in ("SFT", "RL") for f in STAGE_FIGURES} | \
    {"vs human, SFT (paired)": True, "vs human, RL (paired)": True}


def figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{arm: {column: value}} of one run, for the spread over seeds."""
    return {arm: {**stage_figures(r["stages"], {"sft": "SFT", "rl": "RL"}),
                  "vs human, SFT (paired)": (r["vs human, sft"] or {}).get("mean"),
                  "vs human, RL (paired)": (r["vs human, rl"] or {}).get("mean")}
            for arm, r in result["arms"].items()}
