"""`rlvr pretrain`: make a weak base model by next-token prediction on a synthetic corpus.

The tiny model starts from random weights and reads worked solutions, many of them
wrong (see corpus.py), until it writes solutions like them. It never sees a reward.
The result is an HF checkpoint in `RUN/checkpoints/last/model`, the `--model` of
every later stage.

When it stops is measured, not fixed. A randomly initialised model sits on a loss
plateau until it learns which prompt digits each column reads, and how long that takes
depends on the seed and on the CPU's float kernels (the same seed leaves the plateau a
hundred steps apart on two kernel paths). So a small held-out check (`check_problems`
problems, `check_samples` samples at T = 1, plus greedy) runs every `check_every`
steps. The learning rate stays at its peak until the check sees the procedure learned
(pass@k >= `learned_at`); it then decays along a cosine over `decay_steps`, and the run
stops at the first check, at least `settle_steps` into the decay, that finds the base
in its band: the procedure learned (pass@k >= `band_pass_at_k`) but its answers still
mostly wrong (pass@1 <= `band_pass_at_1`, greedy <= `band_greedy`). Until then it
trains on at the decayed rate, up to `steps`. The band sits inside the demo's contract (pass@16 >= 50%, pass@1 and
greedy <= 25%), so that a check on 64 problems that passes it leaves the base inside
the contract on 200. `summary.json` holds the last check and whether it was in band.
`--check_every 0` trains a fixed `steps` with a cosine decay instead.

    rlvr pretrain --run_dir runs/base
    rlvr pretrain --run_dir runs/base --check_every 0 --steps 400
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterator

import torch
from pydantic import Field
from rich.console import Console

from rlvr.config import Config
from rlvr.engine import make_engine
from rlvr.envs import make_env
from rlvr.eval import eval_problems, evaluate
from rlvr.fields import DistTimeout, ParallelMode, Resume, SaveEvery, Tensorboard, Wandb, WandbProject, Warmup, WeightDecay
from rlvr.models import build_tiny_model, load_model
from rlvr.run import Run
from rlvr.train.corpus import documents
from rlvr.train.schedule import lr_at
from rlvr.train.trainer import Trainer
from rlvr.types import Sampling

DEMO_ENV = {"name": "arithmetic", "digits": 3, "ops": ["add"], "template": "{expr}"}
# The check's problems come from the eval split at a seed of their own, apart from the
# held-out set every later evaluation uses (seed 0): stopping on those would select on them.
CHECK_SEED = 7919


class PretrainConfig(Config):
    run_dir: str = Field("runs/base", description="Run directory (config, metrics, checkpoints).")
    env: Any = Field(DEMO_ENV, description="Environment whose train-split problems the corpus is written from.")
    preset: str = Field("tiny", description="Model size preset (see rlvr.models.tiny.PRESETS).")
    slip: float = Field(0.7, ge=0.0, le=1.0, description="Probability that the units column of a worked solution slips (+1); above 0.5 the base's most likely answer is wrong.")
    slip_later: float | None = Field(0.35, ge=0.0, le=1.0, description="Probability that each later column slips (None: `slip`).")
    steps: int = Field(1500, ge=1, description="Most optimizer steps (with the check on, the demo's bases stopped at 250-400 over 5 seeds x 3 kernel paths, EXPERIMENTS.md).")
    batch_size: int = Field(64, ge=1, description="Documents per step.")
    lr: float = Field(2e-3, gt=0, description="Learning rate (AdamW) after warm-up (check_every 0: decayed along a cosine to 10%).")
    warmup: Warmup = 30
    weight_decay: WeightDecay
    check_every: int = Field(50, ge=0, description="Run the held-out check every N steps; 0: no check, train `steps` with a cosine decay.")
    check_from: int = Field(150, ge=0, description="First step of a check (before it the model is still on its plateau).")
    check_problems: int = Field(64, ge=1, description="Held-out problems of the check (eval split, a seed apart from every evaluation's).")
    check_samples: int = Field(16, ge=1, description="Samples per check problem at T=1 (the check's pass@k has k = this).")
    check_max_new_tokens: int = Field(32, ge=1, description="Completion token limit of the check.")
    learned_at: float = Field(0.3, ge=0, le=1, description="pass@k on the check at which the procedure counts as learned: the rate then decays over decay_steps.")
    decay_steps: int = Field(150, ge=1, description="Cosine decay (to 10%, where the rate then stays) after the check sees the procedure learned.")
    settle_steps: int = Field(100, ge=0, description="Steps into the decay before a check may stop the run: the model consolidates what it just learned.")
    band_pass_at_k: float = Field(0.6, ge=0, le=1, description="Stop at a check where pass@k is at least this ...")
    band_pass_at_1: float = Field(0.2, ge=0, le=1, description="... while pass@1 is at most this ...")
    band_greedy: float = Field(0.1, ge=0, le=1, description="... and greedy accuracy at most this (the base's most likely answer is still wrong).")
    seed: int = Field(0, description="Seed of the model init and the corpus stream.")
    save_every: SaveEvery
    resume: Resume
    tensorboard: Tensorboard
    parallel: ParallelMode
    dist_timeout: DistTimeout
    wandb: Wandb
    wandb_project: WandbProject


def batch_tensors(texts: list[str], tok) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    enc = tok(texts, add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return enc["input_ids"], enc["attention_mask"], labels


class Check:
    """The held-out check: pass@1, pass@k and greedy accuracy of the live model."""

    def __init__(self, env, cfg: PretrainConfig):
        self.env, self.k = env, cfg.check_samples
        self.problems = eval_problems(env, cfg.check_problems, CHECK_SEED)
        self.sampling = Sampling(temperature=1.0, max_new_tokens=cfg.check_max_new_tokens, seed=cfg.seed)

    def __call__(self, model, tok, share: bool = False) -> dict[str, float]:
        """`share`: generate from the model's own weights rather than a copy (a model sharded
        by FSDP cannot be copied; the caller holds it gathered)."""
        engine = make_engine(model, tok, role="trainer" if share else "snapshot")
        result = evaluate(engine, self.env, self.problems, self.k, [1, self.k], self.sampling)
        m = next(iter(result.values())) if len(result) == 1 else result["all"]
        model.train()
        return {"check/pass@1": m["pass@1"]["mean"], f"check/pass@{self.k}": m[f"pass@{self.k}"]["mean"],
                "check/greedy": m["greedy"]["mean"]}


def in_band(check: dict[str, float], cfg: PretrainConfig) -> bool:
    k = cfg.check_samples
    return (check[f"check/pass@{k}"] >= cfg.band_pass_at_k and check["check/pass@1"] <= cfg.band_pass_at_1
            and check["check/greedy"] <= cfg.band_greedy)


def rate(cfg: PretrainConfig, step: int, learned: int | None, checked: bool) -> float:
    """Without a check: warm-up and a cosine over `steps`. With one: warm-up, the peak
    until the check sees the procedure learned, then a cosine over `decay_steps`."""
    if not checked:
        return lr_at(step, cfg.lr, cfg.warmup, cfg.steps)
    if learned is None or step < learned:
        return lr_at(step, cfg.lr, cfg.warmup)
    return lr_at(step - learned, cfg.lr, 0, cfg.decay_steps)


class Pretrain(Trainer):
    command = "pretrain"

    def prepare(self) -> None:
        self.env = make_env(self.cfg.env)

    def build(self, checkpoint: Path | None) -> tuple[torch.nn.Module, Any, None]:
        model, tok = load_model(checkpoint, device="cpu") if checkpoint else build_tiny_model(self.cfg.preset,
                                                                                              seed=self.cfg.seed)
        return model.train(), tok, None

    def inherited(self) -> None:
        return None  # counted like any run's, but never inherited: the base is every regime's shared start

    def setup(self, state: dict) -> None:
        cfg = self.cfg
        self.steps = cfg.steps
        self.learned = state.get("learned")  # the step the check first saw the procedure learned
        self.ended = state.get("finished", False)  # a resumed run that had already stopped
        self.last_check: dict[str, float] = state.get("check", {})
        self.shown: dict[str, float] = {}
        self.check = Check(self.env, cfg) if cfg.check_every else None
        # The stream is deterministic, so a resumed run skips what it already read.
        self.docs = itertools.islice(self.corpus(), self.start * cfg.batch_size, None)

    def corpus(self) -> Iterator[str]:
        """The documents, in order (a subclass may mix other text in: rlvr/experiments/midtrain.py)."""
        cfg = self.cfg
        return documents(self.env, self.tok, cfg.slip, cfg.seed, cfg.slip_later)

    def make_evaluator(self) -> None:
        return None  # the held-out check is this regime's evaluation

    def finished(self, step: int) -> bool:
        return self.ended or step >= self.cfg.steps

    def rate(self, step: int) -> float:
        return rate(self.cfg, step, self.learned, self.check is not None)

    def train_step(self, step: int) -> dict[str, float]:
        docs = [next(self.docs) for _ in range(self.cfg.batch_size)][self.par.rank::self.par.world]  # this rank's
        ids, attn, labels = batch_tensors(docs, self.tok)
        loss = self.par.run(lambda: self.model(input_ids=ids, attention_mask=attn, labels=labels).loss)
        # The mean over this rank's predicted tokens, weighed by its share of the whole step's.
        own = int((labels[:, 1:] != -100).sum())
        share = own / self.par.sum([own])[0]
        (loss * share).backward()
        grad_norm = self.update(1.0)
        tokens = int(attn.sum())
        self.compute.trained(tokens)
        return {"loss": self.par.sum([loss.item() * share])[0], "grad_norm": grad_norm, "trained_tokens": tokens}

    def due(self, step: int) -> bool:
        cfg = self.cfg
        return self.check is not None and ((step % cfg.check_every == 0 and step >= cfg.check_from) or self.done)

    def evaluate(self, step: int, final: bool) -> dict[str, float]:
        """The check; the run stops at one that finds the base in its band, settled."""
        cfg = self.cfg
        # Every rank alike; under fsdp from the model gathered whole.
        self.last_check = self.par.whole(lambda: self.check(self.model, self.tok, share=self.par.sharded))
        self.shown = {key.split("/")[1]: v for key, v in self.last_check.items()}
        if self.learned is None and self.last_check[f"check/pass@{cfg.check_samples}"] >= cfg.learned_at:
            self.learned = step  # the procedure is learned: decay from here
        settled = self.learned is not None and step >= self.learned + cfg.settle_steps
        self.done = self.done or (settled and in_band(self.last_check, cfg))
        return self.last_check

    def progress(self, metrics: dict[str, float]) -> dict[str, float]:
        return {"loss": metrics["loss"], **self.shown}

    def end(self, step: int) -> int:
        if self.last_check and not in_band(self.last_check, self.cfg):
            Console(stderr=True).print(f"[yellow]warning:[/] the base never entered its band in {self.cfg.steps} "
                                       f"steps (last check: {_show(self.last_check)}); raise --steps or change --seed")
        return step

    def state(self) -> dict:
        return {"learned": self.learned, "finished": self.done, "check": self.last_check}

    def summary(self) -> dict:
        band = in_band(self.last_check, self.cfg) if self.last_check else None
        return {"learned_at_step": self.learned, "in_band": band, "check": self.last_check}


def main(cfg: PretrainConfig) -> Run:
    return Pretrain(cfg).train()


def _show(check: dict[str, float]) -> str:
    return ", ".join(f"{k.split('/')[1]} {v:.1%}" for k, v in check.items())
