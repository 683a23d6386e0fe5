"""Models: the tiny from-scratch LM and its char tokenizer; load/save any causal LM."""

from rlvr.models.io import count_parameters, default_device, load_model, save_model
from rlvr.models.tiny import PRESETS, build_tiny_model
from rlvr.models.tokenizer import build_char_tokenizer

__all__ = ["PRESETS", "build_char_tokenizer", "build_tiny_model", "count_parameters",
           "default_device", "load_model", "save_model"]
