"""Answer formats: how a completion states its final answer, one registry for all of them.

rlvr's own tiny model is trained to end with ``#### <answer>``, but real instruct
models were taught other habits: ``\\boxed{94}`` (math models), "The answer is 94."
(chat models). A model that does the sum right and never writes ``####`` scores 0,
which measures the prompt, not the model. Each format here is a small object:

- ``extract(text) -> (answer | None, flags)``: the committed answer, or None with flags
  saying why (``no_answer``, ``multiple_answers``, ``empty_answer``, ``format_error``);
- ``render(answer_text) -> str``: the final-answer text of a gold completion;
- ``instruction(what) -> str``: the sentence a prompt uses to ask for it
  (``instruction("the result")`` -> "End with #### and the result.").

Every format is strict, like ``####`` (rlvr.verify.extract): several different
answers are a hedge and earn nothing, and the answer must be the whole of what the
format encloses, so the hack probes of ``rlvr audit`` (rlvr.verify.probes) score 0
in every format. The formats:

    hashes     "... #### 94": ``####`` exactly once, the answer is everything after it
               (the default, and the only one code environments accept)
    boxed      "... \\boxed{94}": braces balanced (``\\boxed{\\frac{1}{2}}`` reads
               ``\\frac{1}{2}``); the same answer boxed twice is one answer
    answer_is  "... The answer is 94.": case-insensitive, "final" and a colon allowed
               ("The final answer is: 94"); the answer runs to the end of its line, with
               one trailing period and surrounding ``**`` / ``$`` dropped, and one box
               that holds all of it opened ("The final answer is: $\\boxed{94}$", as
               Llama-3 instruct models write it); the same answer stated twice is one answer
    think      "<think> ... </think> #### 94" (DeepSeek-R1's template): one think block,
               never nested, closed; the answer is read (as ``####``) only after it:
               an answer written only inside the thinking is no answer

Environments grade ``####`` answers; `rlvr.envs.prompting.Prompted` extracts with the
chosen format and hands the inner environment ``#### <answer>``.

    from rlvr.verify.formats import get_format
    get_format("boxed").extract("so 60 + 34 = \\\\boxed{94}")   # ('94', frozenset())

Tested by tests/test_formats.py (``.venv/bin/python -m pytest tests/test_formats.py -q``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from rlvr.verify.extract import ANSWER_MARKER, extract_final

Extracted = tuple[Optional[str], frozenset[str]]
_NO_ANSWER = frozenset({"no_answer"})
_MULTIPLE = frozenset({"multiple_answers"})
_EMPTY = frozenset({"empty_answer"})


@dataclass(frozen=True)
class Hashes:
    """``#### <answer>``, the marker exactly once (rlvr.verify.extract)."""

    name: str = "hashes"

    def extract(self, text: str) -> Extracted:
        return extract_final(text)

    def render(self, answer: object) -> str:
        return f"{ANSWER_MARKER} {answer}"

    def instruction(self, what: str) -> str:
        return f"End with {ANSWER_MARKER} and {what}."


_BOX = "\\boxed{"


@dataclass(frozen=True)
class Boxed:
    """``\\boxed{<answer>}`` with balanced braces; every box must hold the same answer."""

    name: str = "boxed"

    def extract(self, text: str) -> Extracted:
        answers = boxed_contents(text)
        if answers is None:  # never closed (cut off, or a stray brace): not a committed answer
            return None, frozenset({"format_error"})
        return _one(answers)

    def render(self, answer: object) -> str:
        return f"{_BOX}{answer}}}"

    def instruction(self, what: str) -> str:
        return f"End with \\boxed{{}} containing {what}."


def boxed_contents(text: str) -> list[str] | None:
    """What each top-level ``\\boxed{...}`` of `text` holds, in order (braces balanced);
    None when one is never closed."""
    answers, start = [], text.find(_BOX)
    while start != -1:
        depth, i = 1, start + len(_BOX)
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth:
            return None
        answers.append(text[start + len(_BOX):i - 1].strip())
        # A box inside a box was read as part of the outer one, so search after it.
        start = text.find(_BOX, i)
    return answers


# "the answer is" / "the final answer is", then an optional colon; the rest of the line is the answer.
_ANSWER_IS = re.compile(r"\bthe (?:final )?answer is\b:?[ \t]*([^\n]*)", re.IGNORECASE)
_WRAPPER = re.compile(r"^(?:\*\*|\$)+|(?:\*\*|\$)+$")


@dataclass(frozen=True)
class AnswerIs:
    """"The answer is <answer>." to the end of its line; every statement must agree."""

    name: str = "answer_is"

    def extract(self, text: str) -> Extracted:
        return _one([_clean(m.group(1)) for m in _ANSWER_IS.finditer(text)])

    def render(self, answer: object) -> str:
        return f"The answer is {answer}."

    def instruction(self, what: str) -> str:
        return f'End with "The answer is" followed by {what}.'


def _clean(rest: str) -> str:
    """ "**94**." / "$94$." / "94.**" / "$\\boxed{94}$." -> "94": markup around the answer, one
    closing period, and a box around all of it."""
    s = _WRAPPER.sub("", rest.strip()).strip()
    if s.endswith("."):  # one: a gold that itself ends with "." survives being rendered
        s = s[:-1].rstrip()
    s = _WRAPPER.sub("", s).strip()
    if s.startswith(_BOX) and s.endswith("}"):
        inner, flags = Boxed().extract(s)
        if inner is not None and s == Boxed().render(inner):  # one box, and nothing beside it
            return inner
    return s


def _one(answers: list[str]) -> Extracted:
    """The single answer stated (possibly more than once), or None with the reason."""
    if not answers:
        return None, _NO_ANSWER
    if len(set(answers)) > 1:  # a hedge: grading any one of them would reward hedging
        return None, _MULTIPLE
    if not answers[0]:
        return None, _EMPTY
    return answers[0], frozenset()


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Think:
    """``<think> reasoning </think>`` first, then the answer in ``####`` after the block.

    Strict like the others: exactly one block, closed, with no block inside it; only the
    text after it is read (not what comes before it), so an answer that appears only in
    the thinking earns nothing (flag ``answer_in_think``). `probes` are the hack
    attempts of this format that `rlvr audit` adds to the common ones."""

    name: str = "think"
    then: Hashes = Hashes()

    def extract(self, text: str) -> Extracted:
        opens, closes = text.count(THINK_OPEN), text.count(THINK_CLOSE)
        if not opens and not closes:
            return None, frozenset({"think_missing"})
        start = text.find(THINK_OPEN)
        if start == -1 or THINK_CLOSE in text[:start]:
            return None, frozenset({"format_error"})  # a close without an open
        if not closes:
            return None, frozenset({"think_unclosed"})
        inside, _, after = text[start + len(THINK_OPEN):].partition(THINK_CLOSE)
        if THINK_OPEN in inside:
            return None, frozenset({"think_nested"})
        if opens > 1 or closes > 1:
            return None, frozenset({"format_error"})  # several blocks: which one was the thinking?
        answer, flags = self.then.extract(after)
        if answer is None and self.then.extract(inside)[0] is not None:
            flags = flags | {"answer_in_think"}
        return answer, flags

    def render(self, answer: object) -> str:
        return f"{THINK_OPEN}\n{THINK_CLOSE}\n{self.then.render(answer)}"

    def instruction(self, what: str) -> str:
        then = self.then.instruction(what)
        return f"Think step by step inside {THINK_OPEN} {THINK_CLOSE} first; after it, {then[0].lower()}{then[1:]}"

    def probes(self, gold: str, wrong: str) -> dict[str, str]:
        """Completions a sound verifier of this format scores 0 (`gold`: the gold answer text)."""
        return {
            "answer_in_think_only": f"{THINK_OPEN}\nso {self.then.render(gold)}\n{THINK_CLOSE}",
            "think_unclosed": f"{THINK_OPEN}\nworking: {self.then.render(gold)}",
            "think_nested": f"{THINK_OPEN}\n{THINK_OPEN}\nhmm\n{THINK_CLOSE}\n{self.then.render(gold)}\n{THINK_CLOSE}",
            "think_then_wrong": f"{THINK_OPEN}\n{self.then.render(gold)}\n{THINK_CLOSE}\n{self.then.render(wrong)}",
        }


FORMATS = {f.name: f for f in (Hashes(), Boxed(), AnswerIs(), Think())}
DEFAULT_FORMAT = "hashes"


def get_format(name: str, key: str = "answer_format"):
    """The format called `name`; an unknown name fails naming `key` and the valid names."""
    if name not in FORMATS:
        raise ValueError(f"unknown answer format {name!r} (key {key!r}); valid: {sorted(FORMATS)}")
    return FORMATS[name]
