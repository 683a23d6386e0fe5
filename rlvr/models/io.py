"""Load and save causal LMs: the tiny model, any local Hugging Face checkpoint, a GGUF file.

`load_model(path)` is the one entry point every command uses, whether `path` is a run's
checkpoint, a downloaded HF directory or a `.gguf` file a package ships. Nothing here
ever reaches a hub: `local_files_only` is always set. Saves are atomic.

    model, tok = load_model("runs/demo/base")
    save_model(model, tok, "runs/x/checkpoints/step_10")
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from rlvr.atomic import atomic_dir

# Per-file progress bars of transformers drown the trainers' own; loads here are fast.
hf_logging.disable_progress_bar()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 on GPU; fp32 on CPU, where bf16 matmuls run ~5x slower than fp32.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model(path: str | Path, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None):
    """Load (model, tokenizer) from a local HF directory or a .gguf file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model path {str(path)!r} does not exist (only local models are loaded)")
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    if path.suffix == ".gguf":
        model, tok = _load_gguf(path)
    else:
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: no config.json, not a Hugging Face model directory")
        tok = _load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.to(device=device, dtype=dtype), tok


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


def _load_gguf(path: Path):
    """Dequantize a GGUF file into a plain, trainable fp32 model.

    transformers keeps a GGUF quantizer on the loaded model that makes it untrainable
    and unsaveable, so we rebuild the architecture from its config and copy the weights.
    """
    kw = dict(gguf_file=path.name, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path.parent, **kw)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, **kw)
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items()
                                     if k != "quantization_config"})
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    return model, tok


def save_model(model: PreTrainedModel, tok, path: str | Path) -> Path:
    """Save in HF format (safetensors) atomically: a crash never leaves half a checkpoint."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return path


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
