"""The report's PNG plots: the Pareto charts (paper top-1 against MAdds and against latency) and the sweeps.

Figures are drawn on :class:`matplotlib.figure.Figure` with the Agg canvas directly (no pyplot, no global backend),
so building a report never opens a window nor changes the caller's matplotlib state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mobilezoo.plotting import colour, figure, pareto_frontier, plain_log

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from mobilezoo.report.build import ModelEntry, ReportData, SweepResult

ALPHA, RHO = "\u03b1", "\u03c1"  # the MobileNet width and resolution multipliers (escaped: ruff RUF001)


def _pareto(ax: Axes, entries: Sequence[ModelEntry], xs: Sequence[float], xlabel: str) -> None:
    ys = [e.paper_top1 for e in entries]
    seen: set[str] = set()
    for e, x, y in zip(entries, xs, ys):
        label = e.family if e.family not in seen else None
        seen.add(e.family)
        ax.scatter([x], [y], color=colour(e.family), s=36, zorder=3, label=label, edgecolors="black", linewidths=0.4)
        ax.annotate(e.name, (x, y), fontsize=6.5, xytext=(4, 3), textcoords="offset points")
    front = pareto_frontier(list(zip(xs, ys)))
    if len(front) > 1:
        fx, fy = [xs[i] for i in front], [ys[i] for i in front]
        ax.step(fx, fy, where="post", color="grey", linestyle="--", linewidth=1, zorder=2, label="Pareto frontier")
    ax.set_xscale("log")
    plain_log(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ImageNet top-1 % (paper)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")


def plot_pareto_madds(entries: Sequence[ModelEntry], path: Path) -> Path:
    pts = [e for e in entries if e.paper_top1 is not None]
    fig = figure(8, 5.5)
    ax = fig.add_subplot()
    _pareto(ax, pts, [e.madds_m for e in pts], "MAdds (millions, counted from the code, log scale)")
    ax.set_title("Accuracy vs. multiply-adds")
    fig.savefig(path)
    return path


def plot_pareto_latency(entries: Sequence[ModelEntry], path: Path, subtitle: str) -> Path:
    pts = [e for e in entries if e.paper_top1 is not None and e.fastest_exact is not None]
    fig = figure(8, 5.5)
    ax = fig.add_subplot()
    xs = [e.fastest_exact.median_ms for e in pts]  # type: ignore[union-attr]
    _pareto(ax, pts, xs, "median latency, ms (fastest exact backend on this machine, log scale)")
    ax.set_title(f"Accuracy vs. measured latency\n{subtitle}", fontsize=10)
    fig.savefig(path)
    return path


def plot_backends(entries: Sequence[ModelEntry], backends: Sequence[str], path: Path, subtitle: str) -> Path:
    """Grouped bars: median latency per model, one bar per backend (log scale)."""
    measured = [e for e in entries if e.latencies]
    fig = figure(max(6.0, 1.1 * len(measured) + 2), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(backends))
    for j, b in enumerate(backends):
        xs, ys, hatches = [], [], []
        for i, e in enumerate(measured):
            lat = e.latency(b)
            if lat is not None and lat.median_ms is not None:
                xs.append(i + (j - (len(backends) - 1) / 2) * width)
                ys.append(lat.median_ms)
                hatches.append("xx" if lat.noisy else None)  # disturbed by the machine's load
        bars = ax.bar(xs, ys, width=width, label=b)
        for bar, hatch in zip(bars, hatches):
            if hatch:
                bar.set_hatch(hatch)
                bar.set_edgecolor("red")
    ax.set_xticks(range(len(measured)), [e.name for e in measured], rotation=30, ha="right", fontsize=7)
    ax.set_yscale("log")
    plain_log(ax.yaxis)
    ax.set_ylabel("median latency, ms (log scale)")
    noisy = any(lat.noisy for e in measured for lat in e.latencies)
    title = "Latency per backend" + (" (red cross-hatched: noisy, disturbed by the load)" if noisy else "")
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.25)
    ax.legend(fontsize=7)
    fig.savefig(path)
    return path


def plot_sweeps(family: str, sweeps: Sequence[SweepResult], path: Path) -> Path:
    """One panel per sweep of a family: MAdds and latency relative to the multiplier-1 point, with alpha² / rho²."""
    fig = figure(5.2 * len(sweeps), 4.4)
    axes = fig.subplots(1, len(sweeps), squeeze=False)[0]
    for ax, sweep in zip(axes, sweeps):
        ref = sweep.reference
        ms = [r.multiplier for r in sweep.rows]
        symbol = ALPHA if sweep.kind == "width" else RHO
        ideal = [(m / ref.multiplier) ** 2 for m in ms]
        ax.plot(ms, ideal, color="grey", linestyle=":", label=f"{symbol}² (the paper's cost model)")
        ax.plot(ms, [r.madds_m / ref.madds_m for r in sweep.rows], "o-", color="black", label="MAdds (counted)")
        for j, lat in enumerate(ref.latencies):
            if lat.median_ms is None:
                continue
            pts = [(r.multiplier, r.latencies[j].median_ms) for r in sweep.rows if r.latencies[j].median_ms]
            ax.plot([p[0] for p in pts], [p[1] / lat.median_ms for p in pts], "s-", label=f"latency, {lat.backend}")
            noisy = [(r.multiplier, r.latencies[j].median_ms) for r in sweep.rows if r.latencies[j].noisy]
            if noisy:  # disturbed by the machine's load: drawn, crossed out, no conclusion
                ax.scatter(
                    [p[0] for p in noisy],
                    [p[1] / lat.median_ms for p in noisy],
                    marker="x",
                    color="red",
                    s=70,
                    zorder=4,
                    label=f"noisy (disturbed), {lat.backend}",
                )
        ax.set_yscale("log")
        plain_log(ax.yaxis)
        ticks = [
            f"{r.multiplier:g}" if sweep.kind == "width" else f"{r.multiplier:.3g}\n{r.resolution}px"
            for r in sweep.rows
        ]
        ax.set_xticks(ms, ticks, fontsize=7)
        ax.set_xlabel(f"{'width' if sweep.kind == 'width' else 'resolution'} multiplier {symbol}")
        ax.set_ylabel(f"relative to {symbol} = {ref.multiplier:.3g} (log scale)")
        ax.set_title(f"{family}: {sweep.kind}", fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7)
    fig.savefig(path)
    return path


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def subtitle(data: ReportData) -> str:
    env = data.env
    return f"{env.get('cpu')}, threads {env.get('threads')}, batch {data.config.batch_size}, torch {env.get('torch')}"


def write_plots(data: ReportData, out: Path) -> dict[str, Path]:
    """Write every plot of the report into ``out``; keys name them (``pareto_madds``, ``sweep_mobilenetv1``...)."""
    paths: dict[str, Path] = {}
    paths["pareto_madds"] = plot_pareto_madds(data.models, out / "pareto_madds.png")
    sub = subtitle(data)
    if any(e.fastest_exact for e in data.models):
        paths["pareto_latency"] = plot_pareto_latency(data.models, out / "pareto_latency.png", sub)
        paths["backends"] = plot_backends(data.models, data.config.backends, out / "latency_backends.png", sub)
    families: dict[str, list[SweepResult]] = {}
    for s in data.sweeps:
        families.setdefault(s.family, []).append(s)
    for family, sweeps in families.items():
        key = f"sweep_{_slug(family)}"
        paths[key] = plot_sweeps(family, sweeps, out / f"{key}.png")
    return paths
