"""How `rlvr compare` shows its rows: the figures, the numbers' formats, the pages.

rlvr/report.py reads the runs and works out the numbers; this file only presents
them. Each figure function takes plain numbers (one dict per run, already in the run's
color) and returns PNG bytes, so that the report writes the same bytes to disk and
embeds them in its HTML. Figures are drawn on matplotlib's Agg canvas directly, not
through pyplot: no display is needed and no global figure state leaks between calls.

    png = accuracy_vs_compute([{"label": "rl", "color": "#1f77b4", "x": [0, 1e6],
                                "mean": [0.2, 0.5], "lo": [0.1, 0.4], "hi": [0.3, 0.6]}],
                              teacher=[("teacher", 0.8)], xlabel="generated tokens")
    si(3.4e12) == "3.4T"; pct({"mean": 0.625, "ci": [0.5, 0.75]}) == "62.5% [50.0, 75.0]"
"""

from __future__ import annotations

import base64
import html
from io import BytesIO
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator, PercentFormatter

COMPUTE_NOTE = (
    "Compute is cumulative and includes what each run inherited from the checkpoint it started from "
    "(e.g. the SFT and the distillation behind an RL run). Generated tokens are all tokens sampled from "
    "any model for the run's training: its own rollouts plus the teacher's solutions it learned from "
    "(teacher tokens are charged to every run that learned from them). FLOPs = 2·N·tokens per forward "
    "pass + 4·N·tokens per backward pass, N = the parameters of the model doing it, teacher included.")


def run_colors(n: int) -> list[str]:
    """One color per run, by position, so a run has the same color in every figure."""
    cmap = matplotlib.colormaps["tab10"]
    return [matplotlib.colors.to_hex(cmap(i % 10)) for i in range(n)]


def curve_series(rows: list[dict[str, Any]], colors: list[str], xkey: str) -> list[dict[str, Any]]:
    """Accuracy-vs-compute series of the runs that have a curve; a band only where
    every point has a CI (a curve read from metrics.jsonl has none)."""
    out = []
    for r, color in zip(rows, colors):
        pts = r["curve"]
        if pts:
            band = all(p["ci"] for p in pts)
            out.append({"label": r["label"], "color": color, "x": [p[xkey] for p in pts],
                        "mean": [p["mean"] for p in pts], "lo": [p["ci"][0] for p in pts] if band else None,
                        "hi": [p["ci"][1] for p in pts] if band else None})
    return out


def passk_series(rows: list[dict[str, Any]], colors: list[str]) -> list[dict[str, Any]]:
    out = []
    for r, color in zip(rows, colors):
        pts = r["pass_at_k"]
        if pts:
            out.append({"label": r["label"], "color": color, "k": [p["k"] for p in pts],
                        "mean": [p["mean"] for p in pts], "lo": [(p["ci"] or [p["mean"]])[0] for p in pts],
                        "hi": [(p["ci"] or [p["mean"]])[-1] for p in pts]})
    return out


def _axes(title: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=(7.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    return fig, ax


def _png(fig: Figure, ax: Any, empty: bool) -> bytes:
    if empty:
        ax.text(0.5, 0.5, "nothing to plot: no run has these evaluations", transform=ax.transAxes,
                ha="center", va="center", color="0.4")
    elif ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _scale_x(ax: Any, xs: list[float]) -> None:
    """Log x when the values span more than two decades; symlog when zeros are among
    them (a run evaluated before any training sits at 0, which log cannot show)."""
    pos = [x for x in xs if x > 0]
    if not pos or max(pos) / min(pos) <= 100:
        return
    if len(pos) < len(xs):
        ax.set_xscale("symlog", linthresh=min(pos))
        ax.set_xlim(0, max(pos) * 1.5)  # the autoscale margin would open an empty negative decade
    else:
        ax.set_xscale("log")


def accuracy_vs_compute(series: list[dict[str, Any]], teacher: list[tuple[str, float]],
                        xlabel: str, title: str = "") -> bytes:
    """pass@1 against cumulative compute; the 95% CI as a band where every point has one."""
    fig, ax = _axes(title or f"pass@1 vs {xlabel}")
    ax.use_sticky_edges = False  # CI bands would otherwise pin the last point to the frame
    for s in series:
        ax.plot(s["x"], s["mean"], marker="o", ms=3, lw=1.5, color=s["color"], label=s["label"])
        if s.get("lo") is not None:
            ax.fill_between(s["x"], s["lo"], s["hi"], color=s["color"], alpha=0.18, lw=0)
    for i, (label, value) in enumerate(teacher):
        ax.axhline(value, ls="--", lw=1.2, color=str(0.15 + 0.25 * (i % 3)), label=label)
    _scale_x(ax, [x for s in series for x in s["x"]])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pass@1")
    ax.set_ylim(bottom=0)
    return _png(fig, ax, empty=not series)


def pass_at_k(series: list[dict[str, Any]], title: str = "final pass@k") -> bytes:
    """pass@k against k on a log2 axis, with CI error bars. Runs are nudged sideways
    by a few percent of a doubling so that their error bars do not hide each other."""
    fig, ax = _axes(title)
    ks = sorted({k for s in series for k in s["k"]})
    for i, s in enumerate(series):
        nudge = 2 ** (0.04 * (i - (len(series) - 1) / 2))
        err = [[m - lo for m, lo in zip(s["mean"], s["lo"])], [hi - m for m, hi in zip(s["mean"], s["hi"])]]
        ax.errorbar([k * nudge for k in s["k"]], s["mean"], yerr=err, marker="o", ms=4, lw=1.5,
                    capsize=3, color=s["color"], label=s["label"])
    ax.set_xscale("log", base=2)
    if ks:
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("pass@k")
    ax.set_ylim(bottom=0)
    return _png(fig, ax, empty=not series)


def pct(stat: dict[str, Any] | None) -> str:
    if not stat:
        return "—"
    ci = stat.get("ci")
    return f"{100 * stat['mean']:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def si(x: float | None) -> str:
    if x is None:
        return "—"
    if abs(x) >= 1e18:
        return f"{x:.1e}"
    for exp, suffix in ((15, "P"), (12, "T"), (9, "G"), (6, "M"), (3, "k")):
        if abs(x) >= 10 ** exp:
            return f"{x / 10 ** exp:.1f}{suffix}"
    return f"{x:.0f}"


def duration(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s:.0f}s" if s < 60 else f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.1f} h"


def table(rows: list[dict[str, Any]], ks: list[int], target: float) -> tuple[list[str], list[list[str]]]:
    header = ["run", "command", "pass@1 [95% CI]"] + [f"{m}@{k}" for k in ks for m in ("pass", "maj")]
    header += ["greedy", "generated tokens (own + teacher)", "FLOPs", "wall time"]
    if target:
        header += [f"tokens to {100 * target:.1f}%", f"FLOPs to {100 * target:.1f}%"]
    cells = []
    for r in rows:
        line = [r["label"], r["command"], pct(r["pass@1"])] + [pct(r[f"{m}@{k}"]) for k in ks for m in ("pass", "maj")]
        line += [pct(r["greedy"]), si(r["tokens"]), si(r["flops"]), duration(r["wall_seconds"])]
        if target:
            t = r["target"]
            bound = "≤ " if t.get("at_start") else ""  # reached before its first evaluation
            line += ["not reached" if t["tokens"] is None else bound + si(t["tokens"]),
                     "not reached" if t["flops"] is None else bound + si(t["flops"])]
            if not r["curve"]:
                line[-2:] = ["no evals", "no evals"]
        cells.append(line)
    return header, cells


def teacher_row(label: str, final: dict[str, Any], ks: list[int], width: int) -> list[str]:
    """The teacher's own accuracy as a line of the table; what it cost is left blank (a teacher is given)."""
    line = [label, "teacher", pct(final.get("pass@1"))] + [pct(final.get(f"{m}@{k}")) for k in ks for m in ("pass", "maj")]
    return line + [pct(final.get("greedy"))] + ["—"] * (width - len(line) - 1)


def markdown(title: str, intro: list[str], header: list[str], cells: list[list[str]], notes: list[str],
              pngs: list[str]) -> str:
    esc = [[c.replace("|", "\\|") for c in line] for line in [header] + cells]
    lines = [f"# {title}", "", *[s + "\n" for s in intro], "| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in esc[1:]]
    lines += ["", *(["Notes:", *[f"- {n}" for n in notes], ""] if notes else [])]
    lines += [f"![{p[:-4].replace('_', ' ')}]({p})\n" for p in pngs] + [COMPUTE_NOTE, ""]
    return "\n".join(lines)


def html_page(title: str, intro: list[str], header: list[str], cells: list[list[str]], notes: list[str],
          pngs: dict[str, bytes]) -> str:
    e = html.escape
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in line) + "</tr>\n" for line in cells)
    imgs = "".join(f'<figure><img alt="{e(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
                   f"</figure>\n" for name, data in pngs.items())
    note = f"<h2>Notes</h2><ul>{''.join(f'<li>{e(n)}</li>' for n in notes)}</ul>" if notes else ""
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{e(title)}</title><style>{style}</style>"
            f"</head><body><h1>{e(title)}</h1>{''.join(f'<p>{e(i)}</p>' for i in intro)}\n<table><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in header) + f"</tr>\n{rows}</table>{note}\n{imgs}"
            f"<p><small>{e(COMPUTE_NOTE)}</small></p></body></html>\n")
