"""`rlvr experiment midtrain`: where should a teacher's worked solutions go, pretraining or SFT?

The same verified teacher solutions, used four ways, each then followed by the same RL:

    none          no teacher text: the plain base, then RL (the reference)
    pretrain mix  the solutions mixed into the pretraining corpus as plain text (a `mix_share`
                  of its documents; mid-training), then RL
    sft           the plain base, then SFT on the solutions, then RL
    both          half of the solutions mixed into pretraining, SFT on the other half, then RL

The teacher and its solutions are made as the regimes experiment makes them: the demo's
base (of `base_seed`, cached) after `teacher_steps` of RL, asked `k` answers to each of
`distill_problems` train problems, the verified kept. Every arm uses the same solutions
(the same teacher tokens: both splits them in two), and none is charged for them.
Every base is pretrained afresh for as many steps as the demo's base took, on a fixed
cosine schedule (the demo's check would stop a base that read correct solutions at
another step), so pretraining costs each arm the same; after it every arm gets
`budget_flops` (SFT included). Held-out pass@1, pass@16 and greedy are measured after
each stage, on the same problems, and each arm's end is paired with the reference's and
with SFT's.

    rlvr experiment midtrain                     # the demo's task: 11 runs after the demo's base (not yet timed)
    rlvr experiment midtrain --seeds 0,1,2       # each figure as mean [min, max]
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated, Any, Iterator

from pydantic import Field
from rich.console import Console
from rich.table import Table

from rlvr.atomic import write_json, write_text
from rlvr.compute import Totals
from rlvr.config import Config
from rlvr.demo import pretrained_base
from rlvr.distill import distill
from rlvr.experiments import grid, regimes, seeds
from rlvr.experiments.seeds import PerSeed
from rlvr.fields import BaseSeed, DistillProblems, HeldOutProblems, PipelineSeed, PretrainSteps, RLEvalEvery, TeacherSolutions
from rlvr.jsonl import read_jsonl
from rlvr.train import pretrain, rl, sft
from rlvr.train.corpus import mixed

ARMS = ("none", "pretrain mix", "sft", "both")


class PipelineConfig(Config):
    """What the teacher pipelines (midtrain, humans) share: the base, the teacher, its
    solutions, the stages' learning rates and every evaluation."""

    pretrain_steps: PretrainSteps
    pretrain: dict[str, Any] = Field({}, description="`rlvr pretrain` keys over the demo's for the base (env, preset, ...): the task is its env.")
    rl: dict[str, Any] = Field({}, description="`rlvr rl` keys every RL stage takes, the teacher's included (e.g. {\"prompts\": 16}).")
    teacher_steps: int = Field(80, ge=1, description="RL steps that make the teacher from the demo's base.")
    distill_problems: DistillProblems = 1000
    k: TeacherSolutions
    sft_lr: float = Field(5e-4, gt=0, description="SFT learning rate.")
    rl_eval_every: RLEvalEvery = 5
    sft_eval_every: int = Field(40, ge=1, description="SFT steps between evaluations.")
    eval_problems: HeldOutProblems = 200
    eval_samples: int = Field(8, ge=1, description="Samples per problem during training (pass@1 is their mean).")
    final_eval_samples: int = Field(16, ge=1, description="Samples per problem after each stage (pass@16 needs 16).")
    seed: PipelineSeed
    seeds: PerSeed
    base_seed: BaseSeed

    def base_config(self) -> pretrain.PretrainConfig:
        """The demo's base (cached by pretrained_base), with `pretrain`'s keys over it."""
        return pretrain.PretrainConfig(**{"steps": self.pretrain_steps, "seed": self.base_seed, **self.pretrain})


class MidtrainConfig(PipelineConfig):
    run_dir: str = Field("runs/midtrain", description="Experiment directory: one run per stage, traces/, results.json.")
    arms: Annotated[list[str], grid.names_in(dict.fromkeys(ARMS))] = Field(list(ARMS), description=f"Which arms to run, of {list(ARMS)}.")
    budget_flops: float = Field(4e12, gt=0, description="FLOPs each arm spends after pretraining (SFT and RL).")
    mix_share: float = Field(0.1, gt=0, lt=1, description="Share of the pretraining documents drawn from the teacher's solutions (cycled) in the mixing arms.")
    sft_share: float = Field(0.4, gt=0, lt=1, description="Share of the budget spent on SFT in the SFT arms.")


class MixedPretrainConfig(pretrain.PretrainConfig):
    mix_data: str = Field("", description="JSONL of conversations ({\"messages\": [...]}) mixed into the corpus as plain text.")
    mix_share: float = Field(0.0, ge=0, lt=1, description="Share of the corpus's documents drawn from mix_data (in order, cycled).")


class MixedPretrain(pretrain.Pretrain):
    """Pretraining whose corpus has another text mixed in (the chat-formatted conversations
    of `mix_data`, as the corpus writes its own)."""

    def corpus(self) -> Iterator[str]:
        cfg = self.cfg
        if not cfg.mix_share:
            return super().corpus()
        extra = [self.tok.apply_chat_template(row["messages"], tokenize=False) for _, row in read_jsonl(cfg.mix_data)]
        return mixed(super().corpus(), extra, cfg.mix_share, cfg.seed)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def teacher_model(cfg, root: Path, env: Any, base: Path, console) -> Path:
    """The regimes experiment's teacher: the base after `teacher_steps` of RL (cached in root/teacher)."""
    run = grid.stage(root / "teacher", rl.main, regimes.rl_config(
        cfg, env, str(base), **{"steps": cfg.teacher_steps, **grid.RATE_BEFORE, **cfg.rl}), console)
    return run / "checkpoints" / "last" / "model"


def teacher_traces(cfg, root: Path, env: Any, teacher: Path, filt: str, console) -> Path:
    """The teacher's answers to `distill_problems` train problems (`k` each), filtered by its
    verifier (`filt`, rlvr/verify/filters.py): a data.jsonl of conversations."""
    run = grid.stage(root / f"distill-{filt}", distill.main, distill.DistillConfig(
        env=env, problems=cfg.distill_problems, k=cfg.k, filter=filt, max_tokens=32, seed=cfg.seed,
        teacher=str(teacher), cache_dir=str(root / "teacher_cache")), console)
    return run / "data.jsonl"


def flops(run_dir: Path) -> float:
    """Total FLOPs a finished run reports (inherited included)."""
    return Totals.from_dict(json.loads((run_dir / "summary.json").read_text())["total"]).flops


def _traces(data: Path, out: Path) -> tuple[Path, Path, Path]:
    """The solutions as the arms read them: all, and split by problem into two halves (every
    other problem). Copies outside the distillation's run directory, so that no arm is
    charged the teacher's tokens (every arm reads the same ones)."""
    rows = [row for _, row in read_jsonl(data)]
    ids = list(dict.fromkeys(r["problem_id"] for r in rows))
    first = set(ids[::2])
    parts = {out / "all.jsonl": rows, out / "half-pretrain.jsonl": [r for r in rows if r["problem_id"] in first],
             out / "half-sft.jsonl": [r for r in rows if r["problem_id"] not in first]}
    for path, part in parts.items():
        write_text(path, "".join(json.dumps(r) + "\n" for r in part))
    return tuple(parts)


def main(cfg: MidtrainConfig) -> dict[str, Any]:
    if cfg.seeds:
        return seeds.run_and_show(main, cfg, figures, "teacher solutions in pretraining or SFT,", COLUMNS)
    console, root, t0 = Console(), Path(cfg.run_dir), time.time()
    root.mkdir(parents=True, exist_ok=True)
    pre = cfg.base_config()
    env, B = pre.env, cfg.budget_flops
    demo_base = pretrained_base(pre, console=console)
    length = json.loads((demo_base.parent.parent.parent / "summary.json").read_text())["steps"]

    console.print("[bold]the teacher and its verified solutions[/]")
    solved = teacher_traces(cfg, root, env, teacher_model(cfg, root, env, demo_base, console), "correct", console)
    if not any(True for _ in read_jsonl(solved)):
        raise ValueError(f"the teacher solved none of its {cfg.distill_problems} problems ({solved}): nothing to mix "
                         "or fine-tune on; raise --teacher_steps or --distill_problems")
    data, half_pretrain, half_sft = _traces(solved, root / "traces")

    def base(name: str, mix: Path | None) -> Path:
        twin = MixedPretrainConfig(**{**pre.model_dump(), "steps": length, "check_every": 0, "mix_data": str(mix or ""),
                                      "mix_share": cfg.mix_share if mix else 0.0})
        run = grid.stage(root / name, lambda c: MixedPretrain(c).train(), twin, console)
        return run / "checkpoints" / "last" / "model"

    def evaluated(model: Path, name: str) -> Path:
        return grid.measure(model, env, root / name, cfg.eval_problems, cfg.final_eval_samples, cfg.seed)

    def sft_on(start: Path, data: Path, name: str) -> Path:
        return grid.stage(root / name, sft.main, regimes.sft_config(cfg, env, str(start), str(data), cfg.sft_share * B),
                          console)

    def rl_from(start: Path, name: str) -> Path:
        return grid.stage(root / name, rl.main, regimes.rl_config(
            cfg, env, str(start), steps=regimes.ENDLESS, budget_flops=B, eval_every=cfg.rl_eval_every, **cfg.rl), console)

    plan = {"none": (None, None), "pretrain mix": (data, None), "sft": (None, data), "both": (half_pretrain, half_sft)}
    arms: dict[str, dict[str, Any]] = {}
    for arm in cfg.arms:
        mix, tune = plan[arm]
        console.rule(arm)
        name = {None: "base-plain", data: "base-mix", half_pretrain: "base-mix-half"}[mix]
        model = base(name, mix)
        stages = {"pretrain": evaluated(model, f"eval-{name}")}
        start = model
        if tune is not None:
            stages["sft"] = sft_on(model, tune, f"sft-{_slug(arm)}")
            start = stages["sft"] / "checkpoints" / "last" / "model"
        stages["rl"] = rl_from(start, f"rl-{_slug(arm)}")
        arms[arm] = {"stages": {s: grid.scores(d) for s, d in stages.items()},
                     "pretrain_flops": flops(root / name), "post_flops": flops(stages["rl"]),
                     "teacher_solutions": sum(1 for p in (mix, tune) if p for _ in read_jsonl(p))}
    for r in arms.values():
        end = r["stages"]["rl"]["pass@1"]
        for other in ("none", "sft"):
            r[f"vs {other}"] = grid.paired(arms[other]["stages"]["rl"]["pass@1"], end) \
                if other in arms and arms[other] is not r else None
    _table(arms, cfg, console)
    out = {"arms": arms, "budget_flops": B, "pretrain_steps": length, "seconds": time.time() - t0,
           "config": cfg.model_dump(mode="json")}
    write_json(root / "results.json", out)
    console.print(f"results: {root / 'results.json'}   ({out['seconds']:.0f} s)")
    return out


def _table(arms: dict[str, Any], cfg: MidtrainConfig, console) -> None:
    table = Table(title=f"teacher solutions in pretraining, SFT or both, then RL ({cfg.budget_flops:.3g} FLOPs after "
                        f"pretraining; held-out pass@1 / pass@16 / greedy)")
    for col in ("arm", "after pretraining", "after SFT", "after RL", "vs none (paired)", "vs sft (paired)",
                "teacher solutions", "pretrain + post FLOPs"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for arm, r in arms.items():
        table.add_row(arm, *(_triple(r["stages"].get(s)) for s in ("pretrain", "sft", "rl")),
                      grid.change_text(r["vs none"]), grid.change_text(r["vs sft"]), str(r["teacher_solutions"]),
                      f"{r['pretrain_flops']:.3g} + {r['post_flops']:.3g}")
    console.print(table)


def _triple(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    return " / ".join(f"{s[k]['mean']:.1%}" if s.get(k) else "-" for k in ("pass@1", "pass@16", "greedy"))


STAGE_FIGURES = {"pass@1": True, "pass@16": True, "greedy": True}
COLUMNS = {f"{f} {stage}": True for stage in ("pretrained", "SFT", "RL") for f in STAGE_FIGURES} | \
    {"vs none (paired)": True, "vs sft (paired)": True}


def stage_figures(stages: dict[str, Any], names: dict[str, str]) -> dict[str, float | None]:
    """{"FIGURE STAGE": mean} of an arm's stages (`names`: stage key -> its column word)."""
    out = {}
    for key, word in names.items():
        measured = stages.get(key) or {}
        for f in STAGE_FIGURES:
            out[f"{f} {word}"] = measured[f]["mean"] if measured.get(f) else None
    return out


def figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{arm: {column: value}} of one run, for the spread over seeds."""
    return {arm: {**stage_figures(r["stages"], {"pretrain": "pretrained", "sft": "SFT", "rl": "RL"}),
                  "vs none (paired)": (r["vs none"] or {}).get("mean"), "vs sft (paired)": (r["vs sft"] or {}).get("mean")}
            for arm, r in result["arms"].items()}
