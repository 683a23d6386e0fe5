"""Teacher clients: any OpenAI-compatible chat endpoint, or a local checkpoint, behind one call.

    teacher = HTTPTeacher(TeacherConfig(base_url="http://127.0.0.1:8000/v1", model="qwen",
                                        api_key_env="OPENAI_API_KEY", cache_dir="runs/x/teacher_cache"))
    results = teacher.complete([ChatRequest(messages=[{"role": "user", "content": "2+2?"}], n=4)])
    results[0].texts  # 4 completions

Why it looks like this: distillation sends thousands of paid requests that may take hours.
So every answered request is cached on disk the moment it arrives, and a run killed at
any point resumes without re-sending (and re-paying for) anything that already got an
answer; transient failures (429, 5xx, connection errors, timeouts) are retried with
exponential backoff and full jitter, honouring `Retry-After`; anything else (a 400, a
401) fails at once with the server's own message; and a token budget stops the run cleanly.

The cache (`teacher_cache.py`): one JSON file per answered request, written atomically
and keyed by the sha256 of the canonical request, never by the API key, which is read
from the environment variable named by `api_key_env` at call time and only ever sent
as `Authorization: Bearer ...`. A cached answer is reused whatever the temperature:
change `seed` to get fresh samples.

The budget (`budget_tokens`, prompt + completion tokens as the server's `usage` reports
them; cache hits are free) counts what this teacher object spent (`spent_tokens`). A
request is sent only while `spent < budget`, and, while other requests are in flight,
only if its worst case (prompt characters + n * max_tokens, an upper bound on its tokens
for ordinary tokenizers) fits beside theirs. So at most one request is ever sent past
the point where it could overflow: when the budget runs out, `complete` stops sending,
lets what is in flight finish and land in the cache, and raises `BudgetExceeded` with
`spent <= budget + one request's tokens`.

`LocalTeacher` answers the same requests with a local model on an rlvr engine (the backend
`engine` names, torch by default) through the tokenizer's chat template, counts usage from
token ids, and shares the cache format.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rlvr.distill.teacher_cache import ChatRequest, ChatResult, ResultCache, cache_key, canonical_request, key_of
from rlvr.types import Sampling

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})  # 408/409/425: transient by spec


class TeacherError(RuntimeError):
    """The endpoint refused a request (non-retryable status) or kept failing past `max_retries`."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class BudgetExceeded(RuntimeError):
    """The token budget ran out; everything answered so far is cached, and `results` holds
    this call's answers in request order (None where a request was not sent)."""

    def __init__(self, spent: int, budget: int, answered: int, remaining: int, results: list | None = None):
        super().__init__(f"token budget exhausted: spent {spent} of {budget} tokens; "
                         f"{answered} requests answered, {remaining} not sent (answers are cached; "
                         f"rerun with a larger budget to continue)")
        self.spent, self.budget, self.answered, self.remaining = spent, budget, answered, remaining
        self.results = results or []


@dataclass
class TeacherConfig:
    """Where the teacher lives and how hard to push it."""

    base_url: str = "http://127.0.0.1:8000/v1"  # the endpoint's root; /chat/completions is appended
    model: str = "teacher"  # the model name the endpoint expects
    api_key_env: str | None = None  # NAME of the env variable holding the key; None = send no key
    max_concurrency: int = 8  # requests in flight at once
    timeout_s: float = 120.0  # per HTTP attempt
    max_retries: int = 8  # retries after the first attempt, for 429 / 5xx / connection errors / timeouts
    backoff_base_s: float = 1.0  # attempt k sleeps uniform(0, min(max, base * 2**k)) (full jitter)
    backoff_max_s: float = 60.0
    budget_tokens: int | None = None  # prompt + completion tokens this teacher may spend; None = no cap
    cache_dir: str | None = None  # None = no cache


# ---------------------------------------------------------------- HTTP teacher


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to sleep before retry `attempt` (0-based): Retry-After if given, else full jitter."""
    if retry_after is not None:
        return max(0.0, retry_after)
    return (rng or random).uniform(0.0, min(cap, base * 2 ** attempt))


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _error_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message", err) if isinstance(err, dict) else err
        return str(msg)[:2000]
    except ValueError:
        return resp.text[:2000]


class HTTPTeacher:
    """An OpenAI-compatible `/chat/completions` client with cache, retries and a token budget."""

    def __init__(self, cfg: TeacherConfig):
        if cfg.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {cfg.max_concurrency}")
        self.cfg = cfg
        self.cache = ResultCache(cfg.cache_dir)
        self.spent_tokens = 0  # tokens of answers this object received (cache hits are free)
        self.requests_sent = 0  # HTTP attempts, retries included
        self._lock = threading.Condition()
        self._reserved = 0.0  # worst-case tokens of requests in flight
        self._in_flight = 0
        self._rng = random.Random()

    # -- the public call

    def complete(self, requests: list[ChatRequest]) -> list[ChatResult]:
        cfg = self.cfg
        keys = [key_of(self._canonical(r)) for r in requests]
        results: list[ChatResult | None] = [self.cache.get(k) for k in keys]
        todo: dict[str, list[int]] = {}  # identical requests in one call are sent once
        for i, (k, r) in enumerate(zip(keys, results)):
            if r is None:
                todo.setdefault(k, []).append(i)
        if not todo:
            return results  # type: ignore[return-value]
        headers = {"Content-Type": "application/json", **self._auth_header()}
        stop = threading.Event()
        exhausted: list[int] = []

        def one(key: str, idxs: list[int]) -> None:
            req = requests[idxs[0]]
            estimate = self._estimate(req)
            if not self._admit(estimate, stop):
                exhausted.append(1)
                return
            res = None
            try:
                res = self._send(client, headers, req, stop)
            finally:  # settle the real cost in the same step that drops the reservation
                self._release(estimate, res.total_tokens if res is not None else 0)
            if res is None:
                return
            self.cache.put(key, self._canonical(req), res)
            for i in idxs:
                results[i] = res

        limits = httpx.Limits(max_connections=cfg.max_concurrency,
                              max_keepalive_connections=cfg.max_concurrency)
        with httpx.Client(timeout=cfg.timeout_s, limits=limits) as client, \
                ThreadPoolExecutor(cfg.max_concurrency, thread_name_prefix="teacher") as pool:
            futures = [pool.submit(one, k, idxs) for k, idxs in todo.items()]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            error = next((f.exception() for f in done if f.exception() is not None), None)
            if error is not None:
                stop.set()  # the rest return at once; those in flight finish and are cached
                with self._lock:
                    self._lock.notify_all()
                for f in futures:
                    f.cancel()
            wait(futures)
        if error is not None:
            raise error
        missing = sum(r is None for r in results)
        if missing:
            raise BudgetExceeded(self.spent_tokens, int(cfg.budget_tokens or 0),
                                 answered=len(results) - missing, remaining=missing, results=results)
        return results  # type: ignore[return-value]

    # -- budget

    def _estimate(self, req: ChatRequest) -> float:
        """An upper bound on a request's tokens: one token per prompt character (plus framing)."""
        if req.max_tokens is None:
            return math.inf
        prompt = sum(len(m.get("content") or "") + 8 for m in req.messages)
        return prompt + req.n * req.max_tokens

    def _admit(self, estimate: float, stop: threading.Event) -> bool:
        budget = self.cfg.budget_tokens
        with self._lock:
            while True:
                if stop.is_set():
                    return False
                if budget is None:
                    break
                if self.spent_tokens >= budget:
                    return False
                if self._in_flight == 0 or self.spent_tokens + self._reserved + estimate <= budget:
                    break
                self._lock.wait()  # wait for in-flight answers to settle what is really spent
            self._in_flight += 1
            self._reserved += estimate
            return True

    def _release(self, estimate: float, spent: int) -> None:
        with self._lock:
            self.spent_tokens += spent
            self._in_flight -= 1
            self._reserved -= estimate
            if self._in_flight == 0:
                self._reserved = 0.0  # inf - inf would be nan
            self._lock.notify_all()

    # -- HTTP

    def _auth_header(self) -> dict[str, str]:
        name = self.cfg.api_key_env
        if not name:
            return {}
        key = os.environ.get(name)
        if not key:
            raise TeacherError(f"environment variable {name} (api_key_env) is not set")
        return {"Authorization": f"Bearer {key}"}

    # -- what a request is (a subclass that asks something else overrides these)

    path = "/chat/completions"

    def _canonical(self, req: ChatRequest) -> dict[str, Any]:
        return canonical_request(self.cfg.base_url, self.cfg.model, req)

    def _body(self, req: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.cfg.model, "messages": req.messages, "n": req.n,
                                "temperature": req.temperature, "top_p": req.top_p}
        if req.max_tokens is not None:
            body["max_tokens"] = req.max_tokens
        if req.seed is not None:
            body["seed"] = req.seed
        if req.stop:
            body["stop"] = list(req.stop)
        return body

    def _send(self, client: httpx.Client, headers: dict[str, str], req: ChatRequest,
              stop: threading.Event) -> ChatResult | None:
        cfg = self.cfg
        url = cfg.base_url.rstrip("/") + self.path
        body = self._body(req)
        last = ""
        for attempt in range(cfg.max_retries + 1):
            if attempt and stop.is_set():
                return None
            retry_after = None
            with self._lock:
                self.requests_sent += 1
            try:
                resp = client.post(url, json=body, headers=headers)
            except (httpx.TransportError, httpx.TimeoutException) as e:  # connection errors, timeouts
                last = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    return self._parse(resp, req)
                msg = _error_message(resp)
                if resp.status_code not in RETRYABLE_STATUS and not 500 <= resp.status_code < 600:
                    raise TeacherError(f"{url} answered {resp.status_code}: {msg}", status=resp.status_code)
                last = f"{resp.status_code}: {msg}"
                retry_after = _retry_after(resp)
            if attempt < cfg.max_retries:
                time.sleep(backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s,
                                         retry_after, self._rng))
        raise TeacherError(f"{url} still failing after {cfg.max_retries} retries; last: {last}")

    def _parse(self, resp: httpx.Response, req: ChatRequest) -> ChatResult:
        try:
            data = resp.json()
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            if any((c.get("message") or {}).get("tool_calls") for c in choices):
                raise TeacherError("the endpoint answered with tool_calls: rlvr offers tools in the prompt (the tag "
                                   "format) and reads calls from the reply's text; serve the model without "
                                   "automatic tool-call parsing")
            finish = [c.get("finish_reason") or "stop" for c in choices]
            texts = [with_stop((c.get("message") or {}).get("content") or "", f, c, req.stop)
                     for c, f in zip(choices, finish)]
            usage = {k: int(v) for k, v in (data.get("usage") or {}).items()
                     if k in ("prompt_tokens", "completion_tokens", "total_tokens") and v is not None}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TeacherError(f"malformed completion response ({e}): {resp.text[:500]}") from e
        if len(texts) != req.n:
            raise TeacherError(f"asked for n={req.n} completions, got {len(texts)} "
                               f"(does this endpoint support n?)")
        usage.setdefault("total_tokens", usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
        return ChatResult(texts=texts, finish_reasons=finish, usage=usage, cached=False)


def with_stop(text: str, finish: str, choice: dict[str, Any], stops: tuple[str, ...]) -> str:
    """A reply's text with the stop string that ended it, which OpenAI-compatible servers cut
    (rlvr's engines keep it, and a tool call's parser reads its closing tag): the one the
    server names (vLLM's `stop_reason`, SGLang's `matched_stop`), else, where it names
    none, a closing tag ``</X>`` whose ``<X>`` the text left open."""
    if not stops or finish != "stop" or text.endswith(tuple(stops)):
        return text
    named = [choice[k] for k in ("stop_reason", "matched_stop") if k in choice]
    if named:
        return text + named[0] if named[0] in stops else text  # None or a token id: the model's own end
    for stop in stops:
        if stop.startswith("</") and stop.endswith(">") and text.rfind("<" + stop[2:]) > text.rfind(stop):
            return text + stop
    return text


# ---------------------------------------------------------------- local teacher


class LocalTeacher:
    """The same `complete` with a local model on an rlvr engine (`engine`: a backend's name, torch by
    default, with its `engine_options`); cached like HTTPTeacher.

    Pass `model_path` (anything `load_model` reads) or `model` and `tok`. The cache is keyed
    by `name` (default: the resolved model path, or "local" for an in-memory model: give
    distinct in-memory models distinct names when they share a cache_dir).
    """

    def __init__(self, model_path: str | Path | None = None, model=None, tok=None,
                 cache_dir: str | Path | None = None, name: str | None = None, device=None, dtype=None,
                 default_max_tokens: int = 256, engine: str = "torch", engine_options: dict | None = None):
        from rlvr.engine import make_engine

        if model_path is not None:
            from rlvr.models.io import load_model
            model, tok = load_model(model_path, device=device, dtype=dtype)
            name = name or str(Path(model_path).expanduser().resolve())
        elif model is None or tok is None:
            raise ValueError("LocalTeacher needs model_path, or both model and tok")
        self.name = name or "local"
        self.tok = tok
        self.engine = make_engine(model, tok, engine, role="inference", options=engine_options)
        self.cache = ResultCache(cache_dir)
        self.default_max_tokens = default_max_tokens
        self.spent_tokens = 0

    def complete(self, requests: list[ChatRequest]) -> list[ChatResult]:
        base = f"local:{self.name}"
        keys = [cache_key(base, self.name, r) for r in requests]
        results: list[ChatResult | None] = [self.cache.get(k) for k in keys]
        groups: dict[tuple, list[int]] = {}  # one engine call per distinct sampling setup
        for i, r in enumerate(requests):
            if results[i] is None:
                groups.setdefault((r.n, r.temperature, r.top_p, r.max_tokens, r.seed, r.stop), []).append(i)
        for (n, temperature, top_p, max_tokens, seed, stop), idxs in groups.items():
            sampling = Sampling(temperature=temperature, top_p=top_p,
                                max_new_tokens=max_tokens or self.default_max_tokens, seed=seed, stop=stop)
            prompts = [self._encode(requests[i].messages) for i in idxs]
            out = self.engine.generate(prompts, n=n, sampling=sampling)
            for i, prompt, samples in zip(idxs, prompts, out):
                completion = sum(len(s.completion_ids) for s in samples)
                res = ChatResult(texts=[s.text for s in samples],
                                 finish_reasons=[s.finish_reason for s in samples],
                                 usage={"prompt_tokens": len(prompt), "completion_tokens": completion,
                                        "total_tokens": len(prompt) + completion})
                self.cache.put(keys[i], canonical_request(base, self.name, requests[i]), res)
                self.spent_tokens += res.total_tokens
                results[i] = res
        return results  # type: ignore[return-value]

    def _encode(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tok(text, add_special_tokens=False)["input_ids"]
