"""Tests of mobilezoo.deploy: BN folding, ONNX export + ONNX Runtime parity, int8, TorchScript/torch.export, auto."""

from __future__ import annotations

import sys
import types

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from mobilezoo import create_model, list_models
from mobilezoo.cli import main
from mobilezoo.deploy import (
    ParityError,
    compare_accuracy,
    count_batchnorms,
    export_onnx,
    export_torch,
    fastest_backend,
    fuse,
    load_onnx,
    onnx_parity,
    onnx_session,
    quantize,
)
from mobilezoo.deploy.calibration import random_batches

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
    r = export_onnx(v2, tmp_path / "v2.onnx", resolution=(192, 160), check_batch=3)
    ops = {n.op_type for n in load_onnx(r.path).graph.node}
    assert {"Transpose", "Reshape"} <= ops and ops & {"Split", "Slice"}  # shuffle and channel split, batch-free
    assert onnx_parity(r.path, v2, torch.randn(5, 3, 192, 160)) < 1e-4


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


# ------------------------------------------------------------------------------------------------------------- int8

RES = 32


def _digits(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The built-in 28x28 digits padded to 32x32 and normalised (a few ms, unlike PIL transforms per image)."""
    from mobilezoo.data import BUILTIN_MEAN, BUILTIN_STD, BuiltinDigits

    d = BuiltinDigits(split)
    x = (torch.from_numpy(d.images[:n]).float() / 255 - BUILTIN_MEAN[0]) / BUILTIN_STD[0]
    x = nn.functional.pad(x, (2, 2, 2, 2), value=-BUILTIN_MEAN[0] / BUILTIN_STD[0]).unsqueeze(1)
    return x, torch.tensor(d.targets[:n])


@pytest.fixture(scope="module")
def digits() -> dict[str, list]:
    """2,000 training images, the next 256 for calibration, 600 validation images."""
    x, y = _digits("train", 2256)
    xv, yv = _digits("val", 600)
    return {
        "train": [(x[:2000], y[:2000])],
        "calib": [x[i : i + 64] for i in range(2000, 2256, 64)],
        "val": [(xv[i : i + 200], yv[i : i + 200]) for i in range(0, 600, 200)],
    }


def _train(name: str, train: list, steps: int = 80) -> nn.Module:
    """A few seconds of AdamW (one cycle) on the digits, then BN statistics re-estimated for eval."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1, drop_rate=0.0)
    x_all, y_all = train[0]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y_all), (32,), generator=gen)
        loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    # MobileNetV3's BN momentum 0.01 leaves running stats far from converged after 80 steps: estimate them afresh
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for i in range(0, 512, 128):
            model(x_all[i : i + 128])
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_v2_x1_0", "mobilenet_v3_small"])
def test_int8_keeps_top1_within_one_point(name: str, digits, tmp_path) -> None:
    model = _train(name, digits["train"])
    q = quantize(model, digits["calib"], out_path=tmp_path / "m.int8.onnx", resolution=RES)
    assert q.calibration_images == 256
    assert q.size_bytes < q.fp32_size_bytes / 2.5
    acc = compare_accuracy(q.fp32_path, q.path, digits["val"])
    assert acc.images == 600
    assert acc.top1_reference > 40.0, "the fp32 model did not learn: the int8 comparison would be empty"
    assert acc.delta >= -1.0, acc.to_dict()  # int8 loses at most 1 point (it may gain by chance)
    assert acc.agreement >= 93.0, acc.to_dict()
    # the fp32 ONNX file is the PyTorch model
    assert compare_accuracy(model, q.fp32_path, digits["val"]).agreement == 100.0


def test_quantize_options_and_bad_input(tmp_path) -> None:
    model = create_model("mobilenet_v3_small", num_classes=10).eval()
    cal = random_batches(3, (32, 32), num_images=8, batch_size=4)
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
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        quantize(q.fp32_path, [np.zeros((3, 32, 32), np.float32)], out_path=tmp_path / "c.onnx")
    with pytest.raises(FileNotFoundError):
        quantize(model, cal, out_path=tmp_path / "nodir" / "c.onnx", resolution=32)


# ------------------------------------------------------------------------------------------------------ auto and CLI


def test_fastest_backend_picks_the_fastest_that_runs(monkeypatch) -> None:
    medians = {"eager": 5.0, "torchscript": 3.0, "onnxruntime": 2.0, "onnxruntime-int8": 1.0}

    def benchmark(model, *, backend, batch_size, **kw):
        if backend == "torchscript":
            raise RuntimeError("script failed")
        return types.SimpleNamespace(median_ms=medians[backend], throughput=1000 * batch_size / medians[backend])

    fake = types.ModuleType("mobilezoo.benchmark")
    fake.benchmark = benchmark
    fake.available_backends = lambda: (*medians, "compile")
    monkeypatch.setitem(sys.modules, "mobilezoo.benchmark", fake)
    choice = fastest_backend("mobilenet_v2", 4)
    assert choice.best == "onnxruntime" and choice.median_ms == 2.0
    assert set(choice.results) == {"eager", "torchscript", "onnxruntime"}
    assert "script failed" in choice.results["torchscript"]["error"]
    assert fastest_backend("mobilenet_v2", 4, include_int8=True).best == "onnxruntime-int8"
    with pytest.raises(ValueError, match="batch_size"):
        fastest_backend("mobilenet_v2", 0)


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
