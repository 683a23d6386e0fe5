"""A GGUF file as a plain, trainable HF model: dequantized, every weight accounted for.

Two callers read GGUF files: `load_model` (a `.gguf` path given as `--model`) and
`rlvr models get` (hub.py), which converts a registered model's GGUF once into a
safetensors directory. This module sits below both, so that the registry and the
loader need not import each other.

    model, tok = load_gguf(Path("SmolLM2-135M-Instruct.Q4_1.gguf"))
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from rlvr.config import InputError
from rlvr.models.support import UnsupportedModel, check_supported


def load_gguf(path: Path):
    """Dequantize a GGUF file into a plain, trainable fp32 model.

    transformers keeps a GGUF quantizer on the model it loads, which makes it
    untrainable and unsaveable, so the architecture is rebuilt from the config (without
    `quantization_config`) and every weight copied over strictly.
    """
    kw = dict(gguf_file=path.name, local_files_only=True)
    try:
        config = AutoConfig.from_pretrained(path.parent, **kw)
    except ValueError as e:  # an architecture transformers cannot read from GGUF, or not a GGUF file
        raise UnsupportedModel(str(e) if str(path) in str(e) else f"{path}: {e}") from None
    check_supported(config, path)
    tok = AutoTokenizer.from_pretrained(path.parent, **kw)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, config=config, **kw)
    plain = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    model = AutoModelForCausalLM.from_config(plain)
    load_strict(model, loaded.state_dict(), str(path))
    model.tie_weights()
    return model, tok


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """`model.load_state_dict(state)` where every weight must be there and nothing else may
    be: the one key allowed missing is `lm_head.weight` of a model that ties it to the
    embeddings. Anything else is an InputError naming the keys."""
    result = model.load_state_dict(state, strict=False)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    missing = [k for k in result.missing_keys if not (tied and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        problems = ([f"missing {missing}"] if missing else []) + (
            [f"unexpected {list(result.unexpected_keys)}"] if result.unexpected_keys else [])
        raise InputError(f"{what}: weights do not match the {type(model).__name__} its config describes: "
                         + "; ".join(problems))
