"""On-policy distillation: the teacher's per-token signal, the tokenizer check, and `rlvr opd`
bringing a student's samples closer to its teacher's view of them."""

import json

import pytest

from conftest import ENV
from rlvr.algos.teacher import reverse_kl, reverse_kl_advantages
from rlvr.config import InputError
from rlvr.distill.scorer import LocalScorer, annotate, check_same_tokenizer
from rlvr.engine import TorchEngine
from rlvr.envs import make_env
from rlvr.models import load_model
from rlvr.rollout import generate_rollouts
from rlvr.run import last_model
from rlvr.types import Sampling


def test_the_signal_is_the_teachers_log_prob_minus_the_students_on_the_mask():
    student, teacher, mask = [-0.5, -2.0, -1.0, -3.0], [-1.0, -0.5, -1.0, -9.0], [1, 1, 1, 0]
    assert reverse_kl(student, teacher, mask) == [0.5, -1.5, 0.0, 0.0]
    assert reverse_kl_advantages(student, teacher, mask, coef=2.0) == [-1.0, 3.0, -0.0, -0.0]
    with pytest.raises(ValueError, match="one completion"):
        reverse_kl([0.0], [0.0, 1.0], [1])


def test_a_teacher_of_another_tokenizer_is_refused_naming_both(micro_base, bpe_llama):
    _, char_tok = load_model(last_model(micro_base))
    _, bpe_tok = load_model(bpe_llama)
    check_same_tokenizer(char_tok, char_tok, "s", "t")
    with pytest.raises(InputError, match=rf"teacher T and student S have different tokenizers \({len(bpe_tok)} and "
                                         rf"{len(char_tok)} tokens\)"):
        check_same_tokenizer(char_tok, bpe_tok, "S", "T")


def test_a_teacher_scoring_its_own_samples_gives_no_signal_and_another_one_does(micro_base, tmp_path):
    model, tok = load_model(last_model(micro_base))
    env = make_env("guess:max_turns=2,max_episode_tokens=64")
    problems = [p for _, p in zip(range(3), env.problems("train", 0))]
    rollouts = generate_rollouts(TorchEngine(model, tok), env, problems, 4, Sampling(max_new_tokens=12, seed=3))
    scorer = LocalScorer(last_model(micro_base), tok)
    same = annotate(rollouts, scorer, coef=1.0)
    assert abs(same["reverse_kl"]) < 1e-4
    samples = [s for r in rollouts for s in r.samples]
    completions = sum(len(s.completion_ids) for s in samples)
    assert same["teacher_tokens"] == sum(len(s.prompt_ids) for s in samples) + completions  # what an endpoint is sent
    once = sum(len(p) for p in {tuple(s.prompt_ids) for s in samples})  # a group's prompt, computed once
    assert once < sum(len(s.prompt_ids) for s in samples)
    assert same["teacher_flops"] == pytest.approx(2 * scorer.parameters * (once + completions))
    for s in (s for r in rollouts for s in r.samples):
        assert len(s.token_advantages) == len(s.completion_ids)
        assert all(a == 0.0 for a, m in zip(s.token_advantages, s.mask()) if not m)  # the environment's tokens
        assert max(abs(a) for a in s.token_advantages) < 1e-4
    from rlvr.models import build_tiny_model, save_model
    other, other_tok = build_tiny_model("micro", seed=11)
    save_model(other, other_tok, tmp_path / "other")
    far = annotate(rollouts, LocalScorer(tmp_path / "other", tok), coef=1.0)
    assert far["reverse_kl"] > 0.5  # a random model finds the student's choices far less likely


@pytest.mark.learning
def test_opd_brings_a_damaged_copy_of_the_teacher_back_towards_it(micro_base, tmp_path):
    """The student is the teacher with noise (0.3 of each tensor's std) on every weight: its
    own samples are far from what the teacher would write, and the teacher's per-token
    signal on them brings the reverse KL down within a dozen steps."""
    import torch

    from rlvr.models import save_model
    from rlvr.train import opd

    model, tok = load_model(last_model(micro_base))
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=noise) * 0.3 * p.std())
    save_model(model, tok, tmp_path / "student")
    cfg = opd.OPDConfig(run_dir=str(tmp_path / "opd"), model=str(tmp_path / "student"), teacher=str(micro_base),
                        env=ENV, steps=12, prompts=16, group_size=4, max_new_tokens=16, eval_problems=0,
                        save_every=0, warmup=2, seed=0)
    opd.main(cfg)
    rows = [json.loads(line) for line in (tmp_path / "opd" / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(r["reverse_kl"] for r in rows[:3]) / 3, sum(r["reverse_kl"] for r in rows[-3:]) / 3
    assert last < 0.6 * first, (first, last)
    summary = json.loads((tmp_path / "opd" / "summary.json").read_text())
    assert summary["command"] == "opd" and summary["compute"]["teacher_tokens"] > 0 and summary["compute"]["teacher_flops"] > 0


def test_a_teacher_behind_an_endpoint_scores_as_the_local_one_does_and_asks_nothing_twice(micro_base, tmp_path):
    from conftest import served
    from rlvr.distill.scorer import HTTPScorer
    from rlvr.distill.teacher import TeacherConfig, TeacherError
    from rlvr.serve import ServeConfig, make_app

    model, tok = load_model(last_model(micro_base))
    prompts = [tok("Compute 3+4.", add_special_tokens=False)["input_ids"], [5, 6]]
    completions = [tok("#### 7", add_special_tokens=False)["input_ids"] + [tok.eos_token_id], [7, 8, 9]]
    local = LocalScorer(last_model(micro_base), tok).score(prompts, completions)
    with served(make_app(model, tok, ServeConfig(model=str(micro_base), model_name="teacher"))) as url:
        for form in ("echo", "prompt_logprobs"):
            scorer = HTTPScorer(TeacherConfig(base_url=f"{url}/v1", model="teacher", cache_dir=str(tmp_path / form)),
                                form)
            remote = scorer.score(prompts, completions)
            assert [len(x) for x in remote] == [len(c) for c in completions]
            assert all(abs(a - b) < 1e-4 for x, y in zip(remote, local) for a, b in zip(x, y))
            sent = scorer.requests_sent
            assert scorer.score(prompts, completions) == remote and scorer.requests_sent == sent  # the cache
        wrong = HTTPScorer(TeacherConfig(base_url=f"{url}/v1", model="teacher", max_retries=0), "echo")
        wrong._body = lambda req: {"model": "teacher", "prompt": req.ids, "max_tokens": 1}  # no log-probs asked
        with pytest.raises(TeacherError, match="without the prompt log-probs"):
            wrong.score(prompts, completions)
        # `rlvr opd` with that endpoint as its teacher: scored, charged, cached in the run directory.
        from rlvr.train import opd
        run = opd.main(opd.OPDConfig(run_dir=str(tmp_path / "opd"), model=str(micro_base), teacher="teacher",
                                     teacher_base_url=f"{url}/v1", teacher_params=1000, env=ENV, steps=2, prompts=4,
                                     group_size=2, max_new_tokens=8, eval_problems=0, save_every=0))
        rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(abs(r["reverse_kl"]) < 1e-4 for r in rows)  # the teacher is the student
        assert rows[-1]["compute/teacher_tokens"] > 0 and any((run.dir / "teacher_cache").rglob("*.json"))
        # an endpoint is charged every request's whole text: 2 N per token it was sent
        assert rows[-1]["compute/teacher_flops"] == pytest.approx(2 * 1000 * rows[-1]["compute/teacher_tokens"])
    gone = HTTPScorer(TeacherConfig(base_url="http://127.0.0.1:9/v1", model="t", max_retries=0, timeout_s=2), "echo")
    with pytest.raises(InputError, match="teacher t at http://127.0.0.1:9/v1"):
        gone.probe()


def test_a_teacher_too_short_for_the_students_sequences_is_refused_before_training(micro_base, tmp_path):
    from rlvr.train import opd

    cfg = opd.OPDConfig(run_dir=str(tmp_path / "opd"), model=str(micro_base), teacher=str(micro_base), env=ENV,
                        steps=1, prompts=2, group_size=2, max_new_tokens=600, eval_problems=0)
    with pytest.raises(InputError, match=r"holds 512 tokens, but the student's sequences run to \d+"):
        opd.main(cfg)
    assert not (tmp_path / "opd" / "metrics.jsonl").exists()


def _without_tokenize(app):
    """The app as a server without `/tokenize` (an OpenAI-compatible server that is not vLLM's)."""
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != "/tokenize"]
    return app


def test_a_teacher_endpoint_of_another_tokenizer_is_refused_at_start_by_its_tokenize_or_its_echo(
        micro_base, bpe_llama, tmp_path):
    import httpx

    from conftest import served
    from rlvr.distill.scorer import PROBE, HTTPScorer
    from rlvr.distill.teacher import TeacherConfig
    from rlvr.serve import ServeConfig, make_app
    from rlvr.train import opd

    model, tok = load_model(last_model(micro_base))
    other, other_tok = load_model(bpe_llama)
    assert other_tok(PROBE).input_ids != tok(PROBE).input_ids

    def scorer(url, form="echo", name="teacher"):
        return HTTPScorer(TeacherConfig(base_url=f"{url}/v1", model=name, max_retries=0), form)

    with served(make_app(model, tok, ServeConfig(model=str(micro_base), model_name="teacher"))) as url:
        answer = httpx.post(f"{url}/tokenize", json={"model": "teacher", "prompt": PROBE}).json()
        assert answer == {"count": len(tok(PROBE).input_ids), "tokens": tok(PROBE).input_ids,
                          "max_model_len": model.config.max_position_embeddings, "vocab_size": len(tok)}
        assert httpx.post(f"{url}/tokenize", json={"model": "x", "prompt": "a"}).status_code == 404
        for form in ("echo", "prompt_logprobs"):
            scorer(url, form).check(tok, "student")  # the student's own tokenizer passes
        with pytest.raises(InputError, match="the model 'x' does not exist"):
            scorer(url, name="x").check(tok, "student")
    with served(_without_tokenize(make_app(model, tok, ServeConfig(model=str(micro_base), model_name="teacher")))) as url:
        assert httpx.post(f"{url}/tokenize", json={"model": "teacher", "prompt": PROBE}).status_code == 404
        for form in ("echo", "prompt_logprobs"):
            scorer(url, form).check(tok, "student")  # by the echoed prompt tokens

    vocabs = rf"\({len(other_tok)} and {len(tok)} tokens\); 'Compute 123 \+ 456. So #### 579' is " \
             rf"{len(other_tok(PROBE).input_ids)} tokens"
    with served(make_app(other, other_tok, ServeConfig(model=str(bpe_llama), model_name="bpe"))) as url:
        with pytest.raises(InputError, match=rf"^teacher bpe at {url}/v1 and student S have different tokenizers {vocabs}"):
            scorer(url, name="bpe").check(tok, "S")
        cfg = opd.OPDConfig(run_dir=str(tmp_path / "opd"), model=str(micro_base), teacher="bpe",
                            teacher_base_url=f"{url}/v1", env=ENV, steps=1, prompts=2, group_size=2, eval_problems=0)
        with pytest.raises(InputError, match=f"teacher bpe at {url}/v1 and student {micro_base} have different"):
            opd.main(cfg)
        assert not (tmp_path / "opd" / "metrics.jsonl").exists()
    with served(_without_tokenize(make_app(other, other_tok, ServeConfig(model=str(bpe_llama), model_name="bpe")))) as url:
        for form in ("echo", "prompt_logprobs"):
            with pytest.raises(InputError, match=r"different tokenizers \(the teacher's vocabulary size not reported, "
                                                 rf"the student's {len(tok)} tokens\)"):
                scorer(url, form, "bpe").check(tok, "S")


def test_opd_measures_its_teachers_own_accuracy_once_local_or_behind_an_endpoint(micro_base, tmp_path):
    """summary.json holds the teacher's accuracy on the run's held-out problems: a local
    teacher generates as the student's final evaluation does; an endpoint is asked through
    its chat API. Measured once (teacher_eval.json): a resumed run does not ask again."""
    from conftest import served
    from rlvr.eval import eval_problems, evaluate
    from rlvr.serve import ServeConfig, make_app
    from rlvr.train import opd

    common = dict(env=ENV, steps=1, prompts=4, group_size=2, max_new_tokens=8, eval_problems=6, eval_samples=2,
                  save_every=0, seed=0)
    run = opd.main(opd.OPDConfig(run_dir=str(tmp_path / "local"), model=str(micro_base), teacher=str(micro_base),
                                 **common))
    summary = json.loads((run.dir / "summary.json").read_text())
    teacher = summary["teacher"]["metrics"]["arithmetic"]
    model, tok = load_model(last_model(micro_base))
    env = make_env(ENV)
    direct = evaluate(TorchEngine(model, tok), env, eval_problems(env, 6), 2, [1, 2],
                      Sampling(temperature=1.0, max_new_tokens=8, seed=0))["arithmetic"]
    assert teacher["pass@1"] == direct["pass@1"] and teacher["greedy"] == direct["greedy"]
    assert summary["teacher"]["teacher"] == str(last_model(micro_base))
    with served(make_app(model, tok, ServeConfig(model=str(micro_base), model_name="teacher"))) as url:
        run = opd.main(opd.OPDConfig(run_dir=str(tmp_path / "api"), model=str(micro_base), teacher="teacher",
                                     teacher_base_url=f"{url}/v1", **common))
        first = json.loads((run.dir / "teacher_eval.json").read_text())
        assert set(first["metrics"]["arithmetic"]) >= {"pass@1", "greedy"}
        (run.dir / "teacher_eval.json").write_text(json.dumps({**first, "teacher": "kept"}))
        again = opd.main(opd.OPDConfig(run_dir=str(tmp_path / "api"), model=str(micro_base), teacher="teacher",
                                       teacher_base_url=f"{url}/v1", resume=True, **{**common, "steps": 2}))
        assert json.loads((again.dir / "summary.json").read_text())["teacher"]["teacher"] == "kept"
