"""The OpenAI wire format of `rlvr serve`: errors, request bodies, and completions as JSON.

Requests are pydantic models in strict mode ("3" is not an int and true is not a
number) that ignore unknown fields, as OpenAI-compatible servers do. A finished
`Sample` becomes a `Choice` (`ChoiceDecoder`): the trailing EOS dropped, the text cut
at the first stop string, and the text split by token, so that streaming chunks and
logprobs line up with the text exactly. Kept apart from the routes (`app.py`) and the
engine thread (`batcher.py`) so that what a client sees can be read, and checked
against OpenAI's API reference, in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from rlvr.types import Sample

# --------------------------------------------------------------------------- errors

class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_


def error_body(message: str, param: str | None = None, code: str | None = None,
               type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# --------------------------------------------------------------------------- requests

class _Strict(BaseModel):
    # strict: "3" is not an int and true is not a number; unknown fields are ignored as
    # OpenAI-compatible servers do (clients send e.g. `user`, `logit_bias`).
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class RequestBase(_Strict):
    model: str
    n: int = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: Optional[int] = Field(None, ge=1)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise APIError(400, "stop: at most 4 non-empty strings", "stop")
        return stops


class ChatRequest(RequestBase):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)


class CompletionRequest(RequestBase):
    # Text, several texts, token ids, or several lists of token ids (as OpenAI's API takes them).
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = Field(16, ge=0)  # OpenAI's default for completions; 0 only to score the prompt
    logprobs: Optional[int] = Field(None, ge=0, le=5)
    echo: bool = False
    # vLLM's extension: the log-prob of each prompt token (0: of the token itself, no alternatives).
    prompt_logprobs: Optional[int] = Field(None, ge=0)


class TokenizeRequest(_Strict):
    # vLLM's and SGLang's `POST /tokenize`: a text's token ids, without generating.
    model: str
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool = False


# --------------------------------------------------------------------------- completions to JSON

def _finite(x: float) -> float:
    return x if math.isfinite(x) else -9999.0


@dataclass
class Choice:
    text: str
    finish_reason: str
    tokens: list[str]          # visible tokens (trailing EOS and tokens past a stop string dropped)
    logprobs: list[float]
    pieces: list[str]          # text split by token: "".join(pieces) == text
    completion_tokens: int
    stop_reason: str | None = None  # the stop string that ended it (cut from the text), as vLLM reports it


class ChoiceDecoder:
    """A finished `Sample` as the `Choice` a response reports (stop strings applied)."""

    def __init__(self, tok):
        self.tok = tok
        self.special = set(getattr(tok, "all_special_ids", []) or [])

    def choice(self, s: Sample, stops: list[str], detail: bool) -> Choice:
        text, reason = s.text, s.finish_reason
        cut, matched = min(((i, x) for x, i in ((x, text.find(x)) for x in stops) if i >= 0), default=(-1, None))
        if not detail and cut < 0:
            return Choice(text, reason, [], [], [text], len(s.completion_ids))
        ids = list(s.completion_ids)
        lps = list(s.logprobs)
        while ids and ids[-1] in self.special:  # the EOS that ended it is not content
            ids.pop()
            lps.pop()
        ends = self._ends(ids, text)
        if cut >= 0:
            text, reason = text[:cut], "stop"
            keep = sum(1 for j in range(len(ids)) if (ends[j - 1] if j else 0) < cut)
            ids, lps, ends = ids[:keep], lps[:keep], [min(e, cut) for e in ends[:keep]]
        if ends:
            ends[-1] = len(text)
        starts = [0] + ends[:-1]
        pieces = [text[a:b] for a, b in zip(starts, ends)] or [text]
        tokens = [self.tok.decode([i]) for i in ids]
        used = len(ids) if cut >= 0 else len(s.completion_ids)
        return Choice(text, reason, tokens, [_finite(x) for x in lps], pieces, used, matched)

    def _ends(self, ids: list[int], text: str) -> list[int]:
        """End offset in `text` of each token, monotone and within the text."""
        singles = [self.tok.decode([i], skip_special_tokens=True) for i in ids]
        if "".join(singles) == text:  # char and byte-level tokenizers: cheap
            ends, at = [], 0
            for p in singles:
                at += len(p)
                ends.append(at)
            return ends
        ends, last = [], 0  # otherwise decode each prefix (sentencepiece spaces, split UTF-8)
        for j in range(len(ids)):
            last = min(max(last, len(self.tok.decode(ids[:j + 1], skip_special_tokens=True))), len(text))
            ends.append(last)
        return ends


def chat_logprobs(tokens: list[str], lps: list[float]) -> dict[str, Any]:
    return {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode("utf-8")), "top_logprobs": []}
                        for t, lp in zip(tokens, lps)]}


def completion_logprobs(tokens: list[str], lps: list[float], pieces: list[str]) -> dict[str, Any]:
    offsets, at = [], 0
    for p in pieces:
        offsets.append(at)
        at += len(p)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": [{} for _ in tokens],
            "text_offset": offsets[:len(tokens)]}
