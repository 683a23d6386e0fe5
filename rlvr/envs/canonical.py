"""Canonical forms: when two problems are the same problem, whatever their wording.

A problem's split is decided on its canonical form (`ProceduralEnv.canonical`,
rlvr.envs.base), so that problems an environment counts as the same (``457+386`` and
``386+457``) always fall in one split: held-out means no twin was trained on. These
are the forms the environments build theirs from:

- `expression_form`: an arithmetic expression up to the order of the terms of a sum
  and of the factors of a product (``3+5`` = ``5+3``, ``a/b*c`` = ``c*a/b``). A minus
  sign belongs to the term it stands before and moves with it (``a-b+c`` = ``c+a-b``,
  ``-5+3`` = ``3-5``, ``a-(b-c)`` = ``a+c-b``, ``2 - -1`` = ``2+1``). Names stand for
  themselves (``3*x - 4``). Nothing is evaluated: ``2+3`` and ``5`` stay different
  problems.
- `text_key`: a short hash of text up to case and runs of whitespace, for problems
  that are prose (math JSONL, HumanEval): a duplicate typed twice is one problem.

Run its tests: ``.venv/bin/python -m pytest tests/test_splits.py -q``.
"""

from __future__ import annotations

import ast
import hashlib


def expression_form(text: str) -> str:
    """`text` (numbers, names, + - * / and parentheses) with the terms of every sum and
    the factors of every product in one order; a ValueError for anything else."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"not an arithmetic expression: {text!r}") from None
    return _sum_text(_terms(tree.body, 1))


def text_key(text: str) -> str:
    """A 16-hex-digit key of `text` up to case and runs of whitespace."""
    return hashlib.blake2b(" ".join(text.casefold().split()).encode(), digest_size=8).hexdigest()


def _terms(node: ast.AST, sign: int) -> list[tuple[int, str]]:
    """The signed terms of a sum (a - (b - c) has terms +a, -b, +c), each as product text."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        return _terms(node.left, sign) + _terms(node.right, sign if isinstance(node.op, ast.Add) else -sign)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _terms(node.operand, -sign if isinstance(node.op, ast.USub) else sign)
    factor_sign, text = _product(node)
    return [(sign * factor_sign, text)]


def _sum_text(terms: list[tuple[int, str]]) -> str:
    plus = sorted(text for sign, text in terms if sign > 0)
    minus = sorted(text for sign, text in terms if sign < 0)
    return "+".join(plus) + "".join("-" + text for text in minus)


def _product(node: ast.AST) -> tuple[int, str]:
    """A product's sign (its factors' minus signs, moved out) and its text: the factors
    multiplied, sorted, then those divided by, sorted."""
    factors = _factors(node, 1)
    sign = 1
    for factor_sign, _, _ in factors:
        sign *= factor_sign
    times = sorted(text for _, power, text in factors if power > 0)
    divided = sorted(text for _, power, text in factors if power < 0)
    return sign, "*".join(times) + "".join("/" + text for text in divided)


def _factors(node: ast.AST, power: int) -> list[tuple[int, int, str]]:
    """(sign, +1 multiplied or -1 divided by, text) for each factor of a product."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
        return _factors(node.left, power) + _factors(node.right, power if isinstance(node.op, ast.Mult) else -power)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return [(-s if isinstance(node.op, ast.USub) else s, p, t) for s, p, t in _factors(node.operand, power)]
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return [(1, power, repr(node.value))]
    if isinstance(node, ast.Name):
        return [(1, power, node.id)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        return [(1, power, f"({_sum_text(_terms(node, 1))})")]
    raise ValueError(f"not an arithmetic expression: {ast.unparse(node)!r} is not + - * / of numbers and names")
