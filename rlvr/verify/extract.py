"""Strict final-answer extraction: the ``####`` format every rlvr environment grades.

A completion carries its final answer after the marker ``####``, which must appear
exactly once; the answer is everything after it, stripped, up to the end of the
text. Strictness is deliberate: a lenient parser (last number in the text, first
boxed value, ...) lets a policy collect reward for answers it never committed to,
and RL finds such holes fast. Flags say why extraction failed so runs can count
format failures separately from wrong answers. This is the default answer format;
`rlvr.verify.formats` holds it beside the others (``\\boxed{}``, "The answer is").

    >>> extract_final("7*6 is 42\\n#### 42")
    ('42', frozenset())

Tested by tests/test_envs.py (``.venv/bin/python -m pytest tests/test_envs.py -q``).
"""

from __future__ import annotations

import re

ANSWER_MARKER = "####"

# ASCII digits only: \d would also accept other scripts' digits, which int() converts.
_INT = re.compile(r"[+-]?[0-9]+")
# int() of very long strings is slow (and capped by sys.set_int_max_str_digits);
# no task here has answers anywhere near this long.
_MAX_INT_CHARS = 1000


def extract_final(text: str) -> tuple[str | None, frozenset[str]]:
    """The answer after the single ``####`` marker, or None with flags saying why."""
    count = text.count(ANSWER_MARKER)
    if count == 0:
        return None, frozenset({"no_answer"})
    if count > 1:
        # Two answers means the policy hedged; grading either one would reward hedging.
        return None, frozenset({"multiple_answers"})
    answer = text.split(ANSWER_MARKER, 1)[1].strip()
    if not answer:
        return None, frozenset({"empty_answer"})
    return answer, frozenset()


def parse_int(s: str) -> int | None:
    """An optional sign then ASCII digits, nothing else ("1,234", "12.0", "1 2" -> None)."""
    s = s.strip()
    if len(s) > _MAX_INT_CHARS or not _INT.fullmatch(s):
        return None
    return int(s)


def format_answer(ans: object) -> str:
    """The final-answer line for a gold completion, in the format extract_final reads."""
    return f"{ANSWER_MARKER} {ans}"
