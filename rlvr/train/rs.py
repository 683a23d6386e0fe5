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

    rlvr rs --model runs/base --env arithmetic:digits=3,ops=add --rounds 3 --n 8
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rlvr.fields import EnvSpec, StartModel
from rlvr.atomic import write_json, write_text
from rlvr.compute import Compute, Totals, inherited_from
from rlvr.engine import TorchEngine
from rlvr.jsonl import read_jsonl
from rlvr.envs import make_env
from rlvr.models import count_parameters, load_model
from rlvr.rollout import generate_rollouts, rollout_stats, token_counts
from rlvr.train import sft
from rlvr.train.evaluator import Evaluator, TrainerFields
from rlvr.train.progress import StepBar
from rlvr.train.setup import ModelFields, resolve_device, resolve_dtype
from rlvr.run import Run, last_model
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


def sample_round(engine, env, cfg: RSConfig, rnd: int, out: Path) -> dict[str, Any]:
    """Sample, verify and filter one round's problems; write out/data.jsonl; stats back."""
    stream = env.problems("train", seed=cfg.seed * 1_000_003 + rnd)
    problems = [next(stream) for _ in range(cfg.problems)]
    seed = random.Random(f"rs/{cfg.seed}/{rnd}").getrandbits(31)
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=seed)
    rollouts = generate_rollouts(engine, env, problems, cfg.n, sampling)
    rows = []
    for r in rollouts:
        kept = keep([(s.text, v) for s, v in zip(r.samples, r.verdicts)], cfg.keep)
        sampled = {s.text: s for s in r.samples}  # the filter keeps one sample a distinct text
        for text, v in kept:
            s = sampled[text]
            rows.append({"messages": r.problem.messages() + [{"role": "assistant", "content": text}],
                         "input_ids": s.prompt_ids + s.completion_ids,
                         "loss_mask": [0] * len(s.prompt_ids) + [1] * len(s.completion_ids),
                         "problem_id": r.problem.id, "env": r.problem.env,
                         "provenance": {"round": rnd, "policy_version": engine.version, "n": cfg.n,
                                        "temperature": cfg.temperature, "keep": cfg.keep},
                         "verdict": {"reward": v.reward, "correct": v.correct, "parsed": v.parsed,
                                     "flags": sorted(v.flags)}})
    write_text(out / "data.jsonl", "".join(json.dumps(row, default=str) + "\n" for row in rows))
    stats = {**rollout_stats(rollouts), "kept": len(rows),
             "problems_kept": len({row["problem_id"] for row in rows}) / len(problems), **token_counts(rollouts)}
    write_json(out / "round.json", stats)  # written last: a round with round.json has its data
    return stats


def _training_data(run: Run, cfg: RSConfig, rnd: int) -> Path:
    """This round's data, or (accumulate) every round's so far in one file."""
    latest = run.dir / f"round_{rnd}" / "data.jsonl"
    if not cfg.accumulate or rnd == 1:
        return latest
    path = run.dir / f"round_{rnd}" / "accumulated.jsonl"
    write_text(path, "".join((run.dir / f"round_{i}" / "data.jsonl").read_text() for i in range(1, rnd + 1)))
    return path


def main(cfg: RSConfig) -> Run:
    env = make_env(cfg.prompted(cfg.env))  # a bad spec fails before the run directory is touched
    run = Run(cfg.run_dir, cfg, resume=cfg.resume, tensorboard=cfg.tensorboard)
    resumed = run.resume_state() if cfg.resume else None
    done_rounds = resumed[1]["step"] if resumed else 0
    start_model = last_model(cfg.model)
    device = resolve_device(cfg.device)
    model, tok = load_model(resumed[0] if resumed else start_model, device, resolve_dtype(cfg.dtype, device))
    compute = Compute(count_parameters(model), "rs", inherited_from(cfg.model))
    if resumed:
        compute.load_state(resumed[1].get("compute"))
    engine = TorchEngine(model, tok, version=done_rounds, share=True)  # the SFT rounds load into `model`
    evaluator = Evaluator(cfg, run, cfg.env, model, tok, cfg.max_new_tokens, cfg.seed)
    if done_rounds == 0 and evaluator.enabled:  # where the accuracy-against-compute curve starts
        run.log(0, {**evaluator(0, compute), **compute.metrics()})

    rnd = done_rounds
    with StepBar("rs", cfg.rounds, done_rounds) as bar:
        while rnd < cfg.rounds and not compute.spent(cfg.budget_flops):
            rnd += 1
            out = run.dir / f"round_{rnd}"
            out.mkdir(exist_ok=True)
            # 1. Sample and filter (a killed round keeps its data and is not sampled again).
            if (out / "round.json").exists():
                stats = json.loads((out / "round.json").read_text())
            else:
                engine.sync_weights(model.state_dict(), rnd - 1)
                stats = sample_round(engine, env, cfg, rnd, out)
            compute.generated(stats["prompt_tokens"], stats["generated_tokens"])
            # 2. Fine-tune with the SFT trainer on what was kept.
            metrics = {**stats}
            if stats["kept"] and not compute.spent(cfg.budget_flops):
                tune = start_model if cfg.restart or rnd == 1 else run.dir / "checkpoints" / "last"
                data = _training_data(run, cfg, rnd)
                # Under a budget the fine-tuning stops at what is left of it, not at the round's
                # end: a round of best-of-N is a fifth of a small budget, and finishing it would
                # buy this regime more compute than the ones it is compared with.
                budget = (cfg.budget_flops - compute.total().flops + inherited_from(str(tune), str(data)).flops
                          if cfg.budget_flops else 0.0)
                sub = sft.main(sft.SFTConfig(
                    run_dir=str(out / "sft"), model=str(tune),
                    data=str(data), epochs=cfg.sft_epochs, batch_size=cfg.sft_batch_size,
                    lr=cfg.sft_lr, warmup=cfg.sft_warmup, max_length=cfg.sft_max_length, budget_flops=budget,
                    eval_problems=0, seed=cfg.seed + rnd, resume=(out / "sft" / "metrics.jsonl").exists(),
                    **cfg.model_dump(include=set(ModelFields.model_fields))))  # device, dtype, LoRA
                summary = json.loads((sub.dir / "summary.json").read_text())
                compute.add(Totals.from_dict({**summary["compute"], "wall_seconds": 0}))  # our clock ran meanwhile
                trained, _ = load_model(last_model(sub.dir))
                model.load_state_dict(trained.state_dict())
                last = list(read_jsonl(sub.dir / "metrics.jsonl"))[-1][1]
                metrics.update({"sft_loss": last["loss"], "sft_steps": summary["steps"]})
            # 3. Evaluate, log, checkpoint the round.
            final = rnd == cfg.rounds or compute.spent(cfg.budget_flops)
            if final or evaluator.due(rnd):
                metrics.update(evaluator(rnd, compute, final=final))
            run.log(rnd, {**metrics, **compute.metrics()})
            run.save(rnd, model, tok, {"compute": compute.state()})
            bar.update(rnd, pass_rate=stats.get("pass_rate", 0.0), kept=stats["kept"],
                       **{k: v for k, v in metrics.items() if k.count("/") == 1 and k.startswith("eval/")})
    run.finish({"command": "rs", "steps": rnd, "rounds": rnd, **compute.summary(), "final": evaluator.last})
    return run
