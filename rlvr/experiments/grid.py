"""What the grid experiments (noise, staleness) read back from each RL run and draw.

Every cell of a grid is one `rlvr rl` run directory with evaluations every few steps;
these helpers read its held-out pass@1 curve and final figure, the step at which it
first reached a target, and draw the cells' curves, one panel per group of cells.

    curve(run_dir, against)        [(step or FLOPs, pass@1)] from evals.jsonl
    final(run_dir)                 eval.json's pass@1: {"mean", "ci", ...}
    steps(run_dir)                 the steps a finished run took
    steps_to(run_dir, target)      first evaluated step with pass@1 >= target, or None
    initial(run_dir)               the step-0 evaluation's pass@1 (the starting model, same problems)
    paired(start, end)             the paired change of final pass@1 from one run to another
    over_seeds(curves)             [(step, mean, min, max)] of one cell's curves over seeds
    seed_results(out, curves)      {cell: result with its curves over seeds} of an over-seeds run
    line(ax, points, **style)      one curve on matplotlib axes (over seeds: its range shaded)
    plot_curves(panels, path, ...) small multiples: a panel per lag or noise level, a line per cell
                                   (a curve over seeds: its mean, its range shaded)
    start(cfg, console)            the cells' environment and starting model (default: the demo's)
    save(root, out, plot, console) results.json, and where the figure is
    stage(run_dir, fn, config, console)   run one stage of a pipeline unless it finished before
    measure(model, env, out, ...)  evaluate a model that no trainer evaluated (a base) into out/eval.json
    scores(run_dir)                eval.json's pass@1, pass@16 and greedy
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import AfterValidator, Field

from rlvr.atomic import write_json
from rlvr.config import Config
from rlvr.eval_metrics import paired_change
from rlvr.experiments.seeds import PerSeed
from rlvr.fields import HeldOutProblems, RLEvalEvery

# rlvr rl's rate settings before the coldstart ablation made its defaults lr 5e-4, cosine,
# scaled by signal. The experiments recorded with them in EXPERIMENTS.md (each about
# another factor: noise, staleness, hacking, the ceiling, a real model) pin what they
# relied on, so that their figures repeat.
RATE_BEFORE = {"lr": 2e-4, "lr_schedule": "constant", "lr_by_signal": False}


def names_in(registry: dict[str, Any]):
    """A validator of a list of names: each must be a key of `registry`."""
    def check(value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(registry))
        if unknown:
            raise ValueError(f"unknown {unknown}; choose from {sorted(registry)}")
        return value
    return AfterValidator(check)


class GridConfig(Config):
    """What every cell of a grid experiment shares: where it starts, how long, how judged."""

    env: Any = Field(None, description="Environment of every run (default: the demo's task).")
    model: str = Field("", description="Starting model (default: the demo's pretrained base of --base_seed, cached).")
    steps: int = Field(40, ge=1, description="RL steps of every run.")
    lr: float = Field(5e-4, gt=0, description="RL learning rate (the demo's, cosine-decayed).")
    eval_every: RLEvalEvery = 10
    eval_problems: HeldOutProblems = 200
    eval_samples: int = Field(8, ge=1, description="Samples per problem (pass@1 is their mean).")
    target: float = Field(0.8, gt=0, le=1, description="Held-out (true) pass@1 whose steps-to-reach the table reports.")
    seed: int = Field(0, description="Seed of sampling (and of a noisy verifier's flips).")
    base_seed: int = Field(0, description="Seed of the base's pretraining, when no --model is given (the demo's base, cached).")
    seeds: PerSeed


def start(cfg, console) -> tuple[Any, str]:
    """(env spec, model path) every cell starts from: `cfg.env` and `cfg.model` when set,
    else the demo's task and its pretrained base of seed `cfg.base_seed` (cached)."""
    from rlvr.demo import pretrained_base
    from rlvr.train import pretrain

    pre = pretrain.PretrainConfig(seed=cfg.base_seed)
    env = cfg.env if cfg.env is not None else pre.env
    return env, cfg.model or str(pretrained_base(pre, console=console))


def save(root: Path, out: dict[str, Any], plot: Path, console) -> dict[str, Any]:
    out = {**out, "plot": str(plot)}
    write_json(root / "results.json", out)
    console.print(f"results: {root / 'results.json'}, figure: {plot}   ({out['seconds']:.0f} s)")
    return out


def _first_env(metrics: dict[str, Any]) -> dict[str, Any]:
    return metrics["all"] if "all" in metrics else next(iter(metrics.values()))


def curve(run_dir: Path, against: str = "step") -> list[tuple[float, float]]:
    """(step, pass@1) of every evaluation; `against="flops"`: (total FLOPs so far, pass@1)."""
    rows = [json.loads(line) for line in (run_dir / "evals.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"] if against == "step" else r["compute"]["flops"], _first_env(r["metrics"])["pass@1"]["mean"])
            for r in rows]


def over_seeds(curves: list[list[tuple[float, float]]]) -> list[tuple[float, float, float, float]]:
    """One cell's curves from several seeds as [(step, mean, min, max)], at the steps every
    seed evaluated (a seed that stopped early bounds the curve)."""
    shared = set.intersection(*(set(x for x, _ in c) for c in curves)) if curves else set()
    at = [dict(c) for c in curves]
    return [(x, sum(a[x] for a in at) / len(at), min(a[x] for a in at), max(a[x] for a in at)) for x in sorted(shared)]


def seed_results(out: dict[str, Any], curves: tuple[str, ...] = ("curve",)) -> dict[str, dict[str, Any]]:
    """The cells of an over-seeds run (`seeds.over_seeds`' result, each seed's result with
    "results": {cell: {..., "curve"}}): the first seed's cell with each of its `curves`
    over every seed that ran it (an empty curve stays empty), for the same figure as one run's."""
    runs = list(out["runs"].values())

    def merged(cell: str, key: str) -> list[tuple[float, ...]]:
        found = [run["results"][cell][key] for run in runs if cell in run["results"]]
        return over_seeds(found) if all(found) else []

    return {cell: {**r, **{key: merged(cell, key) for key in curves}} for cell, r in runs[0]["results"].items()}


def steps(run_dir: Path) -> int:
    """The steps a finished run took (its summary.json)."""
    return json.loads((run_dir / "summary.json").read_text())["steps"]


def final(run_dir: Path) -> dict[str, Any]:
    return _first_env(json.loads((run_dir / "eval.json").read_text())["metrics"])["pass@1"]


def initial(run_dir: Path) -> dict[str, Any] | None:
    """pass@1 of the run's first evaluation (step 0: the model it started from, on the same
    held-out problems as `final`), or None when it made none before training."""
    for line in (run_dir / "evals.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            return _first_env(row["metrics"])["pass@1"] if row["step"] == 0 else None
    return None


def steps_to(run_dir: Path, target: float) -> int | None:
    return next((step for step, p in curve(run_dir) if p >= target), None)


def paired(start: dict[str, Any] | None, end: dict[str, Any] | None) -> dict[str, Any] | None:
    """The change of pass@1 from one evaluation to another of the same held-out problems
    (`final`'s or `initial`'s dicts), with its paired 95% CI (eval_metrics.paired_change);
    None when either is missing or kept no per-problem scores."""
    if not start or not end or "per_problem" not in start or "per_problem" not in end:
        return None
    return paired_change(start["per_problem"], end["per_problem"])


def change_text(change: dict[str, Any] | None) -> str:
    if change is None:
        return "-"
    return f"{change['mean']:+.1%} [{change['ci'][0]:+.1%}, {change['ci'][1]:+.1%}]"


def ci_text(p: dict[str, Any]) -> str:
    return f"{p['mean']:.1%} [{p['ci'][0]:.1%}, {p['ci'][1]:.1%}]"


def plot_curves(panels: dict[str, dict[str, list[tuple[float, float]]]], path: Path, title: str,
                target: float | None = None, xlabel: str = "RL step",
                reference: tuple[str, list[tuple[float, float]]] | None = None) -> None:
    """Small multiples: one panel per group of cells (a lag, a noise level), one line per
    cell in it. A line's name keeps its colour in every panel, and `reference` (label,
    curve), the synchronous run or the clean verifier, is drawn grey in every panel, so
    that each panel reads against it; a grid of 17 cells in one axes repeats its colours.
    A curve of (x, mean, min, max) points (`over_seeds`) is drawn at its mean with its
    range shaded."""
    import math

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(name for lines in panels.values() for name in lines))
    palette = plt.get_cmap("tab10").colors
    colour = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    cols = 2 if len(panels) == 4 else min(len(panels), 3) or 1
    rows = math.ceil(len(panels) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols if cols > 1 else 8, 3.4 * rows if cols > 1 else 5),
                             sharex=True, sharey=True, squeeze=False)
    for ax, (panel, lines) in zip(axes.flat, panels.items()):
        if reference is not None and reference[1]:
            line(ax, reference[1], color="grey", linestyle="--", linewidth=1.2, label=reference[0])
        for name, points in lines.items():
            if points:
                line(ax, points, marker="o", markersize=3, color=colour[name], label=name)
        if target is not None:
            ax.axhline(target, color="grey", linestyle=":", linewidth=1)
        ax.set_title(panel, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    for col in range(cols):  # the lowest drawn panel of each column carries the x axis
        lowest = axes[(len(panels) - 1 - col) // cols, col] if col < len(panels) else None
        if lowest is not None:
            lowest.xaxis.set_tick_params(labelbottom=True)
            lowest.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel("held-out pass@1 (true verdict)")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def line(ax, points: list[tuple[float, ...]], **style) -> None:
    """A curve on matplotlib axes: (x, y) points, or (x, mean, min, max) over seeds, its range shaded."""
    xs = [p[0] for p in points]
    (drawn,) = ax.plot(xs, [p[1] for p in points], **style)
    if len(points[0]) == 4:
        ax.fill_between(xs, [p[2] for p in points], [p[3] for p in points], color=drawn.get_color(), alpha=0.15,
                        linewidth=0)


def stage(run_dir: Path, fn, config, console) -> Path:
    """`fn(config)` in `run_dir` unless a finished run is there (its summary.json, written
    last); a run killed half-way resumes, where its command can."""
    if (run_dir / "summary.json").exists():
        console.print(f"[green]{run_dir.name}[/]: done before, reused")
        return run_dir
    console.print(f"[bold]{run_dir.name}[/]")
    update = {"run_dir": str(run_dir)}
    if "resume" in type(config).model_fields:
        update["resume"] = (run_dir / "metrics.jsonl").exists()
    fn(config.model_copy(update=update))
    return run_dir


def measure(model: Path, env_spec: Any, out: Path, problems: int, samples: int, seed: int,
            max_new_tokens: int = 32) -> Path:
    """Evaluate `model` as a trainer's final evaluation does (the held-out problems every
    run evaluates on, `samples` at T = 1 and greedy) into out/eval.json, once."""
    if not (out / "eval.json").exists():
        from rlvr.engine import make_engine
        from rlvr.envs import make_env
        from rlvr.eval import eval_problems, evaluate
        from rlvr.models import load_model
        from rlvr.train.evaluator import powers_of_two
        from rlvr.types import Sampling

        env = make_env(env_spec)
        m, tok = load_model(model)
        sampling = Sampling(temperature=1.0, max_new_tokens=max_new_tokens, seed=seed)
        metrics = evaluate(make_engine(m, tok, role="snapshot"), env, eval_problems(env, problems), samples,
                           powers_of_two(samples), sampling)
        write_json(out / "eval.json", {"model": str(model), "metrics": metrics})
    return out


def scores(run_dir: Path) -> dict[str, Any]:
    """{"pass@1", "pass@16", "greedy"} (each {"mean", "ci", ...}; pass@1 with its per-problem
    scores) of a run's final evaluation; a figure it did not measure is None."""
    m = _first_env(json.loads((run_dir / "eval.json").read_text())["metrics"])
    return {k: m.get(k) for k in ("pass@1", "pass@16", "greedy")}
