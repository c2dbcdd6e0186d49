"""Timing one model on one backend (:func:`benchmark`), and several models interleaved (:func:`compare`).

Every measurement knows when the machine's load has disturbed it. A pass of timed rounds is *noisy* when its samples
are far apart (interquartile range above :data:`MAX_IQR_OVER_MEDIAN` of the median, or the median more than
:data:`MAX_MEDIAN_OVER_MIN` times the fastest call), or when the passes that were steady each disagree (their medians
more than :data:`MAX_PASS_RATIO` apart). A noisy measurement is re-measured, every candidate of the comparison again
and interleaved, up to ``remeasure`` more passes; the pass with the fewest noisy candidates (the latest among equals) is
kept, and a result still noisy says so (:attr:`BenchResult.noisy`, with the figures and thresholds in
:attr:`BenchResult.noise`). Callers draw no conclusion from a noisy result.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mobilezoo.benchmark.backends import BACKENDS, Prepared, available_backends, prepare
from mobilezoo.benchmark.environment import PeakMemory, environment

_clock = time.perf_counter_ns  # tests replace it with a fake clock

# A pass of timed calls is noisy when one of these is exceeded (see the module docstring). On a quiet CPU the
# interquartile range is a few percent of the median and the median within 1.1x of the fastest call.
MAX_IQR_OVER_MEDIAN = 0.3
MAX_MEDIAN_OVER_MIN = 1.5
MAX_PASS_RATIO = 1.5  # the medians of the passes that were steady each, largest / smallest
REMEASURE = 2  # noisy measurements get up to this many more passes by default


@dataclass(frozen=True)
class Noise:
    """Whether a measurement looks disturbed by the machine's load, with the figures and thresholds that decided it.

    The figures are those of the kept pass (the one whose samples the result reports); ``pass_medians_ms`` has the
    median of every pass, in order, and ``pass_ratio`` compares the passes that were steady each.
    """

    iqr_over_median: float  # (p75 - p25) / median of the kept pass
    p10_p90_over_median: float  # (p90 - p10) / median, for information
    median_over_min: float
    pass_ratio: float  # largest / smallest median among the passes that were steady each (1.0 with fewer than two)
    pass_medians_ms: tuple[float, ...]
    kept_pass: int  # index into pass_medians_ms
    remeasured: int  # passes after the first
    reasons: tuple[str, ...]  # empty: steady
    max_iqr_over_median: float = MAX_IQR_OVER_MEDIAN
    max_median_over_min: float = MAX_MEDIAN_OVER_MIN
    max_pass_ratio: float = MAX_PASS_RATIO

    @property
    def noisy(self) -> bool:
        return bool(self.reasons)

    def summary(self) -> str:
        """One line for tables: ``"noisy (re-measured 2x): IQR 0.85 x median > 0.3"``, or ``"steady"``."""
        if not self.noisy:
            return "steady" + (f" (re-measured {self.remeasured}x)" if self.remeasured else "")
        return f"noisy (re-measured {self.remeasured}x): " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pass_medians_ms"] = list(self.pass_medians_ms)
        out["reasons"] = list(self.reasons)
        out["noisy"] = self.noisy
        return out


def _pass_figures(samples: Sequence[float]) -> tuple[float, float, float, float]:
    """(median, IQR / median, (p90 - p10) / median, median / min) of one pass's samples in ms."""
    arr = np.asarray(samples, dtype=np.float64)
    median = float(np.median(arr))
    p10, p25, p75, p90 = (float(v) for v in np.percentile(arr, [10, 25, 75, 90]))
    low = float(arr.min())
    if median <= 0:
        return median, 0.0, 0.0, 1.0
    return median, (p75 - p25) / median, (p90 - p10) / median, median / low if low > 0 else math.inf


def pass_noise(samples: Sequence[float]) -> tuple[str, ...]:
    """Why one pass's samples (ms) look disturbed: empty when steady. See :data:`MAX_IQR_OVER_MEDIAN` and friends."""
    _, iqr, _, over_min = _pass_figures(samples)
    reasons = []
    if iqr > MAX_IQR_OVER_MEDIAN:
        reasons.append(f"IQR {iqr:.2f} x median > {MAX_IQR_OVER_MEDIAN}")
    if over_min > MAX_MEDIAN_OVER_MIN:
        reasons.append(f"median {over_min:.2f} x the fastest call > {MAX_MEDIAN_OVER_MIN}")
    return tuple(reasons)


def assess_noise(passes: Sequence[Sequence[float]], kept: int | None = None) -> Noise:
    """Judge one candidate's passes of samples (ms, one list per pass); ``kept`` (default: the last) is reported.

    Noisy when the kept pass fails :func:`pass_noise`, or when the passes that were steady each have medians more than
    :data:`MAX_PASS_RATIO` apart (the load changed between them, so none of them can be trusted alone).
    """
    if not passes or any(len(p) == 0 for p in passes):
        raise ValueError(f"expected at least one pass of at least one sample, got {[len(p) for p in passes]}")
    kept = len(passes) - 1 if kept is None else kept
    medians = tuple(float(np.median(p)) for p in passes)
    steady = [m for p, m in zip(passes, medians) if not pass_noise(p) and m > 0]
    ratio = max(steady) / min(steady) if len(steady) > 1 else 1.0
    _, iqr, spread, over_min = _pass_figures(passes[kept])
    reasons = list(pass_noise(passes[kept]))
    if ratio > MAX_PASS_RATIO:
        reasons.append(f"steady passes {ratio:.2f}x apart > {MAX_PASS_RATIO}")
    return Noise(iqr, spread, over_min, ratio, medians, kept, len(passes) - 1, tuple(reasons))


@dataclass(frozen=True)
class BenchResult:
    """One model on one backend: latency per call (one batch), throughput, peak memory and the environment."""

    model: str
    backend: str
    batch_size: int
    resolution: int
    threads: int
    device: str
    warmup: int
    iters: int
    dtype: str
    memory_format: str
    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    throughput: float  # images/s at the median latency
    peak_memory_bytes: int | None
    memory_before_bytes: int | None  # the same measure just before warm-up: peak minus this is what the run added
    peak_memory_kind: str
    samples_ms: tuple[float, ...]  # the kept pass's calls, in order
    env: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    noise: Noise | None = None  # None: not judged (a result built by hand)

    @property
    def noisy(self) -> bool:
        """Whether the machine's load disturbed this measurement even after re-measuring: draw no conclusion from it."""
        return self.noise is not None and self.noise.noisy

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["samples_ms"] = list(self.samples_ms)
        out["noisy"] = self.noisy
        out["noise"] = self.noise.to_dict() if self.noise is not None else None
        return out


@dataclass(frozen=True)
class Comparison:
    """Two models measured interleaved on one backend; ``ratios`` are per-pair latencies ``ours / reference``."""

    ours: BenchResult
    reference: BenchResult
    ratios: tuple[float, ...]

    @property
    def median_ratio(self) -> float:
        return float(np.median(self.ratios))

    @property
    def noisy(self) -> bool:
        """Whether either side stayed noisy: the ratio is then no evidence either way."""
        return self.ours.noisy or self.reference.noisy

    def to_dict(self) -> dict[str, Any]:
        return {
            "ours": self.ours.to_dict(),
            "reference": self.reference.to_dict(),
            "noisy": self.noisy,
            "ratios": list(self.ratios),
            "median_ratio": self.median_ratio,
            "p10_ratio": float(np.percentile(self.ratios, 10)),
            "p90_ratio": float(np.percentile(self.ratios, 90)),
        }


# ---------------------------------------------------------------- validation and environment


def _check_int(name: str, value: Any, low: int, why: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{why}, got {value!r}")


def check_args(
    backend: str, batch_size: int, resolution: int, threads: int | None, warmup: int, iters: int, remeasure: int = 0
) -> None:
    """Raise a one-line ValueError naming the first bad argument of a measurement."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend.startswith("openvino") and backend not in available_backends():
        from mobilezoo.machine import cpu_info

        why = (
            "a CPU with bf16 arithmetic (AVX-512 BF16 or AMX)" if backend == "openvino-bf16" else "the openvino package"
        )
        raise ValueError(f"backend {backend!r} is not available here: it needs {why} ({cpu_info().summary()})")
    _check_int("batch_size", batch_size, 1)
    _check_int("resolution", resolution, 1)
    if threads is not None:
        _check_int("threads", threads, 1, " (or None for torch's current setting)")
    _check_int("warmup", warmup, 1, " (the first calls allocate and compile; they are never timed)")
    _check_int("iters", iters, 1)
    _check_int("remeasure", remeasure, 0, " (extra passes for a noisy measurement)")


def check_device(device: str | torch.device, backend: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'cuda[:N]'") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; expected 'cpu' or 'cuda[:N]'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here")
        if backend not in ("eager", "channels_last", "compile", "torchscript"):
            raise ValueError(f"backend {backend!r} runs on the CPU only in mobilezoo, got device {device!r}")
    return dev


# ---------------------------------------------------------------- timing


@contextlib.contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Set torch's intra-op thread count for the block and restore the previous value afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put the models in eval mode for the block, restoring each one's train/eval flags afterwards."""
    modes = [[(m, m.training) for m in model.modules()] for model in models]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for saved in modes:
            for m, training in saved:
                m.training = training


def _timer(device: torch.device) -> Callable[[Callable[[], Any]], float]:
    """A function timing one call in milliseconds, synchronising the device."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def time_cuda(fn: Callable[[], Any]) -> float:
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))

        return time_cuda

    def time_cpu(fn: Callable[[], Any]) -> float:
        t0 = _clock()
        fn()
        return (_clock() - t0) / 1e6

    return time_cpu


def _warm(
    runners: Sequence[Prepared], device: torch.device, warmup: int
) -> tuple[list[tuple[int | None, int | None]], str]:
    """Warm each runner up on its own, measuring its peak memory there: ``[(before, peak)]`` per runner, and the kind."""
    peaks: list[tuple[int | None, int | None]] = []
    kind = ""
    for r in runners:
        mem = PeakMemory(device)
        mem.start()
        for _ in range(warmup):
            r.run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        peaks.append((mem.before, mem.stop()))
        kind = mem.kind
    return peaks, kind


def _time_pass(runners: Sequence[Prepared], device: torch.device, iters: int) -> list[list[float]]:
    """One pass: ``iters`` rounds of one timed call per runner, the order alternating (A B, B A, ...)."""
    time_one = _timer(device)
    samples: list[list[float]] = [[] for _ in runners]
    order = list(range(len(runners)))
    for _ in range(iters):
        for i in order:
            samples[i].append(time_one(runners[i].run))
        order.reverse()  # whoever runs second in a round (warmer caches, say) alternates
    return samples


def _measure(
    runners: Sequence[Prepared], device: torch.device, iters: int, remeasure: int
) -> tuple[list[list[float]], list[Noise]]:
    """Time the runners interleaved, re-measuring all of them while any is noisy (at most ``remeasure`` more passes).

    Returns each runner's samples of the kept pass (the same pass for all, so round ``i`` pairs across runners) and
    its :class:`Noise`.
    """
    passes: list[list[list[float]]] = []  # [pass][runner] -> samples
    for _ in range(1 + remeasure):
        passes.append(_time_pass(runners, device, iters))
        per_runner = [[p[i] for p in passes] for i in range(len(runners))]
        if not any(assess_noise(runs).noisy for runs in per_runner):
            break
    # keep the pass with the fewest noisy runners, the latest among equals
    n_noisy = [sum(bool(pass_noise(s)) for s in p) for p in passes]
    kept = min(range(len(passes)), key=lambda k: (n_noisy[k], -k))
    noises = [assess_noise([p[i] for p in passes], kept) for i in range(len(runners))]
    return [passes[kept][i] for i in range(len(runners))], noises


def time_interleaved(
    calls: Sequence[Callable[[], Any]],
    *,
    warmup: int = 1,
    iters: int = 5,
    remeasure: int = REMEASURE,
    device: str | torch.device = "cpu",
) -> list[tuple[list[float], Noise]]:
    """Time arbitrary callables (a detector on a list of images, say) as :func:`benchmark_interleaved` times models.

    Each call is run ``warmup`` times on its own, then ``iters`` rounds of one timed call each, the order alternating;
    while any is noisy all are timed again (up to ``remeasure`` more passes). Returns per call its samples (ms) of the
    kept pass and its :class:`Noise`. Raises ``ValueError`` for no calls or a bad count.
    """
    if not calls:
        raise ValueError("no calls to time; expected at least one")
    _check_int("warmup", warmup, 0)
    _check_int("iters", iters, 1)
    _check_int("remeasure", remeasure, 0)
    dev = torch.device(device)
    runners = [Prepared(call) for call in calls]
    for r in runners:
        for _ in range(warmup):
            r.run()
    samples, noises = _measure(runners, dev, iters, remeasure)
    return list(zip(samples, noises))


def _result(
    name: str,
    prepared: Prepared,
    samples: list[float],
    noise: Noise,
    memory: tuple[int | None, int | None],
    kind: str,
    cfg: dict[str, Any],
    env: dict,
) -> BenchResult:
    arr = np.asarray(samples, dtype=np.float64)
    median = float(np.median(arr))
    return BenchResult(
        model=name,
        dtype=prepared.dtype,
        memory_format=prepared.memory_format,
        median_ms=median,
        p90_ms=float(np.percentile(arr, 90)),
        min_ms=float(arr.min()),
        mean_ms=float(arr.mean()),
        throughput=cfg["batch_size"] / (median / 1e3) if median > 0 else math.inf,
        peak_memory_bytes=memory[1],
        memory_before_bytes=memory[0],
        peak_memory_kind=kind,
        samples_ms=tuple(float(s) for s in arr),
        env=env,
        notes=prepared.notes,
        noise=noise,
        **cfg,
    )


def _as_model(model_or_name: nn.Module | str) -> tuple[nn.Module, str]:
    if isinstance(model_or_name, str):
        from mobilezoo.registry import create_model

        return create_model(model_or_name), model_or_name
    if not isinstance(model_or_name, nn.Module):
        raise ValueError(f"expected a torch.nn.Module or a registered model name, got {type(model_or_name).__name__}")
    return model_or_name, str(getattr(model_or_name, "model_name", type(model_or_name).__name__))


def _input(model: nn.Module, batch_size: int, resolution: int) -> Tensor:
    min_size = getattr(model, "min_input_size", 1)
    if resolution < min_size:
        raise ValueError(f"resolution {resolution} is too small: this model needs at least {min_size}")
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, getattr(model, "in_chans", 3), resolution, resolution, generator=gen)


@dataclass(frozen=True)
class Candidate:
    """One entry of :func:`benchmark_interleaved`: a module, its name, and optionally its own backend and resolution."""

    model: nn.Module
    name: str
    backend: str | None = None  # None: the call's ``backend``
    resolution: int | None = None  # None: the call's ``resolution``


def benchmark_interleaved(
    models: Sequence[tuple[nn.Module, str] | Candidate],
    *,
    backend: str = "eager",
    batch_size: int = 1,
    resolution: int = 224,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    warmup: int = 5,
    iters: int = 20,
    remeasure: int = REMEASURE,
) -> list[BenchResult]:
    """Measure several candidates in one process, one call of each per round (A B C, C B A, ...).

    ``models`` holds ``(module, name)`` pairs or :class:`Candidate` entries, which may each name their own backend and
    input resolution (a model on several backends, or a resolution sweep, compared in one run). Each is warmed up on its
    own first (its peak memory is measured there); the timed rounds then interleave them, so slow drifts of the
    machine's load hit all of them alike. When any candidate's pass is noisy (see the module docstring), all of them are
    timed again, interleaved, up to ``remeasure`` more passes; the pass with the fewest noisy candidates is kept for
    all, so ``samples_ms[i]`` of each result is round ``i`` of the same pass. Raises a ValueError on a bad argument.
    """
    cands = [m if isinstance(m, Candidate) else Candidate(m[0], m[1]) for m in models]
    if not cands:
        raise ValueError("no models to measure; expected at least one (module, name) pair")
    for c in cands:
        check_args(
            c.backend or backend,
            batch_size,
            c.resolution if c.resolution is not None else resolution,
            threads,
            warmup,
            iters,
            remeasure,
        )
    dev = check_device(device, backend)
    for c in cands:
        check_device(device, c.backend or backend)
    n_threads = threads if threads is not None else torch.get_num_threads()
    cfgs = [
        {
            "backend": c.backend or backend,
            "batch_size": batch_size,
            "resolution": c.resolution if c.resolution is not None else resolution,
            "threads": n_threads,
            "device": str(dev),
            "warmup": warmup,
            "iters": iters,
        }
        for c in cands
    ]
    prepared: list[Prepared] = []
    with fixed_threads(n_threads), eval_mode(*(c.model for c in cands)):
        try:
            for c, cfg in zip(cands, cfgs):
                x = _input(c.model, batch_size, cfg["resolution"])
                prepared.append(prepare(c.model, cfg["backend"], x, threads=n_threads, device=dev))
            env = environment(dev)
            with torch.inference_mode():
                peaks, kind = _warm(prepared, dev, warmup)
                samples, noises = _measure(prepared, dev, iters, remeasure)
        finally:
            for p in prepared:
                p.cleanup()
    return [
        _result(c.name, p, s, noise, peak, kind, cfg, env)
        for c, p, s, noise, peak, cfg in zip(cands, prepared, samples, noises, peaks, cfgs)
    ]


def benchmark(
    model_or_name: nn.Module | str,
    *,
    backend: str = "eager",
    batch_size: int = 1,
    resolution: int = 224,
    threads: int | None = None,
    device: str = "cpu",
    warmup: int = 5,
    iters: int = 20,
    remeasure: int = REMEASURE,
) -> BenchResult:
    """Measure one model's inference latency on ``backend`` (one of :data:`BACKENDS`).

    A registered name is built with random weights (speed does not depend on them). ``threads=None`` keeps torch's
    current intra-op thread count; either way the count is fixed for the run, passed to ONNX Runtime / OpenVINO,
    recorded, and restored afterwards. ``warmup`` calls (at least 1; compilation happens there) are not timed;
    ``iters`` calls are, one batch each. A noisy pass is timed again, up to ``remeasure`` more passes; a result that
    stays noisy has ``noisy`` set (see :class:`Noise`).
    """
    model, name = _as_model(model_or_name)
    kw = dict(backend=backend, batch_size=batch_size, resolution=resolution, threads=threads, device=device)
    return benchmark_interleaved([(model, name)], **kw, warmup=warmup, iters=iters, remeasure=remeasure)[0]


def torchvision_counterpart(name: str) -> tuple[nn.Module, nn.Module]:
    """Our registered model and torchvision's same architecture (random weights), or a ValueError if there is none."""
    import torchvision

    from mobilezoo.registry import create_model, model_card

    ref = model_card(name).torchvision
    if ref is None:
        raise ValueError(f"model {name!r} has no torchvision counterpart (torchvision does not ship this architecture)")
    ours = create_model(name, **ref.model_kwargs)
    theirs = getattr(torchvision.models, ref.builder)(**ref.builder_kwargs)
    return ours, theirs


def compare(
    name: str,
    *,
    against: str = "torchvision",
    backend: str = "eager",
    batch_size: int = 1,
    resolution: int = 224,
    threads: int | None = None,
    device: str = "cpu",
    warmup: int = 5,
    iters: int = 20,
    remeasure: int = REMEASURE,
) -> Comparison:
    """Measure a registered model and torchvision's same architecture interleaved (ours theirs, theirs ours, ...).

    Both run on the same backend with the same input; ``ratios[i]`` is our latency over theirs in round ``i``
    (below 1: ours is faster). Each is warmed up on its own first, which is also where its peak memory is measured.
    While either side is noisy both are timed again, interleaved (up to ``remeasure`` more passes); a comparison that
    stays noisy has ``noisy`` set and its ratio is no evidence either way.
    """
    if against != "torchvision":
        raise ValueError(f"unknown reference {against!r}; expected 'torchvision'")
    ours, theirs = torchvision_counterpart(name)
    from mobilezoo.registry import model_card

    ref_name = f"torchvision.models.{model_card(name).torchvision.builder}"
    kw = dict(backend=backend, batch_size=batch_size, resolution=resolution, threads=threads, device=device)
    results = benchmark_interleaved(
        [(ours, name), (theirs, ref_name)], **kw, warmup=warmup, iters=iters, remeasure=remeasure
    )
    ratios = tuple(a / b if b > 0 else math.inf for a, b in zip(results[0].samples_ms, results[1].samples_ms))
    return Comparison(results[0], results[1], ratios)
