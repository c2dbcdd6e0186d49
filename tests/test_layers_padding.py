"""TensorFlow "SAME" padding (``padding="tf"``) and the BatchNorm epsilon: what the TF-trained checkpoints need."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mobilezoo
from mobilezoo.layers import Conv2dSame, ConvNormAct, set_bn_eps, use_tf_padding


def tf_same_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """TF's rule written out: output ceil(n / s); the total pad split with its odd pixel after (bottom/right)."""
    pads = []
    for n, k, s in zip(x.shape[-2:], conv.kernel_size, conv.stride):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, conv.bias, conv.stride, 0, 1, conv.groups)


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("size", [7, 8, 9, 12])
def test_conv2d_same_is_tensorflows_same(kernel: int, size: int) -> None:
    stride = 2
    conv = Conv2dSame(4, 6, kernel, stride, groups=2)
    x = torch.randn(2, 4, size, size + 1)
    out = conv(x)
    assert out.shape[-2:] == (math.ceil(size / stride), math.ceil((size + 1) / stride))
    torch.testing.assert_close(out, tf_same_conv(x, conv))


def test_tf_padding_differs_from_symmetric_only_on_even_strided_sides() -> None:
    conv = nn.Conv2d(3, 5, 3, 2, 1)
    same = Conv2dSame(3, 5, 3, 2)
    same.load_state_dict(conv.state_dict())
    odd = torch.randn(1, 3, 9, 9)
    torch.testing.assert_close(same(odd), conv(odd))  # TF pads 1 + 1 there too
    even = torch.randn(1, 3, 8, 8)
    assert not torch.allclose(same(even), conv(even))  # TF pads 0 before, 1 after


def test_use_tf_padding_replaces_strided_convs_and_keeps_weights() -> None:
    block = nn.Sequential(
        ConvNormAct(3, 8, 3, stride=2), ConvNormAct(8, 8, 3, groups=8), ConvNormAct(8, 4, 1), nn.Conv2d(4, 4, 1, 2)
    )
    before = {k: v.clone() for k, v in block.state_dict().items()}
    use_tf_padding(block)
    assert type(block[0][0]) is Conv2dSame and type(block[1][0]) is nn.Conv2d and type(block[2][0]) is nn.Conv2d
    assert type(block[3]) is nn.Conv2d  # a strided 1x1 conv: TF pads nothing either
    assert block.state_dict().keys() == before.keys()
    assert all(torch.equal(block.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(ValueError, match=r"conv '0' \(kernel \(2, 2\), padding \(0, 0\)\) has no TF 'SAME'"):
        use_tf_padding(nn.Sequential(nn.Conv2d(3, 3, 2, 2)))
    with pytest.raises(ValueError, match=r"conv '0' .*stride \(3, 3\).*square kernels at stride 2"):
        use_tf_padding(nn.Sequential(nn.Conv2d(3, 3, 3, 3, 1)))


def test_tf_padding_in_fx_graphs_torchscript_and_onnx(tmp_path) -> None:
    import onnxruntime as ort

    from mobilezoo.deploy.onnx_export import export_onnx

    model = mobilezoo.create_model("mobilenet_v3_small_minimal", padding="tf").train()
    with torch.no_grad():  # BN statistics of a batch: feature maps of order 1
        model(torch.randn(8, 3, 96, 96))
    model.eval()
    body = nn.Sequential(*model.features).eval()  # compared on feature maps (the random-init logits are tiny)
    graph = torch.fx.symbolic_trace(body)
    assert sum("pad_same" in str(n.target) for n in graph.graph.nodes) == 5  # a leaf per strided conv
    scripted = torch.jit.script(body)
    path = export_onnx(body, tmp_path / "tf.onnx", resolution=96, dynamic_hw=True).path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in ((64, 66), (97, 97)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            ref = body(x)
            torch.testing.assert_close(graph(x), ref)
            torch.testing.assert_close(scripted(x), ref)
        out = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        torch.testing.assert_close(out, ref, atol=1e-4 * ref.abs().max(), rtol=0)


def test_mobilenet_v3_padding_and_bn_eps_options() -> None:
    # train mode: BN normalises each batch, so the random-init feature maps are of order 1 (eval mode: ~1e-8)
    default = mobilezoo.create_model("mobilenet_v3_small").train()
    tf = mobilezoo.create_model("mobilenet_v3_small", padding="tf").train()
    tf.load_state_dict(default.state_dict())
    strided = [m for m in tf.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    assert strided and all(isinstance(m, Conv2dSame) for m in strided)
    with torch.no_grad():
        odd = torch.randn(2, 3, 97, 97)  # 97 -> 49 -> 25 -> 13 -> 7: every strided input is odd
        ref = default.forward_features(odd)
        assert ref.abs().max() > 0.1
        torch.testing.assert_close(tf.forward_features(odd), ref, atol=1e-5 * ref.abs().max(), rtol=0)
        even = torch.randn(2, 3, 96, 96)
        ref = default.forward_features(even)
        assert (tf.forward_features(even) - ref).abs().max() > 0.01 * ref.abs().max()
    eps = mobilezoo.create_model("mobilenet_v3_small", bn_eps=1e-5)
    assert {m.eps for m in eps.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-5}
    assert {m.eps for m in default.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    with pytest.raises(ValueError, match=r"padding must be one of \('symmetric', 'tf'\), got 'same'"):
        mobilezoo.create_model("mobilenet_v3_small", padding="same")
    with pytest.raises(ValueError, match="bn_eps must be a number > 0, got 0"):
        mobilezoo.create_model("mobilenet_v3_small", bn_eps=0)
    with pytest.raises(ValueError, match="bn_eps must be a number > 0"):
        set_bn_eps(nn.BatchNorm2d(3), -1.0)
