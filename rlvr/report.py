"""Compare runs: one table and three figures of accuracy against what it cost.

Reads each run directory (config.yaml, summary.json, metrics.jsonl, evals.jsonl,
eval.json: whichever exist; what is missing is said in the report, not a crash)
and writes, in `out`: accuracy_vs_tokens.png, accuracy_vs_flops.png (pass@1 with
its 95% CI against cumulative compute), pass_at_k.png (final pass@k against k),
report.md, report.json, and report.html (self-contained: the figures are embedded).

With `--teacher`, the teacher's own final accuracy is a line of the table and of the
accuracy figures.

Compute is cumulative and includes what a run inherited from the checkpoint it
started from, so RL after SFT on distilled data is charged for the teacher's tokens
too: methods are compared at equal total cost, not at equal steps.

    rlvr compare runs/sft runs/rl runs/rs --target 0.6 --teacher runs/teacher
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import Field, ValidationInfo, field_validator

from rlvr import report_plots as plots
from rlvr.atomic import write_json, write_text
from rlvr.config import Config, ConfigError, InputError
from rlvr.jsonl import JSONLError, read_jsonl

FILES = ("config.yaml", "summary.json", "metrics.jsonl", "evals.jsonl", "eval.json")
COMPUTE = ("generated_tokens", "teacher_tokens", "flops")  # what the curves need of a compute dict


class CompareConfig(Config):
    positional: ClassVar[str] = "runs"
    runs: list[str] = Field(default_factory=list, description="Run directories to compare (positional on the command line).")
    out: str = Field("", description="Report directory (default: <first run's parent>/compare, e.g. runs/compare).")
    labels: list[str] = Field(default_factory=list, description="Display names, one per run (default: each run directory's name).")
    env: str = Field("", description="Environment whose metrics are compared (default: 'all' when a run has it, else the first).")
    teacher: str = Field("", description="A run directory or eval.json whose final pass@1 is drawn as the teacher line "
                                         "(default: a distill run's teacher pass rate, labelled as such).")
    target: float = Field(0.0, ge=0.0, le=1.0, description="pass@1 target as a fraction (e.g. 0.6): the table gets the tokens "
                                                           "and FLOPs at which each run first reached it (0: no target).")

    @field_validator("labels")
    @classmethod
    def _one_label_per_run(cls, labels: list[str], info: ValidationInfo) -> list[str]:
        runs = info.data.get("runs", [])
        if labels and len(labels) != len(runs):
            raise ValueError(f"{len(labels)} labels for {len(runs)} runs: give one label per run, or none")
        return labels


class RunError(InputError):
    """A run directory that cannot be read; the message names the file (and line)."""


@dataclass
class RunData:
    path: Path
    command: str  # from summary.json; "?" when the run has none (it did not finish)
    config: dict[str, Any]
    summary: dict[str, Any] | None
    metrics: list[dict[str, Any]]  # metrics.jsonl rows
    evals: list[dict[str, Any]]  # evals.jsonl rows, checked to hold compute and metrics
    final: dict[str, Any] | None  # eval.json's "metrics": env -> summary
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Point:  # one evaluation on an accuracy-vs-compute curve
    step: int | None
    tokens: float
    flops: float
    mean: float
    ci: list[float] | None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def _read_jsonl(path: Path, notes: list[str]) -> list[tuple[int, dict[str, Any]]]:
    try:  # a run killed mid-write leaves half a last line: the rest is still good
        return list(read_jsonl(path, truncated_tail=notes))
    except JSONLError as e:
        raise RunError(str(e)) from None


def _check_metrics(m: Any, where: str) -> dict[str, Any]:
    if not isinstance(m, dict) or not m:
        raise RunError(f"{where}: 'metrics' must be a non-empty mapping of environment -> summary")
    for env, s in m.items():
        if not isinstance(s, dict) or not isinstance(s.get("pass@1"), dict) or "mean" not in s["pass@1"]:
            raise RunError(f"{where}: metrics[{env!r}] has no pass@1 mean")
    return m


def load_run(path: str | Path) -> RunData:
    """Parse one run directory; errors name the file and line that could not be read."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory")
    missing = [n for n in FILES if not (path / n).is_file()]
    if all(n in missing for n in FILES[1:]):
        raise RunError(f"{path}: not a run directory: it has none of {', '.join(FILES[1:])}")
    notes: list[str] = []
    config: dict[str, Any] = {}
    if "config.yaml" not in missing:
        try:
            config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", -1) + 1
            raise RunError(f"{path / 'config.yaml'}:{line}: not valid YAML") from None
    summary = None if "summary.json" in missing else _read_json(path / "summary.json")
    if summary is not None and not isinstance(summary, dict):
        raise RunError(f"{path / 'summary.json'}: expected a JSON object")
    metrics = [] if "metrics.jsonl" in missing else [r for _, r in _read_jsonl(path / "metrics.jsonl", notes)]
    evals = []
    for i, row in [] if "evals.jsonl" in missing else _read_jsonl(path / "evals.jsonl", notes):
        where = f"{path / 'evals.jsonl'}:{i}"
        compute = row.get("compute")
        if not isinstance(compute, dict) or any(not isinstance(compute.get(k), (int, float)) for k in COMPUTE):
            raise RunError(f"{where}: 'compute' must be a mapping with numbers for {', '.join(COMPUTE)}")
        _check_metrics(row.get("metrics"), where)
        evals.append(row)
    final = None
    if "eval.json" not in missing:
        doc = _read_json(path / "eval.json")
        final = _check_metrics(doc.get("metrics") if isinstance(doc, dict) else None, str(path / "eval.json"))
    return RunData(path, str((summary or {}).get("command", "?")), config, summary, metrics, evals, final,
                   missing, notes)


def envs_of(run: RunData) -> list[str]:
    names = list(run.final or {})
    for row in run.evals:
        names += row["metrics"]
    names += [k[5:] for row in run.metrics for k in row if k.startswith("eval/")]
    return list(dict.fromkeys(names))


def choose_env(runs: list[RunData], wanted: str) -> str:
    seen = list(dict.fromkeys(e for r in runs for e in envs_of(r)))
    if wanted:
        if seen and wanted not in seen:
            raise ConfigError(f"env {wanted!r} is in no run's evaluations; they have: {', '.join(seen)}")
        return wanted
    return "all" if "all" in seen or not seen else seen[0]


def curve(run: RunData, env: str) -> list[Point]:
    """pass@1 against cumulative compute: from evals.jsonl, else (no CI) from the
    `eval/<env>` keys that metrics.jsonl holds on evaluation steps."""
    if run.evals:
        return [Point(r.get("step"), r["compute"]["generated_tokens"] + r["compute"]["teacher_tokens"],
                      r["compute"]["flops"], r["metrics"][env]["pass@1"]["mean"], r["metrics"][env]["pass@1"].get("ci"))
                for r in run.evals if env in r["metrics"]]
    keys = [f"eval/{env}"] + [f"compute/{k}" for k in COMPUTE]
    return [Point(r.get("step"), r["compute/generated_tokens"] + r["compute/teacher_tokens"], r["compute/flops"],
                  r[f"eval/{env}"], None) for r in run.metrics if all(k in r for k in keys)]


def final_summary(run: RunData, env: str) -> tuple[dict[str, Any] | None, str]:
    """The run's final metrics of `env` and where they came from."""
    if run.final and env in run.final:
        return run.final[env], "eval.json"
    for row in reversed(run.evals):
        if env in row["metrics"]:
            return row["metrics"][env], "evals.jsonl"
    return None, ""


def total_compute(run: RunData) -> dict[str, Any]:
    """What the run cost in all, inherited included: summary.json's total, else the
    last step logged (a run killed before writing its summary), else the last eval."""
    if isinstance((run.summary or {}).get("total"), dict):
        return run.summary["total"]
    last = next((r for r in reversed(run.metrics) if "compute/flops" in r), None)
    if last is not None:
        return {k.removeprefix("compute/"): v for k, v in last.items() if k.startswith("compute/")}
    if run.evals:
        return run.evals[-1]["compute"]
    if "teacher_tokens" in (run.summary or {}):  # a distill summary without compute dicts
        return {"teacher_tokens": run.summary["teacher_tokens"], "wall_seconds": run.summary.get("seconds")}
    return {}


def table_ks(finals: list[dict[str, Any] | None]) -> list[int]:
    """The pass@k columns: the largest k every run's final eval has, and 8 if all have it."""
    sets = [{int(k[5:]) for k in f if k.startswith("pass@")} for f in finals if f]
    common = set.intersection(*sets) if sets else set()
    return sorted({k for k in (8, max(common, default=1)) if k > 1 and k in common})


def pass_curve(final: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The final pass@k for every k the final evaluation has, k = 1 first."""
    ks = sorted(int(k[5:]) for k in final or {} if k.startswith("pass@"))
    return [{"k": k, "mean": final[f"pass@{k}"]["mean"], "ci": final[f"pass@{k}"].get("ci")} for k in ks]


def reach(points: list[Point], target: float) -> tuple[float, float] | None:
    """Tokens and FLOPs at which pass@1 first reached `target`, linearly interpolated
    between the evaluation below it and the first one at or above it."""
    prev = None
    for p in points:
        if p.mean >= target:
            if prev is None:  # reached at the first evaluation: nothing to interpolate from
                return p.tokens, p.flops
            f = (target - prev.mean) / (p.mean - prev.mean)
            return prev.tokens + f * (p.tokens - prev.tokens), prev.flops + f * (p.flops - prev.flops)
        prev = p
    return None


def _run_notes(run: RunData, env: str, source: str, points: list[Point]) -> list[str]:
    notes = list(run.notes)
    if "evals.jsonl" in run.missing:
        notes.append("no evals.jsonl: " + ("curve from metrics.jsonl's eval/ keys, without CI" if points
                                           else "no accuracy-vs-compute curve"))
    elif not points:
        notes.append(f"evals.jsonl has no evaluation of {env!r}")
    if source != "eval.json":
        why = "no eval.json" if "eval.json" in run.missing else f"eval.json has no {env!r}"
        notes.append(why + (": final numbers from the last evaluation in evals.jsonl" if source else ": no final accuracy"))
    if "summary.json" in run.missing:
        notes.append("no summary.json (did the run finish?): compute from its last logged step")
    if "metrics.jsonl" in run.missing:
        notes.append("no metrics.jsonl")
    return notes


def build_row(run: RunData, label: str, env: str, ks: list[int], target: float) -> dict[str, Any]:
    final, source = final_summary(run, env)
    total, points = total_compute(run), curve(run, env)
    stats = ["pass@1"] + [f"{m}@{k}" for k in ks for m in ("pass", "maj")] + ["greedy"]
    row = {"label": label, "path": str(run.path), "command": run.command, "env": env, "final_from": source or None,
           **{s: (final or {}).get(s) for s in stats},
           "tokens": (total.get("generated_tokens") or 0) + (total.get("teacher_tokens") or 0) if total else None,
           "flops": total.get("flops"), "wall_seconds": total.get("wall_seconds"), "compute": total,
           "curve": [asdict(p) for p in points], "pass_at_k": pass_curve(final), "notes": _run_notes(run, env, source, points)}
    if target:
        hit = reach(points, target)
        at_start = bool(hit and points[0].mean >= target and (points[0].flops or points[0].tokens))
        row["target"] = {"pass@1": target, "tokens": hit[0] if hit else None, "flops": hit[1] if hit else None,
                         "at_start": at_start}
        if at_start:  # a stage it inherited (SFT before RL) crossed the target, somewhere before this
            row["notes"].append(f"already at pass@1 >= {target:.0%} at its first evaluation: the cost to reach "
                                "the target is at most what it started with (compare the stage it started from)")
    if total and (total.get("teacher_tokens") or 0) > 0 and not total.get("teacher_flops"):
        row["notes"].append("its teacher's FLOPs are unknown (an HTTP teacher; `rlvr distill --teacher_params N` "
                            "charges 2 N per token): the FLOPs axis leaves the teacher out, the tokens axis does not")
    return row


def teacher_eval(teacher: str) -> tuple[Path, dict[str, Any]]:
    """The teacher's eval.json (a run directory's, or the file itself) and its metrics."""
    path = Path(teacher) / "eval.json" if Path(teacher).is_dir() else Path(teacher)
    if not path.is_file():
        raise RunError(f"teacher: {path} does not exist (give a run directory holding eval.json, or an eval.json)")
    return path, _check_metrics((_read_json(path) or {}).get("metrics"), str(path))


def teacher_name(path: Path) -> str:
    name = path.parent.name or path.parent.resolve().name
    return "teacher" if name == "teacher" else f"teacher ({name})"  # not "teacher (teacher)"


def teacher_lines(teacher: str, runs: list[RunData], env: str, notes: list[str]) -> list[tuple[str, float]]:
    """The teacher's accuracy: `teacher`'s final pass@1, else each distill run's pass rate."""
    if teacher:
        path, metrics = teacher_eval(teacher)
        if env not in metrics:
            notes.append(f"teacher {path} has no evaluation of {env!r} (it has {', '.join(metrics)}): no teacher line")
            return []
        return [(f"{teacher_name(path)}, final pass@1", float(metrics[env]["pass@1"]["mean"]))]
    lines = {}
    for run in runs:
        s = run.summary or {}
        if isinstance(s.get("teacher_pass_rate"), (int, float)):
            lines[f"teacher {s.get('teacher', '?')}: pass rate on its distill samples"] = float(s["teacher_pass_rate"])
    return list(lines.items())


def default_labels(paths: list[str]) -> list[str]:
    names = [Path(p).resolve().name for p in paths]
    if len(set(names)) == len(names):
        return names
    return ["/".join(Path(p).resolve().parts[-2:]) for p in paths]  # runs/a/rl and runs/b/rl: a/rl, b/rl


def main(cfg: CompareConfig) -> dict[str, Any]:
    if not cfg.runs:
        raise ConfigError("compare needs at least one run directory")
    runs = [load_run(p) for p in cfg.runs]
    labels = cfg.labels or default_labels(cfg.runs)
    env = choose_env(runs, cfg.env)
    ks = table_ks([final_summary(r, env)[0] for r in runs])
    notes: list[str] = []
    teacher = teacher_lines(cfg.teacher, runs, env, notes)
    rows = [build_row(r, lab, env, ks, cfg.target) for r, lab in zip(runs, labels)]
    notes = [f"{r['label']}: {n}" for r in rows for n in r["notes"]] + notes
    colors = plots.run_colors(len(runs))
    pngs = {"accuracy_vs_tokens.png": plots.accuracy_vs_compute(plots.curve_series(rows, colors, "tokens"), teacher,
                                                                "generated tokens (own + teacher)"),
            "accuracy_vs_flops.png": plots.accuracy_vs_compute(plots.curve_series(rows, colors, "flops"), teacher,
                                                               "FLOPs (generation + training + teacher)"),
            "pass_at_k.png": plots.pass_at_k(plots.passk_series(rows, colors), f"final pass@k ({env})")}

    out = Path(cfg.out) if cfg.out else Path(cfg.runs[0]).parent / "compare"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in pngs.items():
        (out / name).write_bytes(data)
    title = "rlvr compare: " + " vs ".join(labels)
    intro = [f"Environment: {env}. Final numbers from each run's final evaluation (eval.json); "
             "pass@k and maj@k at the k that every run's final evaluation has."]
    intro += [f"Teacher line: {lab} = {100 * v:.1f}%." for lab, v in teacher]
    header, cells = plots.table(rows, ks, cfg.target)
    teacher_final = None
    if cfg.teacher:  # the teacher's own accuracy, measured as every run's final one, as a line of the table
        path, metrics = teacher_eval(cfg.teacher)
        teacher_final = metrics.get(env)
        if teacher_final:
            cells.append(plots.teacher_row(teacher_name(path), teacher_final, ks, len(header)))
    write_text(out / "report.md", plots.markdown(title, intro, header, cells, notes, list(pngs)))
    write_text(out / "report.html", plots.html_page(title, intro, header, cells, notes, pngs))
    write_json(out / "report.json", {"env": env, "ks": ks, "target": cfg.target or None,
                                     "teacher": [{"label": lab, "pass@1": v} for lab, v in teacher],
                                     "teacher_final": teacher_final, "rows": rows})
    return {"html": str(out / "report.html"), "markdown": str(out / "report.md"), "json": str(out / "report.json"),
            "pngs": [str(out / n) for n in pngs], "rows": rows}
