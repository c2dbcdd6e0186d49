"""The inference backends behind one interface: each prepares a model and returns a callable to time."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mobilezoo.benchmark.environment import package_version
from mobilezoo.policies import FAIR_SPIN

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
    "openvino-bf16",
    "openvino-int8",
)
OPENVINO_BACKENDS = ("openvino", "openvino-bf16", "openvino-int8")
# what each backend computes in: "fp32" ones give eager PyTorch's outputs to rounding; the others change the numbers
PRECISION = {
    "onnxruntime-int8": "int8",
    "onnxruntime-int8-streams": "int8",
    "openvino-int8": "int8",
    "openvino-bf16": "bf16",
}
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


def precision(backend: str) -> str:
    """``"fp32"``, ``"bf16"`` or ``"int8"``: what ``backend`` computes in (see :data:`PRECISION`)."""
    return PRECISION.get(backend, "fp32")


def available_backends() -> tuple[str, ...]:
    """The backends that can run here: the OpenVINO ones need the ``openvino`` package, ``openvino-bf16`` a CPU with
    bf16 arithmetic (AVX-512 BF16 or AMX; elsewhere it would compute what ``openvino`` does)."""
    from mobilezoo.machine import cpu_info

    have_ov = package_version("openvino") is not None
    bf16 = cpu_info().bf16 is not None
    return tuple(b for b in BACKENDS if b not in OPENVINO_BACKENDS or (have_ov and (b != "openvino-bf16" or bf16)))


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


# ONNX Runtime's spinning for the sessions being prepared (set by prepare())
_SPIN: contextvars.ContextVar[str | None] = contextvars.ContextVar("spin", default=FAIR_SPIN)
# files exported once and shared by every backend prepared inside one `shared_exports()` block (the auto backend's
# candidates all start from the same ONNX export, and the int8 ones from the same calibrated model)
_SHARED: dict[tuple, tuple[Path, str]] = {}
_SHARED_DIR: list[Path] = []


@contextlib.contextmanager
def shared_exports() -> Iterator[None]:
    """Within this block, backends prepared for the same model and input share their ONNX and int8 files."""
    if _SHARED_DIR:  # nested: the outer block owns the files
        yield
        return
    _SHARED_DIR.append(Path(tempfile.mkdtemp(prefix="mobilezoo-shared-")))
    try:
        yield
    finally:
        shutil.rmtree(_SHARED_DIR.pop(), ignore_errors=True)
        _SHARED.clear()


def _shared(key: tuple, tmp: Path, make: Callable[[Path], tuple[Path, str]]) -> tuple[Path, str]:
    if not _SHARED_DIR:
        return make(tmp)
    if key not in _SHARED:
        folder = Path(tempfile.mkdtemp(dir=_SHARED_DIR[0]))
        _SHARED[key] = make(folder)
    return _SHARED[key]


def _onnx_file(model: nn.Module, x: Tensor, tmp: Path) -> tuple[Path, str]:
    from mobilezoo.deploy import export_onnx

    def make(folder: Path) -> tuple[Path, str]:
        exp = export_onnx(model, folder / "model.onnx", resolution=(x.shape[2], x.shape[3]), dynamic_batch=True)
        return exp.path, f"ONNX {exp.exporter} exporter, opset {exp.opset}"

    return _shared(("onnx", id(model), tuple(x.shape[1:])), tmp, make)


def _streams(batch: int, threads: int) -> int:
    """The most slices of the batch that can run at once: a divisor of ``threads``, at most ``batch``."""
    return max(k for k in range(1, threads + 1) if threads % k == 0 and k <= batch)


def _session(path: Path, x: Tensor, threads: int, note: str, dtype: str, streamed: bool) -> Prepared:
    from mobilezoo.deploy import onnx_session

    streams = _streams(x.shape[0], threads) if streamed else 1
    # by default spinning only while a run is in progress: an idle session does not spin on the cores of the one being
    # timed next to it (see mobilezoo.policies.ort_spin)
    spin = _SPIN.get()
    session = onnx_session(path, threads, streams=streams, spin=spin)
    note += f"; thread spinning {spin or 'by policy'}"
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
    return _session(
        path,
        x,
        threads,
        note + "; ONNX Runtime CPU, all graph optimizations",
        "float32",
        streamed,
    )


def _int8_file(model: nn.Module, x: Tensor, tmp: Path, target: str) -> tuple[Path, str]:
    from mobilezoo.deploy import quantize
    from mobilezoo.deploy.onnx_export import architecture
    from mobilezoo.policies import float_stem

    path, note = _onnx_file(model, x, tmp)
    stem = bool(float_stem(architecture(path), target).value)  # the only target-dependent choice

    def make(folder: Path) -> tuple[Path, str]:
        q = quantize(
            path, list(torch.split(x, 8)), out_path=folder / "model.int8.onnx", per_channel=True, target=target
        )
        return q.path, (
            f"; static int8 QDQ, per-channel {8 - q.reduce_range}-bit weights, uint8 activations, "
            f"{q.calibrate_method} calibration on {INT8_CALIBRATION}; {len(q.nodes_kept_float)} nodes kept float"
        )

    qpath, qnote = _shared(("int8", id(model), tuple(x.shape), stem), tmp, make)
    return qpath, note + qnote


def _onnxruntime_int8(
    model: nn.Module, x: Tensor, dev: torch.device, threads: int, tmp: Path, streamed: bool = False
) -> Prepared:
    path, note = _int8_file(model, x, tmp, "onnxruntime")
    return _session(path, x, threads, note, "int8 weights and activations (QDQ), float32 input/output", streamed)


_OPENVINO_NOTE = ", latency hint, compiled for the input shape (static shapes: see openvino_model)"


def _openvino_run(path: Path, x: Tensor, threads: int, precision: str) -> Callable[[], Any]:
    from mobilezoo.deploy import openvino_model

    compiled = openvino_model(path, threads, precision=precision, input_shape=tuple(x.shape))  # static: faster
    arr = x.numpy()
    try:
        compiled.run(arr)  # OpenVINO compiles some kernels on the first call, and may fail there
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip().startswith("[CPU]")), str(e)[:200])
        raise RuntimeError(f"OpenVINO failed to run the model: {first}") from None
    return lambda: compiled.run(arr)


def _openvino(model: nn.Module, x: Tensor, dev: torch.device, threads: int, tmp: Path) -> Prepared:
    path, note = _onnx_file(model, x, tmp)
    # f32: OpenVINO otherwise computes in bf16 on CPUs that have it, changing the numbers
    return Prepared(_openvino_run(path, x, threads, "f32"), notes=note + "; OpenVINO CPU, f32" + _OPENVINO_NOTE)


def _openvino_bf16(model: nn.Module, x: Tensor, dev: torch.device, threads: int, tmp: Path) -> Prepared:
    path, note = _onnx_file(model, x, tmp)
    return Prepared(
        _openvino_run(path, x, threads, "bf16"),
        dtype="bfloat16 compute, float32 input/output",
        notes=note + "; OpenVINO CPU, bf16 inference precision (its default on this CPU)" + _OPENVINO_NOTE,
    )


def _openvino_int8(model: nn.Module, x: Tensor, dev: torch.device, threads: int, tmp: Path) -> Prepared:
    path, note = _int8_file(model, x, tmp, "openvino")
    return Prepared(
        _openvino_run(path, x, threads, "f32"),
        dtype="int8 weights and activations (QDQ), float32 input/output",
        notes=note + "; OpenVINO CPU (the QDQ model as ONNX Runtime's int8 backend gets it)" + _OPENVINO_NOTE,
    )


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
    "openvino-bf16": _openvino_bf16,
    "openvino-int8": _openvino_int8,
}


def prepare(
    model: nn.Module,
    backend: str,
    x: Tensor,
    *,
    threads: int,
    device: str | torch.device = "cpu",
    spin: str | None = FAIR_SPIN,
) -> Prepared:
    """Make ``model`` (put it in eval mode first) ready to run ``x`` on ``backend``: all conversions happen here.

    ``spin``: ONNX Runtime's thread spinning (:data:`mobilezoo.policies.SPIN_MODES`). The default spins only during
    runs, which keeps call-by-call interleaved timing fair; None uses this machine's deployment policy (fair only when
    the candidates are timed in blocks with pauses between them). Exported files go to a temporary folder that
    ``Prepared.cleanup()`` removes.
    """
    if backend not in _PREPARERS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    tmp = Path(tempfile.mkdtemp(prefix="mobilezoo-bench-"))
    token = _SPIN.set(spin)
    try:
        prepared = _PREPARERS[backend](model, x, torch.device(device), threads, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _SPIN.reset(token)
    prepared.cleanup = lambda: shutil.rmtree(tmp, ignore_errors=True)
    return prepared
