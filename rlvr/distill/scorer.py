"""Teachers that score: per-token log-probs of the student's own samples, for on-policy distillation.

On-policy distillation (rlvr/algos/teacher.py) asks a teacher how likely it finds each
token the student sampled. `LocalScorer` answers with a local checkpoint: one forward
pass over prompt and completion, no gradient, on any device, through the engine's
`score`. `HTTPScorer` asks an OpenAI-compatible `/v1/completions` endpoint for the
prompt log-probs of the token ids (`rlvr serve`, vLLM, SGLang): as OpenAI's `echo` with
`logprobs`, or as vLLM's `prompt_logprobs`, with the teacher client's bounded
concurrency, retries, on-disk cache (a resumed run asks nothing twice) and token budget.
Closed APIs return no prompt log-probs and cannot be such teachers. `annotate` turns a
scorer's answers into each sample's per-token advantages and the metrics a run logs
(the reverse KL falling is what progress looks like).

Teacher and student must share a tokenizer: the teacher scores the student's token
ids, which would mean other text to another tokenizer and train silently wrong.
`check_same_tokenizer` refuses a mismatch at start, naming both and their vocabularies.
An endpoint's tokenizer is seen through a probe text (`HTTPScorer.check`): the ids its
`POST /tokenize` gives it (vLLM, SGLang, `rlvr serve`), else the prompt tokens it echoes
in a scoring request, against the student's.

    scorer = LocalScorer("runs/teacher", student_tok)
    metrics = annotate(rollouts, scorer, coef=1.0)   # sets Sample.token_advantages

Tested by tests/test_opd.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rlvr.algos.teacher import reverse_kl, reverse_kl_advantages
from rlvr.config import InputError
from rlvr.distill.teacher import HTTPTeacher, TeacherConfig, TeacherError
from rlvr.distill.teacher_cache import ChatResult
from rlvr.types import Rollout

FORMS = ("echo", "prompt_logprobs")  # how an endpoint is asked for prompt log-probs
PROBE = "Compute 123 + 456. So #### 579"  # a text whose ids tell two tokenizers apart


def different_tokenizers(teacher: str, student: str, teacher_vocab: int | None, student_vocab: int,
                         detail: str = "") -> InputError:
    sizes = (f"{teacher_vocab} and {student_vocab} tokens" if teacher_vocab is not None else
             f"the teacher's vocabulary size not reported, the student's {student_vocab} tokens")
    return InputError(f"teacher {teacher} and student {student} have different tokenizers ({sizes}){detail}: the "
                      "teacher would score ids that mean other text to it; on-policy distillation needs a teacher of "
                      "the student's tokenizer")


def check_same_tokenizer(student_tok, teacher_tok, student: str, teacher: str) -> None:
    """An `InputError` unless both tokenizers map every token to the same id."""
    s, t = student_tok.get_vocab(), teacher_tok.get_vocab()
    if s != t:
        raise different_tokenizers(teacher, student, len(t), len(s))


class LocalScorer:
    """A local checkpoint (anything `load_model` reads) as a scoring teacher. With
    `student_tok`, a teacher of another tokenizer is refused here (else call `check`)."""

    def __init__(self, path: str | Path, student_tok=None, student: str = "the student", device=None, dtype=None,
                 engine: str = "torch", engine_options: dict | None = None):
        from rlvr.engine import make_engine
        from rlvr.models import count_parameters, load_model

        model, self.tok = load_model(path, device=device, dtype=dtype)
        self.name, self.parameters = str(path), count_parameters(model)
        if student_tok is not None:
            self.check(student_tok, student)
        self.engine = make_engine(model, self.tok, engine, role="inference", options=engine_options)

    def check(self, student_tok, student: str) -> None:
        check_same_tokenizer(student_tok, self.tok, student, self.name)

    def score(self, prompts: list[list[int]], completions: list[list[int]]) -> list[list[float]]:
        return self.engine.score(prompts, completions)

    def flops(self, prompts: list[list[int]], completions: list[list[int]]) -> float:
        """What `score` computes (compute.py's 2 N per token): each distinct prompt once, and
        every completion."""
        distinct = {tuple(p) for p in prompts}
        return 2.0 * self.parameters * (sum(map(len, distinct)) + sum(map(len, completions)))


@dataclass
class ScoreRequest:
    """Score `ids[start:]`: the log-prob of each of those tokens after the ones before it."""

    ids: list[int]
    start: int


class HTTPScorer(HTTPTeacher):
    """Prompt log-probs of token ids from an OpenAI-compatible `/completions` endpoint
    (`form`: ``echo`` asks for `echo` with `logprobs: 0`, ``prompt_logprobs`` for vLLM's
    `prompt_logprobs: 0`; each with one generated token, which servers require).
    `parameters`, when known, prices its forward passes in the compute accounting."""

    path = "/completions"

    def __init__(self, cfg: TeacherConfig, form: str = "echo", parameters: int = 0):
        if form not in FORMS:
            raise ValueError(f"unknown prompt log-prob form {form!r}; choose one of {FORMS}")
        super().__init__(cfg)
        self.form, self.parameters, self.name = form, parameters, f"{cfg.model} at {cfg.base_url}"

    def score(self, prompts: list[list[int]], completions: list[list[int]]) -> list[list[float]]:
        requests = [ScoreRequest(list(p) + list(c), len(p)) for p, c in zip(prompts, completions)]
        return [r.logprobs for r in self.complete(requests)]

    def flops(self, prompts: list[list[int]], completions: list[list[int]]) -> float:
        """Every request's forward pass over its whole text (a server's prefix cache unseen)."""
        return 2.0 * self.parameters * sum(len(p) + len(c) for p, c in zip(prompts, completions))

    def probe(self) -> None:
        """One short request, so that an endpoint that is not there, or that returns no prompt
        log-probs, fails in one line before any training."""
        try:
            self.score([[0]], [[0]])
        except (TeacherError, httpx.HTTPError) as e:
            raise InputError(f"teacher {self.name}: {e}") from None

    def check(self, student_tok, student: str) -> None:
        """Refuse an endpoint whose tokenizer is not the student's, by the ids of `PROBE`: from
        the server's `/tokenize` (beside `/v1`, as vLLM serves it) where it has one, else from
        the prompt tokens a scoring request echoes (token strings for `echo`, ids for
        `prompt_logprobs`, whose first token has none)."""
        ids = list(student_tok(PROBE).input_ids)
        answer = self._ask(self.cfg.base_url.rstrip("/").removesuffix("/v1") + "/tokenize",
                           {"model": self.cfg.model, "prompt": PROBE, "add_special_tokens": True})
        if answer is not None and isinstance(answer.get("tokens"), list):
            theirs, mine, vocab = answer["tokens"], ids, answer.get("vocab_size")
        else:  # token strings (echo), or the ids after the first (prompt_logprobs)
            theirs, vocab = self._echoed(), None
            mine = [_piece(student_tok.decode([i])) for i in ids] if self.form == "echo" else ids[1:]
        if theirs != mine or (vocab is not None and vocab != len(student_tok)):
            raise different_tokenizers(self.name, student, vocab, len(student_tok),
                                       f"; {PROBE!r} is {_shown(theirs)} to the teacher, {_shown(mine)} to the student")

    def _ask(self, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The endpoint's JSON answer to one POST; None where it has no such route (or refuses it)."""
        try:
            resp = httpx.post(url, json=body, headers=self._auth_header(), timeout=self.cfg.timeout_s)
            data = resp.json() if resp.status_code < 500 else None
        except (httpx.HTTPError, ValueError) as e:
            raise InputError(f"teacher {self.name}: {e}") from None
        if resp.status_code == 404 and ((data or {}).get("error") or {}).get("code") == "model_not_found":
            raise InputError(f"teacher {self.name}: {data['error'].get('message')}")
        return data if resp.status_code == 200 and isinstance(data, dict) else None

    def _echoed(self) -> list:
        """The endpoint's prompt tokens of `PROBE`, as a scoring request echoes them."""
        body = {"model": self.cfg.model, "prompt": PROBE, "max_tokens": 1, "temperature": 1.0}
        data = self._ask(self.cfg.base_url.rstrip("/") + self.path, {**body, "echo": True, "logprobs": 0}
                         if self.form == "echo" else {**body, "prompt_logprobs": 0})
        try:
            choice = data["choices"][0]
            if self.form == "echo":
                return [_piece(t) for t in choice["logprobs"]["tokens"][:data["usage"]["prompt_tokens"]]]
            return [int(next(iter(e))) for e in choice["prompt_logprobs"][1:]]
        except (TypeError, KeyError, IndexError, ValueError, StopIteration):
            raise InputError(f"teacher {self.name}: it has no /tokenize and does not echo a prompt's tokens, so "
                             "rlvr cannot check that it shares the student's tokenizer") from None

    def _canonical(self, req: ScoreRequest) -> dict[str, Any]:
        return {"kind": "score", "form": self.form, "base_url": self.cfg.base_url.rstrip("/"), "model": self.cfg.model,
                "ids": req.ids, "start": req.start}

    def _estimate(self, req: ScoreRequest) -> float:
        return len(req.ids) + 1

    def _body(self, req: ScoreRequest) -> dict[str, Any]:
        body = {"model": self.cfg.model, "prompt": req.ids, "max_tokens": 1, "temperature": 1.0}
        return {**body, "echo": True, "logprobs": 0} if self.form == "echo" else {**body, "prompt_logprobs": 0}

    def _parse(self, resp: httpx.Response, req: ScoreRequest) -> ChatResult:
        try:
            data = resp.json()
            choice = data["choices"][0]
            if self.form == "echo":
                lps = (choice.get("logprobs") or {}).get("token_logprobs") or []
                scored = lps[req.start:len(req.ids)]
            else:
                entries = choice.get("prompt_logprobs") or []
                scored = [entries[k][str(req.ids[k])]["logprob"] for k in range(req.start, len(req.ids))]
            usage = {k: int(v) for k, v in (data.get("usage") or {}).items()
                     if k in ("prompt_tokens", "completion_tokens", "total_tokens") and v is not None}
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            scored = None
        if scored is None or len(scored) != len(req.ids) - req.start or any(x is None for x in scored):
            raise TeacherError(
                f"the endpoint answered without the prompt log-probs asked for ({self.form}: " + (
                    "echo with logprobs 0" if self.form == "echo" else "prompt_logprobs 0") + "); a vLLM server "
                "needs --max-logprobs of at least 1 and returns raw log-probs with --logprobs-mode raw_logprobs, "
                "SGLang needs return_logprob; try the other form with --teacher_form; closed APIs do not return them")
        usage.setdefault("total_tokens", usage.get("prompt_tokens", len(req.ids)) + usage.get("completion_tokens", 0))
        return ChatResult(texts=[], finish_reasons=[], usage=usage, logprobs=[float(x) for x in scored])


def _piece(token: str) -> str:
    """A token string as text: byte-level BPE's and SentencePiece's space markers as spaces."""
    return token.replace("\u0120", " ").replace("\u2581", " ").replace("\u010a", "\n")


def _shown(tokens: list) -> str:
    return f"{len(tokens)} tokens {tokens[:8]!r}" + ("..." if len(tokens) > 8 else "")


def annotate(rollouts: list[Rollout], scorer, coef: float) -> dict[str, float]:
    """Score every sample with the teacher and set its per-token advantages to the reverse
    KL signal (`coef` times it); returns the mean reverse KL per model token and per
    sequence, the tokens the teacher was given (each sample's prompt and stream, what an
    endpoint is sent) and the FLOPs its forward passes cost (`scorer.flops`)."""
    samples = [s for r in rollouts for s in r.samples]
    if not samples:
        return {"teacher_tokens": 0, "teacher_flops": 0.0}
    prompts, completions = [s.prompt_ids for s in samples], [s.completion_ids for s in samples]
    teacher = scorer.score(prompts, completions)
    kl_sum, tokens, seq_kl = 0.0, 0, []
    for s, t in zip(samples, teacher):
        mask = s.mask()
        s.token_advantages = reverse_kl_advantages(s.logprobs, t, mask, coef)
        kl = reverse_kl(s.logprobs, t, mask)
        kl_sum += sum(kl)
        tokens += sum(1 for m in mask if m)
        seq_kl.append(sum(kl))
    return {"reverse_kl": kl_sum / max(tokens, 1), "reverse_kl_seq": sum(seq_kl) / len(seq_kl),
            "teacher_tokens": sum(len(p) + len(c) for p, c in zip(prompts, completions)),
            "teacher_flops": scorer.flops(prompts, completions)}
