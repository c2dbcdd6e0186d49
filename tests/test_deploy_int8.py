"""Tests of mobilezoo.deploy's int8 path: quantize(), its graph rewrites, and the accuracy cost on the built-in digits."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mobilezoo import create_model
from mobilezoo.deploy import compare_accuracy, export_onnx, onnx_session, quantize
from mobilezoo.deploy.calibration import image_batches, labelled, random_batches
from mobilezoo.deploy.int8_rewrites import avgpool_as_conv, float_logits, uint8_hardsigmoid

# --------------------------------------------------------------------------------------------- accuracy on the digits


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_v2_x1_0", "mobilenet_v3_small"])
def test_int8_keeps_top1_within_one_point(name: str, tmp_path) -> None:
    from mobilezoo.train import TrainConfig, train

    run = train(TrainConfig(model=name, epochs=3, img_size=32, device="cpu"))
    model = run.model
    calibration = labelled(image_batches("builtin", in_chans=1, resolution=32, num_images=256, batch_size=64))
    q = quantize(model, calibration, out_path=tmp_path / "m.int8.onnx", resolution=32)
    assert q.calibration_images == 256
    assert q.size_bytes < q.fp32_size_bytes / 2.5
    val = list(labelled(image_batches("builtin", split="val", in_chans=1, resolution=32, num_images=None)))
    acc = compare_accuracy(q.fp32_path, q.path, val)
    assert acc.images == 1000
    assert acc.top1_reference > 80.0, "the fp32 model did not learn: the int8 comparison would say little"
    # the images are prepared as training evaluated them: the same top-1 on the same 1,000 images
    assert acc.top1_reference == pytest.approx(run.last["val_top1"], abs=0.05)
    assert abs(acc.delta) <= 1.0, acc.to_dict()
    assert acc.agreement >= 95.0, acc.to_dict()
    # the fp32 ONNX file is the PyTorch model
    assert compare_accuracy(model, q.fp32_path, val).agreement == 100.0
    assert q.rewrites["float-logits"] == 1 and not any(k.startswith(("Gemm:", "MatMul:")) for k in q.nodes_kept_float)
    if name == "mobilenet_v3_small":  # beyond the float stem, every hard-swish and SE gate computed on uint8
        assert q.rewrites["uint8-hardsigmoid"] == 26
        assert all(k.split(":", 1)[1].startswith(STEM) for k in q.nodes_kept_float)


# ------------------------------------------------------------------------------------------------- quantize options

STEM = ("/features/features.0/", "/features/features.1/")  # MobileNetV3's float stem, as ONNX node-name prefixes


def test_quantize_defaults_options_and_bad_input(tmp_path) -> None:
    model = create_model("mobilenet_v3_small", num_classes=10).eval()
    cal = random_batches(3, (32, 32), num_images=8, batch_size=4)
    q = quantize(model, cal, out_path=tmp_path / "d.onnx", resolution=32)
    # MobileNetV3's stem and first block stay in float (the hard-swish's unnamed nodes are named after it); the
    # classifier is int8, its logits left unrounded
    assert q.rewrites == {"avgpool-as-conv": 0, "uint8-hardsigmoid": 26, "float-logits": 1}
    assert {f"{STEM[0]}features.0.2/HardSwish/{op}" for op in ("HardSigmoid", "Mul")} <= set(q.excluded)
    assert all(n.startswith(STEM) for n in q.excluded)
    assert q.nodes_kept_float[0].startswith("Conv:")
    assert all(k.split(":", 1)[1].startswith(STEM) for k in q.nodes_kept_float) and len(q.nodes_kept_float) >= 9
    head = quantize(q.fp32_path, cal, out_path=tmp_path / "h.onnx", exclude=["last-gemm"])
    assert head.rewrites["uint8-hardsigmoid"] == 28 and [k.split(":")[0] for k in head.nodes_kept_float] == ["Gemm"]
    assert head.rewrites["float-logits"] == 0  # a float classifier's output was never rounded
    everything = quantize(q.fp32_path, cal, out_path=tmp_path / "all.onnx", exclude=None)
    assert everything.excluded == () and everything.nodes_kept_float == ()
    raw = quantize(q.fp32_path, cal, out_path=tmp_path / "raw.onnx", rewrites=(), exclude=["last-gemm"])
    assert raw.rewrites == {} and sum(k.startswith("HardSigmoid:") for k in raw.nodes_kept_float) == 28
    q = quantize(model, cal, out_path=tmp_path / "a.onnx", resolution=32, exclude=["first-conv", "last-gemm", "Mul"])
    kinds = [k.split(":")[0] for k in q.excluded]
    assert q.excluded and "Mul" not in kinds  # excluded holds node names
    assert any(k.startswith("Conv:") for k in q.nodes_kept_float)
    assert any(k.startswith("Gemm:") for k in q.nodes_kept_float)
    q2 = quantize(q.fp32_path, cal, out_path=tmp_path / "b.onnx", per_channel=False, quant_format="qoperator")
    sess = onnx_session(q2.path, threads=1)
    out = sess.run(None, {"input": np.zeros((2, 3, 32, 32), np.float32)})[0]
    assert out.shape == (2, 10)
    with pytest.raises(ValueError, match="calibration_data"):
        quantize(model, None, out_path=tmp_path / "c.onnx", resolution=32)
    with pytest.raises(ValueError, match="method"):
        quantize(model, cal, out_path=tmp_path / "c.onnx", method="qat")
    with pytest.raises(ValueError, match="exclude entry"):
        quantize(q.fp32_path, cal, out_path=tmp_path / "c.onnx", exclude=["NoSuchNode"])
    with pytest.raises(ValueError, match="unknown rewrites"):
        quantize(q.fp32_path, cal, out_path=tmp_path / "c.onnx", rewrites=["fold-everything"])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        quantize(q.fp32_path, [np.zeros((3, 32, 32), np.float32)], out_path=tmp_path / "c.onnx")
    with pytest.raises(FileNotFoundError):
        quantize(model, cal, out_path=tmp_path / "nodir" / "c.onnx", resolution=32)


def test_float_stem_warns_when_the_graph_does_not_name_its_modules(tmp_path) -> None:
    model = create_model("mobilenet_v3_small", num_classes=10).eval()
    path = export_onnx(model, tmp_path / "m.onnx", resolution=32).path
    proto = onnx.load(str(path))
    keep = {i.name for i in proto.graph.initializer} | {v.name for v in [*proto.graph.input, *proto.graph.output]}
    rename: dict[str, str] = {}
    for i, node in enumerate(proto.graph.node):  # nodes and tensors named without module paths, as by dynamo
        node.name = f"node_{i}"
        for k, out in enumerate(node.output):
            if out not in keep:
                rename[out] = node.output[k] = f"t{len(rename)}"
        for k, inp in enumerate(node.input):
            node.input[k] = rename.get(inp, inp)
    onnx.save(proto, str(tmp_path / "renamed.onnx"))
    cal = random_batches(3, (32, 32), num_images=4, batch_size=4)
    with pytest.warns(UserWarning, match="float-stem"):
        q = quantize(tmp_path / "renamed.onnx", cal, out_path=tmp_path / "q.onnx")
    assert q.rewrites["uint8-hardsigmoid"] == 28  # nothing kept in float


def test_shufflenet_v1_int8_has_no_average_pool_and_only_the_global_pool_in_float(tmp_path) -> None:
    cal = random_batches(3, (64, 64), num_images=8, batch_size=4)
    q = quantize(create_model("shufflenet_v1_g3_x1_0"), cal, out_path=tmp_path / "s.onnx", resolution=64)
    assert q.rewrites["avgpool-as-conv"] == 3  # the three stride-2 shortcuts
    assert q.rewrites["float-logits"] == 1  # its classifier is a MatMul + Add: int8, with float logits
    assert [k.split(":")[0] for k in q.nodes_kept_float] == ["ReduceMean"]  # the global pool
    assert "AveragePool" not in {n.op_type for n in onnx.load(str(q.path)).graph.node}


# --------------------------------------------------------------------------------------------------- graph rewrites


def _init(name: str, value: float | int, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype), name)


def _hardswish_graph(scale: float, zero: int, gate_scale: float, gate_zero: int) -> onnx.ModelProto:
    """x -> Q -> DQ -> y; y * Q/DQ(HardSigmoid(y)), as ONNX Runtime's quantizer writes a hard-swish."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "y_s", "y_z"], ["y_q"]),
        helper.make_node("DequantizeLinear", ["y_q", "y_s", "y_z"], ["y"]),
        helper.make_node("HardSigmoid", ["y"], ["g"], alpha=1 / 6, beta=0.5, name="hsig"),
        helper.make_node("QuantizeLinear", ["g", "g_s", "g_z"], ["g_q"]),
        helper.make_node("DequantizeLinear", ["g_q", "g_s", "g_z"], ["gate"]),
        helper.make_node("Mul", ["y", "gate"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "hardswish",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None]) for n in ("gate", "out")],
        initializer=[
            _init("y_s", scale, np.float32),
            _init("y_z", zero, np.uint8),
            _init("g_s", gate_scale, np.float32),
            _init("g_z", gate_zero, np.uint8),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, tmp_path, x: np.ndarray, name: str) -> list[np.ndarray]:
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return onnx_session(path, threads=1).run(None, {"x": x})


@pytest.mark.parametrize(
    ("low", "high"),
    [(-8.0, 10.0), (-1.0, 5.0)],  # the second range stops above -3: y's range is widened to reach it
    ids=["reaches-minus-3", "widened"],
)
def test_uint8_hardsigmoid_equals_the_float_gate(low: float, high: float, tmp_path) -> None:
    scale, zero = (high - low) / 255, round(-low / ((high - low) / 255))
    model = _hardswish_graph(scale, zero, 1 / 255, 0)
    x = np.linspace(low - 1, high + 1, 2001, dtype=np.float32)
    before = _run(model, tmp_path, x, "before")
    assert uint8_hardsigmoid(model) == 1
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert "HardSigmoid" not in ops and ops.count("Clip") == 1 and ops.count("Mul") == 1
    gate, out = _run(model, tmp_path, x, "after")
    params = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    new_scale, new_zero = float(params["y_s"]), int(params["y_z"])
    if low <= -3:
        assert (new_scale, new_zero) == (pytest.approx(scale), zero)
    else:  # widened to [-3, the old top of the grid]
        assert new_scale == pytest.approx(((255 - zero) * scale + 3) / 255) and new_zero == round(3 / new_scale)
    y = (np.clip(np.round(x / new_scale) + new_zero, 0, 255) - new_zero) * new_scale
    exact = np.clip(y / 6 + 0.5, 0, 1)
    # one zero point rounded: the gate is off by at most half a step of its grid (scale / 6 / 2)
    assert np.abs(gate - exact).max() <= new_scale / 12 + 1e-6
    assert np.abs(out - y * exact).max() <= np.abs(y).max() * new_scale / 12 + 1e-5
    # against the graph before the rewrite (whose gate had its own 1/255 grid) where y was representable before
    inside = (x >= low) & (x <= high)
    # (both inputs on their own grids: half a step each, over 6; plus the rounded zero point and the old gate grid)
    assert np.abs(gate - before[0])[inside].max() <= new_scale / 6 + scale / 12 + 1 / 510 + 1e-6


def test_uint8_hardsigmoid_leaves_other_graphs_alone() -> None:
    model = _hardswish_graph(0.1, 128, 1 / 255, 0)
    model.graph.node[3].op_type = "Relu"  # the gate is not re-quantized: not the pattern
    del model.graph.node[3].input[1:]
    assert uint8_hardsigmoid(model) == 0
    assert "HardSigmoid" in {n.op_type for n in model.graph.node}


def _classifier_graph(also_used: bool = False) -> onnx.ModelProto:
    """x -> Q/DQ -> Gemm with Q/DQ int8 weights -> Q -> DQ -> y, as ONNX Runtime's quantizer writes a classifier."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w"]),
        helper.make_node("Gemm", ["x_dq", "w", "b"], ["logits"], transB=1, name="fc"),
        helper.make_node("QuantizeLinear", ["logits", "y_s", "y_z"], ["y_q"]),
        helper.make_node("DequantizeLinear", ["y_q", "y_s", "y_z"], ["y"]),
    ]
    outputs = ["y", "logits"] if also_used else ["y"]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 10]) for n in outputs],
        initializer=[
            _init("x_s", 4 / 255, np.float32),
            _init("x_z", 0, np.uint8),
            numpy_helper.from_array(rng.integers(-127, 128, (10, 16)).astype(np.int8), "w_q"),
            _init("w_s", 0.01, np.float32),
            numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "b"),
            _init("y_s", 0.2, np.float32),  # the logits span about +-20: on this grid, unclipped
            _init("y_z", 128, np.uint8),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_float_logits_drops_the_output_rounding_only(tmp_path) -> None:
    model = _classifier_graph()
    x = np.random.default_rng(1).uniform(0, 4, (64, 16)).astype(np.float32)
    (rounded,) = _run(model, tmp_path, x, "rounded")
    assert float_logits(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "DequantizeLinear", "DequantizeLinear", "Gemm"]
    (logits,) = _run(model, tmp_path, x, "float")
    # the int8 product, unrounded: the logits were on a 0.2 grid before, are within half a step of it now, and off it
    assert np.abs(logits - rounded).max() <= 0.1 + 1e-5
    assert len(np.unique(rounded)) <= 256 and len(np.unique(logits)) == logits.size == 640
    assert float_logits(model) == 0  # nothing left to rewrite
    shared = _classifier_graph(also_used=True)  # the float logits are a graph output too: the pair stays
    assert float_logits(shared) == 0 and len(shared.graph.node) == 6


def _pool_graph(**attrs) -> onnx.ModelProto:
    node = helper.make_node("AveragePool", ["x"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6, 15, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("attrs", "rewritten"),
    [
        ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}, 1),
        ({"kernel_shape": [2, 3], "strides": [2, 1]}, 1),  # no padding: the count never matters
        ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 0),  # borders divide by fewer
        ({"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, 0),
    ],
)
def test_avgpool_as_conv_is_exact_or_leaves_the_pool(attrs: dict, rewritten: int, tmp_path) -> None:
    model = _pool_graph(**attrs)
    x = np.random.default_rng(0).standard_normal((2, 6, 15, 12)).astype(np.float32)
    (want,) = _run(model, tmp_path, x, "pool")
    new, count = avgpool_as_conv(model)
    assert count == rewritten
    assert ("Conv" in {n.op_type for n in new.graph.node}) == bool(rewritten)
    (got,) = _run(new, tmp_path, x, "conv")
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------- the chapter's newer nets, at an odd size

# one model per architecture the timeline added (widths and the Lite compound scaling share a code path), except those
# whose own model tests run this check: nasnet_a_mobile, ghostnet_x0_5, efficientnet_lite0, mobilenet_v4_conv_small.
# EfficientNet-B0 adds SE and swish to Lite0's path, MobileNetV4 Conv-M the fused IB stem that Conv-S lacks
TIMELINE_NETS = ["squeezenet1_0", "squeezenet1_1", "squeezenet1_0_simple_bypass", "mnasnet_a1_x0_35",
                 "mnasnet_b1_x0_5", "mnasnet_small", "efficientnet_b0", "mobilenet_v4_conv_medium"]  # fmt: skip


@pytest.mark.parametrize("name", TIMELINE_NETS)
def test_onnx_and_int8_at_an_odd_size_and_another_batch(name: str, tmp_path) -> None:
    import torch

    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    res = (75, 67)  # odd sides: ceil-mode pools, TF "same" padding and valid convs all round differently
    # the fp32 file is traced at batch 1 and checked at batch 3 by export_onnx (ParityError beyond the tolerance)
    r = export_onnx(model, tmp_path / "m.onnx", resolution=res, check_batch=3)
    assert r.max_abs_diff is not None and r.max_abs_diff <= 1e-3
    cal = random_batches(3, res, num_images=8, batch_size=4)
    q = quantize(r.path, cal, out_path=tmp_path / "m.int8.onnx")
    x = np.random.default_rng(1).standard_normal((5, 3, *res), dtype=np.float32)
    s32, s8 = onnx_session(r.path, 1), onnx_session(q.path, 1)
    want = s32.run(None, {s32.get_inputs()[0].name: x})[0]
    got = s8.run(None, {s8.get_inputs()[0].name: x})[0]
    assert got.shape == want.shape == (5, 10) and np.isfinite(got).all()
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9  # int8 follows fp32 (random weights and inputs)
