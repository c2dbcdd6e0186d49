"""The ShuffleNet V2 paper's four guideline experiments (Ma et al., arXiv:1807.11164, §2, Tables 1-4), re-run here.

Each experiment stacks 10 identical blocks on a 56x56 input and holds the multiply-adds (the paper's "FLOPs") about
constant across its rows, so only the property under test changes. The paper's mobile ("ARM"/"CPU") channel numbers
are used, x1/x2/x4 being channel multipliers: the paper does not define them, but its Table 2 g=1 row (CPU 40.0 / 10.2
/ 2.3 images/s) is its Table 3 1-fragment row at c = 64 / 128 / 256 (40.2 / 10.1 / 2.3), channels doubling per step,
and the speeds drop about 4x per step, as the multiply-adds of a 1x1 conv with twice the channels do. The blocks
are bare convolutions: no BatchNorm (at inference it folds into the conv) and no bias, the paper not saying otherwise.

Choices the paper leaves to the re-implementer, all marked "[ours]" in the row labels' notes:

- Table 2, g=8 at x1: the paper's c=180 is not divisible by 8; we use 184 (c^2/g = 4232 vs 4096 for g=1).
- Table 3: series blocks of k convs use c/sqrt(k) channels (2-series: round(c/1.414); 4-series: c/2), which keeps the
  MAdds; parallel blocks run k convs c -> c/k side by side on the same input and concatenate them (exactly the MAdds
  of the 1-fragment conv, the whole difference being fragmentation).
- Table 4: c is the unit's input/output width, the bottleneck width c/4 (ResNet's ratio). The paper's CPU speeds
  only fit that reading: with a c-wide bottleneck the c=128 net would need ~28 GMAdds/s from one Snapdragon 810 core.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mobilezoo.benchmark import benchmark_interleaved, environment

RESOLUTION = 56
DEPTH = 10
SCALES = (1, 2, 4)
# a guideline "holds" at a scale where its preferred design is more than 5% faster than the design violating it most,
# and no other row is more than 5% faster than it
TOLERANCE = 0.05


@dataclass(frozen=True)
class Row:
    """One row of a paper table: its label, the blocks' settings at x1, and the paper's GPU and mobile speeds."""

    label: str
    settings: dict[str, Any]
    paper_gpu: tuple[float, float, float]  # batches/s at x1, x2, x4
    paper_cpu: tuple[float, float, float]  # images/s at x1, x2, x4 (the paper's "ARM" / "CPU" column)


# Table 1 (G1): 10 x [1x1 c1->c2, 1x1 c2->c1]; (c1, c2) from the ARM column at x1
TABLE_1 = (
    Row("c1:c2 = 1:1", {"c1": 32, "c2": 32}, (1480, 723, 232), (76.2, 21.7, 5.3)),
    Row("c1:c2 = 1:2", {"c1": 22, "c2": 44}, (1296, 586, 206), (72.9, 20.5, 5.1)),
    Row("c1:c2 = 1:6", {"c1": 13, "c2": 78}, (876, 489, 189), (69.1, 17.9, 4.6)),
    Row("c1:c2 = 1:12", {"c1": 9, "c2": 108}, (748, 392, 163), (57.6, 15.1, 4.4)),
)
# Table 2 (G2): 10 x [1x1 group conv c->c, g groups]; c from the CPU column at x1
TABLE_2 = (
    Row("g = 1", {"c": 64, "g": 1}, (2451, 1289, 437), (40.0, 10.2, 2.3)),
    Row("g = 2", {"c": 90, "g": 2}, (1725, 873, 341), (35.0, 9.5, 2.2)),
    Row("g = 4", {"c": 128, "g": 4}, (1026, 644, 338), (32.9, 8.7, 2.1)),
    Row("g = 8", {"c": 184, "g": 8}, (634, 445, 230), (27.8, 7.5, 1.8)),  # [ours] paper c=180 is not divisible by 8
)
# Table 3 (G3): 10 x fragment block; c = 64 at x1 (CPU column); fragment widths are ours (module docstring)
TABLE_3 = (
    Row("1-fragment", {"k": 1, "mode": "series"}, (2446, 1274, 434), (40.2, 10.1, 2.3)),
    Row("2-fragment-series", {"k": 2, "mode": "series"}, (1790, 909, 336), (38.6, 10.1, 2.2)),
    Row("4-fragment-series", {"k": 4, "mode": "series"}, (752, 745, 349), (38.4, 10.1, 2.3)),
    Row("2-fragment-parallel", {"k": 2, "mode": "parallel"}, (1537, 803, 320), (33.4, 9.1, 2.2)),
    Row("4-fragment-parallel", {"k": 4, "mode": "parallel"}, (691, 572, 292), (35.0, 8.4, 2.1)),
)
# Table 4 (G4): 10 x ResNet bottleneck with/without ReLU and shortcut; c = 32 at x1 (CPU column)
TABLE_4 = (
    Row("ReLU + shortcut", {"relu": True, "shortcut": True}, (2427, 2066, 1436), (56.7, 16.9, 5.0)),
    Row("ReLU, no shortcut", {"relu": True, "shortcut": False}, (2647, 2256, 1735), (61.9, 18.8, 5.2)),
    Row("no ReLU, shortcut", {"relu": False, "shortcut": True}, (2672, 2121, 1458), (57.3, 18.2, 5.1)),
    Row("no ReLU, no shortcut", {"relu": False, "shortcut": False}, (2842, 2376, 1782), (66.3, 20.2, 5.4)),
)


class MicroNet(nn.Module):
    """``DEPTH`` blocks applied in sequence to a ``in_chans`` x 56 x 56 input."""

    def __init__(self, blocks: Sequence[nn.Module], in_chans: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.in_chans = in_chans

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


def _conv(cin: int, cout: int, kernel: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)


class Parallel(nn.Module):
    """k 1x1 convs c -> c/k on the same input, concatenated back to c channels."""

    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(_conv(c, c // k) for _ in range(k))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class Bottleneck(nn.Module):
    """ResNet bottleneck c -> c/4 (1x1) -> c/4 (3x3) -> c (1x1), with optional ReLUs and identity shortcut."""

    def __init__(self, c: int, relu: bool, shortcut: bool) -> None:
        super().__init__()
        mid = c // 4
        act = (lambda: nn.ReLU(inplace=True)) if relu else nn.Identity
        self.body = nn.Sequential(_conv(c, mid), act(), _conv(mid, mid, 3), act(), _conv(mid, c))
        self.shortcut = shortcut
        self.out_act = act()

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return self.out_act(y + x if self.shortcut else y)


def build_g1(c1: int, c2: int, scale: int = 1) -> MicroNet:
    c1, c2 = c1 * scale, c2 * scale
    return MicroNet([nn.Sequential(_conv(c1, c2), _conv(c2, c1)) for _ in range(DEPTH)], c1)


def build_g2(c: int, g: int, scale: int = 1) -> MicroNet:
    c = c * scale
    return MicroNet([_conv(c, c, groups=g) for _ in range(DEPTH)], c)


def build_g3(k: int, mode: str, scale: int = 1, c: int = 64) -> MicroNet:
    c = c * scale
    if mode == "parallel":
        return MicroNet([Parallel(c, k) for _ in range(DEPTH)], c)
    width = round(c / math.sqrt(k))  # k convs of width c/sqrt(k) in series: the MAdds of one conv of width c
    return MicroNet([nn.Sequential(*(_conv(width, width) for _ in range(k))) for _ in range(DEPTH)], width)


def build_g4(relu: bool, shortcut: bool, scale: int = 1, c: int = 32) -> MicroNet:
    return MicroNet([Bottleneck(c * scale, relu, shortcut) for _ in range(DEPTH)], c * scale)


def madds(model: nn.Module, resolution: int = RESOLUTION) -> int:
    """Multiply-adds of the micro-nets' convolutions (all stride 1, 'same' padding, so every map is resolution^2)."""
    return sum(
        resolution * resolution * m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    )


@dataclass(frozen=True)
class Experiment:
    guideline: str
    title: str
    rows: tuple[Row, ...]
    build: Callable[..., MicroNet]
    preferred: int  # the row the guideline recommends
    violating: tuple[int, ...]  # the rows that break it the most


EXPERIMENTS = (
    Experiment("G1", "equal channel width minimises memory access cost (Table 1)", TABLE_1, build_g1, 0, (3,)),
    Experiment("G2", "excessive group convolution increases MAC (Table 2)", TABLE_2, build_g2, 0, (3,)),
    Experiment("G3", "network fragmentation reduces parallelism (Table 3)", TABLE_3, build_g3, 0, (2, 4)),
    Experiment("G4", "element-wise operations are not negligible (Table 4)", TABLE_4, build_g4, 3, (0,)),
)


@dataclass(frozen=True)
class RowResult:
    label: str
    settings: dict[str, Any]
    madds: tuple[int, ...]  # per scale
    paper_gpu: tuple[float, ...]
    paper_cpu: tuple[float, ...]
    ours: tuple[float, ...]  # images/s from the fastest timed call, per scale
    median_ms: tuple[float, ...]
    min_ms: tuple[float, ...]
    paper_ratio: tuple[float, ...] = ()  # paper CPU speed / first row's, per scale
    ours_ratio: tuple[float, ...] = ()
    noisy: tuple[bool, ...] = ()  # per scale: the machine's load disturbed the measurement even after re-measuring
    noise: tuple[dict[str, Any], ...] = ()  # per scale: mobilezoo.benchmark.Noise.to_dict() (figures, thresholds)

    def noisy_at(self, i: int) -> bool:
        return bool(self.noisy) and self.noisy[i]

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class TableResult:
    guideline: str
    title: str
    rows: tuple[RowResult, ...]
    holds_at: tuple[bool | None, ...]  # per scale; None: undecided, a row's measurement was disturbed
    verdict: str
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "guideline": self.guideline,
            "title": self.title,
            "verdict": self.verdict,
            "explanation": self.explanation,
            "holds_at": list(self.holds_at),
            "rows": [r.to_dict() for r in self.rows],
        }


@dataclass(frozen=True)
class GuidelinesReport:
    tables: tuple[TableResult, ...]
    scales: tuple[int, ...]
    threads: int
    batch_size: int
    warmup: int
    iters: int
    seconds: float
    env: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "paper": "Ma et al., ShuffleNet V2 (arXiv:1807.11164), §2 Tables 1-4",
            "setup": f"{DEPTH} stacked blocks, {RESOLUTION}x{RESOLUTION} input, eager PyTorch, no BatchNorm, no bias, "
            "rows interleaved and re-measured together while one is noisy, throughput from each row's fastest timed "
            "call, no conclusion at a scale where a row stayed noisy; "
            "paper speeds: GPU batches/s (GTX 1080Ti), CPU images/s (Snapdragon 810, one thread)",
            "scales": list(self.scales),
            "threads": self.threads,
            "batch_size": self.batch_size,
            "warmup": self.warmup,
            "iters": self.iters,
            "seconds": round(self.seconds, 1),
            "env": self.env,
            "tables": [t.to_dict() for t in self.tables],
        }


def _verdict(exp: Experiment, rows: list[RowResult], scales: Sequence[int]) -> tuple[tuple[bool | None, ...], str, str]:
    """Per scale whether the guideline holds (None: a row was noisy, no conclusion), the verdict and the reasons.

    A scale where any row's measurement stayed noisy decides nothing: the rows are compared with each other, so one
    disturbed row makes every comparison at that scale unreliable.
    """
    holds: list[bool | None] = []
    parts = []
    for i, s in enumerate(scales):
        noisy = [r.label for r in rows if r.noisy_at(i)]
        if noisy:
            holds.append(None)
            parts.append(
                f"x{s}: the measurement was disturbed ('{' / '.join(noisy)}' noisy even after re-measuring "
                "interleaved), no conclusion"
            )
            continue
        good = rows[exp.preferred].ours[i]
        bad = max(rows[j].ours[i] for j in exp.violating)
        fastest = max(range(len(rows)), key=lambda j: rows[j].ours[i])
        # holds: clearly faster than the worst violation, and not clearly slower than any other row
        holds.append(good > bad * (1 + TOLERANCE) and good * (1 + TOLERANCE) >= rows[fastest].ours[i])
        parts.append(
            f"x{s}: '{rows[exp.preferred].label}' {good / bad:.2f}x the speed of "
            f"'{' / '.join(rows[j].label for j in exp.violating)}' (paper {_paper_speedup(exp, i):.2f}x), "
            f"fastest '{rows[fastest].label}'"
        )
    decided = [(s, h) for s, h in zip(scales, holds) if h is not None]
    disturbed = [s for s, h in zip(scales, holds) if h is None]
    if not decided:
        verdict = "no conclusion: the measurement was disturbed"
    elif all(h for _, h in decided):
        verdict = "holds here"
    elif any(h for _, h in decided):
        verdict = "holds here at " + ", ".join(f"x{s}" for s, h in decided if h) + " only"
    else:
        verdict = "does not hold here"
    if decided and disturbed:
        verdict += " (no conclusion at " + ", ".join(f"x{s}" for s in disturbed) + ": the measurement was disturbed)"
    return tuple(holds), verdict, "; ".join(parts)


def _paper_speedup(exp: Experiment, scale_index: int) -> float:
    good = exp.rows[exp.preferred].paper_cpu[scale_index]
    return good / max(exp.rows[j].paper_cpu[scale_index] for j in exp.violating)


def run_guidelines(
    *,
    scales: Sequence[int] = SCALES,
    threads: int = 1,
    batch_size: int = 1,
    warmup: int = 3,
    iters: int = 20,
    guidelines: Sequence[str] = ("G1", "G2", "G3", "G4"),
) -> GuidelinesReport:
    """Re-run the paper's Tables 1-4 with the benchmark harness (eager PyTorch on the CPU, rows interleaved).

    Defaults follow the paper's mobile setup: batch 1, one thread. Throughput comes from each row's fastest call
    (the median is kept too). ``scales`` picks channel multipliers from 1, 2, 4.
    Each row's throughput sits beside the paper's CPU and GPU figures. At each scale the guideline holds when its
    preferred design is more than 5% faster than the design violating it most and no row is more than 5% faster than it.
    The rows of a table are timed interleaved; a noisy one has them all timed again (see
    :func:`mobilezoo.benchmark.benchmark_interleaved`), and a scale where a row stays noisy draws no conclusion.
    """
    scales = tuple(scales)
    if not scales or any(s not in SCALES for s in scales) or len(set(scales)) != len(scales):
        raise ValueError(f"scales must be distinct values from {SCALES}, got {scales!r}")
    unknown = [g for g in guidelines if g not in {e.guideline for e in EXPERIMENTS}]
    if unknown or not guidelines:
        raise ValueError(f"unknown guidelines {unknown or guidelines!r}; expected some of G1, G2, G3, G4")
    start = time.perf_counter()
    tables = []
    for exp in (e for e in EXPERIMENTS if e.guideline in guidelines):
        per_row: list[dict[str, list]] = [
            {"madds": [], "ours": [], "ms": [], "min": [], "noisy": [], "noise": []} for _ in exp.rows
        ]
        for s in scales:
            nets = [(exp.build(**row.settings, scale=s), row.label) for row in exp.rows]
            results = benchmark_interleaved(
                nets,
                resolution=RESOLUTION,
                batch_size=batch_size,
                threads=threads,
                warmup=warmup,
                iters=iters,
            )
            for acc, (net, _), res in zip(per_row, nets, results):
                acc["madds"].append(madds(net))
                # background load only ever adds time, so the fastest call is the steadiest figure on a shared machine
                acc["ours"].append(batch_size / (res.min_ms / 1e3))
                acc["ms"].append(res.median_ms)
                acc["min"].append(res.min_ms)
                acc["noisy"].append(res.noisy)
                acc["noise"].append(res.noise.to_dict() if res.noise is not None else {})
        idx = [SCALES.index(s) for s in scales]
        rows = []
        for row, acc in zip(exp.rows, per_row):
            rows.append(
                RowResult(
                    label=row.label,
                    settings=row.settings,
                    madds=tuple(acc["madds"]),
                    paper_gpu=tuple(row.paper_gpu[i] for i in idx),
                    paper_cpu=tuple(row.paper_cpu[i] for i in idx),
                    ours=tuple(acc["ours"]),
                    median_ms=tuple(acc["ms"]),
                    min_ms=tuple(acc["min"]),
                    noisy=tuple(acc["noisy"]),
                    noise=tuple(acc["noise"]),
                )
            )
        first = rows[0]
        rows = [
            RowResult(
                **{
                    **r.__dict__,
                    "paper_ratio": tuple(p / f for p, f in zip(r.paper_cpu, first.paper_cpu)),
                    "ours_ratio": tuple(o / f for o, f in zip(r.ours, first.ours)),
                }
            )
            for r in rows
        ]
        holds, verdict, why = _verdict(exp, rows, scales)
        tables.append(TableResult(exp.guideline, exp.title, tuple(rows), holds, verdict, why))
    return GuidelinesReport(
        tables=tuple(tables),
        scales=scales,
        threads=threads,
        batch_size=batch_size,
        warmup=warmup,
        iters=iters,
        seconds=time.perf_counter() - start,
        env=environment("cpu"),
    )


__all__ = [
    "EXPERIMENTS",
    "GuidelinesReport",
    "RowResult",
    "TableResult",
    "build_g1",
    "build_g2",
    "build_g3",
    "build_g4",
    "madds",
    "run_guidelines",
]
