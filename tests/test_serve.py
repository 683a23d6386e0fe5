"""`rlvr serve`: a real uvicorn server on 127.0.0.1 with the micro model, driven by the
official `openai` SDK (and raw httpx for auth and malformed requests)."""

from __future__ import annotations

import json
import math
import random
import threading

import httpx
import openai
import pytest
import torch

from conftest import served

from rlvr.serve import ServeConfig, make_app
from rlvr.engine.torch_engine import TorchEngine
from rlvr.models.tiny import build_tiny_model
from rlvr.types import Sampling

KEY = "sk-test-not-a-secret"
NAME = "micro-test"
MSG = [{"role": "user", "content": "12+34="}]


@pytest.fixture(scope="module")
def server():
    mp = pytest.MonkeyPatch()
    mp.setenv("RLVR_TEST_SERVE_KEY", KEY)
    model, tok = build_tiny_model("micro")
    # A random model with tied embeddings greedily repeats its last input token; an untied
    # random head makes greedy text varied, so stop strings and streaming have something to cut.
    torch.manual_seed(1)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.3)
    cfg = ServeConfig(model="runs/x", model_name=NAME, api_key_env="RLVR_TEST_SERVE_KEY",
                      batch_wait_ms=20, max_tokens_limit=256)
    app = make_app(model, tok, cfg)
    with served(app) as url:
        yield {"url": url, "app": app, "model": model, "tok": tok,
               "client": openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)}
    mp.undo()


def chat(server, **kw):
    return server["client"].chat.completions.create(model=NAME, messages=MSG, **kw)


def test_models_list(server):
    assert [m.id for m in server["client"].models.list().data] == [NAME]


def test_chat_n_usage_logprobs(server):
    r = chat(server, n=3, max_tokens=12, temperature=1.0, logprobs=True)
    assert len(r.choices) == 3 and [c.index for c in r.choices] == [0, 1, 2]
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    for c in r.choices:
        assert c.finish_reason in ("stop", "length")
        lps = c.logprobs.content
        assert lps and all(math.isfinite(t.logprob) and t.logprob <= 0 for t in lps)
        # tokens are the raw token strings: a random model emits specials mid-text, which
        # the text (decoded without special tokens) leaves out
        tok = server["tok"]
        visible = [tok.decode([tok.convert_tokens_to_ids(t.token)], skip_special_tokens=True) for t in lps]
        assert "".join(visible) == c.message.content


def test_greedy_matches_engine_and_stream(server):
    tok = server["tok"]
    ids = tok(tok.apply_chat_template(MSG, add_generation_prompt=True, tokenize=False),
              add_special_tokens=False).input_ids
    want = TorchEngine(server["model"], tok).generate([ids], 1, Sampling(temperature=0, max_new_tokens=20))[0][0]
    r = chat(server, temperature=0, max_tokens=20)
    assert r.choices[0].message.content == want.text
    assert r.choices[0].finish_reason == want.finish_reason
    stream = chat(server, temperature=0, max_tokens=20, stream=True, stream_options={"include_usage": True})
    pieces, reasons, usage = [], [], None
    for chunk in stream:
        for c in chunk.choices:
            pieces.append(c.delta.content or "")
            reasons.append(c.finish_reason)
        usage = chunk.usage or usage
    assert len(pieces) > 2 and "".join(pieces) == want.text
    assert reasons[-1] == want.finish_reason and usage.completion_tokens > 0
    # /v1/completions on the same ids' text, greedy, with logprobs
    prompt = tok.decode(ids)
    c = server["client"].completions.create(model=NAME, prompt=[prompt, prompt], temperature=0, max_tokens=20,
                                            logprobs=0)
    assert [ch.text for ch in c.choices] == [want.text] * 2
    shown = want.completion_ids[:-1] if want.finish_reason == "stop" else want.completion_ids  # no EOS
    assert c.choices[0].logprobs.tokens == [tok.decode([i]) for i in shown]
    assert c.choices[0].logprobs.token_logprobs == pytest.approx(want.logprobs[:len(shown)], abs=1e-4)
    assert all(math.isfinite(x) for x in c.choices[0].logprobs.token_logprobs)


def test_streams_match_their_responses_token_by_token(server):
    # Chat and text completions stream through one code path; each must still send, per
    # choice, exactly the text and log-probs of the response it streams, and then its reason.
    client, seed = server["client"], 7
    kw = dict(model=NAME, n=2, max_tokens=12, temperature=1.0, seed=seed)
    whole = client.chat.completions.create(messages=MSG, logprobs=True, stop=["e"], **kw)
    texts, lps, reasons, roles = {}, {}, {}, {}
    for chunk in client.chat.completions.create(messages=MSG, logprobs=True, stop=["e"], stream=True, **kw):
        assert chunk.object == "chat.completion.chunk" and chunk.usage is None
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            lps.setdefault(c.index, []).extend(t.logprob for t in (c.logprobs.content if c.logprobs else []))
            roles.setdefault(c.index, c.delta.role)
            reasons[c.index] = c.finish_reason
    for c in whole.choices:
        assert texts[c.index] == c.message.content and reasons[c.index] == c.finish_reason
        assert lps[c.index] == [t.logprob for t in c.logprobs.content] and roles[c.index] == "assistant"

    whole = client.completions.create(prompt=["12+3", "ab"], logprobs=0, stop="5", **kw)
    texts, lps, reasons, usage = {}, {}, {}, None
    for chunk in client.completions.create(prompt=["12+3", "ab"], logprobs=0, stop="5", stream=True,
                                           stream_options={"include_usage": True}, **kw):
        assert chunk.object == "text_completion"
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            lps.setdefault(c.index, []).extend(c.logprobs.token_logprobs if c.logprobs else [])
            reasons[c.index] = c.finish_reason
        usage = chunk.usage or usage
    assert sorted(texts) == [0, 1, 2, 3] and usage == whole.usage
    for c in whole.choices:
        assert texts[c.index] == c.text and reasons[c.index] == c.finish_reason
        assert lps[c.index] == c.logprobs.token_logprobs


def test_stop_and_seed(server):
    full = chat(server, temperature=0, max_tokens=30).choices[0].message.content
    assert len(full) >= 4, full
    stop = full[2:4]
    r = chat(server, temperature=0, max_tokens=30, stop=[stop, "\x00never"])
    cut = full[:full.index(stop)]
    assert r.choices[0].message.content == cut and r.choices[0].finish_reason == "stop"
    comp = server["client"].completions
    whole = comp.create(model=NAME, prompt="ab", temperature=0, max_tokens=30).choices[0].text
    c = comp.create(model=NAME, prompt="ab", temperature=0, max_tokens=30, stop=whole[3:5])
    assert c.choices[0].text == whole[:whole.index(whole[3:5])] and c.choices[0].finish_reason == "stop"
    a = [ch.message.content for ch in chat(server, n=4, max_tokens=16, seed=1234).choices]
    b = [ch.message.content for ch in chat(server, n=4, max_tokens=16, seed=1234).choices]
    d = [ch.message.content for ch in chat(server, n=4, max_tokens=16, seed=99).choices]
    assert a == b and a != d


def test_api_key_required(server):
    body = {"model": NAME, "messages": MSG, "max_tokens": 4}
    url = server["url"] + "/v1/chat/completions"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.post(url, json=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert KEY not in r.text
    assert httpx.get(server["url"] + "/v1/models").status_code == 401
    bad = openai.OpenAI(base_url=server["url"] + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_concurrent_requests_are_batched(server):
    batcher = server["app"].state.batcher
    before = batcher.calls
    barrier, results, errors = threading.Barrier(16), [None] * 16, []

    def one(i):
        try:
            barrier.wait()
            r = chat(server, max_tokens=16, temperature=0.8, n=2)
            results[i] = r
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(r is not None and len(r.choices) == 2 for r in results)
    calls = batcher.calls - before
    assert 1 <= calls < 16, calls
    print(f"16 concurrent requests -> {calls} engine calls")


def _bad_requests(rng: random.Random) -> list[tuple[str, dict]]:
    """(path, httpx kwargs) of requests that must all be refused with a 4xx."""
    good = {"model": NAME, "messages": MSG, "max_tokens": 4}
    cgood = {"model": NAME, "prompt": "1+1=", "max_tokens": 4}
    bad_values = {
        "n": [0, -1, 65, 10**9, "3", 2.5, True, None, [1]],
        "max_tokens": [0, -5, 10**6, 257, "16", 1.5, True],
        "temperature": [-0.1, -100, 2.5, "hot", None, [0.5], True],
        "top_p": [0, -1, 1.5, "x", True],
        "model": ["nope", "", 7, None, ["micro-test"]],
        "stop": [5, [1, 2], ["a", "b", "c", "d", "e"], [""], "", {"a": 1}],
        "seed": ["1", 1.5, True, [1]],
        "logprobs": ["yes", 3, [True]],
        "top_logprobs": [-1, 21, "2", 3],  # 3: alternatives are not served, which it says
        "stream": ["true", 1, [True]],
        "messages": [[], "hi", None, [{"role": "user"}] * 0, [{"role": "robot", "content": "x"}],
                     [{"content": "x"}], [{"role": "user", "content": 5}], [1, 2], {"role": "user"},
                     [{"role": "user", "content": "x" * 600}]],
    }
    cbad = {"prompt": [None, 5, [-1, 2], [10**9], [], ["a", 3], [[1], []], "y" * 600],
            "logprobs": [-1, 6, "1", True, 2], "echo": ["no", 1], "prompt_logprobs": [-1, 1, "0"],
            "max_tokens": [0, 10**7, "4"], "n": [0, 100], "model": ["gpt-4"]}
    out: list[tuple[str, dict]] = []
    for field_, values in bad_values.items():
        for v in values:
            out.append(("/v1/chat/completions", {"json": {**good, field_: v}}))
    for field_, values in cbad.items():
        for v in values:
            out.append(("/v1/completions", {"json": {**cgood, field_: v}}))
    for missing in ("model", "messages"):
        out.append(("/v1/chat/completions", {"json": {k: v for k, v in good.items() if k != missing}}))
    out.append(("/v1/completions", {"json": {"model": NAME}}))
    for raw in (b"", b"{", b"nul", b"[]", b'"x"', b"1", b"null", b"{\"model\":", b"\xff\xfe\x00",
                b'{"model": "micro-test", "messages": [}'):
        out.append((rng.choice(["/v1/chat/completions", "/v1/completions"]), {"content": raw}))
    huge = b'{"model": "micro-test", "prompt": "' + b"a" * (1 << 20) + b'"}'
    out += [("/v1/completions", {"content": huge}), ("/v1/chat/completions", {"content": huge})]
    fixed = len(out)
    while len(out) < 1000:  # random garbage and random mutations of good requests
        kind = rng.random()
        path = rng.choice(["/v1/chat/completions", "/v1/completions"])
        if kind < 0.3:
            out.append((path, {"content": bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))}))
        elif kind < 0.5:
            junk = rng.choice([[], {}, 0, "s", None, {"x": [1, {"y": None}]}, {"model": NAME}])
            out.append((path, {"content": json.dumps(junk).encode()}))
        else:
            field_ = rng.choice(sorted(bad_values))
            body = {**good, field_: rng.choice(bad_values[field_])}
            if rng.random() < 0.5:
                body["junk_" + str(rng.randrange(100))] = rng.random()
            out.append(("/v1/chat/completions", {"json": body}))
    assert fixed < 1000
    return out


def test_malformed_requests_get_openai_errors(server):
    calls_before = server["app"].state.batcher.calls
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server["url"], headers=headers, timeout=30) as http:
        for path, kw in _bad_requests(random.Random(0)):
            r = http.post(path, **kw)
            assert 400 <= r.status_code < 500, (path, kw.get("json", kw.get("content", b"")[:80]), r.status_code, r.text)
            err = r.json()["error"]
            assert set(err) >= {"message", "type", "param", "code"} and err["message"], r.text
            assert err["type"] == "invalid_request_error"
        chunked = http.post("/v1/completions", content=iter([b'{"prompt": "'] + [b"a" * 65536] * 20))
        assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"
        assert http.get("/v1/nope").status_code == 404
        assert http.get("/v1/chat/completions").status_code == 405
    assert server["app"].state.batcher.calls == calls_before  # nothing bad reached the engine
    with pytest.raises(openai.BadRequestError):
        chat(server, n=100)
    with pytest.raises(openai.NotFoundError):
        server["client"].chat.completions.create(model="gpt-4", messages=MSG)
    assert chat(server, max_tokens=5).choices[0].message.content is not None


def test_prompt_logprobs_of_token_ids_through_the_sdk_equal_the_engines_own_scores(server):
    """What an on-policy distillation client asks a teacher: each token's log-prob of given ids,
    as OpenAI's echo + logprobs and as vLLM's prompt_logprobs, with nothing or one token generated."""
    from rlvr.engine import TorchEngine

    tok, comp = server["tok"], server["client"].completions
    ids = tok("12+34=46 and 7", add_special_tokens=False)["input_ids"]
    expected = TorchEngine(server["model"], tok).score([ids[:1]], [ids[1:]])[0]
    echoed = comp.create(model=NAME, prompt=ids, max_tokens=0, echo=True, logprobs=0).choices[0]
    assert echoed.text == tok.decode(ids) and echoed.logprobs.token_logprobs[0] is None
    assert echoed.logprobs.token_logprobs[1:] == pytest.approx(expected, abs=1e-5)
    assert len(echoed.logprobs.tokens) == len(ids)
    vllm = comp.create(model=NAME, prompt=ids, max_tokens=1, extra_body={"prompt_logprobs": 0}).choices[0]
    entries = vllm.model_extra["prompt_logprobs"]
    assert entries[0] is None and [e[str(t)]["logprob"] for e, t in zip(entries[1:], ids[1:])] == pytest.approx(
        expected, abs=1e-5)
    for bad, what in (({"prompt": ids, "max_tokens": 0}, "max_tokens"), ({"prompt": [len(tok) + 5], "echo": True},
                                                                         "outside the vocabulary"),
                      ({"prompt": ids, "echo": True, "logprobs": 0, "stream": True}, "not streamed")):
        with pytest.raises(openai.BadRequestError, match=what):
            comp.create(model=NAME, **bad)
