"""`rlvr distill`: filters, provenance, a dataset HF `datasets` loads, resumption from the cache."""

import itertools
import json

import pytest

from rlvr.config import InputError
from rlvr.distill.distill import DistillConfig, main, teacher_problems
from rlvr.envs import make_env
from rlvr.models import build_tiny_model, count_parameters, save_model


def test_distill_writes_a_dataset_and_resumes_from_the_cache(tmp_path):
    import datasets

    model, tok = build_tiny_model("micro", seed=0)
    save_model(model, tok, tmp_path / "teacher")
    cfg = DistillConfig(run_dir=str(tmp_path / "d"), teacher=str(tmp_path / "teacher"), problems=6, k=3,
                        filter="none", max_tokens=8, chunk=4,
                        env={"name": "arithmetic", "digits": 1, "ops": ["add"], "template": "{expr}"})
    first = main(cfg)
    assert first["requests"] == 6 and first["cache_hits"] == 0 and first["generated"] == 18
    rows = [json.loads(line) for line in (tmp_path / "d" / "data.jsonl").read_text().splitlines()]
    assert len(rows) == first["kept"] > 0
    row = rows[0]
    assert row["messages"][-1]["role"] == "assistant" and row["provenance"]["n"] == 3
    assert set(row["verdict"]) == {"reward", "correct", "parsed", "flags"}
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "d" / "data.jsonl"), split="train")
    assert len(ds) == len(rows)
    # What the data cost: the teacher's tokens and FLOPs (2·N per prompt and completion token).
    log = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]  # a line per chunk
    assert first["total"]["teacher_flops"] == 2 * count_parameters(model) * first["spent_tokens"]
    assert log[-1]["compute/teacher_tokens"] == first["teacher_tokens"] > 0
    again = main(cfg)  # a rerun (or a resumed kill) sends nothing that was answered
    assert again["cache_hits"] == 6 and again["kept"] == first["kept"]
    assert again["spent_tokens"] == 0 and again["total"]["teacher_flops"] == first["total"]["teacher_flops"]


def test_killed_distill_resumes_without_resending_answered_requests(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from test_teacher import FakeServer

    from rlvr.distill.distill import DistillConfig as Cfg

    env = {"name": "arithmetic", "digits": 2, "ops": ["add"], "template": "{expr}"}
    args = ["--problems=40", "--k=2", "--chunk=8", "--teacher=fake", "--max_tokens=8",
            f"--run_dir={tmp_path / 'd'}", '--env={name: arithmetic, digits: 2, ops: [add], template: "{expr}"}']
    with FakeServer(delay_s=0.01, hold_after=20) as server:
        proc = subprocess.Popen([sys.executable, "-m", "rlvr.cli", "distill", f"--base_url={server.url}", *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            cache = tmp_path / "d" / "teacher_cache"
            # The 20 answers the server gave are on disk (a loaded machine writes them late), one more held.
            while not (sum(server.successes.values()) == 20 and server.held >= 1
                       and len(list(cache.rglob("*.json"))) == 20):
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "distill never reached the kill point"
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)  # killed mid-way, requests in flight
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        server.hold_after = None
        server.release.set()
        summary = main(Cfg(run_dir=str(tmp_path / "d"), base_url=server.url, teacher="fake", problems=40, k=2,
                           chunk=8, max_tokens=8, env=env))
    assert summary["requests"] == 40 and summary["cache_hits"] >= 20
    assert max(server.successes.values()) == 1  # no answered request was ever sent again
    assert sum(server.successes.values()) == len(server.successes)


def test_distill_refuses_another_command_s_run_directory(tmp_path):
    import pytest

    (tmp_path / "rl").mkdir()
    (tmp_path / "rl" / "summary.json").write_text('{"command": "rl"}')
    with pytest.raises(FileExistsError, match="another command"):
        main(DistillConfig(run_dir=str(tmp_path / "rl"), teacher=str(tmp_path / "nope"), problems=1))



def test_teacher_env_asks_the_teacher_in_its_own_prompts_and_keeps_the_student_s(tmp_path):
    # Context distillation: the teacher is asked with two worked examples, the rows keep
    # the bare prompt the student will be trained and evaluated on.
    model, tok = build_tiny_model("micro", seed=0)
    save_model(model, tok, tmp_path / "teacher")
    student = "prompt:format=answer_is:arithmetic:digits=1,ops=add"
    teacher_env = "prompt:format=answer_is,shots=2:arithmetic:digits=1,ops=add"
    cfg = DistillConfig(run_dir=str(tmp_path / "d"), teacher=str(tmp_path / "teacher"), problems=3, k=2,
                        filter="none", max_tokens=4, env=student, teacher_env=teacher_env)
    problems = list(itertools.islice(make_env(student).problems("train", 0), 3))
    asked = teacher_problems(cfg, make_env(student), problems)
    assert [p.id for p in asked] == [p.id for p in problems]
    assert [len(p.messages()) for p in asked] == [5, 5, 5]  # two worked examples (user, assistant), the question
    summary = main(cfg)
    rows = [json.loads(line) for line in (tmp_path / "d" / "data.jsonl").read_text().splitlines()]
    assert summary["requests"] == 3 and len(rows) == 6
    assert all(r["messages"][:-1] == problems[i // 2].messages() for i, r in enumerate(rows))  # the student's prompt
    assert rows[0]["provenance"]["teacher_env"] == teacher_env
    with pytest.raises(InputError, match="poses other problems"):
        teacher_problems(cfg.model_copy(update={"teacher_env": "prompt:format=answer_is,shots=2:arithmetic:digits=2"}),
                         make_env(student), problems)
