"""Opening an exported model for inference: ONNX Runtime sessions and OpenVINO compiled models, set up by policy.

The settings that depend on the machine come from :mod:`mobilezoo.policies` (thread spinning); the ones that keep a
measurement fair side by side are named (``spin=FAIR_SPIN``) by the benchmark, which uses them for every candidate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from mobilezoo.policies import SPIN_MODES, ort_spin

OPENVINO_PRECISIONS = ("f32", "bf16", "default")


def _spin_mode(spin: str | bool | None, threads: int | None) -> str:
    if spin is None:
        return str(ort_spin(threads).value)
    if spin is True or spin is False:  # the earlier boolean form: False never spins, True is ONNX Runtime's default
        return "always" if spin else "off"
    if spin not in SPIN_MODES:
        raise ValueError(
            f"unknown spin mode {spin!r}; expected one of {SPIN_MODES} (or None for this machine's policy)"
        )
    return spin


def onnx_session(
    path: str | PathLike, threads: int | None = None, *, spin: str | bool | None = None, streams: int = 1
) -> Any:
    """An ONNX Runtime CPU ``InferenceSession`` with all graph optimizations and ``threads`` intra-op threads.

    ``spin`` is ONNX Runtime's intra-op thread spinning (:data:`~mobilezoo.policies.SPIN_MODES`): ``"off"``,
    ``"during-run"`` (spins while a run is in progress, stops when it returns: ``session.force_spinning_stop``),
    ``"always"`` (ONNX Runtime's default: idle threads keep spinning after a run), or None for this machine's policy
    (:func:`mobilezoo.policies.ort_spin`; ``True``/``False`` mean ``"always"``/``"off"``). ``always`` wrecks any
    side-by-side measurement: the idle session's threads spin on the cores the other one runs on (on 2 cores, two
    2-thread sessions timed call by call both ran 3.5x slower); ``"during-run"`` does not, and is nearly as fast.
    ``streams > 1`` returns a :class:`~mobilezoo.deploy.streams.StreamedSession`: each call splits the batch into
    ``streams`` slices run at once, each with ``threads // streams`` threads (``threads`` must be a multiple of
    ``streams``; None means all cores). That is how int8 models use several cores at batch > 1 (see its module).
    A missing file raises FileNotFoundError; a file ONNX Runtime cannot load as a model raises ValueError.
    """
    import onnxruntime as ort

    from mobilezoo.deploy.streams import StreamedSession

    path = Path(path)
    mode = _spin_mode(spin, threads)
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an integer >= 1 or None, got {threads!r}")
    if not isinstance(streams, int) or streams < 1:
        raise ValueError(f"streams must be an integer >= 1, got {streams!r}")
    if streams > 1:
        total = threads if threads is not None else os.cpu_count() or 1
        if total % streams:
            raise ValueError(f"threads ({total}) must be a multiple of streams ({streams}): each stream gets its share")
        return StreamedSession(onnx_session(path, total // streams, spin=mode), streams)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if mode == "off":
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif mode == "during-run":
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT's pybind errors (InvalidProtobuf, InvalidArgument, InvalidGraph, Fail) share no base
        if type(e).__module__.startswith("onnxruntime"):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{str(path)!r} is not a valid ONNX model: {first}") from None
        raise


class OpenVinoModel:
    """An OpenVINO CPU compiled model with one infer request; ``run(x)`` returns the first output as a numpy array."""

    def __init__(self, compiled: Any, precision: str, input_shape: tuple[int, ...] | None = None) -> None:
        self.compiled = compiled
        self.precision = precision
        self.input_shape = input_shape
        self._request = compiled.create_infer_request()

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs for the (N, C, H, W) float32 batch ``x`` (the request's output buffer: copy it to keep it).

        Raises ValueError when the model was compiled for one ``input_shape`` and ``x`` has another.
        """
        if self.input_shape is not None and tuple(x.shape) != self.input_shape:
            raise ValueError(
                f"this OpenVINO model was compiled for input shape {self.input_shape}, got {tuple(x.shape)}: compile "
                "it with input_shape=None for any batch, or once per shape"
            )
        self._request.infer({0: x})
        return self._request.get_output_tensor(0).data


def openvino_model(
    path: str | PathLike,
    threads: int | None = None,
    *,
    precision: str = "f32",
    hint: str = "latency",
    input_shape: Sequence[int] | None = None,
) -> OpenVinoModel:
    """Compile an ONNX (or OpenVINO IR ``.xml``) file for OpenVINO's CPU plugin.

    ``precision``: ``"f32"`` computes in float32 (the same numbers as PyTorch, to rounding); ``"bf16"`` lets OpenVINO
    compute in bf16 on a CPU with AVX-512 BF16 or AMX (what OpenVINO does by default there: a model exported in fp32 is
    then not computed in fp32); ``"default"`` leaves OpenVINO's choice. An int8 (QDQ) model runs its quantized parts in
    int8 whatever the precision. ``hint`` is OpenVINO's performance hint: ``"latency"`` or ``"throughput"``.
    ``input_shape`` (N, C, H, W) compiles the model for that one shape instead of the file's dynamic batch: OpenVINO
    then picks static-shape kernels and skips shape inference per call. On an AMD EPYC (Zen 4, AVX-512; 2 threads,
    224 px) that took MobileNetV3-Large at batch 1 from 3.37 to 2.23 ms in bf16 and from 4.89 to 3.98 ms in f32, int8
    MobileNetV2 from 1.92 to 1.63 ms, and 1-4% at batch 32 (interleaved). A call with another shape then raises
    ValueError. Raises ImportError without the ``openvino`` package, FileNotFoundError for a missing file, ValueError for bad
    arguments or a file OpenVINO cannot read, and OpenVINO's RuntimeError for a model its CPU plugin cannot compile
    (OpenVINO 2026.4 fails on some int8 grouped convolutions, e.g. ShuffleNet V1's).
    """
    import openvino as ov

    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"unknown OpenVINO precision {precision!r}; expected one of {OPENVINO_PRECISIONS}")
    if hint not in ("latency", "throughput"):
        raise ValueError(f"unknown OpenVINO performance hint {hint!r}; expected 'latency' or 'throughput'")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an integer >= 1 or None, got {threads!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    config: dict[str, Any] = {"PERFORMANCE_HINT": hint.upper()}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"OpenVINO cannot read {str(path)!r}: {first}") from None
    shape = None
    if input_shape is not None:
        shape = tuple(input_shape)
        if len(shape) != 4 or not all(isinstance(d, int) and d >= 1 for d in shape):
            raise ValueError(f"input_shape must be four positive integers (N, C, H, W), got {input_shape!r}")
        try:
            model.reshape({0: list(shape)})
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{str(path)!r} cannot take input shape {shape}: {first}") from None
    return OpenVinoModel(core.compile_model(model, "CPU", config), precision, shape)
