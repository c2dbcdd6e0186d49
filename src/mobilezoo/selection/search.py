"""``select``: the most accurate candidate that meets a budget on this machine, measuring as little as it can.

The search walks the candidates most accurate first (published top-1) and measures each on every backend side by side
(interleaved, re-measured while noisy: :mod:`mobilezoo.benchmark.harness`); the first one whose fastest backend meets
the budget is the pick, and nothing less accurate can beat it. Before measuring, a candidate is skipped when it cannot
meet the budget:

- a static cap (params, MAdds, peak activation memory; counted, not measured) rules it out;
- a lower bound from MAdds rules it out: no measured candidate ran more than ``rate`` MAdds per ms, and this one's
  MAdds / (``rate`` x :data:`RATE_SLACK`) already exceed the budget (a heuristic bound: it assumes no net runs
  :data:`RATE_SLACK` times more MAdds per ms than the most efficient one measured);
- a measured candidate of its family that is no larger (resolution, params, MAdds) was over budget.

Each candidate is measured on every backend the first time its family is measured; afterwards only on the backends
within :data:`SCREEN` x of that family's fastest (a backend 1.5x slower on one MobileNet V2 is not timed on the next).
After the pick, the search goes on only for the families that have no fitting candidate yet, to give the runner-up per
family. A measurement within :data:`MARGIN` of the budget (or noisy) is measured again; if it stays that close, the
decision is marked unstable and said so. Measurements (noisy ones flagged, and backends that failed) are cached per
machine, versions, batch size and threads (:mod:`mobilezoo.policies`), so asking again, with the same or another
budget, measures only what is new; ``use_cache=False`` (``--fresh``) measures again.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mobilezoo.selection.candidates import Candidate, candidates

SCREEN = 1.5  # after a family's first measurement, backends this much slower than its fastest are not measured again
MARGIN = 0.05  # relative distance to the budget within which a measurement is taken again
# a candidate may run this much faster per MAdd than the most efficient one measured so far (larger nets run more
# MAdds per ms: VGG-16's dense 3x3 convolutions about 2.6x MobileNet V2's on the Intel Xeon with AMX)
RATE_SLACK = 3.0
CACHE_SECTION = "select"


@dataclass(frozen=True)
class Budget:
    """What the chosen model must meet on this machine.

    ``latency_ms``: median time of one call at ``batch_size`` (for batch 1, per image), at most this; or
    ``throughput``: images/s at ``batch_size``, at least this (give one of the two). ``threads``: the cores the model
    may use (None: this process's usable cores). Optional caps, counted from the architecture: ``max_params_m``
    (millions), ``max_madds_m`` (millions, at the candidate's resolution) and ``max_activation_mb`` (peak activation
    memory of one image, MiB).
    """

    latency_ms: float | None = None
    throughput: float | None = None
    batch_size: int = 1
    threads: int | None = None
    max_params_m: float | None = None
    max_madds_m: float | None = None
    max_activation_mb: float | None = None

    def validate(self) -> None:
        """Raises ValueError naming the bad value."""
        if (self.latency_ms is None) == (self.throughput is None):
            raise ValueError("give one budget: latency_ms (ms per call) or throughput (images/s), not both or neither")
        for name in ("latency_ms", "throughput", "max_params_m", "max_madds_m", "max_activation_mb"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or math.isinf(v)):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        for name in ("batch_size", "threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")

    @property
    def limit_ms(self) -> float:
        """The budget as the longest allowed median call time at ``batch_size``, in ms."""
        if self.latency_ms is not None:
            return float(self.latency_ms)
        return self.batch_size * 1e3 / float(self.throughput or 0)

    def describe(self) -> str:
        what = f"{self.latency_ms:g} ms per call" if self.latency_ms is not None else f">= {self.throughput:g} images/s"
        return f"{what} at batch {self.batch_size} on {self.threads} thread(s)"

    def caps(self, c: Candidate) -> str | None:
        """Why ``c`` breaks a static cap, or None."""
        if self.max_params_m is not None and c.params / 1e6 > self.max_params_m:
            return f"params {c.params / 1e6:.2f}M > {self.max_params_m:g}M"
        if self.max_madds_m is not None and c.madds_m > self.max_madds_m:
            return f"MAdds {c.madds_m:.1f}M > {self.max_madds_m:g}M"
        if self.max_activation_mb is not None and c.activation_mb > self.max_activation_mb:
            return f"peak activation memory {c.activation_mb:.1f} MiB > {self.max_activation_mb:g} MiB"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "limit_ms": self.limit_ms}


@dataclass(frozen=True)
class Measurement:
    """One candidate on one backend: median and p90 call time (ms) at the budget's batch size, or the error."""

    backend: str
    precision: str
    median_ms: float | None = None
    p90_ms: float | None = None
    noisy: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Measure = Callable[[Candidate, Sequence[str], int, int], dict[str, Measurement]]


@dataclass(frozen=True)
class Choice:
    """A measured candidate: its fastest backend's figures and whether that meets the budget."""

    candidate: Candidate
    backend: str
    precision: str
    median_ms: float
    p90_ms: float
    noisy: bool
    fits: bool
    stable: bool = True  # False: it stayed within MARGIN of the budget after being measured again
    measurements: tuple[Measurement, ...] = ()
    int8_agreement: dict[str, Any] | None = None  # int8 picks: fp32 vs int8 on the built-in images

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.candidate.to_dict(),
            "backend": self.backend,
            "precision": self.precision,
            "median_ms": self.median_ms,
            "p90_ms": self.p90_ms,
            "noisy": self.noisy,
            "fits": self.fits,
            "stable": self.stable,
            "measurements": [m.to_dict() for m in self.measurements],
            "int8_agreement": self.int8_agreement,
        }


@dataclass
class Selection:
    """The answer of :func:`select`: the pick (None when nothing fits: ``message`` says why), the runner-up of each
    other family, every measured candidate, what was skipped and why, and the cost of the search."""

    budget: Budget
    backends: tuple[str, ...]
    pick: Choice | None
    runners_up: dict[str, Choice]
    measured: list[Choice]
    skipped: list[tuple[str, str]]  # (candidate key, reason)
    n_candidates: int
    n_measured: int  # candidates measured in this call
    n_cached: int  # candidates whose figures came from the cache
    seconds: float
    message: str
    cpu: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def stable(self) -> bool:
        return self.pick is None or self.pick.stable

    def frontier(self) -> list[Choice]:
        """The measured candidates no other one beats on both published top-1 and measured median, fastest first."""
        from mobilezoo.plotting import pareto_frontier

        pts = [(c.median_ms, c.candidate.top1) for c in self.measured]
        return [self.measured[i] for i in pareto_frontier(pts)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget.to_dict(),
            "backends": list(self.backends),
            "pick": self.pick.to_dict() if self.pick else None,
            "runners_up": {f: c.to_dict() for f, c in self.runners_up.items()},
            "frontier": [c.candidate.key for c in self.frontier()],
            "measured": [c.to_dict() for c in self.measured],
            "skipped": [{"candidate": k, "reason": r} for k, r in self.skipped],
            "n_candidates": self.n_candidates,
            "n_measured": self.n_measured,
            "n_cached": self.n_cached,
            "seconds": self.seconds,
            "stable": self.stable,
            "message": self.message,
            "cpu": self.cpu,
            "notes": self.notes,
        }

    def plot(self, path: str | os.PathLike) -> Path:
        """Write the Pareto chart (published top-1 against measured median, the budget drawn in) as a PNG."""
        from mobilezoo.selection.plot import plot_selection

        return plot_selection(self, path)


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_backends(batch_size: int, int8: bool) -> tuple[str, ...]:
    """The exact inference backends available here (and with ``int8`` the int8 ones), as ``--backend auto`` uses."""
    from mobilezoo.benchmark.auto import default_backends as auto_backends
    from mobilezoo.benchmark.backends import precision

    names = auto_backends("any" if int8 else "exact")
    if int8:  # int8 on request; bf16 is neither the published fp32 nor int8: left out
        names = tuple(n for n in names if precision(n) in ("fp32", "int8"))
    if batch_size == 1:  # a batch of 1 cannot be split: the -streams forms are the plain ones
        names = tuple(n for n in names if not n.endswith("-streams"))
    return names


def _cache_item(c: Candidate, backend: str, batch: int, threads: int) -> str:
    return f"{c.key}|{backend}|batch={batch}|threads={threads}"


def _choice(c: Candidate, ms: dict[str, Measurement], limit: float) -> Choice | None:
    ran = [m for m in ms.values() if m.error is None and m.median_ms is not None]
    if not ran:
        return None
    best = min(ran, key=lambda m: float(m.median_ms or 0))
    ms_ = float(best.median_ms or 0)
    return Choice(c, best.backend, best.precision, ms_, best.p90_ms or ms_, best.noisy, ms_ <= limit,
                  measurements=tuple(ms.values()))  # fmt: skip


def _dominated(c: Candidate, over: list[Choice]) -> Choice | None:
    """A measured over-budget candidate of ``c``'s family that is no larger in resolution, params and MAdds."""
    for o in over:
        oc = o.candidate
        if (
            oc.family == c.family
            and oc.resolution <= c.resolution
            and oc.params <= c.params
            and oc.madds_m <= c.madds_m
        ):
            return o
    return None


def select(
    budget: Budget,
    *,
    candidates_: Sequence[Candidate] | None = None,
    backends: Sequence[str] | None = None,
    int8: bool = False,
    measure: Measure | None = None,
    use_cache: bool = True,
    runners_up: bool = True,
    int8_check: Callable[[Choice], dict[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Selection:
    """The most accurate candidate whose fastest backend meets ``budget`` on this machine.

    ``candidates_``: default every registered (model, resolution) with a published top-1
    (:func:`~mobilezoo.selection.candidates`). ``backends``: default the exact ones available here, plus the int8 ones
    with ``int8=True`` (their pick is labelled: the published top-1 is an fp32 figure). ``measure`` times one
    candidate on some backends (the default runs them here, interleaved); tests pass a fake one. ``use_cache=False``
    measures everything again (and stores the new figures). ``runners_up=False`` stops at the pick. An int8 pick or
    runner-up gets ``int8_agreement`` from ``int8_check`` (default
    :func:`~mobilezoo.selection.deploy.int8_agreement`: its top-1 agreement with fp32 on the built-in images).
    Returns a :class:`Selection` whose ``pick`` is None when nothing fits (its ``message`` names the fastest measured
    candidate). Raises ValueError for a bad budget, an empty candidate list or unknown backends.
    """
    from mobilezoo.benchmark.backends import BACKENDS, precision
    from mobilezoo.machine import cpu_info
    from mobilezoo.policies import cached, store

    threads = budget.threads if budget.threads is not None else usable_cpus()
    budget = Budget(**{**asdict(budget), "threads": threads})
    budget.validate()
    cands = list(candidates_) if candidates_ is not None else candidates()
    if not cands:
        raise ValueError("no candidates to choose from")
    names = tuple(backends) if backends is not None else default_backends(budget.batch_size, int8)
    bad = [b for b in names if b not in BACKENDS]
    if bad or not names:
        raise ValueError(f"unknown backend(s) {bad or names}; expected some of {', '.join(BACKENDS)}")
    measure = measure or measure_candidate
    say = progress or (lambda _m: None)
    limit, batch = budget.limit_ms, budget.batch_size
    t0 = time.perf_counter()
    order = sorted(cands, key=lambda c: (-c.top1, c.madds_m, c.key))
    measured: dict[str, Choice] = {}
    skipped: list[tuple[str, str]] = []
    fresh_keys: set[str] = set()
    cached_keys: set[str] = set()
    notes: list[str] = []

    screened: dict[str, tuple[str, ...]] = {}  # family -> the backends worth measuring on its other candidates

    def figures(c: Candidate, fresh: bool) -> tuple[dict[str, Measurement], bool]:
        """The candidate's figures on its family's backends, and whether they all came from the cache."""
        wanted = screened.get(c.family, names)
        got: dict[str, Measurement] = {}
        if use_cache and not fresh:
            for b in wanted:
                hit = cached(CACHE_SECTION, _cache_item(c, b, batch, threads))
                if hit is not None:
                    got[b] = Measurement(**hit)
        missing = [b for b in wanted if b not in got]
        if missing:
            say(f"measuring {c.key} on {', '.join(missing)}")
            new = measure(c, missing, batch, threads)
            for b in missing:
                m = new.get(b) or Measurement(b, precision(b), error="not measured")
                got[b] = m
                if b in new:  # noisy figures too, flagged (a pick from one is marked unstable), and failures
                    store(CACHE_SECTION, _cache_item(c, b, batch, threads), m.to_dict())
            fresh_keys.add(c.key)
        else:
            cached_keys.add(c.key)
        ran = {b: m.median_ms for b, m in got.items() if m.error is None and m.median_ms is not None}
        if ran and c.family not in screened:
            screened[c.family] = tuple(b for b in wanted if b in ran and ran[b] <= SCREEN * min(ran.values()))
        return {b: got[b] for b in wanted}, not missing

    def close(ch: Choice) -> bool:
        return ch.noisy or abs(ch.median_ms - limit) <= MARGIN * limit

    def evaluate(c: Candidate) -> Choice | None:
        ms, from_cache = figures(c, fresh=False)
        choice = _choice(c, ms, limit)
        if choice is not None and close(choice) and not from_cache:
            # close to the budget: measure again and keep (and cache) the second figure; a cached figure is already
            # the second one of its first question
            again = _choice(c, figures(c, fresh=True)[0], limit)
            choice = again if again is not None else choice
        if choice is not None and close(choice):
            choice = replace(choice, stable=False)
        return choice

    pick: Choice | None = None
    best_of: dict[str, Choice] = {}  # the most accurate fitting candidate of each family
    over: list[Choice] = []
    families = {c.family for c in order}
    for c in order:
        if c.family in best_of:
            continue  # its family already has a fitting, more accurate candidate
        why = budget.caps(c)
        if why is None and measured:
            rate = max(o.candidate.madds_m / o.median_ms for o in measured.values())
            if c.madds_m / (rate * RATE_SLACK) > limit:
                why = f"MAdds bound: {c.madds_m:.0f}M at <= {rate * RATE_SLACK:.0f} MAdds/ms needs > {limit:g} ms"
            elif (d := _dominated(c, over)) is not None:
                why = f"no smaller than {d.candidate.key}, measured over budget ({d.median_ms:.2f} ms)"
        if why is not None:
            skipped.append((c.key, why))
            continue
        choice = evaluate(c)
        if choice is None:
            skipped.append((c.key, "no backend ran"))
            continue
        measured[c.key] = choice
        if not choice.fits:
            over.append(choice)
            continue
        best_of[c.family] = choice
        pick = pick or choice
        if not runners_up or len(best_of) == len(families):
            break
    if any(ch.precision == "int8" for ch in best_of.values()):
        from mobilezoo.selection.deploy import int8_agreement

        check = int8_check or int8_agreement
        for f, ch in best_of.items():
            if ch.precision == "int8":
                say(f"checking {ch.candidate.key}'s int8 model against fp32 on the built-in images")
                best_of[f] = replace(ch, int8_agreement=check(ch))
        pick = best_of[pick.candidate.family] if pick is not None else None
    if pick is None:
        message = _nothing_fits(budget, order, measured, evaluate)
    else:
        label = ""
        if pick.precision == "int8":
            agree = (pick.int8_agreement or {}).get("agreement")
            label = " (int8: the published top-1 is an fp32 figure" + (
                f"; int8 and fp32 agree on {agree:.1f}% of the built-in images)" if agree is not None else ")"
            )
        message = (
            f"{pick.candidate.key} on {pick.backend}: {pick.median_ms:.2f} ms median (p90 {pick.p90_ms:.2f}) for "
            f"{budget.describe()}, published top-1 {pick.candidate.top1:g}%{label}"
        )
        if not pick.stable:
            notes.append(
                f"unstable: {pick.candidate.key}'s figure stayed within {MARGIN:.0%} of the budget, or noisy, after being "
                "measured again; on a quieter machine the pick may differ"
            )
    others = {f: ch for f, ch in best_of.items() if pick is None or f != pick.candidate.family}
    return Selection(budget, names, pick, others, list(measured.values()), skipped, len(cands), len(fresh_keys),
                     len(cached_keys - fresh_keys),
                     round(time.perf_counter() - t0, 3), message, cpu_info().summary(), notes)  # fmt: skip


def _nothing_fits(
    budget: Budget, order: list[Candidate], measured: dict[str, Choice], evaluate: Callable[[Candidate], Any]
) -> str:
    """The message for an impossible budget, naming the fastest candidate (measuring the cheapest one if needed)."""
    allowed = [c for c in order if budget.caps(c) is None]
    if not allowed:
        return f"no candidate meets the caps of {budget.describe()}: every one breaks a params/MAdds/memory cap"
    cheapest = min(allowed, key=lambda c: c.madds_m)
    if cheapest.key not in measured:
        choice = evaluate(cheapest)
        if choice is not None:
            measured[cheapest.key] = choice
    if not measured:
        return f"no candidate ran on any backend for {budget.describe()}"
    fastest = min(measured.values(), key=lambda ch: ch.median_ms)
    return (
        f"no candidate meets {budget.describe()}: the fastest measured is {fastest.candidate.key} on "
        f"{fastest.backend} at {fastest.median_ms:.2f} ms per call; raise the budget to at least that"
    )


def measure_candidate(
    c: Candidate, backends: Sequence[str], batch_size: int, threads: int, *, warmup: int = 3, iters: int = 15
) -> dict[str, Measurement]:
    """Time ``c`` (random weights) on ``backends`` side by side at ``batch_size`` x ``c.resolution``, interleaved.

    A backend that fails to prepare or whose fp32 outputs differ from eager PyTorch is returned with its error.
    """
    import numpy as np
    import torch

    from mobilezoo.benchmark.auto import _check_output
    from mobilezoo.benchmark.backends import precision, prepare, shared_exports
    from mobilezoo.benchmark.harness import REMEASURE, _input, _measure, _warm, eval_mode, fixed_threads
    from mobilezoo.registry import create_model

    model = create_model(c.model).eval()
    x = _input(model, batch_size, c.resolution)
    out: dict[str, Measurement] = {}
    runners = {}
    try:
        with fixed_threads(threads), eval_mode(model), torch.inference_mode(), shared_exports():
            reference = model(x).float()
            for b in backends:
                try:
                    p = prepare(model, b, x, threads=threads)
                except (ValueError, RuntimeError, ImportError, NotImplementedError, OSError) as e:
                    out[b] = Measurement(b, precision(b), error=f"{type(e).__name__}: {e}".splitlines()[0])
                    continue
                try:
                    _check_output(p.output(), reference, b)
                except (RuntimeError, ValueError) as e:
                    p.cleanup()
                    out[b] = Measurement(b, precision(b), error=f"{type(e).__name__}: {e}".splitlines()[0])
                    continue
                runners[b] = p
            if runners:
                order = list(runners)
                _warm([runners[b] for b in order], torch.device("cpu"), warmup)
                samples, noises = _measure([runners[b] for b in order], torch.device("cpu"), iters, REMEASURE)
                for b, s, noise in zip(order, samples, noises):
                    out[b] = Measurement(b, precision(b), float(np.median(s)), float(np.percentile(s, 90)), noise.noisy)
    finally:
        for p in runners.values():
            p.cleanup()
    return out


__all__ = ["Budget", "Choice", "Measurement", "Selection", "default_backends", "measure_candidate", "select"]
