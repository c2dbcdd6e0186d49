"""Many models x backends x batch sizes (the ``mobilezoo bench`` command), with a latency-vs-MAdds plot."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mobilezoo.benchmark.environment import environment
from mobilezoo.benchmark.harness import (
    REMEASURE,
    BenchResult,
    Candidate,
    Comparison,
    benchmark,
    benchmark_interleaved,
    check_args,
    check_device,
    compare,
)

# ---------------------------------------------------------------- many models x backends x batch sizes


@dataclass(frozen=True)
class SuiteEntry:
    """One (model, backend, batch size) cell: a result, a comparison with torchvision, or the error that stopped it."""

    model: str
    backend: str
    batch_size: int
    result: BenchResult | None = None
    comparison: Comparison | None = None
    error: str | None = None
    madds_m: float | None = None  # the paper's MAdds at 224 px, scaled by (resolution / 224)^2

    @property
    def ours(self) -> BenchResult | None:
        return self.comparison.ours if self.comparison is not None else self.result

    @property
    def noisy(self) -> bool:
        """Whether the cell's measurement (either side of a comparison) stayed noisy after re-measuring."""
        if self.comparison is not None:
            return self.comparison.noisy
        return self.result is not None and self.result.noisy

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "batch_size": self.batch_size,
            "madds_m": self.madds_m,
            "noisy": self.noisy,
            "result": self.result.to_dict() if self.result else None,
            "comparison": self.comparison.to_dict() if self.comparison else None,
            "error": self.error,
        }


@dataclass(frozen=True)
class Suite:
    """The results of :func:`run_suite`, with the environment and the configuration they were measured under."""

    entries: tuple[SuiteEntry, ...]
    config: dict[str, Any]
    env: dict[str, Any]

    def undecided(self) -> dict[tuple[str, int], list[str]]:
        """Per (model, batch size) with a noisy cell, the noisy backends: no fastest backend is named there."""
        out: dict[tuple[str, int], list[str]] = {}
        for e in self.entries:
            if e.ours is not None and e.noisy:
                out.setdefault((e.model, e.batch_size), []).append(e.backend)
        return out

    def fastest(self) -> dict[tuple[str, int], SuiteEntry]:
        """Per (model, batch size), the entry with the lowest median latency among those that ran.

        A (model, batch size) with a noisy cell has no entry (see :meth:`undecided`): the disturbed cell might be the
        fastest or not, so no claim is made.
        """
        best: dict[tuple[str, int], SuiteEntry] = {}
        undecided = self.undecided()
        for e in self.entries:
            key = (e.model, e.batch_size)
            if e.ours is None or key in undecided:
                continue
            if key not in best or e.ours.median_ms < best[key].ours.median_ms:
                best[key] = e
        return best

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "env": self.env,
            "entries": [e.to_dict() for e in self.entries],
            "fastest": [
                {"model": m, "batch_size": b, "backend": e.backend, "median_ms": e.ours.median_ms}
                for (m, b), e in self.fastest().items()
            ],
            "undecided": [
                {"model": m, "batch_size": b, "noisy_backends": noisy, "why": "the measurement was disturbed"}
                for (m, b), noisy in self.undecided().items()
            ],
        }


def _parse_list(values: str | Sequence[Any], what: str) -> list[Any]:
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    values = list(values)
    if not values:
        raise ValueError(f"no {what} given")
    return values


def run_suite(
    models: Sequence[str],
    *,
    backends: str | Sequence[str] = ("eager",),
    batch_sizes: str | Sequence[int] = (1,),
    resolution: int = 224,
    threads: int | None = None,
    device: str = "cpu",
    warmup: int = 5,
    iters: int = 20,
    vs: str | None = None,
    progress: Callable[[str], None] | None = None,
    remeasure: int = REMEASURE,
) -> Suite:
    """Benchmark every model on every backend at every batch size (``vs="torchvision"``: with :func:`compare`).

    Bad arguments raise before anything runs. A cell that fails at run time (no torchvision counterpart with ``vs``,
    an export error) is kept with its error and the rest still run. ``progress`` is called before each cell.
    A cell that stays noisy after its own re-measurements (``remeasure``) has all the backends of its model and batch
    size timed again, interleaved, so that they are compared under the same load; if it is still noisy no fastest
    backend is named for that model and batch size (:meth:`Suite.undecided`).
    """
    from mobilezoo.registry import list_models, model_card

    models = _parse_list(models, "models")
    backends = _parse_list(backends, "backends")
    try:
        sizes = [int(b) for b in _parse_list(batch_sizes, "batch sizes")]
    except (TypeError, ValueError):
        raise ValueError(f"batch sizes must be integers, got {batch_sizes!r}") from None
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        model_card(unknown[0])  # raises with a did-you-mean hint
    if vs not in (None, "torchvision"):
        raise ValueError(f"unknown --vs reference {vs!r}; expected 'torchvision'")
    for backend in backends:
        for b in sizes:
            check_args(backend, b, resolution, threads, warmup, iters, remeasure)
        check_device(device, backend)
    entries: list[SuiteEntry] = []
    for name in models:
        card = model_card(name)
        madds = card.paper_madds_m * (resolution / card.resolution) ** 2 if card.paper_madds_m else None
        for b in sizes:
            group: list[SuiteEntry] = []
            for backend in backends:
                if progress is not None:
                    progress(f"{name} {backend} batch {b}")
                kw = dict(
                    backend=backend,
                    batch_size=b,
                    resolution=resolution,
                    threads=threads,
                    device=device,
                    warmup=warmup,
                    iters=iters,
                    remeasure=remeasure,
                )
                cell = SuiteEntry(name, backend, b, madds_m=madds)
                try:
                    if vs is not None and card.torchvision is not None:
                        cell = SuiteEntry(name, backend, b, comparison=compare(name, **kw), madds_m=madds)
                    else:
                        res = benchmark(name, **kw)
                        note = f"no {vs} counterpart" if vs is not None else None
                        cell = SuiteEntry(name, backend, b, result=res, error=note, madds_m=madds)
                except (RuntimeError, ValueError, ImportError, OSError) as e:
                    cell = SuiteEntry(name, backend, b, error=f"{type(e).__name__}: {e}", madds_m=madds)
                group.append(cell)
            if progress is not None and any(e.noisy for e in group):
                progress(f"{name} batch {b}: re-measuring the backends interleaved (noisy)")
            entries += _remeasure_group(group, name, b, resolution, threads, device, warmup, iters, remeasure)
    config = {
        "models": models,
        "backends": backends,
        "batch_sizes": sizes,
        "resolution": resolution,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "device": device,
        "warmup": warmup,
        "iters": iters,
        "vs": vs,
    }
    return Suite(tuple(entries), config, environment(device))


def _remeasure_group(
    group: list[SuiteEntry],
    name: str,
    batch_size: int,
    resolution: int,
    threads: int | None,
    device: str,
    warmup: int,
    iters: int,
    remeasure: int,
) -> list[SuiteEntry]:
    """A model's cells at one batch size; if one is noisy, its plain results re-measured together, interleaved.

    Comparisons with torchvision were already interleaved pairwise and stay as they are. A re-measurement that fails
    keeps the first results (with their noisy flags).
    """
    plain = [i for i, e in enumerate(group) if e.result is not None and e.comparison is None]
    if len(plain) < 2 or not any(group[i].noisy for i in plain):
        return group
    from mobilezoo.registry import create_model

    model = create_model(name)
    cands = [Candidate(model, name, backend=group[i].backend) for i in plain]
    try:
        results = benchmark_interleaved(
            cands,
            batch_size=batch_size,
            resolution=resolution,
            threads=threads,
            device=device,
            warmup=warmup,
            iters=iters,
            remeasure=remeasure,
        )
    except (RuntimeError, ValueError, ImportError, OSError):
        return group
    out = list(group)
    for i, res in zip(plain, results):
        out[i] = replace(group[i], result=res)
    return out


def plot_suite(suite: Suite, path: str | os.PathLike) -> Path:
    """Scatter plot of median latency per image against the paper's MAdds, one colour per backend, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {str(path.parent)!r} does not exist")
    fig, ax = plt.subplots(figsize=(8, 5.5))
    markers = ["o", "s", "^", "D", "v", "P"]
    sizes = sorted({e.batch_size for e in suite.entries})
    for backend in dict.fromkeys(e.backend for e in suite.entries):
        for i, b in enumerate(sizes):
            cells = [e for e in suite.entries if e.backend == backend and e.batch_size == b and e.ours and e.madds_m]
            if not cells:
                continue
            xs = [e.madds_m for e in cells]
            ys = [e.ours.median_ms / b for e in cells]
            ax.scatter(xs, ys, marker=markers[i % len(markers)], label=f"{backend}, batch {b}")
            for e, x, y in zip(cells, xs, ys):
                label = e.model + (" (noisy: disturbed)" if e.noisy else "")
                ax.annotate(label, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
            noisy = [(x, y) for e, x, y in zip(cells, xs, ys) if e.noisy]
            if noisy:
                ax.scatter(*zip(*noisy), marker="x", color="red", s=60, zorder=3)
    ax.set_xlabel(f"MAdds (M, paper, at {suite.config['resolution']} px)")
    ax.set_ylabel("median latency per image (ms)")
    ax.set_yscale("log")
    ax.set_title(f"{suite.env.get('cpu')}, {suite.config['threads']} threads, torch {suite.env.get('torch')}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
