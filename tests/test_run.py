"""Run directories: atomic checkpoints, `last`, pruning, and resume trimming metrics."""

import json

import pytest
import torch

from rlvr.atomic import atomic_dir
from rlvr.models import build_tiny_model
from rlvr.train.rl import RLConfig
from rlvr.run import Run, last_model


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    model, tok = build_tiny_model("micro")
    run = Run(tmp_path / "r", RLConfig())
    for step in (1, 2, 3):
        run.save(step, model, tok, {"optimizer": {}}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert names == ["last", "step_2", "step_3"]
    assert last_model(tmp_path / "r") == tmp_path / "r" / "checkpoints" / "last" / "model"
    assert (last_model(tmp_path / "r") / "config.json").exists()


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "ckpt") as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_resume_restores_state_and_trims_metrics(tmp_path):
    model, tok = build_tiny_model("micro")
    run = Run(tmp_path / "r", RLConfig())
    for step in (1, 2, 3):
        run.log(step, {"x": step})
    torch.manual_seed(123)
    run.save(2, model, tok, {"optimizer": {"marker": 7}})
    expected = torch.rand(3)
    with pytest.raises(FileExistsError, match="--resume"):
        Run(tmp_path / "r", RLConfig())
    again = Run(tmp_path / "r", RLConfig(), resume=True)
    path, state = again.resume_state()
    assert state["step"] == 2 and state["optimizer"] == {"marker": 7}
    assert torch.equal(torch.rand(3), expected)  # RNG continues where the checkpoint left it
    steps = [json.loads(line)["step"] for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_resume_survives_a_half_written_log_line(tmp_path):
    model, tok = build_tiny_model("micro")
    run = Run(tmp_path / "r", RLConfig())
    for step in (1, 2, 3):
        run.log(step, {"x": step})
    run.save(2, model, tok, {})
    with open(tmp_path / "r" / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "x"')  # killed mid-write
    Run(tmp_path / "r", RLConfig(), resume=True).resume_state()
    steps = [json.loads(line)["step"] for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_a_run_without_a_checkpoint_starts_its_logs_over(tmp_path):
    run = Run(tmp_path / "r", RLConfig())
    run.log(0, {"x": 0})
    run.log(1, {"x": 1})
    again = Run(tmp_path / "r", RLConfig(), resume=True)
    assert again.resume_state() is None
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == ""


def test_a_kill_inside_a_checkpoint_write_loses_nothing_on_resume(tmp_path):
    """What SIGKILL can leave mid-save: a half-written temporary (gigabytes for a real
    model) and, re-saving a step, the old copy moved aside with the new not yet in place."""
    import os

    model, tok = build_tiny_model("micro")
    run = Run(tmp_path / "r", RLConfig())
    run.save(1, model, tok, {"optimizer": {"marker": 1}})
    run.save(2, model, tok, {"optimizer": {"marker": 2}})
    ckpts = tmp_path / "r" / "checkpoints"
    (ckpts / ".step_3.abc123.tmp").mkdir()
    (ckpts / ".step_3.abc123.tmp" / "model.safetensors").write_bytes(b"half")
    os.replace(ckpts / "step_2", ckpts / ".step_2.old")  # the kill came between the two renames
    path, state = Run(tmp_path / "r", RLConfig(), resume=True).resume_state()
    assert state["step"] == 2 and state["optimizer"] == {"marker": 2}
    assert sorted(p.name for p in ckpts.iterdir()) == ["last", "step_1", "step_2"]
    assert last_model(tmp_path / "r") == ckpts / "last" / "model" and (ckpts / "last").resolve().name == "step_2"
