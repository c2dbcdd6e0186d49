"""The inference backends behind one interface: each prepares a model and returns a callable to time."""

from __future__ import annotations

import copy
import functools
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mobilezoo.benchmark.environment import package_version

BACKENDS = (
    "eager",
    "channels_last",
    "compile",
    "torchscript",
    "onnxruntime",
    "onnxruntime-streams",
    "onnxruntime-int8",
    "onnxruntime-int8-streams",
    "openvino",
)
INT8_CALIBRATION = "the benchmark's own input (seeded N(0, 1) images), in batches of up to 8"


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


def available_backends() -> tuple[str, ...]:
    """The backends that can run here (``openvino`` needs the optional ``openvino`` package)."""
    have_ov = package_version("openvino") is not None
    return tuple(b for b in BACKENDS if b != "openvino" or have_ov)


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


def _streams(batch: int, threads: int) -> int:
    """The most slices of the batch that can run at once: a divisor of ``threads``, at most ``batch``."""
    return max(k for k in range(1, threads + 1) if threads % k == 0 and k <= batch)


def _session(path: Path, x: Tensor, threads: int, note: str, dtype: str, streamed: bool) -> Prepared:
    from mobilezoo.deploy import onnx_session

    streams = _streams(x.shape[0], threads) if streamed else 1
    session = onnx_session(path, threads, streams=streams)
    feed = {session.get_inputs()[0].name: x.numpy()}
    if streamed:
        note += (
            f"; the batch split into {streams} slices run at once, {threads // streams} thread(s) each"
            if streams > 1
            else "; one call (a batch of 1 or 1 thread cannot be split)"
        )
    return Prepared(lambda: session.run(None, feed), dtype=dtype, notes=note)


def _onnxruntime(
    model: nn.Module, x: Tensor, dev: torch.device, threads: int, tmp: Path, streamed: bool = False
) -> Prepared:
    path, note = _onnx_file(model, x, tmp)
    return _session(path, x, threads, note + "; ONNX Runtime CPU, all graph optimizations", "float32", streamed)


def _onnxruntime_int8(
    model: nn.Module, x: Tensor, dev: torch.device, threads: int, tmp: Path, streamed: bool = False
) -> Prepared:
    from mobilezoo.deploy import quantize

    path, note = _onnx_file(model, x, tmp)
    q = quantize(path, list(torch.split(x, 8)), out_path=tmp / "model.int8.onnx", per_channel=True, quant_format="qdq")
    note += (
        f"; static int8 QDQ, per-channel int8 weights, uint8 activations, {q.calibrate_method} calibration on "
        f"{INT8_CALIBRATION}; {len(q.nodes_kept_float)} nodes kept float"
    )
    return _session(q.path, x, threads, note, "int8 weights and activations (QDQ), float32 input/output", streamed)


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
    "onnxruntime-streams": functools.partial(_onnxruntime, streamed=True),
    "onnxruntime-int8": _onnxruntime_int8,
    "onnxruntime-int8-streams": functools.partial(_onnxruntime_int8, streamed=True),
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
