"""`rlvr experiment tools`: does zero RL teach a model to call a tool when it pays, and does
RL with the tool beat RL without it at equal FLOPs (ToRL's comparison)?

The base reads a corpus where some problems are offered a calculator and some documents
use it (rlvr/train/tool_corpus.py: each document token for token what an episode of
`tools:calculator:ENV` feeds the model; `offer_share` of the problems are offered the
tool, `tool_share` of those call it, the rest work the columns in the head, with the
corpus's slips). It starts from the demo's base of `base_seed` (cached), which has
learned the column procedure, and reads `pretrain_steps` batches of that corpus on a
cosine schedule (cached in runs/base-tools-<config hash>-<hash of its first documents>).
Then, from that one base, two zero-RL arms with the same `budget_flops` (rlvr/compute.py
charges the tool arm's longer prompts, its environment's result tokens and its extra
turns):

    tool      RL on ENV with the calculator offered (`tools:calculator:ENV`)
    no tool   RL on ENV as it is (the same problems, asked without the offer)

Held-out pass@1, greedy accuracy and the tool-call rate (the share of episodes with at
least one call) are measured on the base, with the tool offered and without, and at
each arm's end, on the same problems, and the two arms' ends are paired problem by
problem. On the demo's task a head-computed answer is right about one time in eight (the
corpus's slips), a calculator's always: the tool pays, if the model learns to call it.

The tool is offered in the tag format's brief offer (`offer=brief`, one line before the
question). In full (~300 characters of instructions), the base called the tool as often
but could copy neither the question's operands into the call nor the result into its
answer, and its head work on the offered prompt failed too: the long offer diluted the
tiny model's attention, and RL never saw a correct episode (EXPERIMENTS.md). With the
brief offer, 200 steps of a corpus whose offered problems call the tool half the time
taught the call but not the answer's copy of the result (`<result>1046</result>` then
`#### 1205`), and RL dropped the tool (calls 50% to 0%); 400 steps with 80% calls copy
both.

    rlvr experiment tools                      # 3-digit addition, the demo's base of --base_seed
    rlvr experiment tools --seeds 0,1,2        # each figure as mean [min, max]
    rlvr experiment tools-real                 # SmolLM2-135M with the calculator, few-shot, before and after RL
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from pathlib import Path
from typing import Any, Iterator

from pydantic import Field
from rich.console import Console
from rich.table import Table

from rlvr.atomic import write_json
from rlvr.config import Config
from rlvr.demo import base_digest, pretrained_base
from rlvr.envs import make_env
from rlvr.experiments import grid, regimes, seeds
from rlvr.experiments.seeds import PerSeed
from rlvr.fields import BaseSeed, HeldOutProblems, PipelineSeed
from rlvr.models import load_model
from rlvr.train import pretrain, rl
from rlvr.train.tool_corpus import tool_documents

def offered(env: Any, tool: str, offer: str = "full") -> dict[str, Any]:
    """`env` with `tool` offered (the tag format's offer in full or brief): the spec of its
    `tools:` environment."""
    return {"name": "tools", "tools": [tool], "env": env, **({"offer": offer} if offer != "full" else {})}


class ToolsPretrainConfig(pretrain.PretrainConfig):
    init: str = Field("", description="Model the pretraining starts from (empty: random weights).")
    tool: str = Field("calculator", description="The tool a share of the problems are offered.")
    offer_share: float = Field(0.5, ge=0, le=1, description="Share of the problems offered the tool.")
    tool_share: float = Field(0.5, ge=0, le=1, description="Share of the offered problems whose document calls it.")
    offer: str = Field("full", description="The tag format's offer: full or brief (rlvr/envs/tools.py).")


class ToolsPretrain(pretrain.Pretrain):
    """Pretraining on the corpus with a tool (rlvr/train/tool_corpus.py), from `init`."""

    def prepare(self) -> None:
        self.env = make_env(offered(self.cfg.env, self.cfg.tool, self.cfg.offer))

    def build(self, checkpoint: Path | None):
        if checkpoint or not self.cfg.init:
            return super().build(checkpoint)
        model, tok = load_model(self.cfg.init, device="cpu")
        return model.train(), tok, None

    def corpus(self) -> Iterator[str]:
        cfg = self.cfg
        return tool_documents(self.env, self.tok, cfg.slip, cfg.seed, cfg.offer_share, cfg.tool_share, cfg.slip_later)


def corpus_digest(pre: ToolsPretrainConfig, documents: int = 8) -> str:
    """A hash of the corpus's first documents: the base's cache key changes with the
    documents themselves (the offer's wording or place, the call's format), which its
    config does not see."""
    tok = load_model(pre.init, device="cpu")[1]
    env = make_env(offered(pre.env, pre.tool, pre.offer))
    docs = tool_documents(env, tok, pre.slip, pre.seed, pre.offer_share, pre.tool_share, pre.slip_later)
    return hashlib.sha1("\x00".join(itertools.islice(docs, documents)).encode()).hexdigest()[:8]


class ToolsConfig(Config):
    run_dir: str = Field("runs/tools", description="Experiment directory: eval-base-*/, rl-*/, results.json.")
    env: Any = Field(pretrain.DEMO_ENV, description="The task, without the tool (the demo's 3-digit addition); the tool arm offers `tool` in it.")
    tool: str = Field("calculator", description="The tool offered (a registered one, rlvr/envs/tool_calls.py).")
    offer_share: float = Field(0.5, ge=0, le=1, description="Corpus: share of the problems offered the tool.")
    tool_share: float = Field(0.8, ge=0, le=1, description="Corpus: share of the offered problems whose document calls it (the rest work in the head; at 0.5 and 200 steps the base called the tool but did not copy its result into the answer).")
    offer: str = Field("brief", description="The tag format's offer, full or brief (one line: the tiny model did not copy the question across the full offer's ~300 characters; EXPERIMENTS.md).")
    pretrain_steps: int = Field(400, ge=1, description="Batches of the tool corpus the base reads after the demo's base.")
    pretrain_batch: int = Field(32, ge=1, description="Documents per pretraining step.")
    pretrain_lr: float = Field(1e-3, gt=0, description="Pretraining learning rate (warm-up, then a cosine to 10%).")
    budget_flops: float = Field(1e12, gt=0, description="FLOPs each RL arm spends (rlvr/compute.py).")
    prompts: int = Field(8, ge=1, description="Problems per RL step.")
    group_size: int = Field(8, ge=2, description="Completions per problem.")
    max_new_tokens: int = Field(40, ge=1, description="Tokens per model turn (a call of 3-digit operands is 32).")
    eval_problems: HeldOutProblems = 100
    eval_samples: int = Field(4, ge=1, description="Samples per held-out problem (pass@1 is their mean; greedy beside).")
    seed: PipelineSeed
    seeds: PerSeed
    base_seed: BaseSeed

    def base_config(self) -> ToolsPretrainConfig:
        demo = pretrained_base(pretrain.PretrainConfig(seed=self.base_seed), console=Console())
        return ToolsPretrainConfig(env=self.env, init=str(demo), tool=self.tool, offer_share=self.offer_share,
                                   tool_share=self.tool_share, offer=self.offer, steps=self.pretrain_steps, batch_size=self.pretrain_batch,
                                   lr=self.pretrain_lr, warmup=min(20, self.pretrain_steps), check_every=0,
                                   save_every=25, seed=self.base_seed)  # a killed experiment resumes its base


COLUMNS = {"pass@1 before": True, "greedy before": True, "tool calls before": True,
           "pass@1 after": True, "greedy after": True, "tool calls after": True,
           "vs no tool (paired)": True, "RL steps": False, "FLOPs": False}


def measured(metrics_dir: Path) -> dict[str, Any]:
    """pass@1 (with its per-problem scores), greedy and the tool-call rate of an eval.json."""
    m = grid._first_env(json.loads((metrics_dir / "eval.json").read_text())["metrics"])
    return {"pass@1": m["pass@1"], "greedy": m.get("greedy"),
            "tool_call_rate": m.get("episodes", {}).get("tool_call_rate")}


def main(cfg: ToolsConfig) -> dict[str, Any]:
    if cfg.seeds:
        return seeds.run_and_show(main, cfg, figures, f"zero RL with and without a {cfg.tool} at "
                                  f"{cfg.budget_flops:.3g} FLOPs,", COLUMNS)
    console, root, t0 = Console(), Path(cfg.run_dir), time.time()
    root.mkdir(parents=True, exist_ok=True)
    pre = cfg.base_config()
    console.rule(f"the base: the demo's, then {cfg.pretrain_steps} steps of the corpus with a {cfg.tool}")
    base_run = grid.stage(Path(f"runs/base-tools-{base_digest(pre)}-{corpus_digest(pre)}"),
                          lambda c: ToolsPretrain(c).train(), pre, console)
    base = base_run / "checkpoints" / "last" / "model"
    envs = {"tool": offered(cfg.env, cfg.tool, cfg.offer), "no tool": cfg.env}
    arms: dict[str, dict[str, Any]] = {}
    for arm, env in envs.items():
        slug = arm.replace(" ", "-")
        console.rule(f"{arm}: the base, then zero RL to {cfg.budget_flops:.3g} FLOPs")
        before = grid.measure(base, env, root / f"eval-base-{slug}", cfg.eval_problems, cfg.eval_samples, cfg.seed,
                              cfg.max_new_tokens)
        run = grid.stage(root / f"rl-{slug}", rl.main, rl.RLConfig(
            model=str(base), env=env, steps=regimes.ENDLESS, budget_flops=cfg.budget_flops, prompts=cfg.prompts,
            group_size=cfg.group_size, max_new_tokens=cfg.max_new_tokens, eval_problems=cfg.eval_problems,
            eval_samples=cfg.eval_samples, eval_every=0, save_every=0, seed=cfg.seed), console)
        summary = json.loads((run / "summary.json").read_text())
        arms[arm] = {"before": measured(before), "after": measured(run), "steps": summary["steps"],
                     "flops": summary["total"]["flops"], "seconds": summary["total"]["wall_seconds"]}
    arms["tool"]["vs no tool"] = grid.paired(arms["no tool"]["after"]["pass@1"], arms["tool"]["after"]["pass@1"])
    arms["no tool"]["vs no tool"] = None
    _table(arms, f"zero RL with and without a {cfg.tool} on {_name(cfg.env)}, {cfg.budget_flops:.3g} FLOPs each "
                 f"(held-out, {cfg.eval_problems} problems)", console)
    out = {"arms": arms, "budget_flops": cfg.budget_flops, "base": str(base), "seconds": time.time() - t0,
           "config": cfg.model_dump(mode="json")}
    write_json(root / "results.json", out)
    console.print(f"results: {root / 'results.json'}   ({out['seconds']:.0f} s)")
    return out


def _name(env: Any) -> str:
    return env if isinstance(env, str) else ",".join(f"{k}={v}" for k, v in env.items() if k != "template")


def _pct(s: dict[str, Any] | float | None) -> str:
    if s is None:
        return "-"
    return f"{(s['mean'] if isinstance(s, dict) else s):.1%}"


def _table(arms: dict[str, dict[str, Any]], title: str, console) -> None:
    table = Table(title=title)
    for col in ("arm", "pass@1 before", "greedy", "tool calls", "pass@1 after", "greedy", "tool calls",
                "vs no tool (paired)", "RL steps", "FLOPs"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for arm, r in arms.items():
        b, a = r["before"], r["after"]
        table.add_row(arm, grid.ci_text(b["pass@1"]), _pct(b["greedy"]), _pct(b["tool_call_rate"]),
                      grid.ci_text(a["pass@1"]), _pct(a["greedy"]), _pct(a["tool_call_rate"]),
                      grid.change_text(r.get("vs no tool")), str(r.get("steps", "-")), f"{r.get('flops', 0):.3g}")
    console.print(table)


def figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{arm: {column: value}} of one run, for the spread over seeds."""
    def value(s):
        return s["mean"] if isinstance(s, dict) else s
    return {arm: {"pass@1 before": value(r["before"]["pass@1"]), "greedy before": value(r["before"]["greedy"]),
                  "tool calls before": r["before"]["tool_call_rate"], "pass@1 after": value(r["after"]["pass@1"]),
                  "greedy after": value(r["after"]["greedy"]), "tool calls after": r["after"]["tool_call_rate"],
                  "vs no tool (paired)": (r.get("vs no tool") or {}).get("mean"),
                  "vs before (paired)": (r.get("vs before") or {}).get("mean"), "RL steps": r.get("steps"),
                  "FLOPs": r.get("flops")}
            for arm, r in result["arms"].items()}


# -- SmolLM2 with a calculator ---------------------------------------------------------------------------------------

class ToolsRealConfig(Config):
    run_dir: str = Field("runs/tools-real", description="Experiment directory: rl/ (its step-0 evaluation is the base), results.json.")
    model: str = Field("smollm2-135m", description="The pretrained model: a registered name (fetched with `rlvr models get` when missing), a path or a hub id.")
    env: Any = Field("tools:calculator:prompt:format=answer_is,shots=2,tool_shots=true:arithmetic:digits=2,ops=mul",
                     description="Environment spec: the tool offered in the tag format, and few-shot examples that call it (prompt:'s tool_shots).")
    lora_r: int = Field(16, ge=0, description="LoRA rank (0: full fine-tuning).")
    rl_steps: int = Field(12, ge=1, description="RL steps.")
    prompts: int = Field(8, ge=1, description="Problems per RL step.")
    group_size: int = Field(4, ge=2, description="Completions per problem.")
    lr: float = Field(2e-4, gt=0, description="RL learning rate (LoRA adapters), cosine-decayed.")
    max_new_tokens: int = Field(24, ge=1, description="Tokens per model turn.")
    eval_problems: HeldOutProblems = 50
    eval_samples: int = Field(4, ge=1, description="Samples per held-out problem (pass@1 is their mean; greedy beside).")
    seed: int = Field(0, description="Seed of sampling and of the problem streams.")
    seeds: PerSeed


def main_real(cfg: ToolsRealConfig) -> dict[str, Any]:
    from rlvr.experiments.real import _model

    if cfg.seeds:
        return seeds.run_and_show(main_real, cfg, figures, f"{cfg.model} with a calculator,",
                                  {**{c: v for c, v in COLUMNS.items() if c != "vs no tool (paired)"},
                                   "vs before (paired)": True})
    console, root, t0 = Console(), Path(cfg.run_dir), time.time()
    run = grid.stage(root / "rl", rl.main, rl.RLConfig(
        model=_model(cfg.model), env=cfg.env, steps=cfg.rl_steps, prompts=cfg.prompts, group_size=cfg.group_size,
        lr=cfg.lr, lr_schedule="cosine", lr_by_signal=False, warmup=2, lora_r=cfg.lora_r,
        max_new_tokens=cfg.max_new_tokens, eval_problems=cfg.eval_problems, eval_samples=cfg.eval_samples,
        eval_every=cfg.rl_steps, eval_max_new_tokens=cfg.max_new_tokens, save_every=0, seed=cfg.seed), console)
    first = json.loads((run / "evals.jsonl").read_text().splitlines()[0])  # step 0: the model as it comes
    m0 = grid._first_env(first["metrics"])
    summary = json.loads((run / "summary.json").read_text())
    arm = {"before": {"pass@1": m0["pass@1"], "greedy": m0.get("greedy"),
                      "tool_call_rate": m0.get("episodes", {}).get("tool_call_rate")},
           "after": measured(run), "steps": summary["steps"], "flops": summary["total"]["flops"],
           "seconds": summary["total"]["wall_seconds"]}
    arm["vs before"] = grid.paired(arm["before"]["pass@1"], arm["after"]["pass@1"])
    _table({"RL with the tool": arm}, f"{Path(cfg.model).name} on {cfg.env}: held-out, {cfg.eval_problems} problems",
           console)
    console.print(f"paired change of pass@1: {grid.change_text(arm['vs before'])}")
    out = {"arms": {"RL with the tool": arm}, "model": cfg.model, "env": cfg.env, "seconds": time.time() - t0,
           "config": cfg.model_dump(mode="json")}
    write_json(root / "results.json", out)
    console.print(f"results: {root / 'results.json'}   ({out['seconds']:.0f} s)")
    return out
