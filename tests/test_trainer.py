"""The trainer loop every regime shares, driven by a toy regime that states only a step:
the rows it logs, checkpoints every N and at the end, resume, a stop, a budget."""

import json

import pytest
from pydantic import Field

from rlvr.config import Config
from rlvr.models import build_tiny_model, load_model
from rlvr.train.trainer import Trainer


class CountConfig(Config):
    run_dir: str = "runs/count"
    steps: int = 5
    lr: float = 0.1
    weight_decay: float = 0.0
    save_every: int = 2
    keep_last: int = 2
    budget_flops: float = 0.0
    resume: bool = False
    tensorboard: bool = False
    stop_at: int = Field(-1, description="train_step returns None at this step (a regime's own stop).")


class Count(Trainer):
    """A regime whose step trains nothing and charges 10 trained tokens."""
    command = "count"

    def build(self, checkpoint):
        model, tok = load_model(checkpoint) if checkpoint else build_tiny_model("micro", seed=0)
        return model.train(), tok, None

    def inherited(self):
        return None

    def setup(self, state):
        self.steps = self.cfg.steps
        self.seen = list(state.get("seen", []))

    def make_evaluator(self):
        return None

    def rate(self, step):
        return self.cfg.lr / (step + 1)

    def train_step(self, step):
        if step == self.cfg.stop_at:
            return None
        self.seen.append(step)
        self.compute.trained(10)
        return {"loss": float(step), "trained_tokens": 10}

    def state(self):
        return {"seen": self.seen}

    def summary(self):
        return {"seen": self.seen}


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_a_run_logs_every_step_and_checkpoints_every_n_and_at_the_end(tmp_path):
    run = Count(CountConfig(run_dir=str(tmp_path / "c"))).train()
    rows = _rows(run.dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and [r["loss"] for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [r["lr"] for r in rows] == pytest.approx([0.1 / (s + 1) for s in range(5)])  # the rate each step used
    assert all(r["tokens_per_s"] > 0 and r["step_time"] > 0 and "peak_rss_gb" in r for r in rows)
    assert [r["compute/trained_tokens"] for r in rows] == [10, 20, 30, 40, 50]
    assert [p.name for p in run.checkpoints()] == ["step_4", "step_5"]  # 2, 4 and the end; keep_last 2
    summary = _summary(run.dir)
    assert summary["command"] == "count" and summary["steps"] == 5 and summary["seen"] == [0, 1, 2, 3, 4]
    assert summary["compute"]["trained_tokens"] == 50 and "final" not in summary  # no evaluator, no final


def test_a_resumed_run_continues_with_its_state_optimizer_and_meter(tmp_path):
    Count(CountConfig(run_dir=str(tmp_path / "c"), stop_at=3)).train()  # stops before step 3: saved at 3
    assert _summary(tmp_path / "c")["steps"] == 3
    run = Count(CountConfig(run_dir=str(tmp_path / "c"), steps=6, resume=True)).train()
    assert [r["step"] for r in _rows(run.dir)] == [1, 2, 3, 4, 5, 6]
    summary = _summary(run.dir)
    assert summary["seen"] == [0, 1, 2, 3, 4, 5] and summary["compute"]["trained_tokens"] == 60
    assert (run.dir / "checkpoints" / "last" / "optimizer.pt").exists()
    again = Count(CountConfig(run_dir=str(tmp_path / "c"), steps=6, resume=True)).train()  # nothing left to do
    assert _summary(again.dir)["steps"] == 6 and [p.name for p in again.checkpoints()] == ["step_4", "step_6"]


def test_a_budget_ends_the_run_at_the_step_that_spends_it(tmp_path):
    per_step = 10 * 6 * sum(p.numel() for p in build_tiny_model("micro", seed=0)[0].parameters())
    run = Count(CountConfig(run_dir=str(tmp_path / "c"), steps=50, budget_flops=2.5 * per_step)).train()
    assert _summary(run.dir)["steps"] == 3
