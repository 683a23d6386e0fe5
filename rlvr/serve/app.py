"""`rlvr serve MODEL`: an OpenAI-compatible HTTP server for any rlvr or Hugging Face checkpoint.

It lets every OpenAI client (the `openai` SDK, eval harnesses, the distill teacher
client) talk to a local model: `GET /v1/models`, `POST /v1/chat/completions` (messages
go through the tokenizer's chat template) and `POST /v1/completions`, with `n`,
`temperature`, `top_p`, `max_tokens`, `stop` (the string that ended a choice is cut from its
text and named in its `stop_reason`, as vLLM does), `seed`, `logprobs`, `stream` and `usage`;
and vLLM's `POST /tokenize` (a text's ids, `count`, `max_model_len`, and `vocab_size`),
by which a client checks that it shares the model's tokenizer.
Log-probs are those of the chosen tokens; a request for alternatives (`top_logprobs` > 0,
completions' `logprobs` > 0) is refused with a 400 rather than answered with empty lists.

One background thread owns the engine and drains a queue (`batcher.py`): requests
that arrive within `batch_wait_ms` of each other and share sampling parameters are
decoded in one `generate` call, so concurrent clients share the GPU/CPU instead of
queueing behind each other. A request with a `seed` is generated alone, so the same
seed gives the same samples whatever else is in flight. Stop strings are applied
after generation (the text is cut at the first one) and streaming sends the finished
completion in per-token chunks: simple, and exact, at the price of decoding up to
`max_tokens`. The request bodies, the error shape and the JSON of a choice live in
`schema.py`, the streamed chunks of both endpoints in `stream.py`, the API key and
body-size checks in `guard.py`; this file holds the config, the routes and `main`.

Bad requests get a 4xx in OpenAI's error shape and the server keeps serving. It binds
127.0.0.1 unless told otherwise; `api_key_env` names an environment variable holding
a key that clients must send as `Authorization: Bearer <key>`.

    rlvr serve runs/sft-1 --port 8000 --api_key_env RLVR_KEY
    curl localhost:8000/v1/models
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar, Optional

from pydantic import Field

from rlvr.engine.fields import EngineFields
from rlvr.fields import Device, DType
from rlvr.serve.batcher import Batcher
from rlvr.serve.guard import Guard
from rlvr.serve.schema import (APIError, ChatRequest, Choice, ChoiceDecoder, CompletionRequest, RequestBase,
                               TokenizeRequest, chat_logprobs, completion_logprobs, error_body)
from rlvr.serve.stream import CHAT, TEXT, ChunkShape, events
from rlvr.types import Sample, Sampling

log = logging.getLogger("rlvr.serve")


class ServeConfig(EngineFields):
    positional: ClassVar[str] = "model"

    model: str = Field(..., description="Model to serve: HF directory, checkpoint, run dir or .gguf file.")
    device: Device
    dtype: DType
    host: str = Field("127.0.0.1", description="Interface to bind. Anything but loopback exposes the model: set api_key_env.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    api_key_env: Optional[str] = Field(None, description="Name of an environment variable holding the API key; "
                                       "if set, clients must send `Authorization: Bearer <key>`.")
    model_name: Optional[str] = Field(None, description="Name clients use in `model`; default: the model directory's name.")
    max_batch: int = Field(256, ge=1, description="Most completions decoded in one engine call.")
    batch_wait_ms: float = Field(5.0, ge=0, description="How long the batcher waits for more requests to join a batch.")
    max_tokens_limit: int = Field(4096, ge=1, description="Largest max_tokens a request may ask for.")
    max_n: int = Field(64, ge=1, description="Largest n (completions per prompt) a request may ask for.")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body accepted (bytes).")


# --------------------------------------------------------------------------- the app

def make_app(model, tok, cfg: ServeConfig):
    """The FastAPI app serving `model`; `app.state.batcher.calls` counts engine calls."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from rlvr.engine import make_engine

    name = cfg.model_name or Path(cfg.model).name or "model"
    key = None
    if cfg.api_key_env:
        key = os.environ.get(cfg.api_key_env)
        if not key:  # fail closed: a configured but empty key must not mean "no auth"
            raise ValueError(f"api_key_env={cfg.api_key_env!r}: that environment variable is not set")
    context = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
    engine = make_engine(model, tok, cfg.engine, role="inference", max_batch=cfg.max_batch,
                         options=cfg.engine_options)
    batcher = Batcher(engine, cfg.max_batch, cfg.batch_wait_ms / 1000)
    decoder = ChoiceDecoder(tok)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    app = FastAPI(title="rlvr serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.state.model_name = name

    @app.exception_handler(APIError)
    async def _api_error(request, e: APIError):
        return JSONResponse(error_body(e.message, e.param, e.code, e.type), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        errs = e.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body(f"request body is not valid JSON: {first.get('ctx', {}).get('error', '')}",
                                           None, "invalid_json"), status_code=400)
        param = ".".join(loc) or None
        msg = f"{param}: {first.get('msg', 'invalid')}" if param else str(first.get("msg", "invalid request"))
        if len(errs) > 1:
            msg += f" (and {len(errs) - 1} more errors)"
        return JSONResponse(error_body(msg, param, "invalid_value"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        return JSONResponse(error_body(str(e.detail), None, None), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _crash(request, e: Exception):
        log.exception("request failed")
        return JSONResponse(error_body("internal error", None, None, "server_error"), status_code=500)

    app.add_middleware(Guard, key=key, max_body=cfg.max_body_bytes)

    # ---- shared request handling

    def served(req: RequestBase | TokenizeRequest) -> None:
        if req.model != name:
            raise APIError(404, f"the model {req.model!r} does not exist; this server serves {name!r}",
                           "model", "model_not_found")

    def check(req: RequestBase, prompt_lens: list[int], max_tokens: int | None) -> Sampling:
        served(req)
        if req.n > cfg.max_n:
            raise APIError(400, f"n: must be at most {cfg.max_n}", "n", "invalid_value")
        longest = max(prompt_lens)
        if max_tokens is None:  # chat default: what the context and the limit allow
            max_tokens = min(cfg.max_tokens_limit, (context - longest) if context else cfg.max_tokens_limit)
        if max_tokens > cfg.max_tokens_limit:
            raise APIError(400, f"max_tokens: must be at most {cfg.max_tokens_limit}", "max_tokens", "invalid_value")
        if min(prompt_lens) == 0:
            raise APIError(400, "prompt: must not be empty", "prompt", "invalid_value")
        if context and (longest + max_tokens > context or max_tokens < 1):
            raise APIError(400, f"this model's maximum context length is {context} tokens; the prompt has "
                           f"{longest} and max_tokens is {max_tokens}", "messages", "context_length_exceeded")
        seed = req.seed % (1 << 63) if req.seed is not None else None
        # The engine stops at a stop string (no tokens sampled past it); the decoder cuts it from the text.
        return Sampling(temperature=req.temperature, top_p=req.top_p, max_new_tokens=max_tokens, seed=seed,
                        stop=tuple(req.stops()))

    async def on_engine_thread(submit) -> Any:
        """`submit(done)` queues work on the batcher's thread; its result (or error) awaited here."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def settle(result):
            if not fut.done():
                (fut.set_exception if isinstance(result, BaseException) else fut.set_result)(result)

        submit(lambda r: loop.call_soon_threadsafe(settle, r))
        return await fut

    async def generate(prompts: list[list[int]], n: int, sampling: Sampling) -> list[list[Sample]]:
        return await on_engine_thread(lambda done: batcher.submit(prompts, n, sampling, done))

    def usage(prompt_lens, choices: list[Choice]) -> dict[str, int]:
        p, c = sum(prompt_lens), sum(ch.completion_tokens for ch in choices)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def head(id_prefix: str, object_: str) -> dict:
        return {"id": f"{id_prefix}-{uuid.uuid4().hex}", "object": object_, "created": int(time.time()), "model": name}

    def streamed(req: RequestBase, top: dict, shape: ChunkShape, choices: list[Choice], per_token,
                 use: dict[str, int]) -> StreamingResponse:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(events(top, shape, choices, per_token, use if include_usage else None),
                                 media_type="text/event-stream")

    async def score(prompts: list[list[int]]) -> list[list[float]]:
        return await on_engine_thread(lambda done: batcher.submit_score(prompts, done))

    def prompt_ids(prompt) -> tuple[list[list[int]], list[str]]:
        """A completions request's prompts as token ids, and the text each would echo."""
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            prompt = [prompt]
        if not prompt or len(prompt) > cfg.max_n:
            raise APIError(400, f"prompt: give 1 to {cfg.max_n} prompts", "prompt", "invalid_value")
        if isinstance(prompt[0], str):
            return [encode(t) for t in prompt], list(prompt)
        vocab = len(tok)
        bad = next((t for ids in prompt for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise APIError(400, f"prompt: token id {bad} is outside the vocabulary (0 to {vocab - 1})", "prompt",
                           "invalid_value")
        return [list(ids) for ids in prompt], [tok.decode(ids) for ids in prompt]

    def encode(text: str) -> list[int]:
        ids = tok(text).input_ids
        if not ids and tok.bos_token_id is not None:
            ids = [tok.bos_token_id]
        return ids

    # ---- routes

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "rlvr"}]}

    @app.post("/tokenize")  # where vLLM serves it: beside /v1, not under it
    async def tokenize(req: TokenizeRequest):
        served(req)
        ids = tok(req.prompt, add_special_tokens=req.add_special_tokens).input_ids
        out = {"count": len(ids), "max_model_len": context, "tokens": ids, "vocab_size": len(tok)}
        return {**out, "token_strs": tok.convert_ids_to_tokens(ids)} if req.return_token_strs else out

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        try:
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as e:
            raise APIError(400, f"messages: the chat template rejected them: {e}", "messages") from None
        ids = tok(text, add_special_tokens=False).input_ids
        stops = req.stops()
        if req.top_logprobs:
            raise APIError(400, "top_logprobs: this server returns the log-prob of each chosen token (logprobs: true), "
                           "not alternatives; omit it or pass 0", "top_logprobs", "unsupported_parameter")
        sampling = check(req, [len(ids)], req.max_completion_tokens or req.max_tokens)
        [samples] = await generate([ids], req.n, sampling)
        detail = req.logprobs or req.stream
        choices = [decoder.choice(s, stops, detail) for s in samples]
        top = head("chatcmpl", "chat.completion")
        use = usage([len(ids)], choices)
        if req.stream:
            def per_token(ch: Choice, j: int):
                return chat_logprobs(ch.tokens[j:j + 1], ch.logprobs[j:j + 1]) if req.logprobs else None

            return streamed(req, top, CHAT, choices, per_token, use)
        return {
            **top,
            "choices": [{"index": i, "message": {"role": "assistant", "content": ch.text},
                         "logprobs": chat_logprobs(ch.tokens, ch.logprobs) if req.logprobs else None,
                         "finish_reason": ch.finish_reason, "stop_reason": ch.stop_reason}
                        for i, ch in enumerate(choices)],
            "usage": use,
        }

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        prompts, texts = prompt_ids(req.prompt)
        if req.logprobs:
            raise APIError(400, "logprobs: this server returns the log-prob of each chosen token (logprobs: 0), "
                           "not the top alternatives", "logprobs", "unsupported_parameter")
        if req.prompt_logprobs:
            raise APIError(400, "prompt_logprobs: this server returns the log-prob of each prompt token "
                           "(prompt_logprobs: 0), not the top alternatives", "prompt_logprobs", "unsupported_parameter")
        scoring = req.echo or req.prompt_logprobs is not None
        if scoring and req.stream:
            raise APIError(400, "echo and prompt_logprobs are answered whole, not streamed", "stream", "invalid_value")
        if req.max_tokens == 0 and not scoring:
            raise APIError(400, "max_tokens: must be at least 1 (0 only with echo or prompt_logprobs, to score the "
                           "prompt)", "max_tokens", "invalid_value")
        lens = [len(p) for p in prompts]
        stops = req.stops()
        sampling = check(req, lens, req.max_tokens or 1)
        prompt_lps = None
        if req.prompt_logprobs is not None or (req.echo and req.logprobs is not None):
            prompt_lps = await score(prompts)
        if req.max_tokens:
            groups = await generate(prompts, req.n, sampling)
            detail = req.logprobs is not None or req.stream
            choices = [decoder.choice(s, stops, detail) for g in groups for s in g]
        else:  # the prompt scored, nothing generated
            choices = [Choice("", "length", [], [], [], 0) for _ in prompts for _ in range(req.n)]
        top = head("cmpl", "text_completion")
        use = usage(lens, choices)
        # usage counts each prompt once per request (as OpenAI does), completions all

        def lp(ch: Choice, j: slice | None = None, i: int = 0):
            if req.logprobs is None:
                return None
            if j is not None:
                return {"tokens": ch.tokens[j], "token_logprobs": ch.logprobs[j],
                        "top_logprobs": [{} for _ in ch.tokens[j]], "text_offset": []}
            if not req.echo:
                return completion_logprobs(ch.tokens, ch.logprobs, ch.pieces)
            pieces = [tok.decode([t]) for t in prompts[i]]
            return completion_logprobs(pieces + ch.tokens, [None] + prompt_lps[i] + ch.logprobs, pieces + ch.pieces)

        def choice(k: int, ch: Choice) -> dict[str, Any]:
            i = k // req.n
            out = {"index": k, "text": (texts[i] if req.echo else "") + ch.text, "logprobs": lp(ch, i=i),
                   "finish_reason": ch.finish_reason, "stop_reason": ch.stop_reason}
            if req.prompt_logprobs is not None:
                out["prompt_logprobs"] = [None] + [{str(t): {"logprob": x, "rank": None, "decoded_token": tok.decode([t])}}
                                                   for t, x in zip(prompts[i][1:], prompt_lps[i])]
            return out

        if req.stream:
            return streamed(req, top, TEXT, choices, lambda ch, j: lp(ch, slice(j, j + 1)), use)
        return {**top, "choices": [choice(k, ch) for k, ch in enumerate(choices)], "usage": use}

    return app


def main(cfg: ServeConfig) -> None:
    import uvicorn

    from rlvr.models import load_model
    from rlvr.run import last_model
    from rlvr.train.setup import resolve_device, resolve_dtype

    device = resolve_device(cfg.device)
    model, tok = load_model(last_model(cfg.model), device, resolve_dtype(cfg.dtype, device))
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.api_key_env:
        log.warning("serving on %s without an API key: anyone who can reach it can use the model", cfg.host)
    app = make_app(model, tok, cfg)
    print(f"rlvr serve: {app.state.model_name!r} on http://{cfg.host}:{cfg.port}/v1"
          + (" (API key required)" if cfg.api_key_env else ""), flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")
