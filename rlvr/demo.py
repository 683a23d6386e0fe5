"""`rlvr demo` (what `make demo` runs): zero RL on a tiny base that is usually wrong.

1. Pretrain the tiny model on worked additions, most of them with slips (cached:
   a second run reuses the base; `runs/demo/base` points at it, the model `rlvr rl`,
   `sft`, `rs` and `eval` start from when given no --model).
2. Evaluate it on held-out problems: pass@1 at T=1, pass@16, greedy accuracy.
3. Run RL from it (no cold start, no teacher), then evaluate again the same way.
4. Print a before/after table; write `demo.json` in the run directory.

Environment: 3-digit addition written as a column-by-column scratchpad. It is the
smallest task where a 1 M-parameter model can learn the procedure from text in a
couple of minutes on a laptop CPU, where the base's *mode* is wrong (slips are more
likely than not in each column), and where the verifier is exact, so that what RL
does is visible: it has to move the most likely answer, not just lower the temperature.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from pydantic import Field
from rich.console import Console
from rich.table import Table

from rlvr.config import Config
from rlvr.atomic import point_link
from rlvr.fields import DEMO_BASE, BaseSeed, PipelineSeed, PretrainSteps
from rlvr.engine import make_engine
from rlvr.envs import make_env
from rlvr.eval import eval_problems, evaluate, headline
from rlvr.models import load_model
from rlvr.train import pretrain, rl
from rlvr.types import Sampling


class DemoConfig(Config):
    run_dir: str = Field("", description="Demo run directory (default: runs/demo-<timestamp>).")
    base_dir: str = Field("", description="Where the pretrained base is cached (default: runs/base-<config hash>).")
    pretrain_steps: PretrainSteps
    rl_steps: int = Field(80, ge=1, description="RL steps (80: the weakest base measured, seed 3 on the generic kernels, ended at 83% after 60 and 89% after 80; EXPERIMENTS.md).")
    prompts: int = Field(64, ge=1, description="Problems per RL step.")
    group_size: int = Field(8, ge=1, description="Completions per problem.")
    lr: float = Field(5e-4, gt=0, description="RL learning rate (after a 10-step warm-up, cosine-decayed to 10% by the last step).")
    eval_problems: int = Field(200, ge=1, description="Held-out problems for the before/after evaluation.")
    eval_samples: int = Field(16, ge=1, description="Samples per problem (pass@1 is their mean; pass@k for k = this).")
    seed: PipelineSeed
    base_seed: BaseSeed


# The demo's contract for its base: it has learned the procedure (a correct solution is
# within reach: pass@16 high) but its answers, sampled or greedy, are mostly wrong.
BAND_MAX, BAND_MIN_PASS_AT_K = 0.25, 0.5


def in_band(base: dict[str, float], k: int) -> bool:
    return (base["pass_at_1"] <= BAND_MAX and base["greedy"] <= BAND_MAX
            and base.get(f"pass_at_{k}", 0.0) >= BAND_MIN_PASS_AT_K)


# Keys that change no weight: left out of the cache key, so that adding one keeps every cached base.
NOT_IN_DIGEST = {"wandb", "wandb_project", "parallel", "dist_timeout"}


def base_digest(pre: pretrain.PretrainConfig) -> str:
    """The cache key of a pretraining config: what decides the base's weights."""
    return hashlib.sha1(pre.model_dump_json(exclude=NOT_IN_DIGEST).encode()).hexdigest()[:8]


def pretrained_base(pre: pretrain.PretrainConfig, base_dir: str = "", console: Console | None = None) -> Path:
    """The base model for `pre`, pretrained once and cached in runs/base-<config hash>."""
    console = console or Console()
    run_dir = Path(base_dir or f"runs/base-{base_digest(pre)}")
    model = run_dir / "checkpoints" / "last" / "model"
    if model.exists():
        console.print(f"[green]reusing the pretrained base[/] in {run_dir}")
    else:
        console.print(f"[bold]pretraining[/] the tiny base until its held-out check finds it in band "
                      f"(at most {pre.steps} steps) -> {run_dir}")
        pretrain.main(pre.model_copy(update={"run_dir": str(run_dir)}))
    return model


def main(cfg: DemoConfig) -> dict:
    console = Console()
    t0 = time.time()
    pre = pretrain.PretrainConfig(steps=cfg.pretrain_steps, seed=cfg.base_seed)
    run_dir = Path(cfg.run_dir or time.strftime("runs/demo-%Y%m%d-%H%M%S"))
    console.print("[bold]1/3 the base[/]")
    base_model = pretrained_base(pre, cfg.base_dir, console)
    base_dir = base_model.parent.parent.parent
    # What `rlvr rl`, `sft`, `rs` and `eval` start from when no --model is given.
    Path(DEMO_BASE).parent.mkdir(parents=True, exist_ok=True)
    point_link(DEMO_BASE, os.path.relpath(base_dir.resolve(), Path(DEMO_BASE).parent.resolve()))
    env = make_env(pre.env)
    problems = eval_problems(env, cfg.eval_problems)  # one held-out set for every seed
    sampling = Sampling(temperature=1.0, max_new_tokens=32, seed=cfg.seed)
    ks = [1, cfg.eval_samples]

    console.print("[bold]2/3 evaluating the base[/] on held-out problems")
    model, tok = load_model(base_model)
    before = evaluate(make_engine(model, tok, role="snapshot"), env, problems, cfg.eval_samples, ks, sampling)[env.name]

    console.print(f"[bold]3/3 zero RL[/] from the base ({cfg.rl_steps} steps of {cfg.prompts} x {cfg.group_size})")
    rl_cfg = rl.RLConfig(run_dir=str(run_dir / "rl"), model=str(base_model), env=pre.env, steps=cfg.rl_steps,
                         prompts=cfg.prompts, group_size=cfg.group_size, lr=cfg.lr, lr_schedule="cosine",
                         lr_by_signal=False,  # as its recorded figures were made (README, EXPERIMENTS)
                         seed=cfg.seed,
                         max_new_tokens=32, eval_problems=0, save_every=0)
    t_rl = time.time()
    rl.main(rl_cfg)
    rl_seconds = time.time() - t_rl
    model, tok = load_model(run_dir / "rl" / "checkpoints" / "last" / "model")
    after = evaluate(make_engine(model, tok, role="snapshot"), env, problems, cfg.eval_samples, ks, sampling)[env.name]

    b, a = headline(before, ks), headline(after, ks)
    k = cfg.eval_samples
    band = in_band(b, k)
    result = {
        "env": pre.env, "eval_problems": cfg.eval_problems, "eval_samples": k,
        "base_pass_at_1": b["pass_at_1"], "base_greedy": b["greedy"], f"base_pass_at_{k}": b.get(f"pass_at_{k}"),
        "final_pass_at_1": a["pass_at_1"], "final_greedy": a["greedy"], f"final_pass_at_{k}": a.get(f"pass_at_{k}"),
        "base_in_band": band, "base_pretrain": _pretrain_summary(base_dir), "rl_steps": cfg.rl_steps, "rl_seconds": rl_seconds, "wall_seconds": time.time() - t0,
        "base": before, "final": after, "base_dir": str(base_dir), "run_dir": str(run_dir),
    }
    (run_dir).mkdir(parents=True, exist_ok=True)
    (run_dir / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    (run_dir / "eval.json").write_text(json.dumps({"base": before, "final": after}, indent=2) + "\n")

    table = Table(title=f"zero RL on 3-digit addition ({cfg.eval_problems} held-out problems)")
    table.add_column("model")
    for col in ("pass@1 (T=1)", f"pass@{k}", "greedy"):
        table.add_column(col, justify="right")
    for name, m in (("base", before), (f"after {cfg.rl_steps} RL steps", after)):
        cells = [m["pass@1"], m.get(f"pass@{k}"), m["greedy"]]
        table.add_row(name, *[f"{c['mean']:.1%} [{c['ci'][0]:.0%}, {c['ci'][1]:.0%}]" if c else "-" for c in cells])
    console.print(table)
    if not band:
        console.print(f"[yellow]warning:[/] the base is outside the demo's band (pass@1 and greedy <= {BAND_MAX:.0%}, "
                      f"pass@{k} >= {BAND_MIN_PASS_AT_K:.0%}): what RL did here is not the demo's claim")
    console.print(f"run directory: [bold]{run_dir}[/]   ({result['wall_seconds']:.0f} s in all)")
    return result


def _pretrain_summary(base_dir: Path) -> dict:
    s = json.loads((base_dir / "summary.json").read_text())
    return {k: s.get(k) for k in ("steps", "learned_at_step", "in_band", "check")} | {"seconds": s["compute"]["wall_seconds"]}
