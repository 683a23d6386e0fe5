"""`rlvr rl`: RL on verifiable rewards (the GRPO family), from a base or after a cold start.

One step (`RL.train_step`): take a batch of groups from the rollout queue (n completions
of each of `prompts` problems, scored by the environment's verifier); let a curriculum
see how the policy did; re-score a sample with the held-out verifier (`HackMonitor`,
ending the run at `--stop_on_hack`); turn rewards into advantages and minimise
`algos.LOSSES[loss]` over the batch for `epochs` x `mini_batches` optimizer steps
(rl_update.py); hand the new weights to the producer; charge the step's compute. Which
estimator and which loss are names in the config, never branches here. `max_staleness`
> 0 lets generation run ahead of training, in a thread or on `rollout_workers` Ray
actors (rlvr/train/rollouts/), with `offpolicy` correcting the lag. Around the steps,
`DeclineGuard` watches each evaluation and `DeadRun` the steps that cannot learn; the
loop itself (resume, evaluation, checkpoints, summary) is rlvr/train/trainer.py's.

    rlvr rl --model runs/demo/base --env arithmetic:digits=3,ops=add --steps 100
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import Field, ValidationError, field_validator, model_validator

from rlvr.algos import ADVANTAGES, AGGREGATIONS, LOSSES, REWARD_CORRECTIONS
from rlvr.algos.offpolicy import OFFPOLICY
from rlvr.config import InputError
from rlvr.engine import make_engine
from rlvr.envs import make_env
from rlvr.fields import EnvSpec, GradClip, KeepLast, Resume, SaveEvery, StartModel, WeightDecay
from rlvr.jsonl import read_jsonl
from rlvr.models import load_model
from rlvr.models.forward import parts_of
from rlvr.models.lora import adapter_base, is_lora
from rlvr.rollout import ending
from rlvr.run import Run, last_model
from rlvr.train.batch import TrainBatch, micro_batch_tokens, policy_logprobs
from rlvr.train.evaluator import TrainerFields, headline_pass_at_1
from rlvr.train.guard import DeadRun, DeclineGuard
from rlvr.train.monitor import HackMonitor, HackStop
from rlvr.train.rl_update import train_on
from rlvr.train.rollouts.producer import Batch, Producer
from rlvr.train.rollouts.queues import RolloutQueue, make_queue
from rlvr.train.schedule import Horizon
from rlvr.train.trainer import Trainer
from rlvr.types import Observer, Reporting, Rollout, Sample, Sampling, Stateful


class RLConfig(TrainerFields):
    run_dir: str = Field("runs/rl", description="Run directory (config, metrics, samples, checkpoints, eval).")
    model: StartModel
    env: EnvSpec
    steps: int = Field(100, ge=1, description="Training steps (one rollout batch each).")
    prompts: int = Field(64, ge=1, description="Problems per step.")
    group_size: int = Field(8, ge=1, description="Completions per problem (the group of GRPO).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of rollouts (the loss uses the same).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold of rollouts.")
    max_new_tokens: int = Field(32, ge=1, description="Completion token limit; a cut completion earns 0.")
    advantage: str = Field("dr_grpo", description="Advantage estimator: grpo | dr_grpo | rloo.")
    reward_correction: str = Field("none", description="Correction for a noisy verifier (rlvr.algos.noise): none | backward | forward; needs the rates. Warning: forward (no group baseline) was worst in every noisy cell of EXPERIMENTS.md's noise grid and collapsed to 0% at fn 0.2; backward never beat none by more than 0.1 point.")
    noise_fp: float = Field(0.0, ge=0, lt=1, description="The verifier's false-positive rate, for --reward_correction (see rlvr noise-audit).")
    noise_fn: float = Field(0.0, ge=0, lt=1, description="The verifier's false-negative rate, for --reward_correction.")
    noise_rates: str = Field("", description="A noise-audit JSON whose fp and fn estimates set --noise_fp and --noise_fn.")
    loss: str = Field("ppo_clip", description="Policy loss: ppo_clip | reinforce.")
    agg: str = Field("token_mean", description="Loss aggregation: token_mean | seq_mean_token_mean | seq_mean_token_sum_norm.")
    clip_low: float = Field(0.2, ge=0, description="PPO ratio clip below 1.")
    clip_high: float = Field(0.28, ge=0, description="PPO ratio clip above 1 (> clip_low is DAPO's clip-higher).")
    kl_coef: float = Field(0.0, ge=0, description="Weight of the k3 KL penalty to the frozen starting model (0: none).")
    lr: float = Field(5e-4, gt=0, description="AdamW peak learning rate. The defaults (5e-4, cosine, scaled by signal) hold a sharp cold-started model and climb fastest from a weak base (EXPERIMENTS.md, the coldstart ablation); a constant 2e-4 lost 1-2 points after a strong SFT.")
    warmup: int = Field(10, ge=0, description="Linear learning-rate warm-up steps (Adam's first steps move every weight by ~lr).")
    lr_schedule: Literal["constant", "cosine"] = Field("cosine", description="After warm-up: constant, or cosine to 10% over `steps` (under --budget_flops: over the steps the budget affords, estimated from the first step's cost).")
    lr_by_signal: bool = Field(True, description="Scale each step's learning rate by the share of groups whose rewards differ: Adam's normalisation moves every weight by ~lr however few groups carry a signal, which on a strong model (most groups all right) is mostly noise. Derived from the policy's own pass rate, step by step: ~0.6 from a 12% base, ~0.1-0.3 from a 98% one.")
    weight_decay: WeightDecay
    grad_clip: GradClip
    epochs: int = Field(1, ge=1, description="Passes over each batch.")
    mini_batches: int = Field(1, ge=1, description="Optimizer steps per pass: the batch's groups in this many near-equal parts (fewer only when there are fewer groups).")
    micro_batch: int = Field(128, ge=1, description="Completions per forward/backward at most (gradient accumulation; memory and speed only).")
    overlong_buffer: int = Field(0, ge=0, description="DAPO soft overlong punishment: reward falls linearly by up to 1 over the last N tokens before --max_new_tokens (0: off).")
    mask_truncated: bool = Field(False, description="DAPO overlong filtering: completions cut by --max_new_tokens add no gradient (they still count in their group's baseline).")
    drop_void_turns: bool = Field(False, description="SimpleTIR: episodes with a void turn (neither a tool call nor an answer) add no gradient (they still count in their group's baseline).")
    drop_uniform_groups: bool = Field(False, description="DAPO dynamic sampling: drop groups whose rewards are all equal and draw more.")
    max_staleness: int = Field(0, ge=0, description="Policy versions a rollout may lag (0: synchronous, on-policy).")
    exact_staleness: bool = Field(False, description="With --max_staleness k: generate batch i with the weights of version exactly i - k, in the trainer's thread (repeatable off-policy data of a known age, for studying its bias) instead of a producer thread running ahead.")
    rollout_workers: int = Field(0, ge=0, description="Generate on this many Ray actors, each with its own engine (0: in this process). Needs rlvr[ray].")
    worker_restarts: int = Field(4, ge=0, description="Times Ray restarts a rollout worker whose process died (its batch is regenerated); past that the run ends.")
    ray_address: str = Field("", description="Join this Ray cluster (e.g. ray://host:10001 or auto); empty: start a local one.")
    offpolicy: str = Field("none", description="Off-policy correction (rlvr.algos.offpolicy): none | tis | seq_tis | mask | decoupled | gspo | m2po. Warning: decoupled with one update a step (--mini_batches 1) has no trust region and collapsed to 0-6% at every lag of EXPERIMENTS.md's staleness grid; none was best or tied there.")
    offpolicy_cap: float = Field(2.0, gt=1, description="The correction's cap C: tis and seq_tis truncate importance weights at C; decoupled drops tokens whose weight exceeds C; mask keeps ratios in [1/C, C]; m2po drops the tokens of largest squared log-ratio until its mean is under (log C)^2; gspo does not read it (its clip is the loss's).")
    save_every: SaveEvery = 50
    keep_last: KeepLast
    log_samples: int = Field(2, ge=0, description="Rollouts per step written to samples.jsonl.")
    hack_monitor: int = Field(32, ge=0, description="Completions per step re-scored by the environment's held-out verifier, when it names one (lenient:, noisy:): hack/rate, hack/gap (0: off).")
    hack_penalty: float = Field(0.0, ge=0, description="Reward a completion the hack monitor catches -this instead of its training reward (0: none).")
    stop_on_hack: float = Field(0.0, ge=0, le=1, description="End the run when the monitor's hack rate reaches this; the final checkpoint is the last step below it (0: never). Set it above the base's own near-miss rate: 0.05 stopped the demo's base at step 1 (EXPERIMENTS.md, hacking); --hack_penalty is the defence that held.")
    guard_patience: int = Field(3, ge=1, description="Warn when held-out pass@1 falls at this many evaluations in a row while the training reward does not rise (needs --eval_every).")
    seed: int = Field(0, description="Seed of problem streams and sampling.")
    resume: Resume

    @field_validator("advantage", "loss", "agg", "reward_correction", "offpolicy")
    @classmethod
    def _registered(cls, value: str, info) -> str:
        registry = {"advantage": ADVANTAGES, "loss": LOSSES, "agg": AGGREGATIONS,
                    "reward_correction": REWARD_CORRECTIONS, "offpolicy": OFFPOLICY}[info.field_name]
        if value not in registry:
            raise ValueError(f"unknown {info.field_name} {value!r}; choose one of {sorted(registry)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "RLConfig":
        if self.exact_staleness and self.rollout_workers:
            raise ValueError("exact_staleness runs in the trainer's process; it cannot be combined with rollout_workers")
        if self.overlong_buffer > self.max_new_tokens:
            raise ValueError(f"overlong_buffer {self.overlong_buffer} is longer than max_new_tokens {self.max_new_tokens}")
        if self.reward_correction != "none" and self.noise_fp + self.noise_fn >= 1:
            raise ValueError(f"noise_fp + noise_fn = {self.noise_fp + self.noise_fn:g} >= 1: the verifier carries no "
                             "information and reward_correction is undefined")
        return self


class RL(Trainer):
    command = "rl"
    betas = (0.9, 0.99)
    throughput = "generated_tokens"
    reward_weight = 1.0  # of the groups' advantages (on-policy distillation sets its own)

    def prepare(self) -> None:
        if self.cfg.noise_rates:  # rlvr noise-audit's estimates
            self.cfg = with_noise_rates(self.cfg, Path(self.cfg.noise_rates))
        self.env = make_env(self.cfg.prompted(self.cfg.env))

    def setup(self, state: dict[str, Any]) -> None:
        cfg = self.cfg
        self.steps = cfg.steps
        self.reference = reference_logprobs(cfg, self.model, self.parts)
        self.max_tokens = self.par.whole(lambda: micro_batch_tokens(self.parts, cfg.activation_gb))
        self.horizon = Horizon(cfg.lr_schedule == "cosine", cfg.steps, cfg.budget_flops, state.get("horizon"))
        if state.get("env_state") is not None and isinstance(self.env, Stateful):
            self.env.load_state(state["env_state"])  # a curriculum continues at its level
        self.monitor = HackMonitor(self.env, cfg.hack_monitor, cfg.seed, cfg.hack_penalty, self.par)
        self.hack_stop = HackStop(cfg.stop_on_hack, self.monitor, self.start)
        self.guard, self.dead = DeclineGuard(cfg.guard_patience), DeadRun()
        if self.checkpoint is not None and (self.run.dir / "metrics.jsonl").exists():
            self.guard.replay(row for _, row in read_jsonl(self.run.dir / "metrics.jsonl"))
        self.rollouts = self.rollout_queue()

    def rollout_queue(self) -> RolloutQueue:
        """Where batches come from: the trainer's own weights (in its thread, or a producer
        thread ahead of it), or Ray actors loading the starting model or the checkpoint.
        Under torchrun each rank generates its share of the batch's groups (problems and
        sampling seeded by rank) with an engine of its own."""
        cfg, model, par = self.cfg, self.model, self.par
        sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                            seed=cfg.seed)
        if par.group and (cfg.rollout_workers or (par.sharded and cfg.max_staleness)):
            raise InputError("under torchrun each rank generates its own rollouts: --rollout_workers must be 0"
                             + (", and --max_staleness 0 under --parallel fsdp" if par.sharded else ""))
        if par.world > cfg.prompts:
            raise InputError(f"--prompts {cfg.prompts} is fewer than the {par.world} ranks: each needs a group")
        if cfg.rollout_workers:
            from rlvr.train.rollouts.ray_queue import RayQueue
            adapters = ({k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
                        if is_lora(model) else None)
            workers_load = self.checkpoint or last_model(cfg.model)
            if adapters is not None and self.checkpoint and (self.checkpoint / "adapter_config.json").exists():
                workers_load = adapter_base(self.checkpoint)  # the base; the adapters travel as weights
            return RayQueue(cfg, str(workers_load), sampling, start=self.start, env_state=_env_state(self.env),
                            adapters=adapters)
        # Synchronous: the engine generates from the trainer's own weights (one copy in memory).
        engine = par.gathering(make_engine(model, self.tok, cfg.engine, version=self.start, options=cfg.engine_options,
                                           role="trainer" if cfg.max_staleness == 0 else "snapshot"))
        producer = Producer(engine, self.env, cfg.prompts, cfg.group_size, sampling, cfg.seed, cfg.drop_uniform_groups,
                            shard=par.rank, shards=par.world)
        return make_queue(producer, cfg.max_staleness, start=self.start, version=self.start, exact=cfg.exact_staleness)

    def rate(self, step: int) -> float:
        return self.horizon.rate(step, self.cfg.lr, self.cfg.warmup)

    def train_step(self, step: int) -> dict[str, float] | None:
        t0 = time.perf_counter()
        flops_before = self.compute.total().flops
        batch = self.rollouts.get(step)
        waited = time.perf_counter() - t0
        if isinstance(self.env, Observer):  # a curriculum moves with the policy's pass rate
            self.env.observe(batch.generated)
        hack = self.monitor(batch.rollouts, step)
        stopped = self.hack_stop.check(hack, step, self.model)
        if stopped:
            self.warn(stopped)
            self.run.log(step + 1, self.over_ranks({**hack, **batch.stats, "stopped_on_hack": 1.0}))
            return None
        metrics = self.learn(batch.rollouts)
        metrics.update(hack)
        self.warn(self.monitor.warning(hack, step + 1))
        self.rollouts.push_weights(self.model.state_dict(), step + 1, _env_state(self.env))
        self.charge(batch, metrics)
        spent = self.compute.total().flops
        self.horizon.fit(step + 1, spent, spent - flops_before)  # under a budget: the steps it affords at this cost
        metrics.update({**batch.stats, **(self.env.stats() if isinstance(self.env, Reporting) else {}), "gen_time": batch.seconds,
                        "wait_time": waited, **staleness(batch.rollouts, step)})
        self.guard.reward(metrics.get("reward", 0.0))
        self.warn(self.dead.step(metrics))
        metrics.update(self.dead.metrics())
        if self.cfg.log_samples:
            self.run.log_samples(step + 1, _sample_rows(batch.rollouts, self.cfg.log_samples, self.tok))
        return metrics

    def learn(self, rollouts: list[Rollout]) -> dict[str, float]:
        """Advantages and the optimizer steps on a batch (rl_update.py); its metrics."""
        return train_on(rollouts, self.model, self.parts, self.reference, self.opt, self.cfg, self.tok.pad_token_id,
                        self.max_tokens, self.reward_weight, self.par)

    def charge(self, batch: Batch, metrics: dict[str, float]) -> None:
        """The step's compute: generation, training, and the forwards without a backward."""
        self.compute.generated(batch.stats.pop("prompt_tokens"), batch.stats["generated_tokens"])
        self.compute.trained(metrics["trained_tokens"])  # prompts once per micro-batch + completions, all epochs
        if self.reference is not None:
            self.compute.forward_only(metrics["trained_tokens"])
        self.compute.forward_only(metrics.pop("proximal_tokens", 0))  # decoupled PPO's proximal pass

    def evaluate(self, step: int, final: bool) -> dict[str, float]:
        metrics = super().evaluate(step, final)
        if self.evaluator.last is not None:
            warning = self.guard.evaluation(headline_pass_at_1(self.evaluator.last))
            metrics.update(self.guard.metrics())
            self.warn(warning and f"step {step}: {warning}")
        return metrics

    def progress(self, metrics: dict[str, float]) -> dict[str, float]:
        return {"reward": metrics["reward"], "len": metrics["response_len"], "ent": metrics.get("entropy", 0.0)}

    def close(self) -> None:
        self.rollouts.close()

    def end(self, step: int) -> int:
        step = self.hack_stop.restore(self.model, step)
        if self.hack_stop.reason:  # the final evaluation is of the weights kept, not of the last one that ran
            self.evaluator(step, self.compute, final=True)
        return step

    def state(self) -> dict[str, Any]:
        return {"horizon": self.horizon.total, "env_state": _env_state(self.env)}

    def summary(self) -> dict[str, Any]:
        return {"stopped": self.hack_stop.reason} if self.hack_stop.reason else {}


def main(cfg: RLConfig) -> Run:
    return RL(cfg).train()


def reference_logprobs(cfg: RLConfig, model, parts) -> Callable[[TrainBatch], torch.Tensor] | None:
    """The frozen starting policy's log-probs on a batch, for the KL term (None without
    one). Under LoRA it is the model with its adapters switched off, so no second copy;
    otherwise the starting model is loaded again, also after a resume."""
    if cfg.kl_coef == 0:
        return None
    if is_lora(model):
        def ref(batch: TrainBatch) -> torch.Tensor:
            with torch.no_grad(), model.disable_adapter():
                return policy_logprobs(parts, batch, cfg.temperature, with_entropy=False)[0]
        return ref
    p = next(model.parameters())
    ref_model, _ = load_model(last_model(cfg.model), device=p.device, dtype=p.dtype)
    ref_parts = parts_of(ref_model.eval().requires_grad_(False))

    def frozen(batch: TrainBatch) -> torch.Tensor:
        with torch.no_grad():
            return policy_logprobs(ref_parts, batch, cfg.temperature, with_entropy=False)[0]
    return frozen


def _env_state(env) -> Any:
    """What an environment that learns (a curriculum) must carry across a resume, or None."""
    return env.state() if isinstance(env, Stateful) else None


def staleness(rollouts: list[Rollout], version: int) -> dict[str, float]:
    """Policy versions each trained sample lags the weights it trains (0: on-policy)."""
    lags = [version - s.policy_version for r in rollouts for s in r.samples] or [0]
    return {"staleness": float(max(lags)), "staleness_mean": sum(lags) / len(lags)}


def _sample_rows(rollouts: list[Rollout], n: int, tok) -> list[dict[str, Any]]:
    return [{"problem": r.problem.id, "prompt_tokens": len(s.prompt_ids), "tokens": len(s.completion_ids),
             "completion": s.text, "reward": v.reward, "correct": v.correct,
             "parsed": v.parsed, "flags": sorted(v.flags), "advantage": a, "version": s.policy_version,
             "ended": ending(s), "trained_tokens": sum(s.mask()),
             **({"turns": s.turns, "counts": s.counts, "segments": segments(tok, s)} if s.source is not None else {}),
             **({"token_advantage_mean": sum(s.token_advantages) / max(len(s.token_advantages), 1)}
                if s.token_advantages is not None else {})}
            for r in rollouts[:n] for s, v, a in zip(r.samples, r.verdicts, r.advantages or [])]


def segments(tok, sample: Sample) -> list[list]:
    """A whole episode as runs of [text, trained]: trained 1 where the loss reads the tokens
    (the model's, unless masked), 0 where it does not (the environment's, masked ones)."""
    mask, out, start = sample.mask(), [], 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            out.append([tok.decode(sample.completion_ids[start:i]), mask[start]])
            start = i
    return out


def with_noise_rates(cfg: RLConfig, path: Path) -> RLConfig:
    """`cfg` with --noise_fp and --noise_fn from a `rlvr noise-audit --out` JSON, validated
    as if given on the command line."""
    if not path.is_file():
        raise InputError(f"--noise_rates {path}: no such file (`rlvr noise-audit --out FILE` writes one)")
    try:
        rates = json.loads(path.read_text())
        update = {"noise_fp": float(rates["fp"]["estimate"]), "noise_fn": float(rates["fn"]["estimate"])}
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a noise-audit JSON (it needs fp.estimate and fn.estimate): {e!r}") from None
    try:
        return RLConfig.model_validate({**cfg.model_dump(), **update})
    except ValidationError as e:
        raise InputError(f"{path}: {'; '.join(err['msg'] for err in e.errors())}") from None
