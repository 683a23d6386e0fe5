"""Compute accounting: a tiny run's figures equal a hand count; inheritance, budgets, TensorBoard; the report.

The hand count follows the formulas of rlvr/compute.py from what the run logged
about every sample (samples.jsonl holds them all here) and from the data it read.
"""

import json

import pytest

from conftest import ENV
from rlvr import report
from rlvr.atomic import write_json
from rlvr.compute import Totals, inherited_from
from rlvr.models import count_parameters, load_model
from rlvr.train import pretrain, rl, rs, sft
from rlvr.run import last_model


def _jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def _rl(base, run_dir, **kw):
    cfg = dict(run_dir=str(run_dir), model=str(base), env=ENV, steps=2, prompts=4, group_size=4, max_new_tokens=16,
               micro_batch=1024, lr=1e-3, warmup=0, eval_problems=0, save_every=0, log_samples=4, seed=0)
    return rl.RLConfig(**{**cfg, **kw})


def test_rl_compute_equals_a_hand_count(micro_base, tmp_path):
    run = rl.main(_rl(micro_base, tmp_path / "rl"))
    n = count_parameters(load_model(last_model(micro_base))[0])
    samples = _jsonl(run.dir / "samples.jsonl")
    assert len(samples) == 2 * 4 * 4  # every sample of both steps
    generated = sum(s["tokens"] for s in samples)
    prompts = sum(s["prompt_tokens"] for s in samples) // 4  # a prompt is prefilled once for its group
    # Training: each group with a learning signal (some advantage not 0), its prompt once
    # (shared by the group) plus every completion token; a group of equal rewards is skipped.
    groups: dict[tuple, list] = {}
    for s in samples:
        groups.setdefault((s["step"], s["problem"]), []).append(s)
    live = [g for g in groups.values() if any(s["advantage"] != 0 for s in g)]
    assert 0 < len(live) < len(groups)  # both kinds occur, so the count is tested
    trained = sum(g[0]["prompt_tokens"] + sum(s["tokens"] for s in g) for g in live)
    m = _jsonl(run.dir / "metrics.jsonl")[-1]
    assert m["compute/generated_tokens"] == generated
    assert m["compute/prompt_tokens"] == prompts
    assert m["compute/trained_tokens"] == trained
    assert m["compute/forward_flops"] == pytest.approx(2 * n * (prompts + generated) + 2 * n * trained)
    assert m["compute/backward_flops"] == pytest.approx(4 * n * trained)
    assert m["compute/flops"] == pytest.approx(m["compute/forward_flops"] + m["compute/backward_flops"])
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["compute"]["trained_tokens"] == trained and summary["inherited"]["flops"] == 0  # pretraining is not inherited
    assert summary["total"]["wall_seconds"] > 0


def test_lora_and_the_proximal_pass_are_charged_what_they_compute(micro_base, tmp_path):
    """Under LoRA the frozen base's weight gradients are never formed: backward is
    2 N + 2 N_trained per token, not 4 N. Decoupled PPO's proximal pass is one more forward."""
    full = _jsonl(rl.main(_rl(micro_base, tmp_path / "full")).dir / "metrics.jsonl")[-1]
    run = rl.main(_rl(micro_base, tmp_path / "lora", lora_r=4, lora_targets=["q_proj", "v_proj"]))
    n = count_parameters(load_model(last_model(micro_base))[0])
    m = _jsonl(run.dir / "metrics.jsonl")[-1]
    from rlvr.train.setup import setup_model
    lora_model = setup_model(_rl(micro_base, tmp_path / "x", lora_r=4, lora_targets=["q_proj", "v_proj"]),
                             last_model(micro_base))[0]
    n_all, n_trained = count_parameters(lora_model), count_parameters(lora_model, trainable=True)
    assert n < n_all and 0 < n_trained == n_all - n
    assert m["compute/backward_flops"] == pytest.approx(2 * (n_all + n_trained) * m["compute/trained_tokens"])
    assert full["compute/backward_flops"] == pytest.approx(4 * n * full["compute/trained_tokens"])
    dec = _jsonl(rl.main(_rl(micro_base, tmp_path / "dec", offpolicy="decoupled", mini_batches=2)).dir / "metrics.jsonl")[-1]
    sampled = dec["compute/prompt_tokens"] + dec["compute/generated_tokens"]
    # generation, training's forward, and the proximal forward of every token trained (one epoch)
    assert dec["compute/forward_flops"] == pytest.approx(2 * n * (sampled + 2 * dec["compute/trained_tokens"]))


def test_sft_compute_and_what_it_inherits(micro_base, tmp_path):
    data_dir = tmp_path / "distill"
    data_dir.mkdir()
    convs = [[{"role": "user", "content": f"{a}+{b}"}, {"role": "assistant", "content": f"1:{(a + b) % 10}{(a + b) // 10} #### {a + b}"}]
             for a, b in ((1, 2), (3, 4), (5, 6))]
    (data_dir / "data.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    teacher = Totals(teacher_tokens=300, teacher_flops=1e9, wall_seconds=5.0)
    write_json(data_dir / "summary.json", {"command": "distill", "total": teacher.as_dict()})
    run = sft.main(sft.SFTConfig(run_dir=str(tmp_path / "sft"), model=str(micro_base), data=str(data_dir / "data.jsonl"),
                                 epochs=2, batch_size=2, lr=1e-3, warmup=0, max_length=64, eval_problems=0))
    model, tok = load_model(last_model(run.dir))
    n = count_parameters(model)
    tokens = 2 * sum(len(sft.encode(tok, c).ids) for c in convs)  # two epochs, no padding charged
    s = json.loads((run.dir / "summary.json").read_text())
    assert s["compute"]["trained_tokens"] == tokens
    assert s["compute"]["forward_flops"] == pytest.approx(2 * n * tokens)
    assert s["compute"]["backward_flops"] == pytest.approx(4 * n * tokens)
    assert s["inherited"]["teacher_tokens"] == 300 and s["inherited"]["teacher_flops"] == 1e9
    assert s["total"]["flops"] == pytest.approx(6 * n * tokens + 1e9)
    # RL from the student carries the student's whole bill, the teacher's tokens included
    # (read from the checkpoint's compute.json, without loading its optimizer state).
    saved = json.loads((run.dir / "checkpoints" / "last" / "compute.json").read_text())["total"]
    assert {k: v for k, v in saved.items() if k != "wall_seconds"} == \
        {k: v for k, v in s["total"].items() if k != "wall_seconds"}
    assert inherited_from(run.dir).as_dict() == pytest.approx(
        {**s["total"], "wall_seconds": pytest.approx(s["total"]["wall_seconds"], abs=1.0)})
    after = rl.main(_rl(run.dir, tmp_path / "rl", steps=1))
    t = json.loads((after.dir / "summary.json").read_text())
    assert t["inherited"]["teacher_tokens"] == 300
    assert t["total"]["flops"] == pytest.approx(s["total"]["flops"] + t["compute"]["flops"])


def test_a_flop_budget_stops_the_run(micro_base, tmp_path):
    probe = rl.main(_rl(micro_base, tmp_path / "probe", steps=1))
    per_step = json.loads((probe.dir / "summary.json").read_text())["compute"]["flops"]
    run = rl.main(_rl(micro_base, tmp_path / "rl", steps=50, budget_flops=2.5 * per_step))
    m = _jsonl(run.dir / "metrics.jsonl")
    assert 2 <= len(m) < 50
    assert m[-1]["compute/flops"] >= 2.5 * per_step > m[-2]["compute/flops"]
    assert json.loads((run.dir / "summary.json").read_text())["steps"] == len(m)


def test_best_of_n_stops_its_fine_tuning_at_the_budget(micro_base, tmp_path):
    """A budget that runs out mid-round stops the round's SFT there, within one SFT step,
    instead of at the round's end (which bought best-of-N ~12% more than the others)."""
    kw = dict(model=str(micro_base), env=ENV, problems=16, n=4, max_new_tokens=16, sft_batch_size=4, sft_epochs=4,
              eval_problems=0, keep="correct")
    probe = rs.main(rs.RSConfig(run_dir=str(tmp_path / "probe"), rounds=1, **kw))
    spent = json.loads((probe.dir / "summary.json").read_text())["compute"]
    sft_dir = probe.dir / "round_1" / "sft"
    sft_flops = json.loads((sft_dir / "summary.json").read_text())["compute"]["flops"]
    sft_steps = json.loads((sft_dir / "summary.json").read_text())["steps"]
    assert sft_steps >= 4  # so that stopping halfway is visible
    budget = spent["flops"] - sft_flops / 2  # runs out halfway through the round's fine-tuning
    run = rs.main(rs.RSConfig(run_dir=str(tmp_path / "rs"), rounds=3, budget_flops=budget, **kw))
    total = json.loads((run.dir / "summary.json").read_text())["compute"]["flops"]
    assert budget <= total <= budget + 1.01 * sft_flops / sft_steps
    assert json.loads((run.dir / "summary.json").read_text())["rounds"] == 1


def test_tensorboard_mirrors_the_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = pretrain.main(pretrain.PretrainConfig(run_dir=str(tmp_path / "pre"), env=ENV, preset="micro", steps=4,
                                                batch_size=8, tensorboard=True))
    acc = EventAccumulator(str(run.dir / "tensorboard"))
    acc.Reload()
    losses = [e.value for e in acc.Scalars("loss")]
    assert losses == pytest.approx([r["loss"] for r in _jsonl(run.dir / "metrics.jsonl")])
    assert "compute/flops" in acc.Tags()["scalars"]


def test_compare_two_tiny_runs(micro_base, tmp_path):
    evals = dict(eval_problems=30, eval_samples=2, final_eval_samples=8)
    a = rl.main(_rl(micro_base, tmp_path / "rl", steps=3, eval_every=1, **evals))
    b = rs.main(rs.RSConfig(run_dir=str(tmp_path / "rs"), model=str(micro_base), env=ENV, rounds=2, problems=16, n=4,
                            max_new_tokens=16, sft_batch_size=16, **evals))
    out = report.main(report.CompareConfig(runs=[str(a.dir), str(b.dir)], out=str(tmp_path / "cmp"), target=0.5))
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert "<table" in html and html.count("data:image/png;base64,") == 3
    for png in ("accuracy_vs_tokens.png", "accuracy_vs_flops.png", "pass_at_k.png"):
        assert (tmp_path / "cmp" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "cmp" / "report.md").read_text()
    for run, row in zip((a, b), out["rows"]):
        final = json.loads((run.dir / "eval.json").read_text())["metrics"]["arithmetic"]
        assert row["pass@1"]["mean"] == final["pass@1"]["mean"]
        assert row["pass@8"]["mean"] == final["pass@8"]["mean"]
        assert f"{final['pass@1']['mean']:.1%}" in md
        curve = _jsonl(run.dir / "evals.jsonl")
        assert [p["flops"] for p in row["curve"]] == [e["compute"]["flops"] for e in curve]
    assert [p["step"] for p in out["rows"][0]["curve"]] == [0, 1, 2, 3]


def test_an_sft_budget_sets_the_schedule(micro_base, tmp_path):
    """With a FLOP budget the cosine schedule spans the steps the budget affords, not the epochs."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"{a}+1"},
                                                     {"role": "assistant", "content": f"#### {a + 1}"}]}) + "\n"
                            for a in range(8)))
    model, tok = load_model(last_model(micro_base))
    per_step = 6 * count_parameters(model) * sum(len(sft.encode(tok, json.loads(x)["messages"]).ids)
                                                 for x in data.read_text().splitlines()[:4])
    run = sft.main(sft.SFTConfig(run_dir=str(tmp_path / "sft"), model=str(micro_base), data=str(data), epochs=1000,
                                 batch_size=4, lr=1e-3, warmup=0, max_length=64, budget_flops=5.5 * per_step))
    m = _jsonl(run.dir / "metrics.jsonl")
    assert len(m) == 6 and m[-1]["compute/flops"] >= 5.5 * per_step
    assert m[0]["lr"] == 1e-3 and m[-1]["lr"] < 2e-4  # decayed by the budget's end, not by epoch 1000
