"""The claims' parts that run in seconds: the claims table from results files, seeds
over a config without a base, the corpus's expert solutions and its mixing, and the
experiments' one-line errors. The experiments themselves: tests/test_experiments.py (slow)."""

import itertools
import json

import pytest

from rlvr.config import Config
from rlvr.envs import make_env
from rlvr.experiments import claims, grid, seeds
from rlvr.train.corpus import SOLUTION_STYLES, column_sums, correct_solution, mixed


def _spread(values):
    return seeds.spread(values)


def test_claims_table_reads_spreads_and_single_runs_and_decides_only_on_three_seeds(tmp_path):
    # `real` over three seeds (the over_seeds form): zero RL above the base on every seed.
    real = {"seeds": [0, 1, 2], "spread": {"zero RL": {"vs base (paired)": _spread([0.3, 0.5, 0.4])},
                                           "context distillation + RL": {"vs zero RL (paired)": _spread([-0.1, 0.02, -0.05])}}}
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "results.json").write_text(json.dumps(real))
    # `noise`, one run (its own results.json): read through noise.figures
    clean = {"pass@1": {"mean": 0.82, "ci": [0.8, 0.84]}, "vs_clean": None, "true_reward": 0.8, "steps_to_target": 40,
             "vs_base": {"mean": 0.7, "ci": [0.66, 0.74]}}
    (tmp_path / "noise").mkdir()
    (tmp_path / "noise" / "results.json").write_text(json.dumps({"results": {"fn=0 fp=0 none": clean}}))
    out = claims.main(claims.ClaimsConfig(runs=str(tmp_path), out=str(tmp_path / "claims.md")))
    rows = {line.split(" ", 2)[1]: line for line in out["markdown"].splitlines()[2:]}
    assert len(rows) == len(claims.CLAIMS) and (tmp_path / "claims.md").read_text() == out["markdown"]
    assert "zero RL vs base: +40.0% [+30.0%, +50.0%] (3 seeds)" in rows["C1"] and "holds on every seed (3)" in rows["C1"]
    assert "pass@1 after 40 steps from the base: 82.0% (1 seed)" in rows["C1"] and "steps to 80%: 40 (1 seed)" in rows["C1"]
    assert "40 steps vs the base: +70.0% (1 seed)" in rows["C1"]
    assert rows["C1"].endswith("| tiny: for a reader (1 seed); real: holds on every seed (3) |")
    assert rows["C2"].endswith("real: mixed: for a reader |")  # one seed up, two down
    assert "not measured" in rows["C9"] and "not measured" in rows["C10"]
    assert rows["C4"].endswith("| tiny: not measured; real: not measured |")  # a verdict on each model, apart
    assert out["measured"] == ["noise", "real"]


def test_claims_verdict_fails_and_too_few_seeds():
    c = claims.Claim("X", "x", "cmd", real=[claims.Figure("d", "real", "zero RL", "vs base (paired)", sign=+1)])
    down = {"real": {"zero RL": {"vs base (paired)": _spread([-0.1, -0.2, -0.3])}}}
    assert claims.verdict(c, down) == "real: fails on every seed (3)"
    two = {"real": {"zero RL": {"vs base (paired)": _spread([0.1, 0.2])}}}
    assert claims.verdict(c, two) == "real: for a reader (2 seeds)"
    both = claims.Claim("Y", "y", "cmd", toy=[claims.Figure("t", "ceiling", "student (correct)", "vs teacher", sign=-1)],
                        real=c.real)
    up = {"ceiling": {"student (correct)": {"vs teacher": _spread([0.06, 0.17, 0.1])}}, **down}
    assert claims.verdict(both, up) == "tiny: fails on every seed (3); real: fails on every seed (3)"


def test_grid_initial_is_the_step_zero_evaluation_paired_with_the_final(tmp_path):
    def row(step, scores):
        per = {f"e/{i}": v for i, v in enumerate(scores)}
        return json.dumps({"step": step, "compute": {"flops": step * 1e9},
                           "metrics": {"e": {"pass@1": {"mean": sum(scores) / len(scores), "per_problem": per}}}})

    (tmp_path / "evals.jsonl").write_text("\n".join([row(0, [0.0, 0.5, 0.0]), row(10, [1.0, 1.0, 0.5])]) + "\n")
    (tmp_path / "eval.json").write_text(json.dumps({"metrics": json.loads(row(10, [1.0, 1.0, 0.5]))["metrics"]}))
    start, end = grid.initial(tmp_path), grid.final(tmp_path)
    assert start["per_problem"] == {"e/0": 0.0, "e/1": 0.5, "e/2": 0.0}
    assert grid.paired(start, end)["mean"] == pytest.approx(2 / 3)
    (tmp_path / "evals.jsonl").write_text(row(10, [1.0, 1.0, 0.5]) + "\n")  # resumed from a checkpoint: no step 0
    assert grid.initial(tmp_path) is None


def test_claims_unknown_experiment_in_dirs_says_so(tmp_path):
    with pytest.raises(ValueError, match="unknown experiments"):
        claims.main(claims.ClaimsConfig(runs=str(tmp_path), dirs={"nonsense": "x"}))


def test_over_seeds_runs_a_config_without_a_base_seed(tmp_path):
    class NoBase(Config):  # rlvr experiment real: a pretrained model has no base seed
        run_dir: str = "x"
        seed: int = 0
        seeds: seeds.PerSeed

    seen = []

    def main(cfg):
        seen.append((cfg.seed, cfg.run_dir, cfg.seeds))
        return {"v": cfg.seed / 10}

    out = seeds.over_seeds(main, NoBase(run_dir=str(tmp_path), seeds=[1, 2]), [1, 2], lambda r: {"row": {"v": r["v"]}})
    assert seen == [(1, str(tmp_path / "seed_1"), []), (2, str(tmp_path / "seed_2"), [])]
    assert out["spread"]["row"]["v"] == {"mean": pytest.approx(0.15), "min": 0.1, "max": 0.2, "n": 2}
    assert json.loads((tmp_path / "results.json").read_text())["seeds"] == [1, 2]
    drawn = []
    out = seeds.run_and_show(main, NoBase(run_dir=str(tmp_path), seeds=[1, 2]), lambda r: {"row": {"v": r["v"]}}, "v",
                             {"v": True}, lambda out, over: drawn.append((sorted(out["runs"]), over)) or tmp_path)
    assert drawn == [(["1", "2"], "mean and range over seeds [1, 2]")] and out["spread"]["row"]["v"]["n"] == 2


@pytest.mark.parametrize("spec", ["arithmetic:digits=3,ops=add", "arithmetic:digits=2,ops=add+sub", "countdown"])
def test_correct_solution_is_judged_correct(spec):
    env = make_env(spec)
    for problem in itertools.islice(env.problems("train", 0), 20):
        text = correct_solution(env, problem)
        assert env.verify(problem, text).correct, (problem.prompt, text)
    addition = next(make_env("arithmetic:digits=3,ops=add").problems("train", 0))
    assert correct_solution(make_env("arithmetic:digits=3,ops=add"), addition).startswith("1:")  # the worked procedure


def test_solution_styles_write_the_same_correct_answer_three_ways():
    env = make_env("arithmetic:digits=3,ops=add")
    for problem in itertools.islice(env.problems("train", 0), 20):
        texts = {style: correct_solution(env, problem, style) for style in SOLUTION_STYLES}
        assert all(env.verify(problem, t).correct for t in texts.values()), texts
        assert texts["worked"].startswith("1:") and texts["answer"].startswith("####")
        assert len(texts["answer"]) < len(texts["sums"]) < len(texts["worked"])
    assert column_sums(457, 386) == "13 14 8 #### 843" and column_sums(5, 95) == "10 10 #### 100"
    countdown = make_env("countdown")
    problem = next(countdown.problems("train", 0))
    assert correct_solution(countdown, problem, "answer") == correct_solution(countdown, problem)
    with pytest.raises(ValueError, match="column additions only"):
        correct_solution(countdown, problem, "sums")
    with pytest.raises(ValueError, match="unknown solution style 'prose'"):
        correct_solution(env, problem, "prose")


def test_mixed_replaces_a_share_in_order_and_repeats_itself():
    docs = (f"doc{i}" for i in itertools.count())
    out = list(itertools.islice(mixed(docs, ["a", "b"], 0.25, seed=3), 2000))
    extra = [d for d in out if not d.startswith("doc")]
    assert 0.2 < len(extra) / len(out) < 0.3 and extra[:4] == ["a", "b", "a", "b"]
    again = list(itertools.islice(mixed((f"doc{i}" for i in itertools.count()), ["a", "b"], 0.25, seed=3), 2000))
    assert again == out
    with pytest.raises(ValueError, match="empty"):
        mixed(iter(["x"]), [], 0.5, 0)


def test_experiments_name_an_unknown_arm_at_start():
    from rlvr.config import load_config
    from rlvr.experiments import humans, midtrain, staleness

    for cls in (midtrain.MidtrainConfig, humans.HumansConfig):
        with pytest.raises(Exception, match="unknown"):
            load_config(cls, overrides=["--arms", '["nope"]'])
    with pytest.raises(Exception, match="unknown"):
        load_config(staleness.StalenessConfig, overrides=["--corrections", '["nope"]'])
