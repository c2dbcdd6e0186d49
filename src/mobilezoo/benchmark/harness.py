"""Timing one model on one backend (:func:`benchmark`), and two models interleaved (:func:`compare`)."""

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
    samples_ms: tuple[float, ...]
    env: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["samples_ms"] = list(self.samples_ms)
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "ours": self.ours.to_dict(),
            "reference": self.reference.to_dict(),
            "ratios": list(self.ratios),
            "median_ratio": self.median_ratio,
            "p10_ratio": float(np.percentile(self.ratios, 10)),
            "p90_ratio": float(np.percentile(self.ratios, 90)),
        }


# ---------------------------------------------------------------- validation and environment


def _check_int(name: str, value: Any, low: int, why: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{why}, got {value!r}")


def check_args(backend: str, batch_size: int, resolution: int, threads: int | None, warmup: int, iters: int) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "openvino" and "openvino" not in available_backends():
        raise ValueError("backend 'openvino' needs the openvino package: pip install 'mobilezoo[openvino]'")
    _check_int("batch_size", batch_size, 1)
    _check_int("resolution", resolution, 1)
    if threads is not None:
        _check_int("threads", threads, 1, " (or None for torch's current setting)")
    _check_int("warmup", warmup, 1, " (the first calls allocate and compile; they are never timed)")
    _check_int("iters", iters, 1)


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


def _measure(
    runners: Sequence[Prepared], device: torch.device, warmup: int, iters: int
) -> tuple[list[list[float]], list[tuple[int | None, int | None]], str]:
    """Warm each runner up on its own (measuring its peak memory), then time them interleaved, one call each per round.

    The order alternates between rounds (A B, B A, ...), so neither model always runs first.
    """
    peaks: list[tuple[int | None, int | None]] = []  # (before, peak) per runner
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
    time_one = _timer(device)
    samples: list[list[float]] = [[] for _ in runners]
    order = list(range(len(runners)))
    for _ in range(iters):
        for i in order:
            samples[i].append(time_one(runners[i].run))
        order.reverse()  # A B, B A, A B, ...: whoever runs second in a round (warmer caches, say) alternates
    return samples, peaks, kind


def _result(
    name: str,
    prepared: Prepared,
    samples: list[float],
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


def benchmark_interleaved(
    models: Sequence[tuple[nn.Module, str]],
    *,
    backend: str = "eager",
    batch_size: int = 1,
    resolution: int = 224,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    warmup: int = 5,
    iters: int = 20,
) -> list[BenchResult]:
    """Measure several ``(module, name)`` pairs in one process, one call of each per round (A B C, C B A, ...).

    Each model is warmed up on its own first (its peak memory is measured there); the timed rounds then interleave
    them, so slow drifts of the machine's load hit all of them alike. ``samples_ms[i]`` of each result is round ``i``.
    """
    check_args(backend, batch_size, resolution, threads, warmup, iters)
    dev = check_device(device, backend)
    n_threads = threads if threads is not None else torch.get_num_threads()
    cfg = {
        "backend": backend,
        "batch_size": batch_size,
        "resolution": resolution,
        "threads": n_threads,
        "device": str(dev),
        "warmup": warmup,
        "iters": iters,
    }
    prepared: list[Prepared] = []
    with fixed_threads(n_threads), eval_mode(*(m for m, _ in models)):
        try:
            for model, _ in models:
                x = _input(model, batch_size, resolution)
                prepared.append(prepare(model, backend, x, threads=n_threads, device=dev))
            env = environment(dev)
            with torch.inference_mode():
                samples, peaks, kind = _measure(prepared, dev, warmup, iters)
        finally:
            for p in prepared:
                p.cleanup()
    return [
        _result(name, p, s, peak, kind, cfg, env) for (_, name), p, s, peak in zip(models, prepared, samples, peaks)
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
) -> BenchResult:
    """Measure one model's inference latency on ``backend`` (one of :data:`BACKENDS`).

    A registered name is built with random weights (speed does not depend on them). ``threads=None`` keeps torch's
    current intra-op thread count; either way the count is fixed for the run, passed to ONNX Runtime / OpenVINO,
    recorded, and restored afterwards. ``warmup`` calls (at least 1; compilation happens there) are not timed;
    ``iters`` calls are, one batch each.
    """
    model, name = _as_model(model_or_name)
    kw = dict(backend=backend, batch_size=batch_size, resolution=resolution, threads=threads, device=device)
    return benchmark_interleaved([(model, name)], **kw, warmup=warmup, iters=iters)[0]


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
) -> Comparison:
    """Measure a registered model and torchvision's same architecture interleaved (ours theirs, theirs ours, ...).

    Both run on the same backend with the same input; ``ratios[i]`` is our latency over theirs in round ``i``
    (below 1: ours is faster). Each is warmed up on its own first, which is also where its peak memory is measured.
    """
    if against != "torchvision":
        raise ValueError(f"unknown reference {against!r}; expected 'torchvision'")
    ours, theirs = torchvision_counterpart(name)
    from mobilezoo.registry import model_card

    ref_name = f"torchvision.models.{model_card(name).torchvision.builder}"
    kw = dict(backend=backend, batch_size=batch_size, resolution=resolution, threads=threads, device=device)
    results = benchmark_interleaved([(ours, name), (theirs, ref_name)], **kw, warmup=warmup, iters=iters)
    ratios = tuple(a / b if b > 0 else math.inf for a, b in zip(results[0].samples_ms, results[1].samples_ms))
    return Comparison(results[0], results[1], ratios)
