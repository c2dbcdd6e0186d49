"""int8 post-training quantization with ONNX Runtime's tools, and fp32-vs-int8 accuracy comparison.

The defaults are policies of the machine at hand (:mod:`mobilezoo.policies`), each with the measurement behind it:

- the weight range (:func:`mobilezoo.policies.int8_weight_bits`): 7-bit weights (``reduce_range``) on a CPU without
  an int8 dot product (VNNI, AMX), where ONNX Runtime's uint8 x int8 kernels add pairs of products in int16
  (``vpmaddubsw``), which saturates with 8-bit weights; 8-bit weights where products are summed in int32. On an AMD
  EPYC (AVX2) 8-bit weights cost ShuffleNet V2 4.1 points on the digits and ShuffleNet V1 8.3 (agreement with fp32
  86.4% and 75.9%), and MobileNetV3-Small 1.5 while its stem was quantized; 7-bit ones at most 0.3.
- ``exclude=("float-stem-if-faster",)``: the classifier is int8 too, and the ``float-logits`` rewrite leaves its
  output unrounded. What an int8 classifier used to cost was the rounding of the logits to 256 levels: on an AMD EPYC
  (Zen 4) it cost ShuffleNet V1 13.4 points on the digits (agreement with fp32 73%), and the int8 classifier with
  float logits costs what the float one does, within 0.1 points and 0.1 of agreement for all six families
  (``benchmarks/results/int8_accuracy_amd.json``). It runs 2-3% faster at batch 1 (its weights are read in int8:
  MobileNetV2's 1280x1000 classifier holds 37% of the net's weights; OpenVINO and ONNX Runtime, interleaved).
  ``"last-gemm"`` keeps the classifier in float. ``float-stem-if-faster`` keeps the modules :data:`FLOAT_STEM` names
  for the model's architecture (MobileNetV3's stem conv and first block) in float where :func:`mobilezoo.policies.float_stem` says
  so for the target runtime (``float-stem`` keeps them in float regardless). On an AMD EPYC with ONNX Runtime the
  int8 stem, a 3-channel 3x3 conv, was slower than fp32 (batch 32, 1 thread: 14.4 ms against 12.5 ms with the
  hard-swish fused in), quantizing the image and moving it to NHWC cost 4.8 ms more, and the stem's hard-swish is
  the largest uint8 product of the net (16x112x112); MobileNetV3-Small's int8/fp32 went from 1.00-1.04 to 1.11-1.18
  at batch 1 with it. The same cut did not pay elsewhere: MobileNetV2 went from 1.40 to 1.27 at batch 1, and a float
  stem and MaxPool took ShuffleNet V1 from 1.03 to 0.86. Keeping just the first conv in float (the usual advice)
  bought no accuracy and made ONNX Runtime run the ShuffleNets' following MaxPool on uint8 in NCHW layout: 43 ms of
  ShuffleNet V2's 208 ms at batch 32.
- ``rewrites``: :mod:`mobilezoo.deploy.int8_rewrites` computes MobileNetV3's hard-sigmoids on uint8 (ONNX Runtime
  has no integer HardSigmoid and ran each one in float between a DequantizeLinear and a QuantizeLinear), turns
  ShuffleNet V1's shortcut average pools into depthwise convs (``QLinearAveragePool`` was slower than all its
  depthwise convs together) and leaves the logits in float.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from mobilezoo.deploy._common import as_model, output_path
from mobilezoo.deploy.int8_rewrites import REWRITES, avgpool_as_conv, float_logits, uint8_hardsigmoid
from mobilezoo.deploy.onnx_export import DEFAULT_OPSET, architecture, export_onnx, load_onnx
from mobilezoo.deploy.sessions import onnx_session

METHODS = ("static", "dynamic")
FORMATS = ("qdq", "qoperator")
CALIBRATIONS = ("minmax", "percentile", "entropy")
DEFAULT_EXCLUDE: tuple[str, ...] = ("float-stem-if-faster",)
POSITIONS = ("first-conv", "float-stem", "float-stem-if-faster", "last-gemm")
TARGETS = ("onnxruntime", "openvino")
# the modules that "float-stem" keeps in float, by the class name export_onnx() records (measured: module docstring)
FLOAT_STEM: dict[str, tuple[str, ...]] = {"MobileNetV3": ("features.0", "features.1")}
_SHAPE_OPS = {"Reshape", "Flatten", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Constant", "Identity",
              "Transpose", "Split", "Slice", "Cast"}  # fmt: skip


@dataclass(frozen=True)
class QuantizedModel:
    """An int8 ONNX model, the fp32 model it came from, and which compute nodes stayed in float."""

    path: Path
    fp32_path: Path
    method: str
    quant_format: str
    per_channel: bool
    reduce_range: bool
    calibrate_method: str
    calibration_images: int
    excluded: tuple[str, ...]
    rewrites: dict[str, int]
    nodes_kept_float: tuple[str, ...]
    size_bytes: int
    fp32_size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "fp32_path": str(self.fp32_path),
            "method": self.method,
            "quant_format": self.quant_format,
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "calibrate_method": self.calibrate_method,
            "calibration_images": self.calibration_images,
            "excluded": list(self.excluded),
            "rewrites": dict(self.rewrites),
            "nodes_kept_float": list(self.nodes_kept_float),
            "size_bytes": self.size_bytes,
            "fp32_size_bytes": self.fp32_size_bytes,
        }


def _as_batch(item: Any) -> np.ndarray:
    """A calibration batch: an (N, C, H, W) tensor/array, or the images of an (images, labels) pair."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    if not isinstance(item, np.ndarray) or item.ndim != 4:
        shape = getattr(item, "shape", None)
        raise ValueError(
            f"calibration data must yield (N, C, H, W) tensors or arrays (or (images, labels) pairs), "
            f"got {type(item).__name__} with shape {shape}"
        )
    return np.ascontiguousarray(item, dtype=np.float32)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over any iterable of batches; counts the images it hands out."""

    def __init__(self, batches: Iterable[Any], input_name: str) -> None:
        self._it = iter(batches)
        self._name = input_name
        self.images = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._it, None)
        if item is None:
            return None
        batch = _as_batch(item)
        self.images += batch.shape[0]
        return {self._name: batch}

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Name the nodes that pre-processing left unnamed, so that ``exclude`` and ``float_nodes`` can refer to them.

    ONNX Runtime's pre-processing inlines function ops: each HardSwish becomes an unnamed HardSigmoid and Mul. A node
    is named after the module output it computes (``.../HardSwish_output_0`` -> ``.../HardSwish/Mul``), else after
    the node that consumes its output (the HardSigmoid -> ``.../HardSwish/HardSigmoid``).
    """
    nodes = list(model.graph.node)
    taken = {n.name for n in nodes if n.name}
    consumer: dict[str, onnx.NodeProto] = {}
    for n in nodes:
        for i in n.input:
            consumer.setdefault(i, n)

    def unique(name: str) -> str:
        candidate, k = name, 1
        while candidate in taken:
            candidate, k = f"{name}_{k}", k + 1
        taken.add(candidate)
        return candidate

    for n in reversed(nodes):  # consumers first: a HardSigmoid is named after its (already named) Mul
        if n.name:
            continue
        out = n.output[0]
        if out.endswith("_output_0"):
            n.name = unique(f"{out.removesuffix('_output_0')}/{n.op_type}")
        elif out in consumer and consumer[out].name:
            n.name = unique(f"{consumer[out].name.rsplit('/', 1)[0]}/{n.op_type}")
        else:
            n.name = unique(f"{n.op_type}_{out}")
    return model


def _scope(module: str) -> str:
    """The node-name prefix torch's ONNX exporter gives a module's nodes: ``features.1`` -> ``/features/features.1/``."""
    parts = module.split(".")
    return "/" + "/".join(".".join(parts[: i + 1]) for i in range(len(parts))) + "/"


def _resolve_exclude(
    graph: onnx.GraphProto, exclude: str | Sequence[str] | None, arch: str | None, target: str = "onnxruntime"
) -> list[str]:
    """Node names to keep in float: entries are node names, op types (every node of that type), or positions."""
    from mobilezoo.policies import float_stem

    if exclude is None:
        return []
    entries = [exclude] if isinstance(exclude, str) else list(exclude)
    if "float-stem-if-faster" in entries:
        keep = arch in FLOAT_STEM and bool(float_stem(arch, target).value)
        entries = [("float-stem" if keep else None) if e == "float-stem-if-faster" else e for e in entries]
        entries = [e for e in entries if e is not None]
    nodes = list(graph.node)
    names: list[str] = []
    op_types = {n.op_type for n in nodes}
    node_names = {n.name for n in nodes}
    for entry in entries:
        if entry == "first-conv":
            names += [n.name for n in nodes if n.op_type == "Conv"][:1]
        elif entry == "last-gemm":
            names += [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
        elif entry == "float-stem":
            scopes = tuple(_scope(m) for m in FLOAT_STEM.get(arch or "", ()))
            stem = [n.name for n in nodes if scopes and n.name.startswith(scopes)]
            if scopes and not stem:
                warnings.warn(
                    f"'float-stem': no node of this {arch} graph is named after {FLOAT_STEM[arch]} (exported by the "
                    "dynamo exporter?); its stem is quantized",
                    stacklevel=3,
                )
            names += stem
        elif entry in op_types:
            names += [n.name for n in nodes if n.op_type == entry]
        elif entry in node_names:
            names.append(entry)
        elif entry not in _KNOWN_OP_TYPES:
            raise ValueError(
                f"exclude entry {entry!r} is neither a node name, an op type of this graph ({sorted(op_types)}), "
                f"nor one of {POSITIONS}"
            )
    return list(dict.fromkeys(names))


_KNOWN_OP_TYPES = {"Conv", "Gemm", "MatMul", "Mul", "Add", "HardSwish", "HardSigmoid", "GlobalAveragePool", "Relu",
                   "Clip", "MaxPool", "AveragePool", "Concat", "Sigmoid", "ReduceMean"}  # fmt: skip


def float_nodes(path: str | PathLike) -> list[str]:
    """The compute nodes of a quantized model that ONNX Runtime runs in float, as ``"OpType:name"``.

    Read from the graph ONNX Runtime actually executes (its optimized graph, before hardware-specific layout
    changes): QDQ groups it could fuse became ``QLinear*``/``QGemm`` int8 kernels, and nodes whose data input is an
    integer tensor (a ``MaxPool`` or ``Clip`` on uint8) run on integers too; every other compute node, such as an
    excluded conv or a HardSigmoid between a DequantizeLinear and a QuantizeLinear, runs in float.
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    integer_ops = ("QuantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QGemm")
    integer_tensors: set[str] = set()
    shape_tensors: set[str] = set()  # shape arithmetic (Shape -> Gather -> Div ...) is not float compute
    constants = {i.name for i in graph.initializer}
    kept_float = []
    for n in graph.node:  # topologically sorted
        inputs = [i for i in n.input if i]
        if n.op_type in integer_ops or n.op_type.startswith("QLinear"):
            integer_tensors.update(n.output)
        elif n.op_type == "DequantizeLinear":
            continue
        elif inputs and inputs[0] in integer_tensors:
            integer_tensors.update(n.output)
        elif n.op_type == "Shape" or (
            inputs and any(i in shape_tensors for i in inputs) and all(i in shape_tensors | constants for i in inputs)
        ):
            shape_tensors.update(n.output)
        elif n.op_type not in _SHAPE_OPS:
            kept_float.append(f"{n.op_type}:{n.name}")
    return kept_float


# ONNX Runtime's QDQ graphs need opset 13: per-channel QuantizeLinear/DequantizeLinear (their axis attribute) are
# opset 13, and at 10-12 its quantizer wrote graphs ONNX Runtime itself refused to load (MobileNetV3 per tensor too).
MIN_OPSET_INT8 = 13


def check_int8_opset(opset: int, where: str = "") -> None:
    """Raise a ValueError naming ``opset`` when it is below :data:`MIN_OPSET_INT8`."""
    if isinstance(opset, int) and opset < MIN_OPSET_INT8:
        raise ValueError(
            f"int8 quantization needs ONNX opset >= {MIN_OPSET_INT8} (per-channel QuantizeLinear/DequantizeLinear), "
            f"got opset {opset}{where}: export int8 at opset {MIN_OPSET_INT8}-20, or fp32 at opset {opset}"
        )


def quantize(
    model_or_onnx: nn.Module | str | PathLike,
    calibration_data: Iterable[Any] | None,
    *,
    out_path: str | PathLike,
    method: str = "static",
    per_channel: bool = True,
    resolution: int | tuple[int, int] = 224,
    exclude: str | Sequence[str] | None = DEFAULT_EXCLUDE,
    quant_format: str = "qdq",
    reduce_range: bool | None = None,
    calibrate_method: str = "minmax",
    rewrites: Sequence[str] = REWRITES,
    opset: int = DEFAULT_OPSET,
    target: str = "onnxruntime",
) -> QuantizedModel:
    """Quantize a model to int8 ONNX with ONNX Runtime's ``quantize_static`` (or ``quantize_dynamic``).

    ``model_or_onnx`` is a module (exported first with :func:`export_onnx` at ``resolution``, next to ``out_path``
    as ``<stem>.fp32.onnx``), a registered model name, or the path of an fp32 ``.onnx`` file. ``calibration_data``
    yields (N, C, H, W) tensors or arrays, or (images, labels) pairs (a DataLoader); static quantization needs it.
    ``exclude`` keeps nodes in float: node names, op types (``"HardSigmoid"``, ``"Mul"``) and positions
    (``"first-conv"``, ``"float-stem"``, ``"last-gemm"``: the classifier; the default is
    ``"float-stem-if-faster"``: the stem kept in float where :func:`mobilezoo.policies.float_stem` says so for
    ``target``), or None to quantize everything ONNX Runtime can. ``"float-stem"`` needs the architecture and module-path node names
    :func:`export_onnx` writes; it warns when the graph has neither. ``rewrites`` names the
    exact graph rewrites of :mod:`mobilezoo.deploy.int8_rewrites` to apply (all by default, ``float-logits``
    among them: the classifier's output is not rounded; ``()`` for ONNX Runtime's graph as is). Activations are uint8 (asymmetric), weights int8 (symmetric, 7-bit with
    ``reduce_range``), per output channel by default. ``reduce_range=None`` follows this CPU's policy
    (:func:`mobilezoo.policies.int8_weight_bits`: 7-bit without an int8 dot product). ``target`` is the runtime the
    file is for (``"onnxruntime"`` or ``"openvino"``): ``float-stem-if-faster`` follows that runtime's measured policy.
    ``opset`` is the fp32 export's; int8 needs at least :data:`MIN_OPSET_INT8` (13), as does a given fp32 file.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from mobilezoo.policies import int8_weight_bits

    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}; expected one of {METHODS}")
    if target not in TARGETS:
        raise ValueError(f"unknown target runtime {target!r}; expected one of {TARGETS}")
    if reduce_range is None:
        reduce_range = int8_weight_bits().value == 7
    if quant_format not in FORMATS:
        raise ValueError(f"unknown quant_format {quant_format!r}; expected one of {FORMATS}")
    unknown = [r for r in rewrites if r not in REWRITES] if not isinstance(rewrites, str) else [rewrites]
    if unknown:
        raise ValueError(f"unknown rewrites {unknown}; expected a sequence of {REWRITES}")
    if calibrate_method not in CALIBRATIONS:
        raise ValueError(f"unknown calibrate_method {calibrate_method!r}; expected one of {CALIBRATIONS}")
    if method == "static" and calibration_data is None:
        raise ValueError("static quantization needs calibration_data (an iterable of (N, C, H, W) batches)")
    check_int8_opset(opset)
    out_path = output_path(out_path, (".onnx",))
    if isinstance(model_or_onnx, (str, PathLike)) and str(model_or_onnx).endswith(".onnx"):
        fp32_path = Path(model_or_onnx)
    else:
        fp32_path = out_path.with_name(out_path.stem + ".fp32.onnx")
        if fp32_path == out_path:
            raise ValueError(f"out_path {str(out_path)!r} would overwrite its own fp32 export")
        export_onnx(as_model(model_or_onnx), fp32_path, resolution=resolution, opset=opset)
    fp32 = load_onnx(fp32_path)  # validated once: a file that is not a model fails here, clearly
    check_int8_opset(
        next((o.version for o in fp32.opset_import if o.domain in ("", "ai.onnx")), 0), f" ({str(fp32_path)!r})"
    )
    input_name, arch = fp32.graph.input[0].name, architecture(fp32)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre))
        except Exception:  # symbolic shape inference gives up on some graphs; ONNX shape inference suffices
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        counts: dict[str, int] = {}
        prepared = _name_nodes(onnx.load(str(pre)))
        if "avgpool-as-conv" in rewrites:
            prepared, counts["avgpool-as-conv"] = avgpool_as_conv(prepared)
        onnx.save(prepared, str(pre))
        excluded = _resolve_exclude(prepared.graph, exclude, arch, target)
        reader = None
        if method == "static":
            reader = _Reader(calibration_data, input_name)
            quantize_static(
                str(pre),
                str(out_path),
                reader,
                quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method={
                    "minmax": CalibrationMethod.MinMax,
                    "percentile": CalibrationMethod.Percentile,
                    "entropy": CalibrationMethod.Entropy,
                }[calibrate_method],
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
            if reader.images == 0:
                raise ValueError("calibration_data yielded no batches")
        else:
            quantize_dynamic(
                str(pre),
                str(out_path),
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=QuantType.QUInt8,
                nodes_to_exclude=excluded,
            )
    after = [(name, fn) for name, fn in (("uint8-hardsigmoid", uint8_hardsigmoid), ("float-logits", float_logits))
             if name in rewrites]  # fmt: skip
    if after:
        quantized = onnx.load(str(out_path))
        for name, fn in after:
            counts[name] = fn(quantized)
        if any(counts[name] for name, _ in after):
            onnx.save(quantized, str(out_path))
    return QuantizedModel(
        path=out_path,
        fp32_path=fp32_path,
        method=method,
        quant_format=quant_format,
        per_channel=per_channel,
        reduce_range=reduce_range,
        calibrate_method=calibrate_method if method == "static" else "none",
        calibration_images=reader.images if reader is not None else 0,
        excluded=tuple(excluded),
        rewrites=counts,
        nodes_kept_float=tuple(float_nodes(out_path)),
        size_bytes=out_path.stat().st_size,
        fp32_size_bytes=fp32_path.stat().st_size,
    )


@dataclass(frozen=True)
class AccuracyComparison:
    """Top-1 of a reference and a candidate model on the same labelled images, and how often their top-1 agree."""

    images: int
    top1_reference: float
    top1_candidate: float
    agreement: float

    @property
    def delta(self) -> float:
        return self.top1_candidate - self.top1_reference

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "top1_reference": round(self.top1_reference, 3),
            "top1_candidate": round(self.top1_candidate, 3),
            "delta": round(self.delta, 3),
            "agreement": round(self.agreement, 3),
        }


def _predictor(model: nn.Module | str | PathLike, threads: int | None):
    if isinstance(model, nn.Module):
        model.eval()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        return run
    if str(model).endswith(".xml"):  # an OpenVINO IR (mobilezoo export --format openvino / openvino-int8)
        from mobilezoo.deploy.sessions import openvino_model

        compiled = openvino_model(model, threads, precision="f32")
        return lambda x: compiled.run(x).copy()
    session = onnx_session(model, threads)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def compare_accuracy(
    reference: nn.Module | str | PathLike,
    candidate: nn.Module | str | PathLike,
    data: Iterable[Any],
    *,
    threads: int | None = None,
) -> AccuracyComparison:
    """Top-1 (%) of two models (modules, ONNX files or OpenVINO ``.xml`` files) on ``data`` (an iterable of (images,
    labels) batches)."""
    ref, cand = _predictor(reference, threads), _predictor(candidate, threads)
    n = hits_ref = hits_cand = agree = 0
    for item in data:
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise ValueError("compare_accuracy needs labelled data: an iterable of (images, labels) pairs")
        x, labels = _as_batch(item), np.asarray(item[1]).reshape(-1)
        p_ref, p_cand = ref(x).argmax(1), cand(x).argmax(1)
        n += len(labels)
        hits_ref += int((p_ref == labels).sum())
        hits_cand += int((p_cand == labels).sum())
        agree += int((p_ref == p_cand).sum())
    if n == 0:
        raise ValueError("compare_accuracy got no images")
    return AccuracyComparison(n, 100.0 * hits_ref / n, 100.0 * hits_cand / n, 100.0 * agree / n)
