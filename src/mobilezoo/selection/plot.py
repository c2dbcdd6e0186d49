"""The selection's Pareto chart: published top-1 against measured median latency, with the budget drawn in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mobilezoo.plotting import colour, figure, pareto_frontier, plain_log

if TYPE_CHECKING:
    from mobilezoo.selection.search import Selection


def plot_selection(selection: Selection, path: str | os.PathLike) -> Path:
    """Write ``path`` (PNG): one marker per measured candidate (fastest backend), the Pareto frontier, the budget as a
    vertical line and the pick circled. Raises ValueError when nothing was measured."""
    measured = selection.measured
    if not measured:
        raise ValueError("nothing was measured: no chart to draw")
    fig = figure(8, 5.5)
    ax = fig.add_subplot()
    seen: set[str] = set()
    xs = [c.median_ms for c in measured]
    ys = [c.candidate.top1 for c in measured]
    for c, x, y in zip(measured, xs, ys):
        fam = c.candidate.family
        ax.scatter([x], [y], color=colour(fam), s=36, zorder=3, label=None if fam in seen else fam,
                   marker="s" if c.precision == "int8" else "o", edgecolors="black", linewidths=0.4)  # fmt: skip
        seen.add(fam)
        ax.annotate(f"{c.candidate.key} ({c.backend})", (x, y), fontsize=6, xytext=(4, 3), textcoords="offset points")
    front = pareto_frontier(list(zip(xs, ys)))
    if len(front) > 1:
        ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color="grey", linestyle="--",
                linewidth=1, zorder=2, label="Pareto frontier")  # fmt: skip
    limit = selection.budget.limit_ms
    ax.axvline(limit, color="red", linewidth=1.2, label=f"budget {limit:g} ms")
    if selection.pick is not None:
        p = selection.pick
        ax.scatter([p.median_ms], [p.candidate.top1], s=220, facecolors="none", edgecolors="red", linewidths=1.5,
                   zorder=4, label=f"pick: {p.candidate.key}")  # fmt: skip
    ax.set_xscale("log")
    plain_log(ax.xaxis)
    ax.set_xlabel(f"median ms per call at batch {selection.budget.batch_size} (fastest backend here, log scale)")
    ax.set_ylabel("ImageNet top-1 % (published, fp32)")
    ax.set_title(f"Which model to run here: {selection.budget.describe()}\n{selection.cpu}", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    out = Path(path)
    fig.savefig(out)
    return out
