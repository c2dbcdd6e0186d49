"""The ``auto`` backend: measure the available inference backends briefly, keep the fastest correct one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

# int8 changes the numbers (top-1 agreement, not equality), so it is opt-in; torch.compile spends a minute compiling
# on CPU, which is not "briefly", so it is measured only when named
INT8_BACKENDS = ("onnxruntime-int8", "onnxruntime-int8-streams")
SLOW_TO_PREPARE = ("compile",)


@dataclass(frozen=True)
class BackendChoice:
    """The fastest backend that ran and passed its checks, with every backend's median latency or error."""

    model: str
    batch_size: int
    best: str
    median_ms: float
    throughput: float
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "batch_size": self.batch_size,
            "best": self.best,
            "median_ms": self.median_ms,
            "throughput": self.throughput,
            "results": self.results,
        }


def default_backends(include_int8: bool = False) -> tuple[str, ...]:
    """The harness's available backends, less ``compile`` and (unless asked for) the int8 ones."""
    from mobilezoo.benchmark import available_backends

    return tuple(
        n
        for n in available_backends()
        if n != "auto" and n not in SLOW_TO_PREPARE and (include_int8 or n not in INT8_BACKENDS)
    )


def fastest_backend(
    model_or_name: nn.Module | str,
    batch_size: int = 1,
    *,
    backends: Sequence[str] | None = None,
    resolution: int = 224,
    threads: int | None = None,
    warmup: int = 3,
    iters: int = 10,
    include_int8: bool = False,
) -> BackendChoice:
    """Run ``mobilezoo.benchmark.benchmark`` briefly per backend and return the one with the lowest median latency.

    A backend that fails (not installed, export parity error) is recorded with its error and skipped. By default the
    candidates are :func:`default_backends`: those whose outputs equal eager PyTorch (ONNX export is parity-checked),
    without ``compile``; ``include_int8=True`` adds ``onnxruntime-int8`` and ``onnxruntime-int8-streams``.
    """
    from mobilezoo.benchmark import benchmark

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    names = tuple(backends) if backends is not None else default_backends(include_int8)
    if not names:
        raise ValueError("no backends to choose from")
    results: dict[str, dict[str, Any]] = {}
    best: tuple[str, Any] | None = None
    for name in names:
        try:
            r = benchmark(
                model_or_name,
                backend=name,
                batch_size=batch_size,
                resolution=resolution,
                threads=threads,
                warmup=warmup,
                iters=iters,
            )
        except (ValueError, RuntimeError, ImportError, NotImplementedError) as e:
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        results[name] = {"median_ms": r.median_ms, "throughput": r.throughput}
        if best is None or r.median_ms < best[1].median_ms:
            best = (name, r)
    if best is None:
        raise ValueError(f"no backend ran: {results}")
    model_name = model_or_name if isinstance(model_or_name, str) else getattr(model_or_name, "model_name", "model")
    return BackendChoice(str(model_name), batch_size, best[0], best[1].median_ms, best[1].throughput, results)
