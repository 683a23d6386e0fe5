"""What runs inside the math-verify worker processes of `rlvr.verify.math_equiv`.

``python -m rlvr.verify.math_worker`` says ``{"ready": true}`` once math-verify is
imported and warm, then reads one JSON request a line on stdin (``{"op": "compare",
"answer", "gold", "mode"}`` or ``{"op": "parses", "text"}``, each with an ``id``) and
answers each on stdout with its ``result`` or an ``error``; what a failure means is
the caller's to decide. It is the only part that imports SymPy and
math-verify, so it runs with math-verify's signal timeouts off (the caller's deadline
is the timeout) and its address space capped at ``RLVR_VERIFY_MEM_MB`` (default 4096).
The pool, the deadlines and the public API are in `math_equiv`, which never imports
this file's heavy dependencies.

Before math-verify sees a string it is lightly rewritten (both sides alike, `prepare`):
plain-text ``pi``, ``sqrt(..)``, ``**`` and ``1.5e3`` become LaTeX, so do unicode
``− √ ∞ π × · ≤ ≥ ≠`` and vulgar fractions (``½``); ``\\varnothing`` becomes
``\\emptyset``; thin-space thousands separators go; a lone word of three or more
letters is text (else ``stop`` would be s*t*o*p, equal to ``pots``); and a bare
answer is wrapped in ``$..$`` (math-verify only reads LaTeX between delimiters).
With a ``%`` on either side, the pair also counts as equivalent when it is with the
percent signs dropped (math-verify does this for integer percentages, but not for
``12.5\\%`` vs ``12.5``). math-verify's unit stripping is narrowed: it treated
single letters and letter pairs after a number as units, so ``2c`` equalled ``2d``
and ``2`` answered ``2t``; rlvr keeps only word and unmistakable units (``5 m`` is
no longer ``5``: a recall cost taken for precision). The audit in
`rlvr.verify.audit_set` measures what all this buys.
"""

from __future__ import annotations

import json
import os
import re
import sys
import unicodedata
from typing import Literal

MEM_MB = int(os.environ.get("RLVR_VERIFY_MEM_MB", "4096"))

# "rlvr": the rewriting and narrowed units below; "plain": math-verify as documented (the audit's baseline).
Mode = Literal["rlvr", "plain"]


# --- the light rewriting --------------------------------------------------------------

_HAS_DELIMS = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed")
_PLAIN_PI = re.compile(r"(?<![\\A-Za-z])pi(?![A-Za-z])")
_POWER = re.compile(r"\*\*\s*([0-9]+|[A-Za-z])")
_THIN_THOUSANDS = re.compile(r"(?<=[0-9])\\,(?=[0-9]{3}(?![0-9]))")
_PLAIN_SQRT = re.compile(r"(?<![\\A-Za-z])sqrt\s*\(")
_ROOT_ATOM = re.compile("\u221a\\s*([0-9]+(?:\\.[0-9]+)?|[A-Za-z])")
_E_NOTATION = re.compile(r"(?<![A-Za-z0-9.\\])([0-9]+(?:\.[0-9]+)?)[eE]([+-]?[0-9]+)(?![0-9.])")
_WORD = re.compile(r"[A-Za-z]{3,}")
_MATH_WORDS = frozenset({"inf", "infty", "infinity", "sqrt", "frac", "pi", "oo"})
_UNICODE = {"\u2212": "-", "\u221e": "\\infty ", "\u03c0": "\\pi ", "\u00d7": "\\times ", "\u22c5": "\\cdot ",
            "\u00b7": "\\cdot ", "\u2264": "\\le ", "\u2265": "\\ge ", "\u2260": "\\ne "}
_PERCENT = re.compile(r"\\?%")


def _latex_sqrt(s: str) -> str:
    """``sqrt(x+1)`` -> ``\\sqrt{x+1}`` with matched parentheses (unmatched: left alone)."""
    out, i = [], 0
    while (m := _PLAIN_SQRT.search(s, i)) is not None:
        depth, j = 1, m.end()
        while j < len(s) and depth:
            depth += {"(": 1, ")": -1}.get(s[j], 0)
            j += 1
        if depth:
            break
        out.append(s[i:m.start()] + "\\sqrt{" + s[m.end():j - 1] + "}")
        i = j
    out.append(s[i:])
    return "".join(out)


def _vulgar_fractions(s: str) -> str:
    """``½`` -> ``\\frac{1}{2}`` (``1½`` then reads as the mixed number 3/2)."""
    out = []
    for ch in s:
        if unicodedata.category(ch) == "No" and unicodedata.decomposition(ch).startswith("<fraction>"):
            parts = unicodedata.decomposition(ch).split()[1:]  # "<fraction> 0031 2044 0032"
            num, _, den = "".join(chr(int(c, 16)) for c in parts).partition("\u2044")
            out.append(f"\\frac{{{num}}}{{{den}}}" if num.isdigit() and den.isdigit() else ch)
        else:
            out.append(ch)
    return "".join(out)


def prepare(s: str) -> str:
    """The string math-verify parses for one side of a comparison (see the module docstring)."""
    s = s.strip().replace("\\varnothing", "\\emptyset")
    if _WORD.fullmatch(s) and s.lower() not in _MATH_WORDS:
        # A lone word is text: math-verify would read "stop" as s*t*o*p, equal to "pots".
        return f"$\\text{{{s}}}$"
    for k, v in _UNICODE.items():
        s = s.replace(k, v)
    s = _vulgar_fractions(s)
    s = s.replace("\u221a(", "sqrt(")
    s = _ROOT_ATOM.sub(r"\\sqrt{\1}", s).replace("\u221a", "\\sqrt")
    s = _E_NOTATION.sub(r"\1\\times 10^{\2}", s)
    s = _PLAIN_PI.sub(r"\\pi ", s)
    s = _POWER.sub(r"^{\1}", s)
    s = _THIN_THOUSANDS.sub("", s)
    s = _latex_sqrt(s)
    return s if _HAS_DELIMS.search(s) else f"${s}$"


# --- math-verify, and the request loop ------------------------------------------------

# math-verify drops a trailing unit word after a number, and its list holds single letters
# and letter pairs that are everyday variables (c d g h l m o s t, ab bc am ...): "2c" and
# "2d" both become 2, "a + c" equals "a + d", "2" answers "2t". rlvr keeps only the units
# that are words or unmistakable abbreviations; text-wrapped units (5\text{ m}) still go.
_AMBIGUOUS_UNITS = frozenset({"ab", "bc", "am", "pm", "by", "st", "rd", "th", "mt", "mp", "cc", "gm", "dm", "lt",
                              "rs", "sq"})
_units_regex: dict[str, re.Pattern] = {}


def _use_units(mode: Mode) -> None:
    """Point math-verify at its own unit regex ("plain") or rlvr's safer one (worker only)."""
    import latex2sympy2_extended.math_normalization as mn

    if not _units_regex:
        safe = sorted({u for u in mn.units if len(u.strip()) > 1 and u.strip() not in _AMBIGUOUS_UNITS},
                      key=len, reverse=True)
        pattern = "(?:" + "|".join(map(re.escape, safe)) + ")(?:s|es)?"
        _units_regex["plain"] = mn.units_regex
        _units_regex["rlvr"] = re.compile(f"(\\d|\\}}|\\s)\\s*(?:{pattern})\\s*$")
    mn.units_regex = _units_regex[mode]


def _compare(answer: str, gold: str, mode: Mode = "rlvr") -> bool:
    """parse+verify with math-verify's signal timeouts off. "plain": math-verify as documented."""
    from math_verify import parse, verify

    _use_units(mode)
    if mode == "plain":
        return bool(verify(parse(gold, parsing_timeout=None), parse(answer, parsing_timeout=None),
                           timeout_seconds=None))
    g, a = parse(prepare(gold), parsing_timeout=None), parse(prepare(answer), parsing_timeout=None)
    # allow_set_relation_comp: "0 \le x \le 1" answers "[0,1]" (math-verify only allows it
    # when the answer is the set).
    if verify(g, a, timeout_seconds=None, allow_set_relation_comp=True):
        return _exact_decimal(answer, gold, g)
    if "%" in answer or "%" in gold:
        return _compare(_PERCENT.sub("", answer), _PERCENT.sub("", gold), mode)
    return False


_DECIMAL = re.compile(r"[-+]?(\d[\d,]*)?\.\d+")
_PLAIN = re.compile(r"[-+]?(\d[\d,]*)?(\.\d+)?%?|[-+]?\d+/\d+")


def _exact_decimal(answer: str, gold: str, parsed_gold: list) -> bool:
    """math-verify compares numbers rounded to 6 places, so ``0.333333`` answered 1/3 and
    ``3.1415927`` answered \\pi. A decimal answer to a gold that is not itself a plain number
    must equal it exactly (``0.375`` is 3/8; ``0.333333`` is not 1/3)."""
    a = answer.strip().strip("$").strip()
    if not _DECIMAL.fullmatch(a) or _PLAIN.fullmatch(gold.strip().strip("$").strip()):
        return True
    import sympy

    value = next((x for x in parsed_gold if isinstance(x, sympy.Basic)), None)
    if value is None or not getattr(value, "is_number", False) or value.has(sympy.Float):
        return True  # a set, an equation, an approximate gold: math-verify's judgement stands
    return sympy.simplify(value - sympy.Rational(a.replace(",", ""))) == 0


def _parses(text: str) -> bool:
    """Whether math-verify reads `text` as mathematics (not only as a fallback string)."""
    from math_verify import parse

    _use_units("rlvr")
    return any(not isinstance(x, str) for x in parse(prepare(text), parsing_timeout=None))


def main() -> None:
    import logging

    # The protocol owns the real stdout; anything a library prints goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        import resource

        limit = MEM_MB * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _compare("1/2", "\\frac{1}{2}")  # import and warm the parser before saying ready
    proto.write('{"ready": true}\n')
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "parses":
                result = _parses(req["text"])
            else:
                result = _compare(req["answer"], req["gold"], req.get("mode", "rlvr"))
            proto.write(json.dumps({"id": req["id"], "result": result}) + "\n")
        except BaseException as e:  # MemoryError, RecursionError, sympy bugs: the caller decides
            proto.write(json.dumps({"id": req["id"], "error": f"{type(e).__name__}: {e}"[:2000]}) + "\n")


if __name__ == "__main__":
    main()
