"""The loop every trainer runs, written once: resume, set up, count compute, optimise,
evaluate, checkpoint, finish. `rlvr pretrain`, `sft`, `rs` and `rl` are each a `Trainer`
that states only what its regime does differently, by overriding the methods below.

    class SFT(Trainer):
        command = "sft"
        def setup(self, state): ...       # its own parts: the data, the schedule
        def train_step(self, step): ...   # one step; its metrics
    run = SFT(cfg).train()

A run, in order (each name a method a regime may override):

    prepare()              inputs that must fail before the run directory is touched
    Run, --resume          the newest checkpoint: its weights (`checkpoint`), trainer state, step
    build(checkpoint)      model, tokenizer, Parts: `setup_model` on --model, or the checkpoint
    Compute                the meter, charged what the run starts from (`inherited()`)
    setup(state)           the regime's own parts; `state` is the checkpoint's trainer state
    optimizer()            AdamW (`betas`); then the optimizer and the meter are restored
    make_evaluator()       held-out evaluation; before the first step when `evaluates_first()`
    (under torchrun)       `self.par` (rlvr/train/parallel.py): each rank trains its share of
                           a step and `update` sums the gradients; metrics are reduced over
                           ranks (`over_ranks`), rank 0 writes; --parallel fsdp shards the model
                           after build() (where `shards`: rs's own model only samples)
                           (`begin()`: all of the above; a fresh start that fails in it
                           removes what it wrote, so a bad --model leaves no run behind)
    each step              rate(step) -> train_step(step) -> over_ranks -> the row: lr, step_time,
                           tokens_per_s (of `throughput`), compute/..., peak memory ->
                           evaluate() when due() (every --eval_every, and at the end) ->
                           metrics.jsonl -> a checkpoint every `save_every` steps
                           ... until finished(step), or train_step returns None (a stop)
    close(), end(step)     after the last step: what the regime must stop or put back
    the last checkpoint    (state(): what the regime adds to the optimizer and the meter)
    summary.json           (summary(): what the regime adds to the compute and the final evaluation)

A step's metrics are those `train_step` returns plus the ones above; a regime charges
its own compute in `train_step`, since what a step costs is the regime's business.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from rlvr.compute import Compute, Totals, inherited_from
from rlvr.models import count_parameters
from rlvr.run import Run, last_model
from rlvr.train.evaluator import Evaluator
from rlvr.train.parallel import SINGLE, start
from rlvr.train.progress import StepBar
from rlvr.train.setup import make_optimizer, memory_metrics, resolve_device, setup_model


class Trainer:
    command = ""  # the CLI command: summary.json's "command", the meter's stage, the progress bar's label
    betas = (0.9, 0.95)  # AdamW's
    throughput: str | None = "trained_tokens"  # the count tokens_per_s divides by a step's time
    shards = True  # whether --parallel fsdp shards the model this trainer builds

    def __init__(self, cfg):
        self.cfg = cfg
        self.steps = 0  # the most steps the run takes: the regime sets it in setup()
        self.expected: int | None = None  # the progress bar's length when the run expects to stop sooner
        self.save_every: int = getattr(cfg, "save_every", 0)  # --save_every, where the command has it
        self.keep_last: int = getattr(cfg, "keep_last", 2)
        self.par = SINGLE  # the process group under torchrun (train() joins it)

    # -- the loop ------------------------------------------------------------------------
    def train(self) -> Run:
        self.prepare()
        cfg = self.cfg  # as prepare() may have completed it
        cuda = resolve_device(getattr(cfg, "device", "cpu")).type == "cuda"
        self.par = par = start(getattr(cfg, "parallel", "ddp"), getattr(cfg, "dist_timeout", 1800.0), cuda)
        self.run = run = Run(cfg.run_dir, cfg, resume=cfg.resume, par=par)
        try:
            resumed = self.begin()
        except BaseException:
            if not cfg.resume:  # a start that failed (a bad model, device, dataset) leaves nothing behind
                run.discard()
            raise
        try:
            with StepBar(self.command, self.expected or self.steps, self.start, show=par.main) as self.bar:
                if self.start == 0 and self.evaluates_first():  # where the accuracy-against-compute curve starts
                    run.log(0, {**self.evaluate(0, final=False), **self.compute.metrics()})
                while not self.done and self._one_step():
                    pass
        finally:
            self.close()
        self.step = self.end(self.step)
        if self.step > self.start or resumed is None:  # else the checkpoint resumed from holds it already
            self.save()
        run.finish({"command": self.command, "steps": self.step, **self.summary(), **self.compute.summary(),
                    **({"final": self.evaluator.last} if self.evaluator is not None else {})})
        return run

    def begin(self) -> tuple[Path, dict[str, Any]] | None:
        """Everything before the first step: the checkpoint resumed from (None: a fresh
        start), the model, the meter, the regime's parts, the optimizer, the evaluator."""
        par = self.par
        resumed = self.run.resume_state() if self.cfg.resume else None
        self.checkpoint, state = resumed or (None, {})
        self.start = self.step = state.get("step", 0)
        self.model, self.tok, self.parts = self.build(self.checkpoint)
        if self.shards:
            self.model = par.wrap(self.model)
        self.device = next(self.model.parameters()).device
        self.compute = Compute(count_parameters(self.model), self.command, self.inherited(),
                               count_parameters(self.model, trainable=True), reduce=par.sum)
        self.setup(state)
        try:
            par.reshard()  # the optimizer holds the shards (fsdp), not what setup() gathered
            self.opt = self.optimizer()
            if resumed:
                if self.opt is not None:
                    par.restore_optimizer(self.model, self.opt, state, str(self.checkpoint.parent))
                self.compute.load_state(state.get("compute"))
            self.evaluator = self.make_evaluator()
            self.done = self.finished(self.start)
        except BaseException:
            self.close()
            raise
        return resumed

    def _one_step(self) -> bool:
        t0 = time.perf_counter()
        if self.opt is not None:
            for g in self.opt.param_groups:
                g["lr"] = self.rate(self.step)
        metrics = self.train_step(self.step)
        if metrics is None:
            return False
        metrics = self.over_ranks(metrics)
        self.step += 1
        dt = time.perf_counter() - t0
        if self.opt is not None:
            metrics["lr"] = self.opt.param_groups[0]["lr"]  # as the step used it
        metrics["step_time"] = dt
        if self.throughput:
            metrics["tokens_per_s"] = metrics[self.throughput] / dt
        metrics.update({**self.compute.metrics(), **memory_metrics(self.device)})
        self.done = self.finished(self.step)
        if self.due(self.step):
            metrics.update(self.evaluate(self.step, final=self.done))
        self.run.log(self.step, metrics)
        self.bar.update(self.step, **self.progress(metrics))
        if self.save_every and self.step % self.save_every == 0 and not self.done:
            self.save()
        return True

    def save(self) -> Path:
        state = {"optimizer": self.par.optimizer_state(self.model, self.opt)} if self.opt is not None else {}
        state.update({"compute": self.compute.state(), **self.state()})
        return self.run.save(self.step, self.model, self.tok, state, self.keep_last)

    def update(self, grad_clip: float) -> float:
        """Sum the gradient over ranks, clip it, take an optimizer step, clear the gradient;
        its norm before the clip."""
        self.par.sync_grads(self.model)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(norm)

    def warn(self, message: str | None) -> None:
        """A warning above the progress bar (none for an empty message)."""
        if message and self.par.main:
            self.bar.warn(message)

    # -- what a regime states ------------------------------------------------------------
    def prepare(self) -> None:
        """Check what would fail later (an environment spec) before the run directory is touched."""

    def build(self, checkpoint: Path | None) -> tuple[torch.nn.Module, Any, Any]:
        """(model in train mode, tokenizer, Parts): --model, or the checkpoint resumed from."""
        return setup_model(self.cfg, last_model(self.cfg.model), checkpoint)

    def inherited(self) -> Totals | None:
        """The compute behind what the run starts from (see rlvr/compute.py)."""
        return inherited_from(self.cfg.model)

    def setup(self, state: dict[str, Any]) -> None:
        """The regime's own parts; `state` is the resumed checkpoint's trainer state ({} fresh)."""

    def optimizer(self):
        """The optimizer (None: the regime has none)."""
        return make_optimizer(self.model, lr=self.cfg.lr, betas=self.betas, weight_decay=self.cfg.weight_decay)

    def make_evaluator(self) -> Evaluator | None:
        return Evaluator(self.cfg, self.run, self.cfg.env, self.model, self.tok, self.cfg.max_new_tokens, self.cfg.seed,
                         self.par)

    def evaluates_first(self) -> bool:
        """Whether a fresh run evaluates its starting model."""
        return self.evaluator is not None and bool(self.cfg.eval_every)

    def finished(self, step: int) -> bool:
        """Whether the run ends after `step` steps."""
        return step >= self.steps or self.compute.spent(self.cfg.budget_flops)

    def rate(self, step: int) -> float:
        """The learning rate of step `step` (0-based)."""
        raise NotImplementedError

    def train_step(self, step: int) -> dict[str, float] | None:
        """Step `step` (0-based): train, charge its compute; its metrics (None: the run stops here)."""
        raise NotImplementedError

    def due(self, step: int) -> bool:
        """Whether to evaluate after `step` steps."""
        return self.evaluator is not None and (self.done or self.evaluator.due(step))

    def evaluate(self, step: int, final: bool) -> dict[str, float]:
        """Evaluate the live model after `step` steps; the metrics for its row. A regime
        whose evaluation decides when it ends sets `self.done`."""
        return self.evaluator(step, self.compute, final=final)

    def over_ranks(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """A step's metrics over every rank (the row rank 0 logs): each rank's reduced."""
        return self.par.reduce_metrics(metrics)

    def progress(self, metrics: dict[str, float]) -> dict[str, float]:
        """What the progress bar shows of a step's metrics."""
        return {"loss": metrics["loss"], **headlines(metrics)}

    def close(self) -> None:
        """Stop what runs beside the loop (after the last step, or an error)."""

    def end(self, step: int) -> int:
        """After the last step: the step whose weights the run ends with."""
        return step

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the optimizer and the meter."""
        return {}

    def summary(self) -> dict[str, Any]:
        """What summary.json holds besides the compute and the final evaluation."""
        return {}


def headlines(metrics: dict[str, float]) -> dict[str, float]:
    """The held-out pass@1 of each environment in a row (`eval/ENV`), when it has them."""
    return {k: v for k, v in metrics.items() if k.count("/") == 1 and k.startswith("eval/")}
