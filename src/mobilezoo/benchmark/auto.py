"""The ``auto`` backend: measure the available inference backends side by side, keep the fastest correct one.

The choice is measured on the machine at hand, because it differs between machines: on an AMD EPYC (AVX2, no VNNI)
ONNX Runtime beat OpenVINO in fp32 for every family, while on an Intel Xeon with AMX OpenVINO's int8 and bf16 kernels
were 2-4x faster than ONNX Runtime's (``benchmarks/results/peers_intel_amx_int8.md``). Candidates are prepared
once, checked against eager PyTorch, then timed interleaved (each ONNX Runtime session spins only during its own
runs, so none steals the cores of another), re-measured while noisy. Choices for registered models are cached per
machine and versions (:func:`mobilezoo.policies.cached`), so asking again is instant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mobilezoo.benchmark.backends import Prepared, available_backends, precision, prepare, shared_exports
from mobilezoo.benchmark.harness import (
    REMEASURE,
    _as_model,
    _input,
    _measure,
    _warm,
    check_args,
    eval_mode,
    fixed_threads,
)

PRECISIONS = ("exact", "any")
# torch.compile spends a minute compiling on CPU, which is not "briefly": measured only when named
SLOW_TO_PREPARE = ("compile",)
# an exact backend's outputs may differ from eager PyTorch's by rounding only: at most this fraction of the largest
# output magnitude (fp32 ONNX Runtime / OpenVINO differ by 1e-6 to 1e-5 of it)
EXACT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class BackendChoice:
    """The fastest backend that ran and passed its checks, with every candidate's figures or error.

    ``precision`` says what the pick computes in (``fp32``, ``bf16`` or ``int8``); ``decided`` is False when the pick's
    measurement stayed noisy or a noisy candidate came within noise of it (then the pick is a guess, said so).
    """

    model: str
    batch_size: int
    best: str
    precision: str
    median_ms: float
    throughput: float
    decided: bool
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    cpu: str = ""
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_backends(allowed: str = "exact") -> tuple[str, ...]:
    """The available backends less ``compile``; with ``allowed="exact"`` only those computing in fp32."""
    if allowed not in PRECISIONS:
        raise ValueError(f"unknown precision {allowed!r}; expected one of {PRECISIONS}")
    return tuple(
        n for n in available_backends() if n not in SLOW_TO_PREPARE and (allowed == "any" or precision(n) == "fp32")
    )


def _check_output(got: torch.Tensor, want: torch.Tensor, backend: str) -> dict[str, Any]:
    """Max abs diff against eager, also relative to the largest output; an exact backend beyond rounding raises.

    (Random weights give no meaningful top-1 agreement: the int8 and bf16 accuracy checks run on trained models,
    in ``mobilezoo export``.)
    """
    got, want = got.float().reshape(want.shape), want.float()
    diff = float((got - want).abs().max())
    scale = float(want.abs().max()) or 1.0
    if precision(backend) == "fp32" and diff > EXACT_TOLERANCE * scale:
        raise RuntimeError(f"outputs differ from eager PyTorch by {diff:.3g} (> {EXACT_TOLERANCE} x {scale:.3g})")
    return {"max_abs_diff": diff, "relative_diff": diff / scale}


def _cache_item(name: str, batch: int, resolution: int, threads: int, allowed: str, names: Sequence[str]) -> str:
    return f"{name}|batch={batch}|res={resolution}|threads={threads}|{allowed}|{','.join(sorted(names))}"


def fastest_backend(
    model_or_name: nn.Module | str,
    batch_size: int = 1,
    *,
    backends: Sequence[str] | None = None,
    resolution: int = 224,
    threads: int | None = None,
    warmup: int = 3,
    iters: int = 15,
    allowed: str = "exact",
    remeasure: int = REMEASURE,
    use_cache: bool = True,
) -> BackendChoice:
    """Measure ``backends`` side by side on ``model_or_name`` and return the one with the lowest median latency.

    ``allowed="exact"`` (default) considers the backends whose outputs equal eager PyTorch's to rounding (checked:
    beyond :data:`EXACT_TOLERANCE` of the output scale a backend is rejected); ``"any"`` adds int8 and bf16 ones, whose
    max abs diff from eager on the benchmark batch is reported (absolute and relative to the largest output), and the pick is labelled with its
    ``precision``. A backend that fails (not installed, export or runtime error) is recorded with its error and
    skipped. ``threads=None`` uses torch's current thread count. For a registered name the choice is cached per
    machine, versions and arguments; ``use_cache=False`` measures again (and stores the new choice).
    Raises ValueError for bad arguments or when no backend ran.
    """
    from mobilezoo.machine import cpu_info
    from mobilezoo.policies import cached, store

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    names = tuple(backends) if backends is not None else default_backends(allowed)
    if backends is None and batch_size == 1:  # a batch of 1 cannot be split: the -streams forms are the plain ones
        names = tuple(n for n in names if not n.endswith("-streams"))
    if not names:
        raise ValueError("no backends to choose from")
    n_threads = threads if threads is not None else torch.get_num_threads()
    for n in names:
        check_args(n, batch_size, resolution, n_threads, warmup, iters, remeasure)
    item = None
    if isinstance(model_or_name, str):
        item = _cache_item(model_or_name, batch_size, resolution, n_threads, allowed, names)
        hit = cached("backends", item) if use_cache else None
        if hit is not None:
            return BackendChoice(**{**hit, "cached": True})
    model, name = _as_model(model_or_name)
    results: dict[str, dict[str, Any]] = {}
    runners: dict[str, Prepared] = {}
    x = _input(model, batch_size, resolution)
    try:
        with fixed_threads(n_threads), eval_mode(model), torch.inference_mode(), shared_exports():
            reference = model(x).float()
            for n in names:
                try:
                    p = prepare(model, n, x, threads=n_threads)
                except (ValueError, RuntimeError, ImportError, NotImplementedError, OSError) as e:
                    results[n] = {"precision": precision(n), "error": f"{type(e).__name__}: {e}".splitlines()[0]}
                    continue
                try:
                    results[n] = {"precision": precision(n), **_check_output(p.output(), reference, n)}
                except (RuntimeError, ValueError) as e:
                    p.cleanup()
                    results[n] = {"precision": precision(n), "error": f"{type(e).__name__}: {e}".splitlines()[0]}
                    continue
                runners[n] = p
            if not runners:
                raise ValueError(f"no backend ran for {name}: {results}")
            order = list(runners)
            _warm([runners[n] for n in order], torch.device("cpu"), warmup)
            samples, noises = _measure([runners[n] for n in order], torch.device("cpu"), iters, remeasure)
    finally:
        for p in runners.values():
            p.cleanup()
    for n, s, noise in zip(order, samples, noises):
        median = float(np.median(s))
        results[n].update(
            median_ms=median,
            p90_ms=float(np.percentile(s, 90)),
            throughput=batch_size / (median / 1e3),
            noisy=noise.noisy,
            noise=noise.summary(),
        )
    best = min(order, key=lambda n: results[n]["median_ms"])
    best_ms = results[best]["median_ms"]
    # a pick is a guess when its own figure is noisy, or when a noisy candidate's median lies within 10% of it
    decided = not results[best]["noisy"] and not any(
        results[n]["noisy"] and results[n]["median_ms"] < best_ms * 1.1 for n in order if n != best
    )
    choice = BackendChoice(
        model=name,
        batch_size=batch_size,
        best=best,
        precision=precision(best),
        median_ms=best_ms,
        throughput=results[best]["throughput"],
        decided=decided,
        results=results,
        cpu=cpu_info().summary(),
    )
    if item is not None and decided:
        store("backends", item, {k: v for k, v in choice.to_dict().items() if k != "cached"})
    return choice
