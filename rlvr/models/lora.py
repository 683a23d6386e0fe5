"""LoRA through `peft`: adapters on a frozen base, saved as adapters, loaded merged.

Every trainer (`sft`, `rs`, `rl`) takes `--lora_r R`: the base weights are frozen and
low-rank adapters are trained on the named projections, so the optimizer state and
the gradients are those of the adapters alone (a few MB for a 135M model instead of
1.6 GB). A LoRA run's checkpoints hold the adapter (`adapter_config.json` naming the
base, `adapter_model.safetensors`); `load_model` on such a directory loads the base
and merges the adapter into it, so `rlvr eval --model runs/x` and the next stage of a
pipeline see a plain model. A resumed run reloads the adapter trainable instead. The
loading itself (`load_adapter_dir`) is in io.py, beside `load_model`, which it calls
for the base: this module only reads and writes adapters on a model in memory, so the
forward can read a LoRA layer's weights without importing the loaders.

rlvr's own forward (models/forward.py) calls the model's projection modules, so the
adapters take part in training; the CPU engine packs each projection's effective
weight (base + B A x scale, `dense_weight`) and generates at full speed.

    model = add_lora(model, r=16, alpha=32, targets=DEFAULT_TARGETS, base="runs/sft/model")
    model, tok = load_model("runs/rl/checkpoints/last/model")   # io.py: the base, adapter merged
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from rlvr.config import InputError

# Every linear map of a Llama-style decoder layer (the usual choice for RL with LoRA).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@contextmanager
def quiet_peft():
    """peft calls a transformers method deprecated in v5; its warning is not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def linear_names(model: torch.nn.Module) -> list[str]:
    """The short names of the model's linear layers (what LoRA targets name)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def add_lora(model: torch.nn.Module, r: int, alpha: float, targets: tuple[str, ...] | list[str], base: str):
    """`model` wrapped by peft with fresh adapters (B = 0: the model's outputs are unchanged);
    only the adapters require gradients. `base` is recorded in the adapter's config so
    that the saved adapter can be loaded on its own later."""
    from peft import LoraConfig, get_peft_model

    targets = list(targets)
    known = linear_names(model)
    missing = [t for t in targets if t not in known]
    if missing:
        raise InputError(f"lora_targets {missing} name no linear layer of this model; its linear layers are {known}")
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none")
    with quiet_peft():
        peft_model = get_peft_model(model, config)
    # Saved in adapter_config.json: the path (or hub id) this run started from, which a
    # model loaded from a GGUF file or built in memory does not know itself.
    peft_model.peft_config["default"].base_model_name_or_path = str(base)
    return peft_model


def is_lora(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


def base_of(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (with its adapter layers in place), or `model`."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def dense_weight(linear: torch.nn.Module) -> torch.Tensor:
    """The weight a linear layer applies: a LoRA layer's base weight plus its active,
    unmerged adapters' B A x scale; a plain layer's weight. Detached."""
    if not hasattr(linear, "get_delta_weight"):
        return linear.weight.detach()
    w = linear.get_base_layer().weight.detach()
    if linear.disable_adapters or linear.merged:
        return w
    w = w.clone()
    for name in linear.active_adapters:
        if name in linear.lora_A:
            w += linear.get_delta_weight(name).detach().to(w.dtype)
    return w


def dense_bias(linear: torch.nn.Module) -> torch.Tensor | None:
    layer = linear.get_base_layer() if hasattr(linear, "get_base_layer") else linear
    return None if layer.bias is None else layer.bias.detach()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter directory was trained on (from its adapter_config.json)."""
    cfg_path = Path(path) / "adapter_config.json"
    try:
        base = json.loads(cfg_path.read_text()).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{cfg_path}: not a readable adapter config ({e})") from None
    if not base:
        raise InputError(f"{cfg_path}: no base_model_name_or_path, so the adapter's base model is unknown")
    return base
