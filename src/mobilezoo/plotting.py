"""Plotting primitives shared by the report and the model selection: the Pareto frontier, and matplotlib figures
drawn on the Agg canvas directly (no pyplot, no global backend), with one colour per model family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

# one tab20 colour per family (twelve families: tab10 would give two of them the same colour)
FAMILY_ORDER = ("MobileNetV1", "MobileNetV2", "MobileNetV3", "ShuffleNetV1", "ShuffleNetV2", "Reference", "SqueezeNet",
                "NASNet", "MnasNet", "GhostNet", "EfficientNet", "MobileNetV4")  # fmt: skip
DPI = 110


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the upper-left frontier (lower x and higher y are better), ordered by increasing x.

    A point is on it when no other point has x <= its x and y >= its y with one of them strictly better.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    frontier: list[int] = []
    best_y = float("-inf")
    for i in order:
        if points[i][1] > best_y:
            frontier.append(i)
            best_y = points[i][1]
    return frontier


def figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def colour(family: str) -> str:
    from matplotlib import colormaps

    i = FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)
    return colormaps["tab20"](i % 20)


def plain_log(axis: Axis) -> None:
    """Log-scale tick labels as plain numbers (0.3, 20, 1000) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "235" else ""))


__all__ = ["DPI", "FAMILY_ORDER", "colour", "figure", "pareto_frontier", "plain_log"]
