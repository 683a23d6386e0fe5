"""The gate of `rlvr serve`: the API key, then the body size, before anything parses a body.

An ASGI middleware rather than a FastAPI dependency so that a request without the key,
or with a body over `max_body` bytes, is answered (401, 413, in OpenAI's error shape)
before a byte of its body is parsed: a client cannot make the server read an
unbounded body, and the key is compared in constant time. The app adds it:

    app.add_middleware(Guard, key=os.environ["RLVR_KEY"], max_body=1 << 20)
"""

from __future__ import annotations

import hmac
import json

from rlvr.serve.schema import error_body


class Guard:
    """ASGI middleware: the API key, then the body size, before anything parses the body."""

    def __init__(self, app, key: str | None, max_body: int):
        self.app, self.key, self.max_body = app, key, max_body

    async def _reject(self, send, status: int, body: dict, extra: list | None = None):
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.key is not None:
            auth = headers.get(b"authorization", b"").decode("latin-1")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode("utf-8", "replace"), self.key.encode()):
                return await self._reject(send, 401, error_body(
                    "invalid or missing API key (send Authorization: Bearer <key>)", None, "invalid_api_key"),
                    [(b"www-authenticate", b"Bearer")])
        too_big = error_body(f"request body larger than {self.max_body} bytes", None, "request_too_large")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await self._reject(send, 413, too_big)
        # Read the whole body (bounded), then replay it to the app.
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return await self._reject(send, 413, too_big)
            more = msg.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
