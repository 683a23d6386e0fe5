"""Engines turn prompt token ids into samples and take new weights by version."""

from rlvr.engine.torch_engine import TorchEngine

__all__ = ["TorchEngine"]
