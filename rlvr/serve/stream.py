"""Streaming responses of `rlvr serve`: finished choices as server-sent events, per token.

Chat and text completions stream alike: each choice's text in one chunk per token (with
that token's log-prob when asked), then a chunk carrying its finish reason, then, when
the client asked for `stream_options.include_usage`, one chunk with the usage and no
choices, then `[DONE]`. They differ only in how a chunk carries text (chat nests it in
a `delta` and opens each choice with the assistant's role; completions put it flat),
which a `ChunkShape` says, so both endpoints share `events` and cannot drift apart.

    StreamingResponse(events(head, CHAT, choices, per_token, usage), media_type="text/event-stream")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from rlvr.serve.schema import Choice


@dataclass(frozen=True)
class ChunkShape:
    """How one endpoint's chunks carry a choice's text."""
    object: str  # the chunks' `object`
    text: Callable[[str], dict[str, Any]]  # the fields of a chunk carrying this piece of text
    end: dict[str, Any]  # those fields in the chunk that gives the finish reason
    opening: dict[str, Any] | None = None  # those fields in a chunk sent before any text


CHAT = ChunkShape("chat.completion.chunk", text=lambda piece: {"delta": {"content": piece}}, end={"delta": {}},
                  opening={"delta": {"role": "assistant", "content": ""}})
TEXT = ChunkShape("text_completion", text=lambda piece: {"text": piece}, end={"text": ""})


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


async def events(head: dict[str, Any], shape: ChunkShape, choices: list[Choice],
                 per_token: Callable[[Choice, int], Any], usage: dict[str, int] | None) -> AsyncIterator[str]:
    """The stream of `choices`. `head` is the response's id, object, created and model,
    which every chunk repeats (with the shape's `object`); `per_token(choice, j)` is the
    `logprobs` of the chunk of its j-th token; `usage` None means the client did not ask
    for it, and then no chunk carries a `usage` key."""

    def chunk(choices_: list[dict[str, Any]], usage_: dict[str, int] | None = None) -> str:
        out = {**head, "object": shape.object, "choices": choices_}
        if usage is not None:
            out["usage"] = usage_
        return sse(out)

    def one(i: int, fields: dict[str, Any], logprobs: Any = None, finish_reason: str | None = None) -> str:
        return chunk([{"index": i, **fields, "logprobs": logprobs, "finish_reason": finish_reason}])

    for i, ch in enumerate(choices):
        if shape.opening is not None:
            yield one(i, shape.opening)
        for j, piece in enumerate(ch.pieces):
            yield one(i, shape.text(piece), per_token(ch, j))
        yield one(i, shape.end, finish_reason=ch.finish_reason)
    if usage is not None:
        yield chunk([], usage)
    yield "data: [DONE]\n\n"
