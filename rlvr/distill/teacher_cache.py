"""What a teacher is asked and answers, and the on-disk cache of every answer.

Why a cache: distillation sends thousands of paid requests that may take hours, so
every answered request is stored the moment it arrives, and a run killed at any point
resumes without re-sending (and re-paying for) anything that already got an answer.
`HTTPTeacher` and `LocalTeacher` (`rlvr.distill.teacher`) share it.

One JSON file per answered request, `cache_dir/<key[:2]>/<key>.json`, written
atomically (temp file + rename, `rlvr.atomic.write_json`), so concurrent writers and
kills can never leave half a file under a real name; a file that does not parse anyway
(a stray edit, a foreign tool) is ignored and the request is sent again. The key is the
sha256 of the canonical request: base_url, model, messages (a multi-turn episode's whole
conversation so far), n, temperature, top_p, max_tokens, seed, and the stop strings where
there are some; never the API key. A cached answer is reused whatever the temperature:
the same request with `seed=None` gets the same completions back. Change `seed` to get
fresh samples.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr.atomic import write_json


@dataclass
class ChatRequest:
    """One chat completion request: `n` completions of `messages`, each ending at the model's
    end of turn or at one of the `stop` strings (kept in the text: a tool call's closing tag)."""

    messages: list[dict[str, str]]
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class ChatResult:
    """The `n` completions of a request and the usage the server reported; `cached`: read from disk."""

    texts: list[str]
    finish_reasons: list[str]
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens, total_tokens
    cached: bool = False
    logprobs: list[float] | None = None  # a scoring request's answer: the log-prob of each scored token

    @property
    def total_tokens(self) -> int:
        u = self.usage
        return int(u.get("total_tokens") or (u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)))


def canonical_request(base_url: str, model: str, req: ChatRequest) -> dict[str, Any]:
    return {"base_url": base_url.rstrip("/"), "model": model,
            "messages": [dict(m) for m in req.messages], "n": req.n, "temperature": req.temperature,
            "top_p": req.top_p, "max_tokens": req.max_tokens, "seed": req.seed,
            **({"stop": list(req.stop)} if req.stop else {})}  # absent when unset: older caches keep their keys


def cache_key(base_url: str, model: str, req: ChatRequest) -> str:
    return key_of(canonical_request(base_url, model, req))


def key_of(canonical: dict[str, Any]) -> str:
    """The cache key of a canonical request: the sha256 of its sorted JSON."""
    blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ResultCache:
    """One atomically written JSON file per answered request; unreadable files count as absent."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None

    def path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> ChatResult | None:
        if self.root is None:
            return None
        try:
            d = json.loads(self.path(key).read_text())
            r = d["result"]
            return ChatResult(texts=list(r["texts"]), finish_reasons=list(r["finish_reasons"]),
                              usage=dict(r["usage"]), cached=True,
                              logprobs=None if r.get("logprobs") is None else [float(x) for x in r["logprobs"]])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing, or a file we did not write whole: ask again

    def put(self, key: str, request: dict[str, Any], result: ChatResult) -> None:
        if self.root is None:
            return
        write_json(self.path(key), {"key": key, "request": request, "result": {
            "texts": result.texts, "finish_reasons": result.finish_reasons, "usage": result.usage,
            **({"logprobs": result.logprobs} if result.logprobs is not None else {})}})
