"""`rlvr pretrain`: make a weak base model by next-token prediction on a synthetic corpus.

The tiny model starts from random weights and reads worked solutions, many of them
wrong (see corpus.py), until it writes solutions like them. It never sees a reward.
The result is an HF checkpoint in `RUN/checkpoints/last/model`, the `--model` of
every later stage.

    rlvr pretrain --run_dir runs/base --steps 400
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import torch
from pydantic import Field

from rlvr.config import Config
from rlvr.envs import make_env
from rlvr.models import build_tiny_model, count_parameters, load_model
from rlvr.compute import Compute
from rlvr.train.corpus import documents
from rlvr.train.progress import StepBar
from rlvr.run import Run
from rlvr.train.schedule import lr_at

DEMO_ENV = {"name": "arithmetic", "digits": 3, "ops": ["add"], "template": "{expr}"}


class PretrainConfig(Config):
    run_dir: str = Field("runs/base", description="Run directory (config, metrics, checkpoints).")
    env: Any = Field(DEMO_ENV, description="Environment whose train-split problems the corpus is written from.")
    preset: str = Field("tiny", description="Model size preset (see rlvr.models.tiny.PRESETS).")
    slip: float = Field(0.55, ge=0.0, le=1.0, description="Probability that a column of a worked solution slips (+1).")
    steps: int = Field(600, ge=1, description="Optimizer steps.")
    batch_size: int = Field(64, ge=1, description="Documents per step.")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate (AdamW), cosine-decayed to 10%.")
    warmup: int = Field(30, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    seed: int = Field(0, description="Seed of the model init and the corpus stream.")
    save_every: int = Field(0, ge=0, description="Checkpoint every N steps (0: only at the end).")
    resume: bool = Field(False, description="Continue the run in run_dir from its last checkpoint.")
    tensorboard: bool = Field(False, description="Also write metrics as TensorBoard events in RUN_DIR/tensorboard.")


def batch_tensors(texts: list[str], tok) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    enc = tok(texts, add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return enc["input_ids"], enc["attention_mask"], labels


def main(cfg: PretrainConfig) -> Run:
    run = Run(cfg.run_dir, cfg, resume=cfg.resume, tensorboard=cfg.tensorboard)
    env = make_env(cfg.env)
    model, tok = build_tiny_model(cfg.preset, seed=cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    start = 0
    resumed = run.resume_state() if cfg.resume else None
    if resumed:
        path, state = resumed
        model, tok = load_model(path, device="cpu")
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
    # Counted like any run's, but never inherited: the base is every regime's shared start.
    compute = Compute(count_parameters(model), "pretrain")
    if resumed:
        compute.load_state(resumed[1].get("compute"))
    # The stream is deterministic, so a resumed run skips what it already read.
    docs = itertools.islice(documents(env, tok, cfg.slip, cfg.seed), start * cfg.batch_size, None)
    model.train()
    with StepBar("pretrain", cfg.steps, start) as bar:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            ids, attn, labels = batch_tensors([next(docs) for _ in range(cfg.batch_size)], tok)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg.lr, cfg.warmup, cfg.steps)
            loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens = int(attn.sum())
            compute.trained(tokens)
            dt = time.perf_counter() - t0
            m = {"loss": loss.item(), "grad_norm": float(grad_norm), "lr": lr_at(step, cfg.lr, cfg.warmup, cfg.steps),
                 "trained_tokens": tokens, "tokens_per_s": tokens / dt, "step_time": dt, **compute.metrics()}
            run.log(step + 1, m)
            bar.update(step + 1, loss=m["loss"])
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                run.save(step + 1, model, tok, {"optimizer": opt.state_dict(), "compute": compute.state()})
    run.save(cfg.steps, model, tok, {"optimizer": opt.state_dict(), "compute": compute.state()})
    run.finish({"command": "pretrain", "steps": cfg.steps, **compute.summary()})
    return run
