"""Pretraining's held-out check: when the procedure counts as learned, the decay, the band stop."""

import json

import pytest

from conftest import ENV
from rlvr.train import pretrain


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _cfg(run_dir, **kw):
    cfg = dict(run_dir=str(run_dir), env=ENV, preset="micro", steps=60, batch_size=8, lr=3e-3, warmup=2, slip=0.7,
               check_every=5, check_from=5, check_problems=4, check_samples=2, check_max_new_tokens=12,
               learned_at=0.01, decay_steps=20, settle_steps=10,
               band_pass_at_k=0.0, band_pass_at_1=1.0, band_greedy=1.0)
    return pretrain.PretrainConfig(**{**cfg, **kw})


def test_rate_decays_from_the_step_the_check_saw_learning():
    cfg = _cfg("x", lr=1e-3, warmup=10, decay_steps=100)
    assert pretrain.rate(cfg, 0, None, True) == pytest.approx(1e-4)  # warm-up
    assert pretrain.rate(cfg, 500, None, True) == 1e-3  # peak until learned, however long
    assert pretrain.rate(cfg, 300, 300, True) == 1e-3
    assert pretrain.rate(cfg, 350, 300, True) == pytest.approx(0.55e-3)  # halfway down the cosine to 10%
    assert pretrain.rate(cfg, 400, 300, True) == pytest.approx(1e-4)
    assert pretrain.rate(cfg.model_copy(update={"steps": 200}), 200, None, False) == pytest.approx(1e-4)  # no check


def test_stops_at_the_first_check_in_band_after_settling(tmp_path):
    run = pretrain.main(_cfg(tmp_path / "pre", learned_at=0.0))  # learned at the first check
    rows = _rows(run.dir)
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["learned_at_step"] == 5 and summary["in_band"] is True
    assert summary["steps"] == rows[-1]["step"] == 15  # 5 + settle_steps, at a check
    assert "check/pass@2" in rows[-1] and summary["check"]["check/pass@2"] == rows[-1]["check/pass@2"]
    assert rows[5]["lr"] == pytest.approx(3e-3) and rows[14]["lr"] < rows[6]["lr"]  # decaying after step 5
    # Resuming a finished run trains nothing more.
    pretrain.main(_cfg(tmp_path / "pre", learned_at=0.0, resume=True))
    assert _rows(run.dir) == rows


def test_a_base_that_never_enters_its_band_says_so(tmp_path, capsys):
    run = pretrain.main(_cfg(tmp_path / "pre", steps=12, learned_at=1.0, band_pass_at_k=1.0))
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["in_band"] is False and summary["learned_at_step"] is None
    assert "never entered its band" in capsys.readouterr().err
