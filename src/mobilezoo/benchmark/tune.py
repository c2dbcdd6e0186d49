"""``mobilezoo tune``: measure this machine's deployment policies and cache them (see :mod:`mobilezoo.policies`).

Two policies are measured; the others follow the CPU's features or are chosen per model by the ``auto`` backend:

- ONNX Runtime thread spinning: one session per mode of :data:`~mobilezoo.policies.SPIN_MODES`, each timed alone in
  blocks with a pause between blocks (a spinning session idles on the cores for a while after its runs).
- MobileNetV3's float stem in int8, per runtime: the same calibrated model quantized with and without it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mobilezoo.policies import SPIN_MODES, Decision, MeasuredChoice, measure_choice, save_decisions, spin_policy_name

TUNE_MODEL = "mobilenet_v3_small"  # small enough to measure in seconds, and it has the float-stem question


def _decision(policy: str, value: Any, choice: MeasuredChoice, what: str) -> Decision:
    ratios = ", ".join(f"{k} {v:.2f}x" for k, v in sorted(choice.ratios.items(), key=lambda kv: kv[1]))
    how = "stable" if choice.stable else "NOT stable against the machine's noise (not cached: the default stays)"
    reason = f"measured on {what}: median / fastest {ratios}; {choice.rounds} interleaved rounds, {how}"
    return Decision(policy, value, "measured", reason, choice.to_dict())


def tune_spin(
    onnx_path: str | Path, threads: int, batch_size: int = 1, measure: Callable[..., MeasuredChoice] = measure_choice
) -> Decision:
    """Measure ONNX Runtime's spin modes on ``onnx_path`` alone, in blocks: a decision for ``threads`` threads."""
    import numpy as np

    from mobilezoo.deploy import onnx_session

    sessions = {mode: onnx_session(onnx_path, threads, spin=mode) for mode in SPIN_MODES}
    x = np.random.default_rng(0).standard_normal((batch_size, 3, 224, 224), dtype=np.float32)
    runs = {mode: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for mode, s in sessions.items()}
    choice = measure(runs, calls=20, pause_s=0.3)
    what = f"{TUNE_MODEL}, batch {batch_size}, {threads} threads"
    return _decision(spin_policy_name(threads), choice.best, choice, what)


def tune_float_stem(
    onnx_path: str | Path, threads: int, runtime: str, measure: Callable[..., MeasuredChoice] = measure_choice
) -> Decision:
    """Measure int8 ``TUNE_MODEL`` with its stem in float against all-int8 on ``runtime``: a decision (True: float)."""
    import numpy as np

    from mobilezoo.deploy import onnx_session, openvino_model, quantize
    from mobilezoo.deploy.onnx_export import architecture
    from mobilezoo.policies import FAIR_SPIN

    arch = architecture(onnx_path)
    calib = [torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    runs = {}
    folder = Path(onnx_path).parent
    for label, exclude in (("float-stem", ("float-stem", "last-gemm")), ("all-int8", ("last-gemm",))):
        q = quantize(onnx_path, calib, out_path=folder / f"{label}.onnx", exclude=exclude, target=runtime)
        if runtime == "openvino":
            compiled = openvino_model(q.path, threads, input_shape=x.shape)  # as the benchmark compiles it
            runs[label] = lambda c=compiled: c.run(x)
        else:
            s = onnx_session(q.path, threads, spin=FAIR_SPIN)
            runs[label] = lambda s=s: s.run(None, {s.get_inputs()[0].name: x})
    choice = measure(runs, calls=20)
    what = f"int8 {TUNE_MODEL} on {runtime}, batch 1, {threads} threads"
    return _decision(f"float_stem/{runtime}/{arch}", choice.best == "float-stem", choice, what)


def tune(
    threads: int | None = None, store: bool = True, measure: Callable[..., MeasuredChoice] = measure_choice
) -> list[Decision]:
    """Measure the measurable policies on this machine (about 15 s) and, with ``store``, cache the stable ones.

    ``threads``: the intra-op threads the measurements use (default: torch's current setting, which is the number
    of usable cores unless changed). Returns every decision, each with its figures; one whose measurement was not
    stable against the machine's noise says so and is not cached (the default stays in force). ``measure`` times
    the candidates (:func:`~mobilezoo.policies.measure_choice`; injectable for tests).
    """
    from mobilezoo.benchmark.environment import package_version
    from mobilezoo.deploy import export_onnx
    from mobilezoo.registry import create_model

    threads = threads or torch.get_num_threads()
    decisions = []
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(create_model(TUNE_MODEL).eval(), Path(tmp) / "m.onnx", resolution=224).path
        decisions.append(tune_spin(path, threads, measure=measure))
        runtimes = ["onnxruntime"] + (["openvino"] if package_version("openvino") else [])
        decisions += [tune_float_stem(path, threads, rt, measure=measure) for rt in runtimes]
    if store:
        save_decisions([d for d in decisions if d.figures.get("stable")])
    return decisions
