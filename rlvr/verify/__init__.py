"""Verifier primitives shared by every environment.

`extract` pulls the final answer out of a completion (the format environments
grade: ``#### <answer>`` once, at the end); `formats` holds it beside the other
answer formats a prompt may ask for (``\\boxed{}``, "The answer is"); `expr`
evaluates arithmetic expressions without eval/exec. Environments import these
instead of re-implementing them, so every task grades the format identically.
"""

from rlvr.verify.expr import ExprError, evaluate
from rlvr.verify.extract import ANSWER_MARKER, extract_final, format_answer, parse_int

__all__ = ["ANSWER_MARKER", "ExprError", "evaluate", "extract_final", "format_answer", "parse_int"]
