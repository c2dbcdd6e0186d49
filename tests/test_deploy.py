"""Tests of mobilezoo.deploy: BN folding, ONNX export + ONNX Runtime parity, int8, TorchScript/torch.export, auto."""

from __future__ import annotations

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
    with pytest.raises(ValueError, match="opset 13"):
        export_onnx(model, tmp_path / "m.onnx", opset=13)
    with pytest.raises(ValueError, match="opset 99"):
        export_onnx(model, tmp_path / "m.onnx", opset=99)
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
    assert main(["export", "--model", "mobilenet_v2", "--opset", "11", "--out", str(out)]) == 2
    assert "unsupported opset 11" in capsys.readouterr().err
