"""Safe exact evaluation of small arithmetic expressions (countdown's answers).

A model's completion is untrusted input, so it is never passed to eval/exec. The
text is checked against a character whitelist, parsed with ``ast`` in eval mode,
and the tree is walked allowing only non-negative int literals and binary
``+ - * /``; anything else (names, calls, attributes, ``**``, ``//``, unary minus,
floats, ...) raises `ExprError` before any arithmetic happens. Values are
`fractions.Fraction`, so ``7/2*2 == 7`` exactly and no float rounding can turn a
wrong answer right. The literals used are returned so callers can check which
numbers an expression consumed.

    >>> evaluate("(25-7)*3/2")
    (Fraction(27, 1), [25, 7, 3, 2])

Tested by tests/test_envs.py (``.venv/bin/python -m pytest tests/test_envs.py -q``).
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

MAX_LENGTH = 200  # characters; bounds parser work and the size of intermediate values
MAX_DEPTH = 50  # tree depth; a left-leaning chain "1+1+...+1" is as deep as it is long
MAX_LITERAL = 10**6  # with MAX_LENGTH this bounds products to a few hundred digits

# Checked before parsing: rules out names, dunder tricks, floats, hex and "1_000"
# literals and strings, whatever the AST would have made of them.
_ALLOWED_CHARS = re.compile(r"[0-9+\-*/() \t]*")
_OPS = {ast.Add: Fraction.__add__, ast.Sub: Fraction.__sub__, ast.Mult: Fraction.__mul__}


class ExprError(ValueError):
    """The expression is not allowed or cannot be evaluated; `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def evaluate(expr: str) -> tuple[Fraction, list[int]]:
    """The exact value of `expr` and its int literals in order of appearance."""
    if len(expr) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters")
    if not _ALLOWED_CHARS.fullmatch(expr):
        bad = next(c for c in expr if not _ALLOWED_CHARS.fullmatch(c))
        raise ExprError(f"disallowed character {bad!r}")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError) as e:
        raise ExprError(f"syntax error: {e.msg if isinstance(e, SyntaxError) else e}") from None
    literals: list[int] = []
    _check(tree.body, 0, literals)  # the whole tree is vetted before any arithmetic
    return _eval(tree.body), literals


def _check(node: ast.AST, depth: int, literals: list[int]) -> None:
    if depth > MAX_DEPTH:
        raise ExprError(f"expression nested deeper than {MAX_DEPTH}")
    if isinstance(node, ast.Constant):
        # type() not isinstance(): True/False are ints too.
        if type(node.value) is not int:
            raise ExprError(f"disallowed literal {node.value!r}")
        if node.value > MAX_LITERAL:
            raise ExprError(f"literal larger than {MAX_LITERAL}")
        literals.append(node.value)
    elif isinstance(node, ast.BinOp) and (type(node.op) in _OPS or isinstance(node.op, ast.Div)):
        _check(node.left, depth + 1, literals)
        _check(node.right, depth + 1, literals)
    else:
        what = type(node.op).__name__ if isinstance(node, (ast.BinOp, ast.UnaryOp)) else type(node).__name__
        raise ExprError(f"disallowed syntax: {what}")


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    left, right = _eval(node.left), _eval(node.right)
    if isinstance(node.op, ast.Div):
        if right == 0:
            raise ExprError("division by zero")
        return left / right
    return _OPS[type(node.op)](left, right)
