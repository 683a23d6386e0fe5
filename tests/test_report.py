"""`rlvr compare`: run directories written by hand in the trainers' format, the report
read back, its numbers checked against values worked out by hand."""

import base64
import json
import re

import pytest
from pydantic import ValidationError

from rlvr.config import ConfigError, load_config
from rlvr.report import CompareConfig, Point, RunError, load_run, main, reach

PNG = b"\x89PNG\r\n\x1a\n"
KEYS = ("generated_tokens", "prompt_tokens", "trained_tokens", "teacher_tokens", "forward_flops",
        "backward_flops", "teacher_flops", "flops", "wall_seconds")


def compute(gen=0, teacher=0, flops=0.0, wall=0.0):
    c = dict.fromkeys(KEYS, 0)
    c.update(generated_tokens=gen, teacher_tokens=teacher, flops=flops, forward_flops=flops / 3,
             backward_flops=2 * flops / 3, wall_seconds=wall)
    return c


def stat(mean, lo, hi):
    return {"mean": mean, "ci": [lo, hi]}


def summary(p1, ci, kmax, greedy=None):
    """A SUMMARY: pass@1 with CI, pass@k and maj@k for k = 2, 4, ... kmax (pass@k = p1 + k/200, maj@k = p1 + k/400)."""
    s = {"n_problems": 8, "n_samples": 8 * kmax, "pass@1": stat(p1, *ci), "maj@1": stat(p1, *ci)}
    k = 2
    while k <= kmax:
        s[f"pass@{k}"] = stat(p1 + k / 200, p1 + k / 200 - 0.1, p1 + k / 200 + 0.1)
        s[f"maj@{k}"] = stat(p1 + k / 400, p1 + k / 400 - 0.1, p1 + k / 400 + 0.1)
        k *= 2
    if greedy is not None:
        s["greedy"] = stat(greedy, greedy - 0.1, greedy + 0.1)
    return s


def write_run(d, command, evals, final, total, inherited=None, extra=None):
    """A run dir as a trainer writes it; `evals` is [(step, compute, {env: SUMMARY})]."""
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"run_dir: {d}\nlr: 0.0001\n")
    inherited = inherited or compute()
    own = {k: total[k] - inherited[k] for k in KEYS}
    (d / "summary.json").write_text(json.dumps({"command": command, "steps": evals[-1][0] if evals else 0,
                                                "compute": own, "inherited": inherited, "total": total,
                                                "wall_seconds": own["wall_seconds"], **(extra or {})}))
    if evals:
        (d / "evals.jsonl").write_text("".join(json.dumps({"step": s, "compute": c, "metrics": m}) + "\n"
                                               for s, c, m in evals))
        (d / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "loss": 1.0 / (s + 1), **{f"compute/{k}": v for k, v in c.items()},
                        **{f"eval/{e}": x["pass@1"]["mean"] for e, x in m.items()}}) + "\n" for s, c, m in evals))
    if final is not None:
        (d / "eval.json").write_text(json.dumps({"model": str(d / "checkpoints/last"), "metrics": final}))
    return d


@pytest.fixture
def runs(tmp_path):
    # A: best-of-N self-training from scratch, a mixture (arithmetic + countdown + all).
    a_evals = [(0, compute(0, 0, 0.0), 0.25), (10, compute(2000, 0, 1e9, 5), 0.45), (20, compute(4000, 0, 3e9, 10), 0.65)]
    a = write_run(tmp_path / "runs" / "rs-a", "rs",
                  [(s, c, {"arithmetic": summary(p, (p - 0.1, p + 0.1), 4), "countdown": summary(p / 2, (0, p), 4),
                           "all": summary(p, (p - 0.1, p + 0.1), 4)}) for s, c, p in a_evals],
                  {"arithmetic": summary(0.7, (0.6, 0.8), 16), "all": summary(0.625, (0.5, 0.75), 16, greedy=0.5)},
                  total=compute(4000, 0, 3e9, 12))
    # B: RL after SFT on 10k distilled tokens: the teacher's tokens and the SFT's FLOPs are inherited.
    inh = compute(0, 10000, 5e9, 30)
    b_evals = [(0, compute(0, 10000, 5e9, 30), 0.30), (50, compute(100000, 10000, 6e10, 100), 0.40),
               (100, compute(200000, 10000, 1.2e11, 200), 0.48)]
    b = write_run(tmp_path / "runs" / "rl-b", "rl",
                  [(s, c, {"all": summary(p, (p - 0.05, p + 0.05), 8)}) for s, c, p in b_evals],
                  {"all": summary(0.475, (0.4, 0.55), 64, greedy=0.45)}, total=compute(200000, 10000, 1.2e11, 250),
                  inherited=inh)
    # C: the distillation itself: summary.json and data.jsonl only.
    c = write_run(tmp_path / "runs" / "distill-c", "distill", [], None, total=compute(0, 10000, 2e9, 40),
                  extra={"teacher_tokens": 10000, "generated": 40, "kept": 32, "teacher_pass_rate": 0.8,
                         "teacher": "big-teacher"})
    (c / "data.jsonl").write_text('{"messages": []}\n')
    return a, b, c


def table_rows(md):
    """The Markdown table as {header: cell} per row, in order."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
    return [dict(zip(split[0], r)) for r in split[2:]]


def test_report_files_and_numbers(runs, tmp_path):
    a, b, c = runs
    res = main(CompareConfig(runs=[str(a), str(b), str(c)], target=0.5))
    out = tmp_path / "runs" / "compare"  # the default: beside the first run
    assert res["markdown"] == str(out / "report.md") and res["html"] == str(out / "report.html")
    assert [p.rsplit("/", 1)[1] for p in res["pngs"]] == ["accuracy_vs_tokens.png", "accuracy_vs_flops.png",
                                                          "pass_at_k.png"]
    for p in res["pngs"]:
        data = open(p, "rb").read()
        assert data.startswith(PNG) and len(data) > 5000
    md = (out / "report.md").read_text()
    rows = table_rows(md)
    assert [r["run"] for r in rows] == ["rs-a", "rl-b", "distill-c"]  # the order given
    ra, rb, rc = rows
    assert ra["command"] == "rs" and rb["command"] == "rl" and rc["command"] == "distill"
    assert ra["pass@1 [95% CI]"] == "62.5% [50.0, 75.0]"  # "all" (the mixture's total) by default
    assert rb["pass@1 [95% CI]"] == "47.5% [40.0, 55.0]"
    # A's final eval goes to k=16, B's to 64: the largest common k is 16, and 8 is shown too
    assert ra["pass@16"] == "70.5% [60.5, 80.5]" and ra["maj@16"] == "66.5% [56.5, 76.5]"
    assert rb["pass@8"] == "51.5% [41.5, 61.5]" and rb["maj@8"] == "49.5% [39.5, 59.5]" and "pass@64" not in ra
    assert ra["greedy"] == "50.0% [40.0, 60.0]" and rc["greedy"] == "—" and rc["pass@1 [95% CI]"] == "—"
    # tokens = generated + teacher of the total (inherited included)
    assert ra["generated tokens (own + teacher)"] == "4.0k" and rb["generated tokens (own + teacher)"] == "210.0k"
    assert rc["generated tokens (own + teacher)"] == "10.0k"
    assert ra["FLOPs"] == "3.0G" and rb["FLOPs"] == "120.0G" and rb["wall time"] == "4.2 min"
    # target 0.5: A crosses between step 10 (45%) and 20 (65%): a quarter of the way,
    # 2000 + 0.25 * 2000 = 2500 tokens, 1e9 + 0.25 * 2e9 = 1.5e9 FLOPs; B tops out at 48%
    assert ra["tokens to 50.0%"] == "2.5k" and ra["FLOPs to 50.0%"] == "1.5G"
    assert rb["tokens to 50.0%"] == "not reached" and rc["tokens to 50.0%"] == "no evals"
    assert res["rows"][0]["target"] == {"pass@1": 0.5, "tokens": pytest.approx(2500), "flops": pytest.approx(1.5e9),
                                        "at_start": False}
    # what is missing is said, not crashed on; the distill run's teacher pass rate is the teacher line
    assert "distill-c: no evals.jsonl: no accuracy-vs-compute curve" in md
    assert "distill-c: no eval.json: no final accuracy" in md
    assert "Teacher line: teacher big-teacher: pass rate on its distill samples = 80.0%." in md
    page = (out / "report.html").read_text()
    assert "<table>" in page and "62.5% [50.0, 75.0]" in page and "2·N·tokens" in page
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == 3 and all(base64.b64decode(u).startswith(PNG) for u in uris)
    data = json.loads((out / "report.json").read_text())
    assert data["env"] == "all" and data["ks"] == [8, 16] and len(data["rows"]) == 3
    assert [p["k"] for p in data["rows"][1]["pass_at_k"]] == [1, 2, 4, 8, 16, 32, 64]


def test_env_labels_teacher_and_out(runs, tmp_path):
    a, b, c = runs
    teacher = write_run(tmp_path / "teacher", "rl", [], {"arithmetic": summary(0.9, (0.85, 0.95), 1)},
                        total=compute())
    res = main(CompareConfig(runs=[str(b), str(a)], labels=["RL", "RS"], env="arithmetic",
                             teacher=str(teacher / "eval.json"),
                             out=str(tmp_path / "rep"), target=0.2))
    md = (tmp_path / "rep" / "report.md").read_text()
    rb, ra, rt = table_rows(md)
    assert (rb["run"], ra["run"]) == ("RL", "RS")
    # the teacher's own accuracy is a line of the table, its cost left blank (a teacher is given)
    assert (rt["run"], rt["command"], rt["pass@1 [95% CI]"], rt["FLOPs"]) == ("teacher", "teacher",
                                                                             "90.0% [85.0, 95.0]", "—")
    assert ra["pass@1 [95% CI]"] == "70.0% [60.0, 80.0]" and rb["pass@1 [95% CI]"] == "—"
    assert "RL: eval.json has no 'arithmetic': no final accuracy" in md
    assert "Teacher line: teacher, final pass@1 = 90.0%." in md  # the directory named once, not "teacher (teacher)"
    assert ra["tokens to 20.0%"] == "0"  # reached at the first evaluation: its compute, nothing interpolated
    assert res["rows"][1]["curve"][0] == {"step": 0, "tokens": 0, "flops": 0.0, "mean": 0.25, "ci": [0.15, 0.35]}


def test_killed_run_curve_from_metrics(tmp_path, runs):
    a, _, _ = runs
    d = tmp_path / "killed"
    d.mkdir()
    rows = [{"step": s, "compute/generated_tokens": g, "compute/teacher_tokens": 0, "compute/flops": f,
             "compute/wall_seconds": s, "eval/all": p} for s, g, f, p in [(0, 0, 0, 0.1), (5, 500, 1e8, 0.3)]]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')
    res = main(CompareConfig(runs=[str(d), str(a)], out=str(tmp_path / "rep"), target=0.2))
    row = res["rows"][0]
    assert row["command"] == "?" and row["pass@1"] is None and row["tokens"] == 500
    assert row["target"]["tokens"] == pytest.approx(250)  # halfway from 10% to 30%
    assert "metrics.jsonl: ignored a truncated last line" in row["notes"]
    assert "no evals.jsonl: curve from metrics.jsonl's eval/ keys, without CI" in row["notes"]


def test_errors_name_the_culprit(tmp_path, runs):
    a, b, _ = runs
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text("lr: 1\n")
    with pytest.raises(RunError, match=re.escape(f"{empty}: not a run directory")):
        main(CompareConfig(runs=[str(a), str(empty)]))
    with pytest.raises(RunError, match="nope: no such run directory"):
        load_run(tmp_path / "nope")
    lines = (b / "evals.jsonl").read_text().splitlines()
    (b / "evals.jsonl").write_text(lines[0] + "\n{not json\n" + lines[1] + "\n")
    with pytest.raises(RunError, match=re.escape(f"{b / 'evals.jsonl'}:2: not valid JSON")):
        load_run(b)
    (b / "evals.jsonl").write_text(json.dumps({"step": 0, "compute": {"flops": 1}, "metrics": {}}) + "\n")
    with pytest.raises(RunError, match=re.escape(f"{b / 'evals.jsonl'}:1: 'compute' must be")):
        load_run(b)
    with pytest.raises(RunError, match=re.escape(f"teacher: {tmp_path / 'eval.json'} does not exist")):
        main(CompareConfig(runs=[str(a)], teacher=str(tmp_path), out=str(tmp_path / "rep")))
    with pytest.raises(ConfigError, match="env 'nope' is in no run"):
        main(CompareConfig(runs=[str(a)], env="nope", out=str(tmp_path / "rep")))


def test_labels_must_match_runs(tmp_path):
    with pytest.raises(ConfigError, match="key 'labels'.*1 labels for 2 runs"):
        load_config(CompareConfig, overrides={"runs": ["x", "y"], "labels": ["only-one"]})
    with pytest.raises(ValidationError, match="1 labels for 2 runs"):
        CompareConfig(runs=["x", "y"], labels=["only-one"])
    with pytest.raises(ConfigError, match="unknown key 'labls'"):
        load_config(CompareConfig, overrides={"labls": ["a"]})
    assert all(f.description for f in CompareConfig.model_fields.values())


def test_reach_interpolates_tokens_and_flops_alike():
    pts = [Point(0, 0, 0.0, 0.1, None), Point(1, 100, 1e6, 0.3, None), Point(2, 300, 5e6, 0.7, None)]
    assert reach(pts, 0.5) == pytest.approx((200, 3e6))  # halfway from 30% to 70%
    assert reach(pts, 0.3) == pytest.approx((100, 1e6))  # exactly at an evaluation
    assert reach(pts, 0.8) is None


def test_a_run_that_starts_above_the_target_and_a_teacher_of_unknown_cost_are_said(tmp_path):
    from rlvr.report import build_row

    evals = [(0, compute(0, 10000, 5e9, 30), 0.85), (10, compute(5000, 10000, 7e9, 40), 0.9)]
    d = write_run(tmp_path / "rl", "rl", [(s, c, {"all": summary(p, (p - 0.05, p + 0.05), 4)}) for s, c, p in evals],
                  {"all": summary(0.9, (0.85, 0.95), 4)}, total=compute(5000, 10000, 7e9, 40),
                  inherited=compute(0, 10000, 5e9, 30))
    row = build_row(load_run(str(d)), "rl", "all", [], 0.8)
    assert row["target"]["at_start"] and row["target"]["flops"] == 5e9
    notes = " ".join(row["notes"])
    assert "already at pass@1 >= 80% at its first evaluation" in notes and "teacher's FLOPs are unknown" in notes
    from rlvr.report_plots import table
    assert table([row], [], 0.8)[1][0][-1].startswith("≤ ")
