"""Which models rlvr runs: the architectures its one forward pass (forward.py) computes exactly.

The engine and every trainer share that forward, so a model it would run wrongly must
be refused before anything else happens: `load_model` checks the config before any
weight is read, and `parts_of` checks it again for a model built in memory. The check
lives here, below both, so that each loader (a directory, a hub id, a GGUF file) and the
forward read one list.

    check_supported(AutoConfig.from_pretrained(path), path)   # UnsupportedModel, in one line
"""

from __future__ import annotations

from pathlib import Path

from rlvr.config import InputError

# Decoders whose layers compute exactly what forward.py does. Look-alikes differ in
# details (Gemma scales embeddings and norms by 1 + w, Phi uses partial rotary...).
SUPPORTED = ("llama", "qwen2", "qwen3", "mistral")
# RoPE scalings whose frequencies depend on the length of the call (transformers picks them
# from the longest position it is given): the prompt pass, each one-token decode step and
# the training pass would each rotate by different frequencies, and the behaviour
# log-probs would not be the trainer's.
LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


def rope_type(cfg) -> str:
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    return str(rope.get("rope_type") or rope.get("type") or "default")


def unsupported(cfg) -> str | None:
    """Why rlvr's forward cannot run a model of this config, or None."""
    kind = getattr(cfg, "model_type", None)
    if kind not in SUPPORTED:
        return (f"model type {kind!r} is not one rlvr runs (its engine and trainers share one forward pass); "
                f"supported: {', '.join(SUPPORTED)}")
    if rope_type(cfg) in LENGTH_DEPENDENT_ROPE:
        return (f"RoPE scaling {rope_type(cfg)!r} changes with the sequence length, which rlvr's forward (a prompt "
                "pass, then one token at a time) does not reproduce; supported: default, linear, llama3, yarn")
    return None


class UnsupportedModel(InputError):
    """An architecture rlvr's forward (engine and trainers) cannot run."""


def check_supported(config, what: str | Path) -> None:
    """Refuses, in one line naming `what`, a model whose config rlvr's forward cannot run."""
    why = unsupported(config)
    if why:
        raise UnsupportedModel(f"{what}: {why}")
