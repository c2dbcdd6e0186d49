"""Exact rewrites of ONNX graphs around int8 quantization: ops ONNX Runtime runs slowly or in float, and the logits.

Found with ONNX Runtime's profiler (2 threads, this repository's CPU: AVX2 without VNNI):

- ``avgpool-as-conv`` (before quantization): ShuffleNet V1's three 3x3 average-pooled shortcuts took 21 ms of its
  int8 time at batch 32 as ``QLinearAveragePool``, 7 ms each, more than all 16 depthwise convs together. An average
  pool that counts its zero padding is a depthwise conv with weights ``1 / (kh * kw)``, which runs as an int8
  depthwise ``QLinearConv`` instead.
- ``uint8-hardsigmoid`` (after quantization): ONNX Runtime has no integer HardSigmoid, so in a quantized MobileNetV3
  every hard-swish (``x * HardSigmoid(x)``) and squeeze-excite gate runs as DequantizeLinear -> HardSigmoid (float)
  -> QuantizeLinear around the integer multiply: three float passes over the tensor, 1.9 ms of MobileNetV3-Small's
  5.3 ms at batch 1. The gate is computed on the uint8 tensor itself with one ``Clip``.
- ``float-logits`` (after quantization): the quantizer rounds the classifier's output to uint8 too, which cost
  ShuffleNet V1 13.4 points of top-1 on the digits; the classifier keeps its int8 inputs and weights and writes float
  logits (:func:`float_logits`).

Measured effect (``benchmarks/results/int8_vs_fp32.md``, variant pass, int8/fp32 speed-up at batch 1 / 32 with 2
threads, without -> with the rewrites): MobileNetV3-Large 1.04 -> 1.12 / 1.03 -> 1.18, MobileNetV3-Small 0.98 ->
1.13 / 0.87 -> 1.08, ShuffleNet V1 0.96 -> 1.03 / 0.84 -> 0.92.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

_UINT8_MAX = 255
# avgpool-as-conv is applied before quantization, the others after it
REWRITES = ("avgpool-as-conv", "uint8-hardsigmoid", "float-logits")


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def uint8_hardsigmoid(model: onnx.ModelProto) -> int:
    """Replace each ``DequantizeLinear -> HardSigmoid -> QuantizeLinear`` chain by a ``Clip`` on the uint8 input.

    With ``y = s * (q - z)``, ``HardSigmoid(y) = clip(alpha * y + beta, 0, 1) = clip(alpha * s * (q - z'), 0, 1)``
    where ``z' = z - beta / (alpha * s)``: the same uint8 tensor ``q`` read with scale ``alpha * s`` and zero point
    ``z'``, clamped to ``[z', z' + 1 / (alpha * s)]``. ``z'`` is rounded to an integer, which moves the gate by at
    most ``alpha * s / 2`` (half a step of its grid). When the calibrated range of ``y`` stops above
    ``-beta / alpha`` (-3 for hard-sigmoid: ``z'`` would be negative), the range of ``y`` is first widened to reach
    it. The gate's QuantizeLinear parameters are replaced (its consumers' DequantizeLinear share them), so the
    following multiply still fuses into a ``QLinearMul``. Returns the number of chains rewritten; the model is
    changed in place.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            users.setdefault(name, []).append(n)

    def value(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    def owned_by(names: tuple[str, str], tensors: set[str]) -> bool:
        """The scale and zero point are initializers used only by Q/DQ nodes of ``tensors`` (safe to change)."""
        return all(
            name in inits and all(u.op_type in ("QuantizeLinear", "DequantizeLinear") and u.input[0] in tensors
                                  for u in users.get(name, []))
            for name in names
        )  # fmt: skip

    def set_qparams(names: tuple[str, str], scale: float, zero_point: int) -> None:
        inits[names[0]].CopyFrom(numpy_helper.from_array(np.array(scale, np.float32), names[0]))
        inits[names[1]].CopyFrom(numpy_helper.from_array(np.array(zero_point, np.uint8), names[1]))

    rewritten = 0
    for node in list(graph.node):
        if node.op_type != "HardSigmoid":
            continue
        dq, after = producer.get(node.input[0]), users.get(node.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        q_gate = after[0]
        y_params, gate_params = (dq.input[1], dq.input[2]), (q_gate.input[1], q_gate.input[2])
        if len(dq.input) < 3 or len(q_gate.input) < 3 or not all(p in inits for p in (*y_params, *gate_params)):
            continue
        if value(y_params[1]).dtype != np.uint8 or value(y_params[0]).size != 1:
            continue  # per-channel or int8 activations: not the uint8 per-tensor graphs quantize() writes
        alpha, beta = float(_attr(node, "alpha", 0.2)), float(_attr(node, "beta", 0.5))
        y_q = dq.input[0]
        s, z = float(value(y_params[0])), int(value(y_params[1]))
        zero = z - round(beta / (alpha * s))
        if zero < 0:
            y_float = producer[y_q].input[0] if y_q in producer else y_q
            if not owned_by(y_params, {y_q, y_float}):
                continue
            low, high = min(-z * s, -beta / alpha), (_UINT8_MAX - z) * s
            s = (high - low) / _UINT8_MAX
            z = round(-low / s)
            set_qparams(y_params, s, z)
            zero = z - round(beta / (alpha * s))
        gate_q = q_gate.output[0]
        if not owned_by(gate_params, {gate_q, node.output[0]}):
            continue
        set_qparams(gate_params, alpha * s, zero)
        bounds = [f"{gate_q}_clip_min", f"{gate_q}_clip_max"]
        top = min(_UINT8_MAX, zero + round(1 / (alpha * s)))
        graph.initializer.extend(
            [numpy_helper.from_array(np.array(v, np.uint8), b) for v, b in zip((zero, top), bounds)]
        )
        clip = helper.make_node("Clip", [y_q, *bounds], [gate_q], name=f"{node.name or gate_q}_uint8")
        position = list(graph.node).index(q_gate)
        graph.node.insert(position, clip)
        graph.node.remove(node)
        graph.node.remove(q_gate)
        if all(u is node for u in users[dq.output[0]]):
            graph.node.remove(dq)
        rewritten += 1
    return rewritten


def avgpool_as_conv(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Replace each 2-D ``AveragePool`` that counts padding (or has none) by the equal depthwise ``Conv``.

    Returns a new model (shapes inferred: the conv needs the channel count) and the number of pools replaced; pools
    whose channel count is unknown, ``ceil_mode`` pools and pools that exclude padding from the count are left alone.
    """
    model = shape_inference.infer_shapes(model)
    graph = model.graph
    replaced = 0
    channels = {}
    for v in [*graph.value_info, *graph.input]:
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            channels[v.name] = dims[1].dim_value
    for node in list(graph.node):
        if node.op_type != "AveragePool" or node.input[0] not in channels or _attr(node, "ceil_mode", 0):
            continue
        kernel = list(_attr(node, "kernel_shape", []))
        pads = list(_attr(node, "pads", [0] * 2 * len(kernel)))
        if len(kernel) != 2 or _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        if any(pads) and not _attr(node, "count_include_pad", 0):
            continue
        c = channels[node.input[0]]
        weight = f"{node.output[0]}_avgpool_weight"
        graph.initializer.append(
            numpy_helper.from_array(np.full((c, 1, *kernel), 1 / (kernel[0] * kernel[1]), np.float32), weight)
        )
        conv = helper.make_node(
            "Conv",
            [node.input[0], weight],
            list(node.output),
            name=f"{node.name or node.output[0]}_as_conv",
            group=c,
            kernel_shape=kernel,
            strides=list(_attr(node, "strides", [1, 1])),
            pads=pads,
            dilations=list(_attr(node, "dilations", [1, 1])),
        )
        graph.node.insert(list(graph.node).index(node), conv)
        graph.node.remove(node)
        replaced += 1
    return model, replaced


def float_logits(model: onnx.ModelProto) -> int:
    """Drop the ``QuantizeLinear -> DequantizeLinear`` pair between each graph output and the node computing it.

    ONNX Runtime's quantizer rounds the classifier's output, the logits, to 256 uint8 levels, which is what an int8
    classifier cost in accuracy. Without the pair the classifier still multiplies int8 inputs by int8 weights (ONNX
    Runtime fuses DequantizeLinear -> Gemm into a ``QGemm`` with a float output; OpenVINO runs it as an int8 fully
    connected layer) and writes float logits, as exact as the int8 product allows. Returns the number of outputs
    rewritten; the model is changed in place.
    """
    graph = model.graph
    producer = {out: n for n in graph.node for out in n.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            users.setdefault(name, []).append(n)
    outputs = {o.name for o in graph.output}
    rewritten = 0
    for out in outputs:
        dq = producer.get(out)
        if dq is None or dq.op_type != "DequantizeLinear" or len(users.get(dq.input[0], [])) != 1:
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in outputs:
            continue
        logits = q.input[0]
        compute = producer.get(logits)
        if compute is None or len(users.get(logits, [])) != 1:
            continue  # the float logits feed something else too: keep the pair
        compute.output[list(compute.output).index(logits)] = out
        graph.node.remove(q)
        graph.node.remove(dq)
        rewritten += 1
    return rewritten
