"""Latency and throughput, measured honestly, behind one interface for every inference backend.

Every measurement puts the model in ``eval()`` (its mode is restored afterwards) and runs under
``torch.inference_mode()``, with a fixed thread count (restored afterwards), untimed warm-up calls, and per-call timing
(``time.perf_counter_ns`` on the CPU; CUDA events and a synchronise on the GPU). Results carry the median, p90 and
minimum latency, the throughput at the median, the peak memory (and what exactly was measured), and the environment.

:func:`compare` runs two models interleaved (A B, B A, A B ...) in one process and reports the latency ratio of every pair,
the honest way to compare on a noisy machine: both see the same background load.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import math
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

BACKENDS = ("eager", "channels_last", "compile", "torchscript", "onnxruntime", "onnxruntime-int8", "openvino")
INT8_CALIBRATION = "the benchmark's own input (seeded N(0, 1) images), in batches of up to 8"
_clock = time.perf_counter_ns  # tests replace it with a fake clock


@dataclass
class Prepared:
    """A model made ready for one backend: ``run()`` computes the outputs for the prepared input."""

    run: Callable[[], Any]
    dtype: str = "float32"
    memory_format: str = "contiguous (NCHW)"
    notes: str = ""
    cleanup: Callable[[], None] = lambda: None

    def output(self) -> Tensor:
        """One run's first output as a CPU torch tensor (for checking the backend against eager PyTorch)."""
        out = self.run()
        if isinstance(out, (list, tuple)):
            out = out[0]
        return torch.as_tensor(np.asarray(out)) if not isinstance(out, Tensor) else out.detach().float().cpu()


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


def available_backends() -> tuple[str, ...]:
    """The backends that can run here (``openvino`` needs the optional ``openvino`` package)."""
    have_ov = _version("openvino") is not None
    return tuple(b for b in BACKENDS if b != "openvino" or have_ov)


# ---------------------------------------------------------------- validation and environment


def _check_int(name: str, value: Any, low: int, why: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{why}, got {value!r}")


def _check_args(backend: str, batch_size: int, resolution: int, threads: int | None, warmup: int, iters: int) -> None:
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


def _check_device(device: str | torch.device, backend: str) -> torch.device:
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


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Machine, versions and load: what a speed figure is meaningless without."""
    dev = torch.device(device)
    env: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "onnxruntime": _version("onnxruntime"),
        "openvino": _version("openvino"),
    }
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


# ---------------------------------------------------------------- peak memory


class _PeakMemory:
    """Peak memory over a stretch of code: CUDA's allocator peak on a GPU, else the process's peak resident set.

    On Linux the process peak (``VmHWM``) is reset by writing 5 to ``/proc/self/clear_refs``; where that is not possible
    the figure is ``ru_maxrss``, the peak since the process started, and says so.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = ""
        self.before: int | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = int(torch.cuda.memory_allocated(self.device))
            self.kind = "torch.cuda.max_memory_allocated during warm-up (tensors on the GPU only)"
            return
        self.before = _proc_status("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.kind = "process peak resident set (VmHWM) during warm-up, reset before it; includes Python and torch"
        except OSError:
            self.kind = "process peak resident set since process start (ru_maxrss; could not reset VmHWM)"

    def stop(self) -> int | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        peak = _proc_status("VmHWM")
        if peak is None:
            import resource

            peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        return peak


def _proc_status(field: str) -> int | None:
    """A memory figure of this process from ``/proc/self/status``, in bytes; None off Linux."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


# ---------------------------------------------------------------- backends


def _to_device(model: nn.Module, device: torch.device) -> nn.Module:
    # a copy: moving or converting the caller's model in place would change it behind their back
    return copy.deepcopy(model).to(device) if device.type != "cpu" else model


def _eager(model: nn.Module, x: Tensor, dev: torch.device, threads: int, tmp: Path) -> Prepared:
    m, xd = _to_device(model, dev), x.to(dev)
    return Prepared(lambda: m(xd))


def _channels_last(model: nn.Module, x: Tensor, dev: torch.device, threads: int, tmp: Path) -> Prepared:
    m = copy.deepcopy(model).to(dev, memory_format=torch.channels_last)
    xd = x.to(dev).contiguous(memory_format=torch.channels_last)
    return Prepared(lambda: m(xd), memory_format="channels_last (NHWC)")


def _compile(model: nn.Module, x: Tensor, dev: torch.device, threads: int, tmp: Path) -> Prepared:
    compiled = torch.compile(_to_device(model, dev))  # compiles on the first (warm-up) call
    xd = x.to(dev)
    return Prepared(lambda: compiled(xd), notes="torch.compile, inductor, default mode")


def _torchscript(model: nn.Module, x: Tensor, dev: torch.device, threads: int, tmp: Path) -> Prepared:
    xd = x.to(dev)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings from input checks; TorchScript's deprecation notice
        traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(_to_device(model, dev), xd)))
    return Prepared(lambda: traced(xd), notes="torch.jit.trace + freeze + optimize_for_inference")


def _onnx_file(model: nn.Module, x: Tensor, tmp: Path) -> tuple[Path, str]:
    from mobilezoo.deploy import export_onnx

    exp = export_onnx(model, tmp / "model.onnx", resolution=(x.shape[2], x.shape[3]), dynamic_batch=True)
    return exp.path, f"ONNX {exp.exporter} exporter, opset {exp.opset}"


def _session(path: Path, x: Tensor, threads: int, note: str, dtype: str) -> Prepared:
    from mobilezoo.deploy import onnx_session

    session = onnx_session(path, threads)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return Prepared(lambda: session.run(None, feed), dtype=dtype, notes=note)


def _onnxruntime(model: nn.Module, x: Tensor, dev: torch.device, threads: int, tmp: Path) -> Prepared:
    path, note = _onnx_file(model, x, tmp)
    return _session(path, x, threads, note + "; ONNX Runtime CPU, all graph optimizations", "float32")


def _onnxruntime_int8(model: nn.Module, x: Tensor, dev: torch.device, threads: int, tmp: Path) -> Prepared:
    from mobilezoo.deploy import quantize

    path, note = _onnx_file(model, x, tmp)
    q = quantize(path, list(torch.split(x, 8)), out_path=tmp / "model.int8.onnx", per_channel=True, quant_format="qdq")
    note += (
        f"; static int8 QDQ, per-channel int8 weights, uint8 activations, {q.calibrate_method} calibration on "
        f"{INT8_CALIBRATION}; {len(q.nodes_kept_float)} nodes kept float"
    )
    return _session(q.path, x, threads, note, "int8 weights and activations (QDQ), float32 input/output")


def _openvino(model: nn.Module, x: Tensor, dev: torch.device, threads: int, tmp: Path) -> Prepared:
    import openvino as ov

    path, note = _onnx_file(model, x, tmp)
    core = ov.Core()
    # f32: OpenVINO otherwise computes in bf16 on CPUs that have it, changing the numbers
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    request = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()
    arr = x.numpy()

    def run() -> Any:
        request.infer({0: arr})
        return request.get_output_tensor(0).data

    return Prepared(run, notes=note + "; OpenVINO CPU, f32, latency hint")


_PREPARERS: dict[str, Callable[[nn.Module, Tensor, torch.device, int, Path], Prepared]] = {
    "eager": _eager,
    "channels_last": _channels_last,
    "compile": _compile,
    "torchscript": _torchscript,
    "onnxruntime": _onnxruntime,
    "onnxruntime-int8": _onnxruntime_int8,
    "openvino": _openvino,
}


def prepare(model: nn.Module, backend: str, x: Tensor, *, threads: int, device: str | torch.device = "cpu") -> Prepared:
    """Make ``model`` (put it in eval mode first) ready to run ``x`` on ``backend``: all conversions happen here.

    Exported files go to a temporary folder that ``Prepared.cleanup()`` removes.
    """
    if backend not in _PREPARERS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    tmp = Path(tempfile.mkdtemp(prefix="mobilezoo-bench-"))
    try:
        prepared = _PREPARERS[backend](model, x, torch.device(device), threads, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prepared.cleanup = lambda: shutil.rmtree(tmp, ignore_errors=True)
    return prepared


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
        mem = _PeakMemory(device)
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
    _check_args(backend, batch_size, resolution, threads, warmup, iters)
    dev = _check_device(device, backend)
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "batch_size": self.batch_size,
            "madds_m": self.madds_m,
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

    def fastest(self) -> dict[tuple[str, int], SuiteEntry]:
        """Per (model, batch size), the entry with the lowest median latency among those that ran."""
        best: dict[tuple[str, int], SuiteEntry] = {}
        for e in self.entries:
            if e.ours is not None:
                key = (e.model, e.batch_size)
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
) -> Suite:
    """Benchmark every model on every backend at every batch size (``vs="torchvision"``: with :func:`compare`).

    Bad arguments raise before anything runs. A cell that fails at run time (no torchvision counterpart with ``vs``,
    an export error) is kept with its error and the rest still run. ``progress`` is called before each cell.
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
            _check_args(backend, b, resolution, threads, warmup, iters)
        _check_device(device, backend)
    entries: list[SuiteEntry] = []
    for name in models:
        card = model_card(name)
        madds = card.paper_madds_m * (resolution / card.resolution) ** 2 if card.paper_madds_m else None
        for b in sizes:
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
                entries.append(cell)
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
                ax.annotate(e.model, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
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


__all__ = [
    "BACKENDS",
    "BenchResult",
    "Comparison",
    "Prepared",
    "Suite",
    "SuiteEntry",
    "available_backends",
    "benchmark",
    "benchmark_interleaved",
    "compare",
    "environment",
    "eval_mode",
    "fixed_threads",
    "plot_suite",
    "prepare",
    "run_suite",
    "torchvision_counterpart",
]
