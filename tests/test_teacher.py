"""Teacher clients against a local fake OpenAI-compatible server (standard library only).

The server binds 127.0.0.1 on a free port, counts requests and successful answers per
distinct request, and can fail at random (429 with Retry-After: 0, 500), refuse (400),
or hold requests unanswered so that a client can be killed at a known point.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rlvr.distill.teacher import (BudgetExceeded, ChatRequest, HTTPTeacher, LocalTeacher, TeacherConfig,
                                  TeacherError, backoff_delay, cache_key)

ROOT = Path(__file__).resolve().parents[1]
PROMPT_TOKENS, TOKENS_PER_CHOICE = 10, 5


class FakeServer:
    def __init__(self, fail_rate: float = 0.0, seed: int = 0, delay_s: float = 0.0,
                 status: int | None = None, hold_after: int | None = None, fail_codes=(429, 500)):
        self.fail_codes = list(fail_codes)
        self.fail_rate, self.delay_s, self.status, self.hold_after = fail_rate, delay_s, status, hold_after
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.attempts: Counter = Counter()  # body key -> requests received
        self.successes: Counter = Counter()  # body key -> 200s fully written
        self.failures: Counter = Counter()  # status -> count
        self.auth: list[str | None] = []
        self.answering = 0  # 200s written or being written
        self.held = 0
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
                with server.lock:
                    server.attempts[key] += 1
                    server.auth.append(self.headers.get("Authorization"))
                    fail = server.status or (server.rng.choice(server.fail_codes)
                                             if server.rng.random() < server.fail_rate else None)
                    hold = (not fail and server.hold_after is not None
                            and server.answering >= server.hold_after)
                    if fail:
                        server.failures[fail] += 1
                    elif hold:
                        server.held += 1
                    else:
                        server.answering += 1
                if fail:
                    return self._send(fail, {"error": {"message": f"fake error {fail}"}},
                                      {"Retry-After": "0"} if fail == 429 else {})
                if hold:  # never answer: the client is killed meanwhile (bounded wait)
                    server.release.wait(30)
                    self.close_connection = True
                    return
                time.sleep(server.delay_s)
                text = body["messages"][-1]["content"]
                n = body.get("n", 1)
                self._send(200, {
                    "id": "x", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": i, "message": {"role": "assistant", "content": f"echo {text} #{i}"},
                                 "finish_reason": "stop"} for i in reversed(range(n))],
                    "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": TOKENS_PER_CHOICE * n,
                              "total_tokens": PROMPT_TOKENS + TOKENS_PER_CHOICE * n}})
                with server.lock:
                    server.successes[key] += 1

            def _send(self, status, obj, headers=None):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def reqs(k: int, n: int = 2, max_tokens: int | None = 8) -> list[ChatRequest]:
    return [ChatRequest(messages=[{"role": "user", "content": f"q{i:02d}"}], n=n, temperature=0.7,
                        max_tokens=max_tokens, seed=1) for i in range(k)]


def cfg(server: FakeServer, tmp_path: Path, **kw) -> TeacherConfig:
    base = dict(base_url=server.url, model="fake", max_concurrency=4, timeout_s=10.0, max_retries=12,
                backoff_base_s=0.001, backoff_max_s=0.01, cache_dir=str(tmp_path / "cache"))
    return TeacherConfig(**{**base, **kw})


def check_answers(results, requests):
    for r, q in zip(results, requests):
        assert r.texts == [f"echo {q.messages[-1]['content']} #{i}" for i in range(q.n)]
        assert r.finish_reasons == ["stop"] * q.n
        assert r.usage["total_tokens"] == PROMPT_TOKENS + TOKENS_PER_CHOICE * q.n


def test_flaky_server_every_request_answered_once(tmp_path):
    requests = reqs(30)
    with FakeServer(fail_rate=0.4, seed=0) as server:
        teacher = HTTPTeacher(cfg(server, tmp_path))
        results = teacher.complete(requests)
        check_answers(results, requests)
        assert server.failures[429] > 0 and server.failures[500] > 0
        assert len(server.successes) == 30 and set(server.successes.values()) == {1}
        assert teacher.spent_tokens == 30 * (PROMPT_TOKENS + 2 * TOKENS_PER_CHOICE)
        # A second call, and a fresh teacher on the same cache, send nothing.
        again = HTTPTeacher(cfg(server, tmp_path)).complete(requests)
        assert all(r.cached for r in again) and [r.texts for r in again] == [r.texts for r in results]
        assert sum(server.successes.values()) == 30


def test_retry_after_is_honoured_over_backoff(tmp_path):
    with FakeServer(fail_rate=0.6, seed=3, fail_codes=(429,)) as server:
        # Full-jitter backoff would sleep up to a minute; the 429s' Retry-After: 0 must win.
        teacher = HTTPTeacher(cfg(server, tmp_path, backoff_base_s=60.0, backoff_max_s=60.0))
        t0 = time.monotonic()
        teacher.complete(reqs(5))
        assert server.failures[429] > 0 and time.monotonic() - t0 < 5
    assert backoff_delay(3, base=100.0, cap=100.0, retry_after=0.0) == 0.0
    rng = random.Random(0)
    delays = [backoff_delay(k, base=1.0, cap=4.0, rng=rng) for k in range(10) for _ in range(20)]
    assert 0.0 <= min(delays) and max(delays) <= 4.0


CLIENT = textwrap.dedent("""
    import sys
    from rlvr.distill.teacher import ChatRequest, HTTPTeacher, TeacherConfig
    url, cache = sys.argv[1], sys.argv[2]
    requests = [ChatRequest(messages=[{"role": "user", "content": f"q{i:02d}"}], n=2, temperature=0.7,
                            max_tokens=8, seed=1) for i in range(40)]
    HTTPTeacher(TeacherConfig(base_url=url, model="fake", max_concurrency=4, timeout_s=60,
                              cache_dir=cache)).complete(requests)
""")


def test_kill_and_resume_never_resends_an_answered_request(tmp_path):
    requests = reqs(40)
    cache = tmp_path / "cache"
    with FakeServer(delay_s=0.02, hold_after=20) as server:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-c", CLIENT, server.url, str(cache)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:  # until 20 answered, all cached, and more in flight
                if (sum(server.successes.values()) == 20 and server.held >= 1
                        and len(list(cache.rglob("*.json"))) == 20):
                    break
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.05)
            else:
                pytest.fail("client never reached the kill point")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == -signal.SIGKILL

        # What a kill mid-write could leave: a partial file under a real name, a temp file.
        unanswered = next(r for r in requests
                          if not (cache / (k := cache_key(server.url, "fake", r))[:2] / f"{k}.json").exists())
        k = cache_key(server.url, "fake", unanswered)
        (cache / k[:2]).mkdir(parents=True, exist_ok=True)
        (cache / k[:2] / f"{k}.json").write_text('{"key": "%s", "result": {"texts": ["ec' % k)
        (cache / k[:2] / f".{k}.json.abc.tmp").write_text('{"key"')

        server.hold_after = None
        server.release.set()
        results = HTTPTeacher(cfg(server, tmp_path)).complete(requests)
        check_answers(results, requests)
        assert sum(r.cached for r in results) == 20
        assert len(server.successes) == 40 and max(server.successes.values()) == 1


@pytest.mark.parametrize("max_tokens", [8, None])
def test_budget_stops_cleanly_and_resumes_from_cache(tmp_path, max_tokens):
    per_request = PROMPT_TOKENS + 2 * TOKENS_PER_CHOICE  # 20
    budget = 110
    requests = reqs(20, max_tokens=max_tokens)
    with FakeServer(delay_s=0.01) as server:
        teacher = HTTPTeacher(cfg(server, tmp_path, budget_tokens=budget))
        with pytest.raises(BudgetExceeded) as info:
            teacher.complete(requests)
        e = info.value
        answered = sum(server.successes.values())
        assert e.spent == teacher.spent_tokens == answered * per_request
        assert budget <= e.spent <= budget + per_request  # documented: at most one request past
        assert e.answered == answered and e.remaining == 20 - answered
        # The answers paid for come with the stop (distill keeps them), None where nothing was sent.
        assert len(e.results) == 20 and sum(r is not None for r in e.results) == answered
        check_answers([r for r in e.results if r is not None], [q for q, r in zip(requests, e.results) if r is not None])
        results = HTTPTeacher(cfg(server, tmp_path)).complete(requests)  # no budget: finish
        check_answers(results, requests)
        assert sum(r.cached for r in results) == answered
        assert max(server.successes.values()) == 1


def test_api_key_sent_as_bearer_and_never_written(tmp_path, monkeypatch):
    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("FAKE_TEACHER_KEY", secret)
    with FakeServer() as server:
        config = cfg(server, tmp_path, api_key_env="FAKE_TEACHER_KEY")
        HTTPTeacher(config).complete(reqs(5))
        assert server.auth == [f"Bearer {secret}"] * 5
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(files) == 5
    assert not any(secret.encode() in p.read_bytes() for p in files)
    assert secret not in repr(config)
    monkeypatch.delenv("FAKE_TEACHER_KEY")
    with FakeServer() as server, pytest.raises(TeacherError, match="FAKE_TEACHER_KEY"):
        HTTPTeacher(cfg(server, tmp_path / "other", api_key_env="FAKE_TEACHER_KEY")).complete(reqs(1))


def test_client_error_raises_at_once_without_retries(tmp_path):
    with FakeServer(status=400) as server:
        with pytest.raises(TeacherError, match="fake error 400") as info:
            HTTPTeacher(cfg(server, tmp_path, max_concurrency=1, backoff_base_s=5.0)).complete(reqs(1))
        assert info.value.status == 400
        assert sum(server.attempts.values()) == 1
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_local_teacher_generates_n_and_caches(tmp_path):
    from rlvr.models.io import save_model
    from rlvr.models.tiny import build_tiny_model

    model, tok = build_tiny_model("micro")
    path = save_model(model, tok, tmp_path / "model")
    requests = reqs(2, n=3, max_tokens=6)
    teacher = LocalTeacher(model_path=path, cache_dir=tmp_path / "cache", device="cpu")
    results = teacher.complete(requests)
    for r in results:
        assert len(r.texts) == 3 and len(r.finish_reasons) == 3 and not r.cached
        assert r.usage["prompt_tokens"] > 0 and 0 < r.usage["completion_tokens"] <= 3 * 6
        assert r.usage["total_tokens"] == r.usage["prompt_tokens"] + r.usage["completion_tokens"]

    again = LocalTeacher(model_path=path, cache_dir=tmp_path / "cache", device="cpu")
    calls = []
    again.engine.generate = lambda *a, **k: calls.append(a) or pytest.fail("generate called")
    cached = again.complete(requests)
    assert not calls and all(r.cached for r in cached)
    assert [r.texts for r in cached] == [r.texts for r in results]
