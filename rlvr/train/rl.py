"""`rlvr rl`: RL on verifiable rewards (the GRPO family), from a base or after a cold start.

One step: take a batch of groups from the rollout queue (n completions of each of
`prompts` problems, scored by the environment's verifier), turn rewards into
advantages (`algos.ADVANTAGES[advantage]`), and minimise `algos.LOSSES[loss]` over
the batch for `epochs` x `mini_batches` optimizer steps; then hand the new weights to
the producer. Which estimator and which loss are names in the config, never branches
here. `max_staleness` > 0 lets generation run ahead of training, in a thread or on
`rollout_workers` Ray actors (see queues.py), with `offpolicy` correcting the lag.

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
from rlvr.engine import TorchEngine
from rlvr.envs import make_env
from rlvr.models import count_parameters, load_model
from rlvr.models.forward import parts_of
from rlvr.models.lora import adapter_base, is_lora
from rlvr.train.batch import TrainBatch, micro_batch_tokens, policy_logprobs
from rlvr.train.setup import make_optimizer, memory_metrics, restore_optimizer, setup_model
from rlvr.compute import Compute, inherited_from
from rlvr.config import InputError
from rlvr.fields import EnvSpec, GradClip, KeepLast, Resume, SaveEvery, StartModel, WeightDecay
from rlvr.train.evaluator import Evaluator, TrainerFields, headline_pass_at_1
from rlvr.train.guard import DeadRun, DeclineGuard
from rlvr.train.monitor import HackMonitor, HackStop
from rlvr.jsonl import read_jsonl
from rlvr.train.rollouts.producer import Producer
from rlvr.train.rollouts.queues import make_queue
from rlvr.train.progress import StepBar
from rlvr.run import Run, last_model
from rlvr.train.rl_update import train_on
from rlvr.train.schedule import Horizon
from rlvr.types import Rollout, Sampling


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
    reward_correction: str = Field("none", description="Correction for a noisy verifier (rlvr.algos.noise): none | backward | forward; needs the rates.")
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
    drop_uniform_groups: bool = Field(False, description="DAPO dynamic sampling: drop groups whose rewards are all equal and draw more.")
    max_staleness: int = Field(0, ge=0, description="Policy versions a rollout may lag (0: synchronous, on-policy).")
    exact_staleness: bool = Field(False, description="With --max_staleness k: generate batch i with the weights of version exactly i - k, in the trainer's thread (repeatable off-policy data of a known age, for studying its bias) instead of a producer thread running ahead.")
    rollout_workers: int = Field(0, ge=0, description="Generate on this many Ray actors, each with its own engine (0: in this process). Needs rlvr[ray].")
    worker_restarts: int = Field(4, ge=0, description="Times Ray restarts a rollout worker whose process died (its batch is regenerated); past that the run ends.")
    ray_address: str = Field("", description="Join this Ray cluster (e.g. ray://host:10001 or auto); empty: start a local one.")
    offpolicy: str = Field("none", description="Off-policy correction (rlvr.algos.offpolicy): none | tis | seq_tis | mask | decoupled.")
    offpolicy_cap: float = Field(2.0, gt=1, description="The correction's cap C: tis and seq_tis truncate importance weights at C; decoupled drops tokens whose weight exceeds C; mask keeps ratios in [1/C, C].")
    save_every: SaveEvery = 50
    keep_last: KeepLast
    log_samples: int = Field(2, ge=0, description="Rollouts per step written to samples.jsonl.")
    hack_monitor: int = Field(32, ge=0, description="Completions per step re-scored by the environment's held-out verifier, when it names one (lenient:, noisy:): hack/rate, hack/gap (0: off).")
    hack_penalty: float = Field(0.0, ge=0, description="Reward a completion the hack monitor catches -this instead of its training reward (0: none).")
    stop_on_hack: float = Field(0.0, ge=0, le=1, description="End the run when the monitor's hack rate reaches this; the final checkpoint is the last step below it (0: never).")
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
    return env.state() if hasattr(env, "state") else None


def staleness(rollouts: list[Rollout], version: int) -> dict[str, float]:
    """Policy versions each trained sample lags the weights it trains (0: on-policy)."""
    lags = [version - s.policy_version for r in rollouts for s in r.samples] or [0]
    return {"staleness": float(max(lags)), "staleness_mean": sum(lags) / len(lags)}


def _sample_rows(rollouts: list[Rollout], n: int) -> list[dict[str, Any]]:
    return [{"problem": r.problem.id, "prompt_tokens": len(s.prompt_ids), "tokens": len(s.completion_ids),
             "completion": s.text, "reward": v.reward, "correct": v.correct,
             "parsed": v.parsed, "flags": sorted(v.flags), "advantage": a, "version": s.policy_version,
             **({"token_advantage_mean": sum(s.token_advantages) / max(len(s.token_advantages), 1)}
                if s.token_advantages is not None else {})}
            for r in rollouts[:n] for s, v, a in zip(r.samples, r.verdicts, r.advantages or [])]


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


def main(cfg: RLConfig) -> Run:
    if cfg.noise_rates:  # rlvr noise-audit's estimates
        cfg = with_noise_rates(cfg, Path(cfg.noise_rates))
    env = make_env(cfg.prompted(cfg.env))  # a bad spec fails before the run directory is touched
    run = Run(cfg.run_dir, cfg, resume=cfg.resume, tensorboard=cfg.tensorboard)
    resumed = run.resume_state() if cfg.resume else None
    start = resumed[1]["step"] if resumed else 0
    model, tok, parts = setup_model(cfg, last_model(cfg.model), resumed[0] if resumed else None)
    compute = Compute(count_parameters(model), "rl", inherited_from(cfg.model),
                      count_parameters(model, trainable=True))
    reference = reference_logprobs(cfg, model, parts)
    max_tokens = micro_batch_tokens(parts, cfg.activation_gb)
    opt = make_optimizer(model, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    if resumed:
        restore_optimizer(opt, resumed[1], str(resumed[0].parent))
        compute.load_state(resumed[1].get("compute"))
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    if resumed and resumed[1].get("env_state") is not None and hasattr(env, "load_state"):
        env.load_state(resumed[1]["env_state"])  # a curriculum continues at its level
    if cfg.rollout_workers:
        from rlvr.train.rollouts.ray_queue import RayQueue
        adapters = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad} if is_lora(model) else None
        workers_load = resumed[0] if resumed else last_model(cfg.model)
        if adapters is not None and resumed and (resumed[0] / "adapter_config.json").exists():
            workers_load = adapter_base(resumed[0])  # the base; the adapters travel as weights
        rollouts_q = RayQueue(cfg, str(workers_load), sampling, start=start, env_state=_env_state(env),
                              adapters=adapters)
    else:
        # Synchronous: the engine generates from the trainer's own weights (one copy in memory).
        engine = TorchEngine(model, tok, version=start, share=cfg.max_staleness == 0)
        producer = Producer(engine, env, cfg.prompts, cfg.group_size, sampling, cfg.seed, cfg.drop_uniform_groups)
        rollouts_q = make_queue(producer, cfg.max_staleness, start=start, version=start, exact=cfg.exact_staleness)
    evaluator = Evaluator(cfg, run, cfg.env, model, tok, cfg.max_new_tokens, cfg.seed)
    guard = DeclineGuard(cfg.guard_patience)
    monitor = HackMonitor(env, cfg.hack_monitor, cfg.seed, cfg.hack_penalty)
    hack_stop = HackStop(cfg.stop_on_hack, monitor, start)
    dead = DeadRun()
    if resumed and (run.dir / "metrics.jsonl").exists():
        guard.replay(row for _, row in read_jsonl(run.dir / "metrics.jsonl"))
    step = start
    if start == 0 and cfg.eval_every:  # where the accuracy-against-compute curve starts
        run.log(0, {**evaluator(0, compute), **compute.metrics()})
        guard.evaluation(headline_pass_at_1(evaluator.last))
    horizon = Horizon(cfg.lr_schedule == "cosine", cfg.steps, cfg.budget_flops,
                      resumed[1].get("horizon") if resumed else None)
    state = lambda: {"optimizer": opt.state_dict(), "compute": compute.state(), "horizon": horizon.total,  # noqa: E731
                     "env_state": _env_state(env)}
    try:
        with StepBar("rl", cfg.steps, start) as bar:
            done = step >= cfg.steps or compute.spent(cfg.budget_flops)
            while not done:
                t0 = time.perf_counter()
                flops_before = compute.total().flops
                for g in opt.param_groups:
                    g["lr"] = horizon.rate(step, cfg.lr, cfg.warmup)
                batch = rollouts_q.get(step)
                t_wait = time.perf_counter() - t0
                if hasattr(env, "observe"):  # a curriculum moves with the policy's pass rate
                    env.observe(batch.generated)
                hack = monitor(batch.rollouts, step)
                stopped = hack_stop.check(hack, step, model)
                if stopped:
                    bar.warn(stopped)
                    run.log(step + 1, {**hack, **batch.stats, "stopped_on_hack": 1.0})
                    break
                metrics = train_on(batch.rollouts, model, parts, reference, opt, cfg, tok.pad_token_id, max_tokens)
                metrics.update(hack)
                hack_warning = monitor.warning(hack, step + 1)
                if hack_warning:
                    bar.warn(hack_warning)
                rollouts_q.push_weights(model.state_dict(), step + 1, _env_state(env))
                step += 1
                compute.generated(batch.stats.pop("prompt_tokens"), batch.stats["generated_tokens"])
                compute.trained(metrics["trained_tokens"])  # prompts once per micro-batch + completions, all epochs
                if reference is not None:
                    compute.forward_only(metrics["trained_tokens"])
                compute.forward_only(metrics.pop("proximal_tokens", 0))  # decoupled PPO's proximal pass
                spent = compute.total().flops
                horizon.fit(step, spent, spent - flops_before)  # under a budget: the steps it affords at this cost
                dt = time.perf_counter() - t0
                metrics.update(batch.stats)
                metrics.update(getattr(env, "stats", dict)())
                metrics.update({
                    "step_time": dt, "gen_time": batch.seconds, "wait_time": t_wait,
                    "tokens_per_s": batch.stats["generated_tokens"] / dt,
                    **staleness(batch.rollouts, step - 1), "lr": opt.param_groups[0]["lr"], **compute.metrics(),
                    **memory_metrics(parts.embed.weight.device)})
                done = step >= cfg.steps or compute.spent(cfg.budget_flops)
                guard.reward(metrics.get("reward", 0.0))
                if done or evaluator.due(step):
                    metrics.update(evaluator(step, compute, final=done))
                    if evaluator.last is not None:
                        warning = guard.evaluation(headline_pass_at_1(evaluator.last))
                        metrics.update(guard.metrics())
                        if warning:
                            bar.warn(f"step {step}: {warning}")
                dead_warning = dead.step(metrics)
                metrics.update(dead.metrics())
                if dead_warning:
                    bar.warn(dead_warning)
                run.log(step, metrics)
                if cfg.log_samples:
                    run.log_samples(step, _sample_rows(batch.rollouts, cfg.log_samples))
                bar.update(step, reward=metrics["reward"], len=metrics["response_len"],
                           ent=metrics.get("entropy", 0.0))
                if cfg.save_every and step % cfg.save_every == 0 and not done:
                    run.save(step, model, tok, state(), cfg.keep_last)
    finally:
        rollouts_q.close()
    step = hack_stop.restore(model, step)
    if hack_stop.reason:  # the final evaluation is of the weights kept, not of the last one that ran
        evaluator(step, compute, final=True)
    run.save(step, model, tok, state(), cfg.keep_last)
    run.finish({"command": "rl", "steps": step, **compute.summary(), "final": evaluator.last,
                **({"stopped": hack_stop.reason} if hack_stop.reason else {})})
    return run
