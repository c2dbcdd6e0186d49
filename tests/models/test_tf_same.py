"""TensorFlow "SAME" padding of stride-2 ops: windows, output sizes and the pooled values at odd and even sizes,
against TF's definition; ONNX export at a fixed size (opset 7) and with a dynamic height and width (opset 11)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mobilezoo.deploy import onnx_session
from mobilezoo.models.tf_same import SamePad, avg_pool_3x3_same, avg_pool_same, max_pool_3x3_same, pad_same


def _tf_same(n: int, kernel: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of a stride-2 op, from its definition: (before, after)."""
    total = max((math.ceil(n / 2) - 1) * 2 + kernel - n, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize(("height", "width"), [(9, 8), (8, 9), (10, 10), (7, 7)])
def test_tf_same_padding_puts_the_extra_pixel_right_and_bottom(height: int, width: int) -> None:
    """After pad_same, a stride-2 conv whose kernel is a centre delta returns the pixels its windows are centred on:
    TF centres them on the last pixel, so an even side starts at pixel 1 and an odd side at 0 (PyTorch's symmetric
    padding would centre them on 0 for both); the output is ceil(n / 2). Max and average pools match TF's: the max
    over the valid pixels (-inf padding), the mean over the valid pixels (pads not counted)."""
    x = torch.randn(2, 3, height, width)
    for kernel in (3, 5, 7):
        delta = torch.zeros(3, 1, kernel, kernel)
        delta[:, :, kernel // 2, kernel // 2] = 1.0
        out = F.conv2d(pad_same(x, kernel), delta, stride=2, groups=3)
        assert out.shape[-2:] == (math.ceil(height / 2), math.ceil(width / 2))
        torch.testing.assert_close(out, x[:, :, 1 - height % 2 :: 2, 1 - width % 2 :: 2], atol=0, rtol=0)
    (top, bottom), (left, right) = _tf_same(height, 3), _tf_same(width, 3)
    padded = F.pad(x, (left, right, top, bottom), value=-math.inf)
    torch.testing.assert_close(F.max_pool2d(pad_same(x, 3, "replicate"), 3, 2), F.max_pool2d(padded, 3, 2))
    got = avg_pool_same(x)
    assert got.shape[-2:] == (math.ceil(height / 2), math.ceil(width / 2))
    for i in range(got.shape[2]):
        for j in range(got.shape[3]):
            rows = slice(max(2 * i - top, 0), min(2 * i - top + 3, height))
            cols = slice(max(2 * j - left, 0), min(2 * j - left + 3, width))
            torch.testing.assert_close(got[:, :, i, j], x[:, :, rows, cols].mean((2, 3)))


class _SameOps(nn.Module):
    """A stride-2 depthwise conv, max pool and average pool with TF SAME padding, summed."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = SamePad(5)
        self.conv = nn.Conv2d(3, 3, 5, stride=2, groups=3)
        self.max = max_pool_3x3_same(2)
        self.avg = avg_pool_3x3_same(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x)) + self.max(x) + self.avg(x)


def _export(model: nn.Module, path, opset: int, dynamic_hw: bool) -> None:
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    with pytest.warns(DeprecationWarning):  # the TorchScript-based exporter's notice
        torch.onnx.export(
            model, (torch.randn(1, 3, 16, 12),), str(path), dynamo=False, opset_version=opset,
            input_names=["input"], dynamic_axes={"input": axes},
        )  # fmt: skip


@pytest.mark.parametrize(("opset", "dynamic_hw"), [(7, False), (11, True), (17, True)])
def test_onnx_export_is_exact_at_a_fixed_and_a_dynamic_size(opset: int, dynamic_hw: bool, tmp_path) -> None:
    """A fixed-size export has constant pads (opset 7's Pad takes no others); a dynamic one computes them from the
    input's shape, so odd and even sizes other than the traced one stay exact."""
    model = _SameOps().eval()
    _export(model, tmp_path / "same.onnx", opset, dynamic_hw)
    session = onnx_session(tmp_path / "same.onnx", threads=1)
    for shape in [(2, 3, 16, 12), *([(1, 3, 15, 13), (3, 3, 9, 20)] if dynamic_hw else [])]:
        x = torch.randn(*shape)
        got = session.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == want.shape == (shape[0], 3, math.ceil(shape[2] / 2), math.ceil(shape[3] / 2))
        assert np.abs(got - want).max() < 1e-5


def test_dynamic_size_below_opset_11_is_refused(tmp_path) -> None:
    with pytest.raises(Exception, match=r"'SAME' padding .* needs ONNX opset >= 11 for a dynamic height and width"):
        _export(_SameOps().eval(), tmp_path / "same.onnx", 9, dynamic_hw=True)
