"""Latency and throughput, measured honestly, behind one interface for every inference backend.

Every measurement puts the model in ``eval()`` (its mode is restored afterwards) and runs under
``torch.inference_mode()``, with a fixed thread count (restored afterwards), untimed warm-up calls, and per-call timing
(``time.perf_counter_ns`` on the CPU; CUDA events and a synchronise on the GPU). Results carry the median, p90 and
minimum latency, the throughput at the median, the peak memory (and what exactly was measured), and the environment.

:func:`compare` runs two models interleaved (A B, B A, A B ...) in one process and reports the latency ratio of every pair,
the honest way to compare on a noisy machine: both see the same background load. A measurement whose samples are far
apart (the machine's load disturbed it) is re-measured, all candidates interleaved again, and if it stays noisy it says
so (``BenchResult.noisy``, the figures and thresholds in ``BenchResult.noise``): draw no conclusion from it.
"""

from mobilezoo.benchmark.auto import BackendChoice, default_backends, fastest_backend
from mobilezoo.benchmark.backends import (
    BACKENDS,
    INT8_CALIBRATION,
    Prepared,
    available_backends,
    precision,
    prepare,
)
from mobilezoo.benchmark.environment import environment
from mobilezoo.benchmark.harness import (
    MAX_IQR_OVER_MEDIAN,
    MAX_MEDIAN_OVER_MIN,
    MAX_PASS_RATIO,
    REMEASURE,
    BenchResult,
    Candidate,
    Comparison,
    Noise,
    assess_noise,
    benchmark,
    benchmark_interleaved,
    compare,
    eval_mode,
    fixed_threads,
    torchvision_counterpart,
)
from mobilezoo.benchmark.suite import Suite, SuiteEntry, plot_suite, run_suite

__all__ = [
    "BACKENDS",
    "INT8_CALIBRATION",
    "MAX_IQR_OVER_MEDIAN",
    "MAX_MEDIAN_OVER_MIN",
    "MAX_PASS_RATIO",
    "REMEASURE",
    "BackendChoice",
    "BenchResult",
    "Candidate",
    "Comparison",
    "Noise",
    "Prepared",
    "Suite",
    "SuiteEntry",
    "assess_noise",
    "available_backends",
    "benchmark",
    "benchmark_interleaved",
    "compare",
    "default_backends",
    "environment",
    "eval_mode",
    "fastest_backend",
    "fixed_threads",
    "plot_suite",
    "precision",
    "prepare",
    "run_suite",
    "torchvision_counterpart",
]
