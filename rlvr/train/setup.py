"""The model a trainer trains: loaded on its device and dtype, with LoRA and activation
checkpointing when asked, resumed from a checkpoint when there is one. One primitive
that `sft`, `rs` and `rl` share, so that every trainer offers the same keys.

    model, tok, parts = setup_model(cfg, start="runs/sft/model", resumed=None)
    opt = make_optimizer(model, lr=cfg.lr, betas=(0.9, 0.99))

Low-precision weights (bf16 on a GPU) train through fp32 master copies: AdamW's moments
and updates in bf16 lose every step smaller than the weight's 8-bit mantissa resolves
(lr 1e-5 on a weight of 0.1 is a relative change of 1e-4, below bf16's 4e-3 spacing).
"""

from __future__ import annotations

import ctypes
import os
import resource
from pathlib import Path

import torch
from pydantic import Field

from rlvr.config import InputError
from rlvr.engine.fields import EngineFields
from rlvr.fields import Device, DType
from rlvr.models import load_model
from rlvr.models.io import default_device, default_dtype, load_adapter_dir
from rlvr.models.forward import Parts, parts_of
from rlvr.models.lora import DEFAULT_TARGETS, add_lora

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelFields(EngineFields):
    device: Device
    dtype: DType  # LoRA adapters stay in float32
    lora_r: int = Field(0, ge=0, description="LoRA rank (0: full fine-tuning). The base is frozen; only adapters train, and checkpoints hold the adapter (loads merged).")
    lora_alpha: float = Field(0.0, ge=0, description="LoRA scale numerator (0: 2 x lora_r); the adapter's output is scaled by alpha / r.")
    lora_targets: list[str] = Field(list(DEFAULT_TARGETS), description="Linear layers that get adapters (their short names, e.g. q_proj).")
    activation_checkpointing: bool = Field(False, description="Recompute each layer's activations in backward instead of keeping them: less memory, one more forward per step (by count +1/3 of a full fine-tuning step's FLOPs, +1/2 of a LoRA step's; wall time in BENCHMARKS.md).")
    activation_gb: float = Field(1.0, gt=0, description="Activations one forward/backward may keep, GB: micro-batches are cut to the tokens that fit (rl: completions, sft and rs: sequences, sorted by length), from the model's bytes per token measured at start (a real model keeps ~1 MB a token in fp32 without --activation_checkpointing). Raise it on a large GPU.")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return default_device()
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r}: no CUDA device is available here (use --device cpu or auto)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    return default_dtype(device) if name == "auto" else DTYPES[name]


def setup_model(cfg: ModelFields, start: str | Path, resumed: Path | None = None) -> tuple[torch.nn.Module, object, Parts]:
    """(model in train mode, tokenizer, its Parts) for a trainer starting from `start`, or
    continuing from the checkpoint `resumed` (whose adapter is reloaded trainable)."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if resumed is not None and (Path(resumed) / "adapter_config.json").exists():
        if not cfg.lora_r:
            raise InputError(f"{resumed} holds a LoRA adapter but --lora_r is 0: resume with the run's own settings")
        model, tok = load_adapter_dir(resumed, device, dtype, trainable=True)
    else:
        model, tok = load_model(resumed or start, device=device, dtype=dtype)
        if cfg.lora_r:
            base = str(Path(start).resolve()) if Path(start).exists() else str(start)
            model = add_lora(model, cfg.lora_r, cfg.lora_alpha or 2.0 * cfg.lora_r, cfg.lora_targets, base)
    model.train()
    if device.type == "cpu" and cfg.activation_checkpointing:
        return_freed_memory()
    return model, tok, parts_of(model, checkpoint=cfg.activation_checkpointing)


# glibc's malloc serves large blocks from its heap once a large block has been freed, and
# keeps what a training step frees there: resident memory ran at ~2x live (an RL step of
# SmolLM2 with activation checkpointing: 3.8 GB resident for 1.4 GB live). Blocks from
# 128 KiB up (glibc's own starting threshold, kept fixed) mapped on their own go back to
# the system when freed. SmolLM2, worst-case RL step: LoRA + checkpointing 1.37 GB (1.63
# with 1 MiB, whose heap kept a recomputed layer's 128 KiB-1 MiB blocks); LoRA alone 1.92
# GB against 2.72. It costs page faults: nothing measurable on long micro-batches, but
# `rlvr rl` steps on SmolLM2's short answers (~100 trained tokens) trained in 4.1 s
# against 2.6 s, so only --activation_checkpointing (memory before time) sets it.
MMAP_THRESHOLD = 1 << 17


def return_freed_memory() -> bool:
    """Have glibc's malloc return freed large blocks to the system at once (what
    --activation_checkpointing asks for on CPU: memory before time). False where the C
    library is not glibc or `MALLOC_MMAP_THRESHOLD_` is already set (the user's choice)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_mmap_threshold = -3  # <malloc.h>; setting it also stops glibc raising it on its own
    return bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD))


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an optimizer updates (under LoRA: the adapters alone)."""
    return [p for p in model.parameters() if p.requires_grad]


class MasterWeights:
    """AdamW on fp32 copies of low-precision parameters: each step upcasts the gradients,
    updates the fp32 copies and writes them back rounded. The model (and an engine that
    shares it) keeps its bf16 weights; the optimizer state is fp32 throughout. A resume
    rebuilds the copies from the checkpoint's weights (their bits below bf16 are not kept)."""

    def __init__(self, params: list[torch.nn.Parameter], **adamw):
        self.params = params
        self.master = [p.detach().float().clone().requires_grad_(True) for p in params]
        self.inner = torch.optim.AdamW(self.master, **adamw)

    @property
    def param_groups(self) -> list[dict]:
        return self.inner.param_groups

    @torch.no_grad()
    def step(self) -> None:
        for p, m in zip(self.params, self.master):
            m.grad = None if p.grad is None else p.grad.float()
        self.inner.step()
        for p, m in zip(self.params, self.master):
            p.copy_(m)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


def make_optimizer(model: torch.nn.Module, **adamw) -> torch.optim.Optimizer | MasterWeights:
    """AdamW over the trainable parameters; through fp32 master copies when any is not fp32."""
    params = trainable(model)
    if all(p.dtype == torch.float32 for p in params):
        return torch.optim.AdamW(params, **adamw)
    return MasterWeights(params, **adamw)


def memory_metrics(device: torch.device) -> dict[str, float]:
    """Peak memory so far: the process's resident set, and the GPU's allocations on CUDA."""
    out = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # KiB on Linux
    if device.type == "cuda":
        out["gpu_peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def restore_optimizer(opt: torch.optim.Optimizer, state: dict, where: str = "the checkpoint") -> None:
    """Load the optimizer state a checkpoint kept. Only the newest checkpoint keeps it (it
    is twice the trainable weights); resuming from an older one, the moments start at
    zero again, which is said rather than hidden."""
    if "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        return
    from rich.console import Console

    Console(stderr=True).print(f"[yellow]warning:[/] {where} holds no optimizer state (only the newest checkpoint "
                               "keeps it): the optimizer's moments start from zero")
