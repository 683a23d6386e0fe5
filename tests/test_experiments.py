"""The comparison experiments end to end (slow: `make test-slow`, kept out of CI)."""

import json

import pytest

from rlvr.experiments import ceiling, regimes


@pytest.mark.slow
def test_ceiling_experiment_runs_every_stage(tmp_path):
    out = ceiling.main(ceiling.CeilingConfig(run_dir=str(tmp_path / "c"), teacher_max_steps=5, distill_problems=40,
                                             k=2, sft_epochs=1, rl_steps=2, eval_problems=20, eval_samples=2))
    names = {"base", "teacher", "student (none)", "student (correct)", "student (none) + RL", "student (correct) + RL",
             "student (opd)", "student (none) + opd", "student (opd) + RL", "student (none) + opd + RL"}
    assert set(out["results"]) == names
    assert json.loads((tmp_path / "c" / "results.json").read_text())["results"].keys() == names
    assert out["results"]["student (none)"]["generated_tokens"] > 0
    # A second call (a killed experiment resumed) keeps every finished stage: the same figures.
    again = ceiling.main(ceiling.CeilingConfig(run_dir=str(tmp_path / "c"), teacher_max_steps=5, distill_problems=40,
                                               k=2, sft_epochs=1, rl_steps=2, eval_problems=20, eval_samples=2))
    assert again["results"] == out["results"] and again["teacher_rl_steps"] == out["teacher_rl_steps"]


@pytest.mark.slow
def test_regimes_experiment_runs_every_regime_to_the_budget(tmp_path):
    budget = 3e11
    out = regimes.main(regimes.RegimesConfig(run_dir=str(tmp_path / "r"), budget_flops=budget, teacher_steps=3,
                                             distill_problems=100, eval_problems=30, final_eval_samples=8,
                                             rs_problems=64, sft_eval_every=5, rl_eval_every=1))
    assert set(out["regimes"]) == {"zero RL", "best-of-N self-SFT", "distill (all)", "distill (correct)",
                                   "distill (correct) + RL", "on-policy distill"}
    for name, row in out["regimes"].items():
        assert budget <= row["flops"] < 1.5 * budget, name  # each stops at the budget (rs: at a round's end)
    assert (tmp_path / "r" / "report" / "report.html").exists()
    # A second call finds every stage done and only remakes the report.
    again = regimes.main(regimes.RegimesConfig(run_dir=str(tmp_path / "r"), budget_flops=budget, teacher_steps=3,
                                               distill_problems=100, eval_problems=30, final_eval_samples=8,
                                               rs_problems=64, sft_eval_every=5, rl_eval_every=1))
    assert again["regimes"] == out["regimes"]


def _tiny_grid(cfg_cls, tmp_path, micro_base, **kw):
    from conftest import ENV
    return cfg_cls(**{"run_dir": str(tmp_path / "x"), "env": ENV, "model": str(micro_base), "steps": 4, "eval_every": 2,
                      "eval_problems": 16, "eval_samples": 2, "target": 0.5, **kw})


@pytest.mark.slow
def test_noise_experiment_runs_every_cell_and_draws_them(tmp_path, micro_base):
    from rlvr.experiments import noise
    out = noise.main(_tiny_grid(noise.NoiseConfig, tmp_path, micro_base, fns=[0.0, 0.4], fps=[0.0]))
    assert set(out["results"]) == {"fn=0 fp=0 none", "fn=0 fp=0 forward", "fn=0.4 fp=0 none", "fn=0.4 fp=0 backward",
                                   "fn=0.4 fp=0 forward", "coin-flip reward"}
    for r in out["results"].values():
        assert [s for s, _ in r["curve"]] == [0, 2, 4] and 0 <= r["pass@1"]["mean"] <= 1
    assert (tmp_path / "x" / "noise.png").stat().st_size > 0


@pytest.mark.slow
def test_noise_experiment_over_seeds_pairs_each_cell_with_the_clean_one(tmp_path, micro_base):
    from rlvr.experiments import noise
    out = noise.main(_tiny_grid(noise.NoiseConfig, tmp_path, micro_base, fns=[0.0, 0.4], fps=[0.0],
                                corrections=["none"], control=False, steps=2, seeds=[0, 1]))
    assert out["seeds"] == [0, 1] and set(out["runs"]) == {"0", "1"}
    for seed in ("0", "1"):
        cells = out["runs"][seed]["results"]
        assert cells["fn=0 fp=0 none"]["vs_clean"] is None
        change = cells["fn=0.4 fp=0 none"]["vs_clean"]
        assert change["mean"] == pytest.approx(cells["fn=0.4 fp=0 none"]["pass@1"]["mean"]
                                               - cells["fn=0 fp=0 none"]["pass@1"]["mean"])
    s = out["spread"]["fn=0.4 fp=0 none"]["vs clean (paired)"]
    assert s["n"] == 2 and s["min"] <= s["mean"] <= s["max"]
    assert (tmp_path / "x" / "seed_1" / "noise.png").exists() and (tmp_path / "x" / "results.json").exists()


@pytest.mark.slow
def test_staleness_experiment_lags_every_batch_as_asked(tmp_path, micro_base):
    from rlvr.experiments import staleness
    out = staleness.main(_tiny_grid(staleness.StalenessConfig, tmp_path, micro_base, lrs=[5e-4], lags=[0, 2],
                                    corrections=["none", "decoupled x4"]))
    assert list(out["results"]) == ["lr 0.0005, synchronous", "lr 0.0005, synchronous x4",
                                    "lr 0.0005, staleness 2, none", "lr 0.0005, staleness 2, decoupled x4"]
    sync, stale = out["results"]["lr 0.0005, synchronous"], out["results"]["lr 0.0005, staleness 2, none"]
    assert sync["staleness_mean"] == 0 and sync["vs_synchronous"] is None
    # steps 0-3 at lag 2: batches of versions 0, 0, 0, 1 -> lags 0, 1, 2, 2
    assert stale["staleness_mean"] == pytest.approx(5 / 4) and stale["behaviour_kl"] >= 0
    # each cell is paired with the synchronous run of its own mini-batches, on the same problems
    assert stale["vs_synchronous"]["mean"] == pytest.approx(stale["pass@1"]["mean"] - sync["pass@1"]["mean"])
    assert out["results"]["lr 0.0005, staleness 2, decoupled x4"]["mini_batches"] == 4
    assert (tmp_path / "x" / "staleness.png").stat().st_size > 0


@pytest.mark.slow
def test_hacking_experiment_runs_every_arm(tmp_path, micro_base):
    from conftest import ENV
    from rlvr.experiments import hacking
    out = hacking.main(hacking.HackingConfig(run_dir=str(tmp_path / "h"), env=ENV, model=str(micro_base), steps=3,
                                             eval_every=3, eval_problems=16, monitor=16, max_new_tokens=16))
    assert set(out["results"]) == set(hacking.ARMS)
    assert out["results"]["no defence"]["hack_rate"] and not out["results"]["held-out reward"]["hack_rate"]
    assert out["results"]["held-out reward"]["vs_honest"] is None and out["results"]["no defence"]["vs_honest"] is not None
    assert (tmp_path / "h" / "hacking.png").stat().st_size > 0


def test_grid_figure_draws_one_panel_per_group_with_the_reference_in_each(tmp_path):
    import struct

    from rlvr.experiments import grid
    curve = [(0, 0.1), (10, 0.5), (20, 0.7)]
    panels = {f"staleness {k}": {c: curve for c in ("none", "tis", "mask", "decoupled")} for k in (1, 2, 4, 8)}
    grid.plot_curves(panels, tmp_path / "grid.png", "t", 0.8, reference=("synchronous", curve))
    grid.plot_curves({"": {"zero RL": curve}}, tmp_path / "one.png", "t")
    size = {name: struct.unpack(">II", (tmp_path / name).read_bytes()[16:24]) for name in ("grid.png", "one.png")}
    assert size["grid.png"][0] > size["one.png"][0] and size["grid.png"][1] > size["one.png"][1]  # 3 x 2 panels


def test_curves_over_seeds_keep_the_steps_every_seed_evaluated_and_draw_with_their_range(tmp_path):
    from rlvr.experiments import grid
    seed_a, seed_b = [(0, 0.1), (10, 0.5), (20, 0.7)], [(0, 0.2), (10, 0.3)]  # seed b stopped after step 10
    assert grid.over_seeds([seed_a, seed_b]) == [(0, pytest.approx(0.15), 0.1, 0.2), (10, pytest.approx(0.4), 0.3, 0.5)]
    out = {"runs": {"0": {"results": {"clean": {"lr": 1, "curve": seed_a}, "x": {"curve": seed_a}}},
                    "1": {"results": {"clean": {"lr": 1, "curve": seed_b}}}}}
    merged = grid.seed_results(out)
    assert merged["clean"]["lr"] == 1 and len(merged["clean"]["curve"]) == 2
    assert merged["x"]["curve"] == [(0, 0.1, 0.1, 0.1), (10, 0.5, 0.5, 0.5), (20, 0.7, 0.7, 0.7)]  # one seed ran it
    grid.plot_curves({"a": {"x": merged["x"]["curve"]}}, tmp_path / "seeds.png", "t", 0.8,
                     reference=("clean", merged["clean"]["curve"]))
    assert (tmp_path / "seeds.png").stat().st_size > 0
    from rlvr.experiments import hacking  # two curves a cell; the strict reward's arm has no hack rate
    arm = lambda rate: {"hack_rate": rate, "heldout_accuracy": [(0, 0.1), (10, 0.4)]}
    runs = {str(k): {"results": {"no defence": arm([(1, 0.05 * k), (2, 0.1)]), "held-out reward": arm([])}}
            for k in (1, 2)}
    merged = grid.seed_results({"runs": runs}, ("hack_rate", "heldout_accuracy"))
    assert merged["no defence"]["hack_rate"] == [(1, pytest.approx(0.075), 0.05, 0.1), (2, 0.1, 0.1, 0.1)]
    assert merged["held-out reward"]["hack_rate"] == []
    hacking._plot(merged, tmp_path / "hacking.png", hacking.HackingConfig(), "over seeds [1, 2]")
    assert (tmp_path / "hacking.png").stat().st_size > 0


def test_regimes_runs_on_policy_distillation_charged_its_teachers_forward_passes(tmp_path, micro_base, monkeypatch):
    """The opd arm from the base, its teacher the experiment's: it stops at the budget, and the
    budget holds the teacher's FLOPs (2 N per token it computed) beside the student's own."""
    from rlvr.run import last_model
    monkeypatch.setattr(regimes, "pretrained_base", lambda pre, console=None: last_model(micro_base))
    budget = 2e9
    out = regimes.main(regimes.RegimesConfig(run_dir=str(tmp_path / "r"), regimes=["opd"], budget_flops=budget,
                                             teacher_steps=1, eval_problems=8, eval_samples=2, final_eval_samples=2,
                                             rl_eval_every=1))
    assert set(out["regimes"]) == {"on-policy distill"}
    summary = json.loads((tmp_path / "r" / "opd" / "summary.json").read_text())
    total = summary["total"]
    assert summary["command"] == "opd" and total["teacher_tokens"] > 0
    # 2 N per token it computed: each group's prompt once (as the student's generation counts
    # prompts) and every completion; less than the tokens it was given, a group's prompt n times
    assert total["teacher_flops"] == pytest.approx(2 * summary["n_params"] * (total["prompt_tokens"]
                                                                             + total["generated_tokens"]))
    assert total["teacher_flops"] < 2 * summary["n_params"] * total["teacher_tokens"]
    assert total["flops"] == pytest.approx(total["forward_flops"] + total["backward_flops"] + total["teacher_flops"])
    assert budget <= out["regimes"]["on-policy distill"]["flops"] < budget + total["flops"] / summary["steps"] + 1


@pytest.mark.slow
def test_ceiling_distils_on_policy_at_the_sft_datas_teacher_tokens(tmp_path, micro_base, monkeypatch):
    """Every student row, the on-policy ones included, with its teacher tokens: on-policy
    distillation stops once its teacher has read as many tokens as it wrote for the SFT
    data (after the step that crosses it), and the tokens to the teacher's pass@1 are those
    of an evaluation that reached it."""
    from conftest import ENV
    from rlvr.run import last_model
    from rlvr.train import pretrain
    monkeypatch.setattr(ceiling, "pretrained_base", lambda pre, console=None: last_model(micro_base))
    pre = pretrain.PretrainConfig
    monkeypatch.setattr(pretrain, "PretrainConfig", lambda **kw: pre(**kw, env=ENV))
    out = ceiling.main(ceiling.CeilingConfig(run_dir=str(tmp_path / "c"), teacher_max_steps=1, teacher_chunk=1,
                                             distill_problems=16, k=2, sft_epochs=1, rl_steps=1, opd_prompts=4,
                                             opd_eval_every=1, eval_problems=8, eval_samples=2))
    r, written = out["results"], out["teacher_tokens_written"]
    assert written == r["student (none)"]["teacher_tokens"] == r["student (correct)"]["teacher_tokens"] > 0
    opd_run = json.loads((tmp_path / "c" / "opd" / "summary.json").read_text())
    own = opd_run["compute"]["teacher_tokens"]
    assert written <= own < written + own / opd_run["steps"] + 1 and r["student (opd)"]["teacher_tokens"] == own
    assert r["student (none) + opd"]["teacher_tokens"] >= 2 * written  # the SFT data's, then its own scoring
    assert r["student (opd) + RL"]["teacher_tokens"] == own  # RL reads no teacher
    teacher = r["teacher"]["pass@1"]["mean"]
    for name, row in r.items():
        if name in ("base", "teacher"):
            continue
        assert row["vs_teacher"] == pytest.approx(row["pass@1"]["mean"] - teacher)
        reached = row["teacher_tokens_to_teacher"]
        assert reached is None or 0 <= reached <= row["teacher_tokens"]  # 0: at it before any teacher token


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bases")


def _pipeline(base_cache, monkeypatch):
    """A teacher pipeline on the micro task: a micro base of 150 steps (cached for the
    module), a teacher after 3 RL steps of 8 x 4, 24 problems asked, tiny budgets."""
    from conftest import ENV
    monkeypatch.chdir(base_cache)  # the demo's base cache, runs/base-*, lands there
    return dict(pretrain={"env": ENV, "preset": "micro", "lr": 3e-3, "warmup": 10, "check_every": 0, "batch_size": 32},
                pretrain_steps=150, rl={"prompts": 8, "group_size": 4}, teacher_steps=3, distill_problems=24, k=2,
                budget_flops=1e9, eval_problems=8, eval_samples=2, sft_eval_every=5, rl_eval_every=2)


@pytest.mark.slow
def test_midtrain_experiment_runs_every_arm_and_measures_each_stage(tmp_path, base_cache, monkeypatch):
    from rlvr.experiments import midtrain
    out = midtrain.main(midtrain.MidtrainConfig(run_dir=str(tmp_path / "m"), **_pipeline(base_cache, monkeypatch)))
    assert set(out["arms"]) == set(midtrain.ARMS)
    a = out["arms"]
    assert set(a["none"]["stages"]) == {"pretrain", "rl"} and set(a["both"]["stages"]) == {"pretrain", "sft", "rl"}
    for r in a.values():
        for stage in r["stages"].values():
            assert {"pass@1", "pass@16", "greedy"} <= {k for k, v in stage.items() if v is not None}
    # equal teacher solutions in every arm that reads them, equal pretraining (the same steps)
    assert a["pretrain mix"]["teacher_solutions"] == a["sft"]["teacher_solutions"] == a["both"]["teacher_solutions"] > 0
    assert a["none"]["teacher_solutions"] == 0
    assert a["pretrain mix"]["pretrain_flops"] == pytest.approx(a["none"]["pretrain_flops"], rel=0.1)
    assert a["none"]["vs none"] is None and a["sft"]["vs none"] is not None
    twin = (tmp_path / "m" / "base-mix" / "config.yaml").read_text()
    assert "mix_share: 0.1" in twin and "traces/all.jsonl" in twin and out["pretrain_steps"] > 0


@pytest.mark.slow
def test_humans_experiment_sft_on_the_same_problems_three_ways(tmp_path, base_cache, monkeypatch):
    from rlvr.experiments import humans
    out = humans.main(humans.HumansConfig(run_dir=str(tmp_path / "h"), solutions=10, rs_n=4,
                                          **_pipeline(base_cache, monkeypatch)))
    assert set(out["arms"]) == set(humans.ARMS) and 0 < out["solutions"] <= 10
    data = {arm: [json.loads(x) for x in (tmp_path / "h" / "data" / f"{arm}.jsonl").read_text().splitlines()]
            for arm in humans.ARMS}
    ids = [r["problem_id"] for r in data["human"]]
    assert len(ids) == out["solutions"] and all([r["problem_id"] for r in rows] == ids for rows in data.values())
    assert data["human"][0]["messages"][-1]["content"].startswith("1:")  # the worked procedure, written out
    assert out["arms"]["human"]["vs human, rl"] is None and out["arms"]["teacher"]["vs human, sft"] is not None
    # another style in the same directory: its own data and runs, the worked style's left as they were
    sums = humans.main(humans.HumansConfig(run_dir=str(tmp_path / "h"), solutions=10, rs_n=4, arms=["human"],
                                           human_style="sums", **_pipeline(base_cache, monkeypatch)))
    rows = [json.loads(x) for x in (tmp_path / "h" / "data" / "human-sums.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in rows] == ids and " #### " in rows[0]["messages"][-1]["content"]
    assert not rows[0]["messages"][-1]["content"].startswith("1:")
    assert (tmp_path / "h" / "sft-human-sums" / "summary.json").exists() and sums["solutions"] == out["solutions"]
    assert (tmp_path / "h" / "data" / "human.jsonl").read_text().startswith(
        json.dumps({"messages": data["human"][0]["messages"], "problem_id": ids[0]}))


def test_real_teacher_env_is_the_students_prompt_with_worked_examples():
    from rlvr.experiments import real
    assert real.teacher_env("prompt:format=answer_is:arithmetic:digits=2", 8) == {
        "name": "prompt", "format": "answer_is", "shots": 8, "env": "arithmetic:digits=2"}
    assert real.teacher_env("arithmetic:digits=2", 2) == {"name": "prompt", "shots": 2, "env": "arithmetic:digits=2"}
    with pytest.raises(ValueError, match="unknown arms"):
        real.RealConfig(arms=["zero_rl", "nonsense"])


@pytest.mark.slow
def test_real_experiment_runs_every_arm_at_zero_rls_budget(tmp_path, micro_base, monkeypatch):
    """Every arm on the tiny model (the real one is SmolLM2): each ends at zero RL's FLOPs
    (best-of-N at a round's end), paired with the base, zero RL and the N-shot teacher."""
    from rlvr.experiments import real
    from rlvr.run import last_model
    # The micro base reads bare prompts only: its teacher is asked as it was trained.
    monkeypatch.setattr(real, "teacher_env", lambda env, shots: env)
    cfg = real.RealConfig(run_dir=str(tmp_path / "r"), model=str(last_model(micro_base)), lora_r=4, rl_steps=3,
                          prompts=4, group_size=2, max_new_tokens=20, rs_problems=4, rs_n=2, distill_problems=4, k=4, sft_share=0.5,
                          teacher_shots=1, eval_problems=8, eval_samples=2, eval_every=1,
                          env="arithmetic:digits=1,ops=add,template={expr}")  # conftest's ENV
    out = real.main(cfg)
    assert set(out["arms"]) == {"base", "teacher (1-shot)", "zero RL", "best-of-N", "context distillation",
                                "context distillation + RL", "on-policy distillation"}
    budget = out["budget_flops"]
    for name in ("context distillation + RL", "on-policy distillation"):
        assert budget <= out["arms"][name]["flops"] < 1.5 * budget, name
    assert out["arms"]["context distillation"]["flops"] < budget
    assert out["arms"]["zero RL"]["vs_teacher"] is not None and out["arms"]["base"]["vs_base"] is None
    opd = json.loads((tmp_path / "r" / "opd" / "summary.json").read_text())
    assert opd["command"] == "opd" and opd["total"]["teacher_tokens"] > 0
    assert (tmp_path / "r" / "report" / "report.html").exists() and (tmp_path / "r" / "real.png").exists()
    assert real.main(cfg)["arms"] == out["arms"]  # a rerun finds every stage done
