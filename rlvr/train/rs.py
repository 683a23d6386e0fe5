"""`rlvr rs`: best-of-N rejection sampling and expert iteration, self-improvement without a teacher.

One round: sample `n` completions for each of `problems` fresh train-split problems
from the current model, verify them, keep what the filter keeps (`--keep`, see
rlvr/verify/filters.py), fine-tune on the kept solutions with the SFT trainer (a
sub-run in RUN/round_R/sft), evaluate. Repeat for `rounds` rounds or until the FLOP
budget is spent (checked between rounds). The published variants are settings of
this one loop:

    expert iteration / RFT   --keep correct                    fine-tune the current model
    RAFT (Dong et al. 2023)  --keep best_of_k                  one best sample per problem
    ReST-EM (Singh et al.)   --keep correct --restart true     fine-tune the *starting* model each round
    STaR-like accumulation   --accumulate true                 train on every round's solutions so far

Each round's data is a JSONL of chat conversations (the format `rlvr distill` writes),
so what the model taught itself can be read, and each row also carries the token ids
the engine sampled (`input_ids`: prompt + completion as sampled, with the EOS that
ended it; `loss_mask`: 1 on the completion). SFT trains on those ids, not on the text: decoding
and re-tokenizing a completion need not give back the sampled ids (a BPE tokenizer
merges what the model wrote one piece at a time). Compute: the sampling (prompt +
completion tokens) and every SFT sub-run's training are charged to this run; see
rlvr/compute.py.

With `--lora_r`, each round's SFT trains an adapter; it is merged into the model rs
samples from (one copy of the weights: the engine and the evaluator share it) and saves.

Under torchrun (docs/distributed.md) each rank samples a contiguous share of the round's
problems (the problems one process would draw), with a sampling seed of its own; the
ranks' rollouts are gathered, so the round's data, its round.json and its metrics are
one process's on the same problems (up to sampling), written once by rank 0. The
round's SFT sub-run then trains data-parallel on every rank (`--parallel ddp|fsdp`: fsdp
shards the sub-run's model; rs's own, which only samples and evaluates, stays whole).

    rlvr rs --model runs/base --env arithmetic:digits=3,ops=add --rounds 3 --n 8
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from rlvr.atomic import write_json, write_text
from rlvr.compute import Totals, inherited_from
from rlvr.engine import make_engine
from rlvr.envs import make_env
from rlvr.fields import EnvSpec, StartModel
from rlvr.jsonl import read_jsonl
from rlvr.models import load_model
from rlvr.rollout import generate_rollouts, rollout_stats, token_counts
from rlvr.run import Run, last_model
from rlvr.train import sft
from rlvr.train.evaluator import TrainerFields
from rlvr.train.parallel import SINGLE, Parallel
from rlvr.train.setup import ModelFields, resolve_device, resolve_dtype
from rlvr.train.trainer import Trainer, headlines
from rlvr.types import Sampling
from rlvr.verify.filters import FILTERS, keep


class RSConfig(TrainerFields):
    run_dir: str = Field("runs/rs", description="Run directory (config, metrics, per-round data and SFT sub-runs, checkpoints).")
    model: StartModel
    env: EnvSpec
    rounds: int = Field(3, ge=1, description="Rounds of sample -> filter -> fine-tune.")
    problems: int = Field(256, ge=1, description="Fresh train-split problems sampled per round.")
    n: int = Field(8, ge=1, description="Samples per problem (the N of best-of-N).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(32, ge=1, description="Completion token limit (a cut completion is never kept).")
    keep: Literal[tuple(FILTERS)] = Field("correct", description="Which samples to keep: correct | one_per_problem | shortest | best_of_k | none.")
    restart: bool = Field(False, description="Fine-tune the starting model every round (ReST-EM) instead of the current one.")
    accumulate: bool = Field(False, description="Train each round on the kept solutions of all rounds so far.")
    sft_epochs: int = Field(2, ge=1, description="SFT passes over a round's data.")
    sft_batch_size: int = Field(64, ge=1, description="SFT rows per step.")
    sft_lr: float = Field(5e-4, gt=0, description="SFT peak learning rate.")
    sft_warmup: int = Field(5, ge=0, description="SFT warm-up steps.")
    sft_max_length: int = Field(512, ge=2, description="SFT token limit of a conversation.")
    eval_every: int = Field(1, ge=0, description="Evaluate every N rounds (and always after the last; 0: only after the last).")
    seed: int = Field(0, description="Seed of problem streams, sampling and SFT data order.")
    resume: bool = Field(False, description="Continue the run in run_dir from its last finished round.")


def sample_round(engine, env, cfg: RSConfig, rnd: int, out: Path, par: Parallel = SINGLE) -> dict[str, Any]:
    """Sample, verify and filter one round's problems; write out/data.jsonl (rank 0); the
    round's stats back (every rank's rollouts, on every rank)."""
    stream = env.problems("train", seed=cfg.seed * 1_000_003 + rnd)
    problems = [next(stream) for _ in range(cfg.problems)]
    mine = problems[len(problems) * par.rank // par.world:len(problems) * (par.rank + 1) // par.world]
    key = f"rs/{cfg.seed}/{rnd}" if par.world == 1 else f"rs/{cfg.seed}/{rnd}/{par.rank}"
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                        seed=random.Random(key).getrandbits(31))
    rollouts = generate_rollouts(engine, env, mine, cfg.n, sampling) if mine else []
    rollouts = [r for part in par.gather(rollouts) for r in part]  # in problem order: rank 0's share first
    rows = []
    for r in rollouts:
        kept = keep([(s.text, v) for s, v in zip(r.samples, r.verdicts)], cfg.keep)
        sampled = {s.text: s for s in r.samples}  # the filter keeps one sample a distinct text
        for text, v in kept:
            s = sampled[text]
            rows.append({"messages": r.problem.messages() + [{"role": "assistant", "content": text}],
                         "input_ids": s.prompt_ids + s.completion_ids,
                         "loss_mask": [0] * len(s.prompt_ids) + s.mask(),  # the model's own tokens
                         "problem_id": r.problem.id, "env": r.problem.env,
                         "provenance": {"round": rnd, "policy_version": engine.version, "n": cfg.n,
                                        "temperature": cfg.temperature, "keep": cfg.keep},
                         "verdict": {"reward": v.reward, "correct": v.correct, "parsed": v.parsed,
                                     "flags": sorted(v.flags)}})
    stats = {**rollout_stats(rollouts), "kept": len(rows),
             "problems_kept": len({row["problem_id"] for row in rows}) / len(problems), **token_counts(rollouts)}
    if par.main:
        write_text(out / "data.jsonl", "".join(json.dumps(row, default=str) + "\n" for row in rows))
        write_json(out / "round.json", stats)  # written last: a round with round.json has its data
    par.barrier()  # every rank reads the data next
    return stats


def _training_data(run: Run, cfg: RSConfig, rnd: int) -> Path:
    """This round's data, or (accumulate) every round's so far in one file (written by
    rank 0; the SFT sub-run's start waits for every rank before it reads it)."""
    latest = run.dir / f"round_{rnd}" / "data.jsonl"
    if not cfg.accumulate or rnd == 1:
        return latest
    path = run.dir / f"round_{rnd}" / "accumulated.jsonl"
    if run.writes:
        write_text(path, "".join((run.dir / f"round_{i}" / "data.jsonl").read_text() for i in range(1, rnd + 1)))
    return path


class RS(Trainer):
    """A step is a round; each round's fine-tuning is an SFT sub-run, with an optimizer of its own."""
    command = "rs"
    throughput = None
    shards = False  # the model samples and evaluates; each round's SFT sub-run shards its own under fsdp

    def prepare(self) -> None:
        self.env = make_env(self.cfg.prompted(self.cfg.env))

    def build(self, checkpoint: Path | None) -> tuple[torch.nn.Module, Any, None]:
        device = resolve_device(self.cfg.device)
        model, tok = load_model(checkpoint or last_model(self.cfg.model), device, resolve_dtype(self.cfg.dtype, device))
        return model, tok, None

    def setup(self, state: dict) -> None:
        self.steps = self.cfg.rounds
        self.save_every = 1  # every round: a round is costly, and a resume continues from the last one
        # Sampling shares the model's weights, which each round's fine-tuning loads into.
        self.engine = make_engine(self.model, self.tok, self.cfg.engine, role="trainer", version=self.start,
                                  options=self.cfg.engine_options)

    def optimizer(self) -> None:
        return None

    def evaluates_first(self) -> bool:
        return self.evaluator.enabled

    def train_step(self, step: int) -> dict[str, Any]:
        rnd = step + 1
        out = self.run.dir / f"round_{rnd}"
        # 1. Sample and filter (a killed round keeps its data and is not sampled again).
        if (out / "round.json").exists():
            stats = json.loads((out / "round.json").read_text())
        else:
            self.engine.sync_weights(self.model.state_dict(), rnd - 1)
            stats = sample_round(self.engine, self.env, self.cfg, rnd, out, self.par)
        # The round's figures are every rank's, on every rank: rank 0 charges them, the meter sums over ranks.
        charged = stats if self.par.main else {"prompt_tokens": 0, "generated_tokens": 0}
        self.compute.generated(charged["prompt_tokens"], charged["generated_tokens"])
        # 2. Fine-tune with the SFT trainer on what was kept.
        if stats["kept"] and not self.compute.spent(self.cfg.budget_flops):
            return {**stats, **self.fine_tune(rnd, out)}
        return {**stats}

    def fine_tune(self, rnd: int, out: Path) -> dict[str, Any]:
        cfg = self.cfg
        tune = last_model(cfg.model) if cfg.restart or rnd == 1 else self.run.dir / "checkpoints" / "last"
        data = _training_data(self.run, cfg, rnd)
        # Under a budget the fine-tuning stops at what is left of it, not at the round's
        # end: a round of best-of-N is a fifth of a small budget, and finishing it would
        # buy this regime more compute than the ones it is compared with.
        budget = (cfg.budget_flops - self.compute.total().flops + inherited_from(str(tune), str(data)).flops
                  if cfg.budget_flops else 0.0)
        sub = sft.main(sft.SFTConfig(
            run_dir=str(out / "sft"), model=str(tune),
            data=str(data), epochs=cfg.sft_epochs, batch_size=cfg.sft_batch_size,
            lr=cfg.sft_lr, warmup=cfg.sft_warmup, max_length=cfg.sft_max_length, budget_flops=budget,
            eval_problems=0, seed=cfg.seed + rnd, resume=(out / "sft" / "metrics.jsonl").exists(),
            parallel=cfg.parallel, dist_timeout=cfg.dist_timeout,  # under torchrun: on every rank
            **cfg.model_dump(include=set(ModelFields.model_fields))))  # device, dtype, LoRA
        self.par.barrier()  # rank 0 has written the sub-run's summary
        summary = json.loads((sub.dir / "summary.json").read_text())
        self.compute.add(Totals.from_dict({**summary["compute"], "wall_seconds": 0}))  # our clock ran meanwhile
        trained, _ = load_model(last_model(sub.dir))
        self.model.load_state_dict(trained.state_dict())
        last = list(read_jsonl(sub.dir / "metrics.jsonl"))[-1][1]
        return {"sft_loss": last["loss"], "sft_steps": summary["steps"]}

    def over_ranks(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return metrics  # a round's figures are already every rank's (gathered), the same on each

    def progress(self, metrics: dict[str, Any]) -> dict[str, float]:
        return {"pass_rate": metrics.get("pass_rate", 0.0), "kept": metrics["kept"], **headlines(metrics)}

    def summary(self) -> dict[str, Any]:
        return {"rounds": self.step}


def main(cfg: RSConfig) -> Run:
    return RS(cfg).train()
