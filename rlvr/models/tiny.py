"""The embedded default model: a tiny Qwen2-architecture causal LM built from a config.

It is a plain `transformers` model, so everything that works on it (saving, loading,
the engine, the trainers) works on real Hugging Face checkpoints too. Sizes are named
presets; hidden width, depth and heads are all a preset sets.

    model, tok = build_tiny_model("tiny")
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from rlvr.models.io import flush_denormals
from rlvr.models.tokenizer import build_char_tokenizer

# name -> (hidden, layers, heads, intermediate, init std). "tiny" is the demo's model
# (~1 M parameters); "small" matches the 4.2 M-parameter model of the TRL benchmark.
# The init scale matters for learning: "tiny" at the usual std 0.02 sat on the
# pretraining corpus's loss plateau for 250 to 500 steps depending on the seed and the
# CPU's float kernels; at 0.04 every seed measured left it by step 150 to 200
# (EXPERIMENTS.md).
PRESETS: dict[str, tuple[int, int, int, int, float]] = {
    "micro": (64, 2, 2, 256, 0.02),
    "tiny": (128, 4, 4, 512, 0.04),
    "small": (256, 4, 4, 1024, 0.02),
}


def tiny_config(preset: str, tok: PreTrainedTokenizerFast, max_positions: int = 512) -> Qwen2Config:
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    hidden, layers, heads, inter, init = PRESETS[preset]
    return Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=inter,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        rope_theta=10000.0, rms_norm_eps=1e-6, initializer_range=init,
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )


def build_tiny_model(preset: str = "tiny", seed: int = 0) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    flush_denormals()
    tok = build_char_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_config(preset, tok))
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok
