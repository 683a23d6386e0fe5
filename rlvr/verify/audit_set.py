"""How good is `equivalent`? Precision and recall on hand-labelled answer pairs.

`data/equivalence_audit.jsonl` holds (answer, gold, equivalent?) pairs, labelled by
hand, across the forms answers take: fractions and decimals, ``\\frac`` /
``\\dfrac`` / ``\\tfrac``, sets, intervals, tuples, units, LaTeX vs plain text,
signs, thousands separators, percentages, ``\\boxed{}`` and ``$`` wrappers,
equations, matrices, and negatives that differ subtly (``12`` vs ``21``, ``0.5``
vs ``0.05``, ``\\pi`` vs ``3.14``) or hedge (``12 or 21`` vs ``12``). The labels are
the ground truth: a rounded decimal is not an exact value (``0.333333`` is not
``\\frac{1}{3}``), a unit or a ``$``/``\\boxed`` wrapper does not change an answer.
Each pair records its `batch`: 1, the first 315, written before any pair was
scored; 2, 75 written after rlvr's normalisations were designed on batch 1 and
never used to change them (a blind check); 3, 29 found by probing the verifier
(unicode symbols, e-notation, words, math-verify's unit stripping), added before
the fixes they prompted.

`audit_verifier` scores three methods on them: `equivalent` (rlvr's), math-verify
as its README calls it (parse both strings, verify), and a naive baseline (exact
match after removing whitespace and ``$``). Precision = TP / (TP + FP); recall =
TP / (all equivalent pairs), so a pair the verifier could not decide (timeout,
error) counts against recall and is listed.

    from rlvr.verify.audit_set import audit_verifier, format_audit
    print(format_audit(audit_verifier()))          # also: rlvr verify-audit

Run its tests: ``.venv/bin/python -m pytest tests/test_math_verify.py -q``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rlvr.verify.math_equiv import VerifierError, VerifierTimeout, equivalent_many

AUDIT_PATH = Path(__file__).parent / "data" / "equivalence_audit.jsonl"


@dataclass(frozen=True)
class AuditPair:
    answer: str
    gold: str
    equivalent: bool
    kind: str = ""
    batch: int = 0


def load_audit(path: str | Path = AUDIT_PATH) -> list[AuditPair]:
    """The labelled pairs; a bad line fails with the file and line number."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pairs.append(AuditPair(str(row["answer"]), str(row["gold"]), bool(row["equivalent"]),
                                       str(row.get("kind", "")), int(row.get("batch", 0))))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: bad audit pair ({e!r})") from None
    return pairs


def naive_equivalent(answer: str, gold: str) -> bool:
    """The baseline: exact match after removing whitespace and ``$``."""
    def key(s: str) -> str:
        return "".join(s.split()).replace("$", "")
    return key(answer) == key(gold)


def _score(pairs: list[AuditPair], got: list) -> dict:
    tp = fp = fn = tn = errors = timeouts = 0
    wrong = []
    for p, g in zip(pairs, got, strict=True):
        if isinstance(g, BaseException):
            timeouts += isinstance(g, VerifierTimeout)
            errors += not isinstance(g, VerifierTimeout)
            wrong.append({"answer": p.answer, "gold": p.gold, "label": p.equivalent, "got": repr(g), "kind": p.kind})
            continue
        if g and p.equivalent:
            tp += 1
        elif g:
            fp += 1
        elif p.equivalent:
            fn += 1
        else:
            tn += 1
        if bool(g) != p.equivalent:
            wrong.append({"answer": p.answer, "gold": p.gold, "label": p.equivalent, "got": bool(g), "kind": p.kind})
    positives = sum(p.equivalent for p in pairs)
    return {"precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / positives if positives else float("nan"),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn, "errors": errors, "timeouts": timeouts, "wrong": wrong}


def audit_verifier(timeout: float = 5.0, pairs: list[AuditPair] | None = None) -> dict:
    """Precision/recall of each method on the audit set (see the module docstring)."""
    pairs = load_audit() if pairs is None else pairs
    qs = [(p.answer, p.gold) for p in pairs]
    methods: dict[str, Callable[[], list]] = {
        "equivalent (rlvr)": lambda: equivalent_many(qs, timeout, errors="return"),
        "math-verify as-is": lambda: equivalent_many(qs, timeout, errors="return", _mode="plain"),
        "naive exact match": lambda: [naive_equivalent(a, g) for a, g in qs],
    }
    result = {"n": len(pairs), "equivalent": sum(p.equivalent for p in pairs), "timeout": timeout, "methods": {}}
    for name, run in methods.items():
        start = time.perf_counter()
        got = run()
        result["methods"][name] = {**_score(pairs, got), "seconds": time.perf_counter() - start}
    return result


def format_audit(result: dict, show_wrong: str | None = "equivalent (rlvr)") -> str:
    """A small table, then the pairs that `show_wrong` (a method name) got wrong."""
    lines = [f"{result['n']} labelled pairs ({result['equivalent']} equivalent), timeout {result['timeout']:g}s", "",
             f"{'method':<20} {'precision':>9} {'recall':>7} {'TP':>4} {'FP':>4} {'FN':>4} {'TN':>4} "
             f"{'err/t.o.':>8} {'time':>6}"]
    for name, m in result["methods"].items():
        lines.append(f"{name:<20} {m['precision']:>9.2%} {m['recall']:>7.2%} {m['tp']:>4} {m['fp']:>4} {m['fn']:>4} "
                     f"{m['tn']:>4} {str(m['errors']) + '/' + str(m['timeouts']):>8} {m['seconds']:>5.1f}s")
    if show_wrong and show_wrong in result["methods"]:
        wrong = result["methods"][show_wrong]["wrong"]
        lines += ["", f"{show_wrong} disagrees with the label on {len(wrong)} pair(s):"]
        lines += [f"  [{w['kind']}] answer {w['answer']!r} gold {w['gold']!r}: label {w['label']}, got {w['got']}"
                  for w in wrong]
    return "\n".join(lines)


__all__ = ["AUDIT_PATH", "AuditPair", "VerifierError", "audit_verifier", "format_audit", "load_audit",
           "naive_equivalent"]
