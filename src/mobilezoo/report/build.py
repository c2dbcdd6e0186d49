"""Build the comparison report: the textbook's tables recomputed, latency per backend, sweeps, plots, md + html.

The tables come from :func:`mobilezoo.complexity.tables.textbook_tables`, the very function behind ``mobilezoo tables``,
so the two always agree. Counts (MAdds, params) come from :func:`mobilezoo.complexity.profile` on the meta device;
latencies from :mod:`mobilezoo.benchmark` (eval, inference mode, warm-up, fixed threads, median and p90). A latency
that the machine's load disturbed (see :class:`mobilezoo.benchmark.Noise`) is re-measured interleaved with what it is
compared against (the model's other backends; a sweep's points are measured interleaved from the start); one that
stays noisy is marked as such, and the report draws no conclusion from it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from mobilezoo.complexity.tables import TableResult
from mobilezoo.complexity.timeline import Timeline, timeline
from mobilezoo.report.config import ReportConfig, SweepSpec
from mobilezoo.selection.search import Selection

if TYPE_CHECKING:
    from mobilezoo.detection.table import Table513

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Latency:
    """One model on one backend at batch ``batch_size``: median and p90 per call, or the error that stopped it."""

    backend: str
    median_ms: float | None = None
    p90_ms: float | None = None
    throughput: float | None = None  # images/s at the median
    error: str | None = None
    noisy: bool = False  # the machine's load disturbed it even after re-measuring: no conclusion is drawn from it
    noise: dict[str, Any] | None = None  # mobilezoo.benchmark.Noise.to_dict(): the figures, thresholds, re-measurements

    @classmethod
    def of(cls, result: Any) -> Latency:
        """From a :class:`mobilezoo.benchmark.BenchResult`."""
        noise = result.noise.to_dict() if result.noise is not None else None
        return cls(result.backend, result.median_ms, result.p90_ms, result.throughput, None, result.noisy, noise)

    @property
    def exact(self) -> bool:
        """Whether the backend computes the float model (int8 quantization changes the outputs)."""
        return "int8" not in self.backend

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "exact": self.exact}


def _fastest(latencies: Sequence[Latency], exact_only: bool = False) -> Latency | None:
    """The lowest median among those that ran; None when none ran or one of them is noisy (the claim is undecided)."""
    ran = [lat for lat in latencies if lat.median_ms is not None and (lat.exact or not exact_only)]
    if not ran or any(lat.noisy for lat in ran):
        return None
    return min(ran, key=lambda lat: lat.median_ms)


@dataclass(frozen=True)
class ModelEntry:
    """A model's card figures, its counted MAdds and params, and its latency per backend (empty: not measured)."""

    name: str
    family: str
    resolution: int
    paper_top1: float | None
    paper_madds_m: float | None
    paper_params_m: float | None
    madds_m: float
    params_m: float
    latencies: tuple[Latency, ...] = ()

    @property
    def fastest(self) -> Latency | None:
        return _fastest(self.latencies)

    @property
    def fastest_exact(self) -> Latency | None:
        return _fastest(self.latencies, exact_only=True)

    @property
    def noisy_backends(self) -> tuple[str, ...]:
        """The backends whose latency stayed noisy: while there is one, no fastest backend is named."""
        return tuple(lat.backend for lat in self.latencies if lat.noisy)

    def latency(self, backend: str) -> Latency | None:
        return next((lat for lat in self.latencies if lat.backend == backend), None)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "latencies"}
        out["latencies"] = [lat.to_dict() for lat in self.latencies]
        out["fastest"] = self.fastest.backend if self.fastest else None
        out["fastest_exact"] = self.fastest_exact.backend if self.fastest_exact else None
        out["noisy_backends"] = list(self.noisy_backends)
        return out


@dataclass(frozen=True)
class SweepRow:
    multiplier: float
    model: str
    resolution: int
    model_kwargs: dict[str, Any]
    madds_m: float
    latencies: tuple[Latency, ...]

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "latencies"}
        out["latencies"] = [lat.to_dict() for lat in self.latencies]
        return out


@dataclass(frozen=True)
class SweepResult:
    """A measured sweep; ratios are against the reference row (multiplier 1.0, else the largest)."""

    family: str
    kind: str
    rows: tuple[SweepRow, ...]

    @property
    def reference(self) -> SweepRow:
        return next((r for r in self.rows if r.multiplier == 1.0), max(self.rows, key=lambda r: r.multiplier))

    def noisy_multipliers(self, j: int) -> list[float]:
        """The points whose latency on the ``j``-th sweep backend stayed noisy (no conclusion is drawn from them)."""
        return [r.multiplier for r in self.rows if r.latencies[j].noisy]

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "kind": self.kind,
            "reference_multiplier": self.reference.multiplier,
            "rows": [r.to_dict() for r in self.rows],
            "noisy": {lat.backend: self.noisy_multipliers(j) for j, lat in enumerate(self.reference.latencies)},
        }


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, as measured; ``to_dict()`` is what ``report.json`` holds."""

    config: ReportConfig
    env: dict[str, Any]
    tables: tuple[TableResult, ...]
    models: tuple[ModelEntry, ...]
    sweeps: tuple[SweepResult, ...]
    seconds: dict[str, float] = field(default_factory=dict)
    timeline: Timeline | None = None  # the chapter's timeline (Fig. 5-2)
    budgets: tuple[Selection, ...] = ()  # the best measured model per latency budget (mobilezoo.select)
    detection: Table513 | None = None  # Table 5-13 measured (mobilezoo.detection.table)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "env": self.env,
            "tables": [t.to_dict() for t in self.tables],
            "models": [m.to_dict() for m in self.models],
            "sweeps": [s.to_dict() for s in self.sweeps],
            "seconds": self.seconds,
            "timeline": self.timeline.to_dict() if self.timeline is not None else None,
            "budgets": [b.to_dict() for b in self.budgets],
            "detection": asdict(self.detection) if self.detection is not None else None,
        }


@dataclass(frozen=True)
class ReportResult:
    """The files written (``report.md``, ``report.html``, ``report.json``, PNGs) and the data they show."""

    out_dir: Path
    markdown: Path
    html: Path
    json: Path
    plots: dict[str, Path]
    data: ReportData

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "markdown": str(self.markdown),
            "html": str(self.html),
            "json": str(self.json),
            "plots": {k: str(v) for k, v in self.plots.items()},
            "data": self.data.to_dict(),
        }


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _environment(threads: int, cfg: ReportConfig) -> dict[str, Any]:
    from mobilezoo.benchmark.environment import environment, package_version

    env = environment("cpu")
    for pkg in ("mobilezoo", "numpy", "onnx", "matplotlib"):
        env[pkg] = package_version(pkg)
    env.update(threads=threads, batch_size=cfg.batch_size, device="cpu", dtype="float32")
    return env


class _Measurer:
    """Latency per (model, kwargs, resolution, backend), measured once and reused by the tables and the sweeps."""

    def __init__(self, cfg: ReportConfig, threads: int, progress: Progress) -> None:
        self.cfg, self.threads, self.progress = cfg, threads, progress
        self.cache: dict[tuple, Latency] = {}
        self._built: tuple[tuple, nn.Module] | None = None  # one model at a time: VGG-16 alone is 0.5 GB

    def _model(self, name: str, kwargs: dict[str, Any]) -> nn.Module:
        from mobilezoo.registry import create_model

        key = (name, repr(sorted(kwargs.items())))
        if self._built is None or self._built[0] != key:
            self._built = None
            self._built = (key, create_model(name, **kwargs))
        return self._built[1]

    def _settings(self) -> dict[str, Any]:
        cfg = self.cfg
        return dict(batch_size=cfg.batch_size, threads=self.threads, warmup=cfg.warmup, iters=cfg.iters)

    def latency(self, name: str, backend: str, resolution: int, kwargs: dict[str, Any] | None = None) -> Latency:
        from mobilezoo.benchmark import benchmark

        kwargs = kwargs or {}
        key = (name, repr(sorted(kwargs.items())), resolution, backend)
        if key not in self.cache:
            self.progress(f"latency {name}{kwargs or ''} @{resolution}px on {backend}")
            try:
                model = self._model(name, kwargs)
                r = benchmark(model, backend=backend, resolution=resolution, **self._settings())
                self.cache[key] = Latency.of(r)
            except Exception as e:  # one failing export must not sink a long report: the cell shows the error
                self.cache[key] = Latency(backend, error=_error(e))
        return self.cache[key]

    def model_latencies(self, name: str, resolution: int, backends: Sequence[str]) -> tuple[Latency, ...]:
        """The model on each backend; if one stayed noisy, all that ran are timed again together, interleaved.

        They are the candidates of the "fastest backend" comparison, so they are re-measured under the same load.
        """
        from mobilezoo.benchmark import Candidate, benchmark_interleaved

        lats = [self.latency(name, b, resolution) for b in backends]
        ran = [i for i, lat in enumerate(lats) if lat.median_ms is not None]
        if len(ran) < 2 or not any(lats[i].noisy for i in ran):
            return tuple(lats)
        self.progress(f"latency {name} @{resolution}px: re-measuring {len(ran)} backends interleaved (noisy)")
        model = self._model(name, {})
        cands = [Candidate(model, name, backend=lats[i].backend) for i in ran]
        try:
            results = benchmark_interleaved(cands, resolution=resolution, **self._settings())
        except Exception:  # the first measurements stand, noisy flags and all
            return tuple(lats)
        for i, r in zip(ran, results):
            lats[i] = self.cache[(name, repr([]), resolution, lats[i].backend)] = Latency.of(r)
        return tuple(lats)

    def sweep_latencies(self, spec: SweepSpec, backend: str) -> list[Latency]:
        """All points of a sweep on one backend, measured interleaved in one run (the same load for every point).

        If the joint run fails (one point's export, say), each point is measured on its own instead.
        """
        from mobilezoo.benchmark import Candidate, benchmark_interleaved
        from mobilezoo.registry import create_model

        self.progress(f"{spec.family} {spec.kind} sweep on {backend}: {len(spec.points)} points interleaved")
        try:
            self._built = None  # the sweep's models replace the cached one
            cands = [
                Candidate(create_model(p.model, **p.model_kwargs), p.model, resolution=p.resolution)
                for p in spec.points
            ]
            results = benchmark_interleaved(cands, backend=backend, **self._settings())
            return [Latency.of(r) for r in results]
        except Exception:
            return [self.latency(p.model, backend, p.resolution, p.model_kwargs) for p in spec.points]


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def _counts(name: str, resolution: int, kwargs: dict[str, Any] | None = None) -> tuple[float, float]:
    from mobilezoo.complexity import profile

    prof = profile(name, resolution=resolution, **(kwargs or {}))
    return prof.madds / 1e6, prof.params / 1e6


def _model_entry(name: str, measurer: _Measurer | None, backends: Sequence[str]) -> ModelEntry:
    from mobilezoo.registry import model_card

    card = model_card(name)
    madds, params = _counts(name, card.resolution)
    lats = measurer.model_latencies(name, card.resolution, backends) if measurer else ()
    return ModelEntry(
        name,
        card.family,
        card.resolution,
        card.paper_top1,
        card.paper_madds_m,
        card.paper_params_m,
        madds,
        params,
        lats,
    )


def budget_picks(entries: Sequence[ModelEntry], budgets_ms: Sequence[float], batch_size: int,
                 threads: int) -> tuple[Selection, ...]:  # fmt: skip
    """For each latency budget, :func:`mobilezoo.select` over the timed models at their card resolution, on the
    latencies already measured (nothing is timed again); an int8 pick is labelled, its agreement not measured here."""
    from mobilezoo.benchmark.backends import precision
    from mobilezoo.selection import Budget, Measurement, candidates, select

    timed = {e.name: e for e in entries if e.latencies and e.paper_top1 is not None}
    if not timed or not budgets_ms:
        return ()
    pool = [c for c in candidates(models=tuple(timed)) if c.resolution == timed[c.model].resolution]
    backends = tuple(dict.fromkeys(lat.backend for e in timed.values() for lat in e.latencies))

    def measured(c: Any, names: Sequence[str], _batch: int, _threads: int) -> dict[str, Measurement]:
        lats = {lat.backend: lat for lat in timed[c.model].latencies}
        return {b: Measurement(b, precision(b), lats[b].median_ms, lats[b].p90_ms, lats[b].noisy, lats[b].error)
                for b in names if b in lats}  # fmt: skip

    def unchecked(_choice: Any) -> dict[str, Any]:
        return {"note": "not measured in the report: `mobilezoo select --int8` checks int8 against fp32"}

    return tuple(
        select(
            Budget(latency_ms=ms, batch_size=batch_size, threads=threads),
            candidates_=pool,
            backends=backends,
            measure=measured,
            use_cache=False,
            int8_check=unchecked,
        )
        for ms in budgets_ms
    )


def _sweep(spec: SweepSpec, measurer: _Measurer, backends: Sequence[str]) -> SweepResult:
    per_backend = [measurer.sweep_latencies(spec, b) for b in backends]  # [backend][point]
    rows = []
    for i, p in enumerate(spec.points):
        madds, _ = _counts(p.model, p.resolution, p.model_kwargs)
        lats = tuple(lats[i] for lats in per_backend)
        rows.append(SweepRow(p.multiplier, p.model, p.resolution, dict(p.model_kwargs), madds, lats))
    return SweepResult(spec.family, spec.kind, tuple(rows))


def detection_table(cfg: ReportConfig, threads: int, say: Progress) -> Table513:
    """Table 5-13 from the committed results file (mAP; speed where not re-measured) and the detection speed of
    ``cfg.detection_speed_levels`` measured now. A missing results file leaves the mAP cells unmeasured."""
    from mobilezoo.detection.table import RESULTS, load_results, measure_speed, summarize

    path = Path(cfg.detection_results) if cfg.detection_results is not None else RESULTS
    results = load_results(path) if path.exists() or cfg.detection_results is not None else {"cells": {}}
    speed = []
    if cfg.detection_speed_levels:
        say(f"detection speed (Light-Head R-CNN, 800x1200, batch 4): levels {', '.join(cfg.detection_speed_levels)}")
        speed = measure_speed(
            levels=cfg.detection_speed_levels, iters=cfg.detection_speed_iters, threads=threads, remeasure=0
        )
    return summarize(results, speed)


def build_report(
    out_dir: str | PathLike,
    *,
    models: Sequence[str] | None = None,
    quick: bool = False,
    config: ReportConfig | None = None,
    progress: Progress | None = None,
) -> ReportResult:
    """Measure and write the comparison report into ``out_dir`` (created if missing).

    ``config`` defaults to :meth:`ReportConfig.quick` with ``quick=True``, else :meth:`ReportConfig.full`; ``models``
    replaces its model list. Writes ``report.md`` (PNG files beside it), a self-contained ``report.html`` (images
    inline as data URIs, no external resource), ``report.json`` (the data and the config) and the PNG plots.
    Bad arguments raise a ValueError before anything is measured.
    """
    from mobilezoo.complexity.tables import textbook_tables
    from mobilezoo.report import plots
    from mobilezoo.report.render import render_html, render_markdown
    from mobilezoo.report.sections import sections

    if config is not None and quick:
        raise ValueError("give quick=True or a config, not both")
    cfg = config if config is not None else ReportConfig.quick() if quick else ReportConfig.full()
    if models is not None:
        if isinstance(models, str):
            raise ValueError(f"models must be a list of names, got the string {models!r}")
        cfg = cfg.with_models(models)
    cfg.validate()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _msg: None)
    threads = cfg.threads if cfg.threads is not None else _usable_cpus()

    seconds: dict[str, float] = {}
    t_start = last = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal last
        now = time.perf_counter()
        seconds[phase] = round(now - last, 2)
        last = now

    say("textbook tables")
    tables = tuple(textbook_tables(list(cfg.tables) if cfg.tables is not None else None, skip_missing=True))
    timeline_table = timeline()
    lap("tables")
    measurer = _Measurer(cfg, threads, say)
    entries = [_model_entry(m, measurer, cfg.backends) for m in cfg.models]
    entries += [_model_entry(m, None, ()) for m in cfg.complexity_only]
    lap("models")
    sweeps = tuple(_sweep(s, measurer, cfg.sweep_backends) for s in cfg.sweeps)
    lap("sweeps")
    detection = detection_table(cfg, threads, say)
    lap("detection")
    env = _environment(threads, cfg)
    budgets = budget_picks(entries, cfg.budgets_ms, cfg.batch_size, threads)
    data = ReportData(cfg, env, tables, tuple(entries), sweeps, seconds, timeline_table, budgets, detection)

    say("plots")
    pngs = plots.write_plots(data, out)
    lap("plots")
    seconds["total"] = round(time.perf_counter() - t_start, 2)
    secs = sections(data, pngs)
    md_path, html_path, json_path = out / "report.md", out / "report.html", out / "report.json"
    md_path.write_text(render_markdown(secs, data), encoding="utf-8")
    html_path.write_text(render_html(secs, data), encoding="utf-8")
    json_path.write_text(json.dumps(data.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    return ReportResult(out, md_path, html_path, json_path, pngs, data)
