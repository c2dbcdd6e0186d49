"""Tests of mobilezoo.deploy: BN folding, ONNX export + ONNX Runtime parity, int8, TorchScript/torch.export, auto."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from torch import nn

from mobilezoo import create_model, list_models
from mobilezoo.cli import main
from mobilezoo.deploy import (
    ParityError,
    count_batchnorms,
    export_onnx,
    export_torch,
    fuse,
    load_onnx,
    onnx_parity,
    onnx_session,
    quantize,
    unshuffle,
)
from tests.models.representatives import REPRESENTATIVES

ALL = list_models()


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so that folding them is actually exercised."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=gen))
    return model.eval()


def _build(name: str) -> nn.Module:
    return _randomize_bn(create_model(name))


@pytest.mark.parametrize("name", ALL)
def test_fuse_matches_unfused(name: str) -> None:
    model = _build(name)
    had = count_batchnorms(model)
    fused = fuse(model)
    assert count_batchnorms(fused) == 0
    assert count_batchnorms(model) == had  # fuse works on a copy
    assert not fused.training
    x = torch.randn(2, model.in_chans, 64, 48)
    with torch.inference_mode():
        want, got = model(x), fused(x)
    scale = max(1.0, float(want.abs().max()))
    assert float((got - want).abs().max()) <= 1e-5 * scale


def test_fuse_folds_linear_bn_and_rejects_non_modules() -> None:
    model = _randomize_bn(nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.BatchNorm1d(5), nn.ReLU()))
    fused = fuse(model, resolution=2)
    x = torch.randn(4, 3, 2, 2)
    assert count_batchnorms(fused) == 0
    torch.testing.assert_close(fused(x), model(x), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="nn.Module"):
        fuse("mobilenet_v2")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ALL)
def test_onnx_export_parity_dynamic_batch(name: str, tmp_path) -> None:
    model = _build(name)
    res = (96, 64)  # VGG-16's 7x7 adaptive pool of a 3x2 map is exported as matmuls
    r = export_onnx(model, tmp_path / f"{name}.onnx", resolution=res, check_batch=3)
    assert r.exporter == "torchscript"
    assert r.check_batch == 3 and r.max_abs_diff is not None
    graph = onnx.load(str(r.path), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [model.in_chans, *res]
    # export_onnx traced at batch 1 and checked a batch of 3 within 1e-4 + 1e-5 * max|logit|: no shape is baked in
    assert r.max_abs_diff <= 1e-3


def test_onnx_native_hard_activations_and_shuffle(tmp_path) -> None:
    r = export_onnx(_build("mobilenet_v3_small"), tmp_path / "v3.onnx", resolution=64)
    model = load_onnx(r.path)
    ops = {n.op_type for n in model.graph.node}
    assert {"HardSwish", "HardSigmoid"} <= ops
    assert model.opset_import[0].version == 17
    v2 = _build("shufflenet_v2_x0_5")
    r = export_onnx(v2, tmp_path / "v2.onnx", resolution=(192, 160), check_batch=3, fold_shuffles=False)
    ops = [n.op_type for n in load_onnx(r.path).graph.node]
    # each shuffle is one Gather of a constant permutation, each split two constant Slices: no shape arithmetic
    assert ops.count("Gather") == 16 and ops.count("Slice") == 26 and not r.folded_shuffles
    assert not {"Shape", "Reshape", "Transpose", "Div"} & set(ops)
    assert onnx_parity(r.path, v2, torch.randn(5, 3, 192, 160)) < 1e-4
    # by default the shuffles are folded into the weights: no Gather, no Split, the same outputs
    r = export_onnx(v2, tmp_path / "v2f.onnx", resolution=(192, 160), check_batch=3)
    ops = {n.op_type for n in load_onnx(r.path).graph.node}
    assert r.folded_shuffles and not {"Gather", "Split", "Shape", "Reshape", "Transpose"} & ops
    assert onnx_parity(r.path, v2, torch.randn(5, 3, 192, 160)) < 1e-4


@pytest.mark.parametrize("name", [n for n in ALL if n.startswith("shufflenet_v2")])
@pytest.mark.parametrize("compat", [False, True], ids=["official", "torchvision"])
def test_unshuffle_computes_the_same_function(name: str, compat: bool) -> None:
    model = _randomize_bn(create_model(name, torchvision_compat=compat, num_classes=7))
    folded = unshuffle(model)
    x = torch.randn(3, 3, 96, 64)
    with torch.inference_mode():
        want, got = model(x), folded(x)
    assert float((got - want).abs().max()) <= 1e-5 * max(1.0, float(want.abs().max()))
    assert model.stage2[0].branch2[0].weight.data_ptr() != folded.stages[0].branch2[0].weight.data_ptr()  # a copy
    # each stride-1 unit reads its input as a few contiguous slices of stored branch outputs
    assert all(1 <= len(takes) <= 8 for stage in folded.stages for takes in stage.takes)
    with pytest.raises(TypeError, match="ShuffleNetV2"):
        unshuffle(create_model("shufflenet_v1_g3_x1_0"))


def test_onnx_session_streams_split_the_batch(tmp_path) -> None:
    from mobilezoo.deploy.streams import StreamedSession

    model = _build("shufflenet_v1_g3_x1_0")
    path = export_onnx(model, tmp_path / "m.onnx", resolution=32).path
    plain, streamed = onnx_session(path, threads=1), onnx_session(path, threads=2, streams=2)
    assert isinstance(streamed, StreamedSession) and streamed.streams == 2
    assert streamed.session.get_session_options().intra_op_num_threads == 1  # each stream gets its share
    for batch in (5, 1):  # 3 + 2 images at once; a single image runs as one call
        x = torch.randn(batch, 3, 32, 32).numpy()
        (want,) = plain.run(None, {"input": x})
        (got,) = streamed.run(None, {"input": x})
        assert got.shape == want.shape and float(abs(got - want).max()) < 1e-5
    streamed.close()
    with pytest.raises(ValueError, match="multiple of streams"):
        onnx_session(path, threads=3, streams=2)
    with pytest.raises(ValueError, match="streams must be"):
        onnx_session(path, threads=2, streams=0)


def test_export_records_the_architecture(tmp_path) -> None:
    from mobilezoo.deploy.onnx_export import architecture

    r = export_onnx(create_model("mobilenet_v3_small"), tmp_path / "m.onnx", resolution=32)
    assert architecture(r.path) == "MobileNetV3"
    r = export_onnx(_build("shufflenet_v2_x0_5"), tmp_path / "s.onnx", resolution=32)
    assert r.folded_shuffles and architecture(r.path) == "ShuffleNetV2"  # the model's class, not the folded copy
    proto = onnx.load(str(r.path))
    del proto.metadata_props[:]
    assert architecture(proto) is None


def test_onnx_bad_input(tmp_path) -> None:
    model = create_model("mobilenet_v3_small")
    for opset in (6, 21, 99):  # the TorchScript-based exporter's range is 7..20
        with pytest.raises(ValueError, match=rf"unsupported opset {opset}: .* supports opsets 7\.\.20"):
            export_onnx(model, tmp_path / "m.onnx", opset=opset)
    with pytest.raises(ValueError, match="batch_size .* must be an integer >= 1, got 0"):
        export_onnx(model, tmp_path / "m.onnx", dynamic_batch=False, batch_size=0)
    with pytest.raises(ValueError, match="batch_size=4 fixes the batch: pass dynamic_batch=False"):
        export_onnx(model, tmp_path / "m.onnx", batch_size=4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_onnx(model, tmp_path / "missing" / "m.onnx")
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(model, tmp_path / "m.txt")
    with pytest.raises(ValueError, match="too small"):
        export_onnx(model, tmp_path / "m.onnx", resolution=16)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model\x00\xff" * 10)
    for call in (
        load_onnx,
        onnx_session,
        lambda p: quantize(p, [torch.zeros(1, 3, 32, 32)], out_path=tmp_path / "q.onnx"),
    ):
        with pytest.raises(ValueError, match="not a valid ONNX model"):
            call(junk)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        load_onnx(empty)
    with pytest.raises(FileNotFoundError):
        onnx_session(tmp_path / "nope.onnx")


def test_parity_error_is_raised(tmp_path, monkeypatch) -> None:
    model = create_model("mobilenet_v3_small").eval()
    import mobilezoo.deploy.onnx_export as ox

    monkeypatch.setattr(ox, "onnx_parity", lambda *a, **k: 1.0)
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export_onnx(model, tmp_path / "m.onnx", resolution=32)


# ------------------------------------------------------------------- older opsets, dynamic sizes, a fixed batch


def _ops(path) -> dict[str, int]:
    ops: dict[str, int] = {}
    for node in load_onnx(path).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return ops


# 7 is the TorchScript-based exporter's lowest opset (no constant folding below 9), 13 a middle one (per-channel QDQ);
# VGG-16 (~10 s an export for its 120M FC weights) only at the lowest, where its pool is exported as matmuls
@pytest.mark.parametrize(
    ("name", "opset"), [(n, o) for n in REPRESENTATIVES for o in (7, 13) if not (n == "vgg16" and o == 13)]
)
def test_onnx_older_opsets_parity(name: str, opset: int, tmp_path) -> None:
    model = _build(name)
    for fold in [True, False] if name.startswith("shufflenet_v2") else [True]:
        r = export_onnx(
            model, tmp_path / f"m{fold}.onnx", resolution=(64, 48), opset=opset, check_batch=3, fold_shuffles=fold
        )
        assert r.opset == opset == load_onnx(r.path).opset_import[0].version and r.exporter == "torchscript"
        with torch.inference_mode():
            scale = float(model(torch.randn(3, 3, 64, 48)).abs().max())
        assert scale > 1e-3 and r.max_abs_diff <= 1e-4 + 1e-5 * scale  # not vanishing logits: a real comparison
        ops = _ops(r.path)
        assert "HardSwish" not in ops  # native only from opset 14
        if name == "mobilenet_v3_small":
            assert ops["HardSigmoid"] == 28  # 19 hard-swishes as x * HardSigmoid(x), 9 SE gates
        if name.startswith("shufflenet"):
            gathers = 0 if fold and name.startswith("shufflenet_v2") else 16
            # the only Transpose below opset 9 is the FC weight's, which torch does not fold there
            assert ops.get("Gather", 0) == gathers and "Reshape" not in ops
            assert ops.get("Transpose", 0) == (1 if opset < 9 else 0)


@pytest.mark.parametrize("opset", [7, 11, 13, 14])
def test_hard_activations_at_every_opset_match_pytorch(opset: int, tmp_path) -> None:
    """Below opset 14 HardSwish is x * HardSigmoid(x): exact on every piece (< -3, -3..3, > 3, the kinks)."""
    model = nn.Sequential(nn.Hardswish(), nn.Hardsigmoid()).eval()
    x = torch.cat([torch.linspace(-8, 8, 161), torch.tensor([-3.0, 3.0, 0.0, -2.999, 2.999])]).view(1, 1, 1, -1)
    path = tmp_path / "act.onnx"
    with pytest.warns(DeprecationWarning):  # the TorchScript-based exporter's notice
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=["input"])
    ops = _ops(path)
    assert ("HardSwish" in ops) == (opset >= 14) and "HardSigmoid" in ops
    assert onnx_parity(path, model, x) <= 1e-6


@pytest.mark.parametrize("name", [n for n in REPRESENTATIVES if n != "vgg16"])
def test_onnx_dynamic_height_and_width(name: str, tmp_path) -> None:
    model = _build(name)
    r = export_onnx(model, tmp_path / "m.onnx", resolution=64, opset=11, dynamic_hw=True)  # GoogLeNet: opset >= 10
    assert r.dynamic_hw and r.check_resolutions == ((64, 64), (97, 81)) and r.max_abs_diff <= 1e-3
    dims = load_onnx(r.path).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    for shape in [(1, 3, 32, 32), (2, 3, 45, 160)]:  # the smallest input and an odd, wide one
        x = torch.randn(*shape)
        with torch.inference_mode():
            scale = float(model(x).abs().max())
        assert onnx_parity(r.path, model, x) <= 1e-4 + 1e-5 * scale


def test_onnx_dynamic_height_and_width_refusals(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"VGG16Net cannot .* dynamic height and width at opset 17: avgpool \(adapt"):
        export_onnx(create_model("vgg16", num_classes=2), tmp_path / "v.onnx", resolution=64, dynamic_hw=True)
    with pytest.raises(ValueError, match=r"GoogLeNet .* at opset 9: maxpool1, .*ceil-mode pooling, symbolic only fr"):
        export_onnx(create_model("googlenet"), tmp_path / "g.onnx", resolution=64, opset=9, dynamic_hw=True)
    with pytest.raises(ValueError, match="dynamic_hw is implemented with the TorchScript-based exporter"):
        export_onnx(create_model("mobilenet_v3_small"), tmp_path / "m.onnx", opset=18, dynamic_hw=True, dynamo=True)


def test_onnx_fixed_batch(tmp_path) -> None:
    model = _build("shufflenet_v2_x0_5")
    r = export_onnx(model, tmp_path / "m.onnx", resolution=(48, 64), opset=9, dynamic_batch=False, batch_size=4)
    assert r.batch_size == 4 and r.check_batch == 4 and not r.dynamic_batch
    dims = load_onnx(r.path).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [4, 3, 48, 64]
    with pytest.raises(Exception, match="index: 0 Got: 2 Expected: 4"):  # ONNX Runtime enforces the fixed batch
        onnx_parity(r.path, model, torch.randn(2, 3, 48, 64))


def test_low_opset_export_errors_are_not_rewritten_at_opset_18(tmp_path, monkeypatch) -> None:
    """At the default opset an op the TorchScript exporter lacks falls back to the dynamo exporter (opset 18); at an
    explicitly lower opset, a runtime's requirement, the error is raised instead of a file of another opset."""
    import mobilezoo.deploy.onnx_export as ox

    def refuse(*args, **kwargs):
        raise torch.onnx.errors.OnnxExporterError("no symbolic for this op")

    def dynamo(model, path, x, opset, outputs, dynamic_batch):
        raise RuntimeError(f"dynamo at opset {opset}")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    monkeypatch.setattr(ox, "_export_dynamo", dynamo)
    model = create_model("mobilenet_v3_small")
    with pytest.raises(torch.onnx.errors.OnnxExporterError, match="no symbolic"):
        export_onnx(model, tmp_path / "m.onnx", resolution=32, opset=11)
    with pytest.raises(RuntimeError, match="dynamo at opset 18"):
        export_onnx(model, tmp_path / "m.onnx", resolution=32)


def test_int8_needs_opset_13(tmp_path) -> None:
    model = create_model("mobilenet_v3_small", num_classes=10)
    batches = [torch.randn(2, 3, 32, 32)]
    with pytest.raises(ValueError, match=r"int8 quantization needs ONNX opset >= 13 .*got opset 12: export int8 at"):
        quantize(model, batches, out_path=tmp_path / "q.onnx", resolution=32, opset=12)
    assert not list(tmp_path.iterdir())  # refused before anything was written
    fp32 = export_onnx(model, tmp_path / "m11.onnx", resolution=32, opset=11).path
    with pytest.raises(ValueError, match=r"got opset 11 \('.*m11\.onnx'\)"):
        quantize(fp32, batches, out_path=tmp_path / "q.onnx")
    q = quantize(model, batches, out_path=tmp_path / "q13.onnx", resolution=32, opset=13)
    assert load_onnx(q.path).opset_import[0].version >= 13 and onnx_session(q.path) is not None


def test_export_model_shapes_for_torch_formats(tmp_path) -> None:
    from mobilezoo.deploy.export import export_model

    r = export_model("mobilenet_v3_small", tmp_path / "m.pt2", format="exported-program", resolution=32,
                     dynamic_batch=False, batch_size=3)  # fmt: skip
    program = torch.export.load(str(r.path)).module()
    assert program(torch.randn(3, 3, 32, 32)).shape == (3, 1000)
    with pytest.raises(Exception, match="3"):  # the batch is fixed at 3
        program(torch.randn(2, 3, 32, 32))
    r = export_model("shufflenet_v2_x0_5", tmp_path / "m.pt", format="torchscript", resolution=32, dynamic_hw=True)
    assert r.details["dynamic_hw"] and r.details["how"] == "script" and r.max_abs_diff <= 1e-5


# torch.export takes ~10 s a model here (the models' contract tests cover it for every model): one representative
@pytest.mark.parametrize(
    "name,fmt,suffix",
    [
        ("mobilenet_v3_small", "torchscript", ".pt"),
        ("shufflenet_v1_g3_x0_5", "torchscript", ".pt"),
        ("shufflenet_v2_x0_5", "exported-program", ".pt2"),
    ],
)
def test_torch_export_parity(name: str, fmt: str, suffix: str, tmp_path) -> None:
    r = export_torch(_build(name), tmp_path / f"m{suffix}", format=fmt, resolution=(64, 96))
    assert r.max_abs_diff is not None and r.max_abs_diff <= 1e-5
    assert r.path.stat().st_size == r.size_bytes > 0


def test_torch_export_bad_input(tmp_path) -> None:
    model = create_model("mobilenet_v3_small")
    with pytest.raises(ValueError, match="unknown format"):
        export_torch(model, tmp_path / "m.pt", format="tflite")
    with pytest.raises(ValueError, match=r"\.pt2"):
        export_torch(model, tmp_path / "m.pt", format="exported-program")


# ------------------------------------------------------------------------------------------------------ auto and CLI


def test_cli_export(tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "mobilenet_v3_small", "--out", str(out), "--resolution", "64x96", "--json"]) == 0
    assert '"max_abs_diff"' in capsys.readouterr().out and out.is_file()
    args = ["export", "--model", "shufflenet_v2_x0_5", "--format", "onnx-int8", "--calib", "random"]
    assert main([*args, "--out", str(tmp_path / "q.onnx"), "--resolution", "32"]) == 0
    assert "int8" in capsys.readouterr().out
    assert main(["export", "--model", "mobilenet_v2", "--out", str(tmp_path / "x" / "m.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", "--model", "mobilenet_v2", "--opset", "6", "--out", str(out)]) == 2
    assert "unsupported opset 6" in capsys.readouterr().err


def test_cli_export_for_older_runtimes(tmp_path, capsys) -> None:
    """The issue's command: opset 11 (refused by the old floor of 17), plus a dynamic size and a fixed batch."""
    out = tmp_path / "m.onnx"
    args = ["export", "--model", "mobilenet_v2", "--format", "onnx", "--opset", "11", "--resolution", "64"]
    assert main([*args, "--out", str(out), "--dynamic-hw", "--batch", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["opset"] == 11 and report["dynamic_hw"] and report["batch_size"] == 4
    assert report["check_resolutions"] == [[64, 64], [97, 81]] and report["max_abs_diff"] < 1e-4
    dims = load_onnx(out).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == [4, 3, "height", "width"]
    for bad, message in [
        (["--format", "onnx-int8", "--calib", "random", "--opset", "12"], "int8 quantization needs ONNX opset >= 13"),
        (["--format", "exported-program", "--dynamic-hw"], "dynamic height and width is not available for exp"),
        (
            ["--format", "onnx-int8", "--calib", "random", "--opset", "13", "--batch", "2"],
            "onnx-int8 files have a dyna",
        ),
        (["--static-batch", "--batch", "3"], "--static-batch fixes the batch at 1 but --batch is 3"),
    ]:
        assert main([*args, "--out", str(out), *bad]) == 2
        assert message in capsys.readouterr().err


def test_int8_export_with_images_at_a_non_square_resolution_is_refused_clearly(tmp_path) -> None:
    from mobilezoo.deploy.export import export_model

    with pytest.raises(ValueError, match=r"square resolution \(one int\), got \(64, 32\)"):
        export_model("mobilenet_v1_x0_25", tmp_path / "q.onnx", format="onnx-int8", in_chans=1, num_classes=10,
                     resolution=(64, 32), calibration="builtin", calibration_images=16)  # fmt: skip
    assert not (tmp_path / "q.onnx").exists()


def test_export_refuses_calibration_for_fp32_and_loads_a_local_file_exactly(tmp_path) -> None:
    from mobilezoo.deploy.export import export_model

    with pytest.raises(ValueError, match="calibration images apply to the int8 formats"):
        export_model("mobilenet_v1_x0_25", tmp_path / "m.onnx", resolution=32, calibration="builtin")
    # a local file whose name starts with "torchvision" is still a local file: loaded exactly, no head swapped in
    path = tmp_path / "torchvision_finetuned.pth"
    torch.save(create_model("mobilenet_v1_x0_25", num_classes=10).state_dict(), path)
    with pytest.raises(ValueError, match="classifier"):
        export_model("mobilenet_v1_x0_25", tmp_path / "m.onnx", resolution=32, weights=str(path))
