"""MobileNetV4 specifics: every counted paper_numbers.csv row of the conv models, the paper-vs-count gaps of Conv-M/L,
the UIB's four cases, the block tables, the TF training defaults (BN, dropout, stochastic depth), timm parity, and
ONNX / int8 export of Conv-S. The hybrids (Mobile MQA) are not built: their rows stay unregistered."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from mobilezoo import create_model, list_models, model_card
from mobilezoo.deploy import onnx_session
from mobilezoo.deploy.export import export_model
from mobilezoo.layers import ConvNormAct
from mobilezoo.models.mobilenet_v4 import (
    ARCHS,
    UIB,
    ConvBN,
    FusedIB,
    FusedInvertedBottleneck,
    MobileNetV4,
    UniversalInvertedBottleneck,
)
from mobilezoo.registry import PaperRow, paper_rows
from tests.models.helpers import counts

ROWS = [r for r in paper_rows() if r.family == "MobileNetV4"]
VARIANTS = {
    "mnv4_conv_s_224": "mobilenet_v4_conv_small",
    "mnv4_conv_m_256": "mobilenet_v4_conv_medium",
    "mnv4_conv_l_384": "mobilenet_v4_conv_large",
}
# the optional hybrids (Mobile MQA attention) are not built
NOT_BUILT = {"mnv4_hybrid_m_256", "mnv4_hybrid_l_384"}
BN = {"bn_eps": 1e-5, "bn_momentum": 0.1}


def test_every_row_is_mapped_or_not_built() -> None:
    assert {r.variant for r in ROWS} == set(VARIANTS) | NOT_BUILT
    assert list_models("mobilenet_v4*") == sorted(VARIANTS.values())
    assert not {model_card(n).paper_variant for n in list_models()} & NOT_BUILT


@pytest.mark.parametrize("row", [r for r in ROWS if r.variant in VARIANTS], ids=lambda r: r.variant)
def test_counts_match_paper_numbers(row: PaperRow) -> None:
    assert row.counted_params is not None and row.counted_madds_m is not None  # no MNv4 count is withheld
    params, params_no_bn, madds = counts(VARIANTS[row.variant], row.resolution)
    assert params == row.counted_params
    assert madds == pytest.approx(row.counted_madds_m, rel=0.005)
    no_bn = re.search(r"\[impl params without BN gamma/beta: (\d+)\]", row.notes)
    assert no_bn is not None, row.notes
    assert params_no_bn == int(no_bn.group(1))


# the paper's figure vs the count, relative: (params, MAdds); the card states each
GAPS = {
    "mobilenet_v4_conv_small": (-0.007, -0.070),  # 186.01M is "0.2G" at the table's one significant digit
    "mobilenet_v4_conv_medium": (0.056, 0.080),
    "mobilenet_v4_conv_large": (0.051, 0.081),
}


@pytest.mark.parametrize("name", sorted(GAPS))
def test_paper_gaps_are_measured_and_on_the_card(name: str) -> None:
    """Conv-S matches the paper at its rounding (3.8M / 0.2G); Conv-M and Conv-L count 5-6% more params and 8% more
    MAdds than the paper prints, with the TF spec and timm agreeing block for block: the card says so, by how much."""
    card = model_card(name)
    params, _, madds = counts(name, card.resolution)
    gap_params = params / (card.paper_params_m * 1e6) - 1
    gap_madds = madds / card.paper_madds_m - 1
    want_params, want_madds = GAPS[name]
    assert gap_params == pytest.approx(want_params, abs=0.0005)
    assert gap_madds == pytest.approx(want_madds, abs=0.0005)
    assert f"{params:,}" in card.notes and f"{madds:.2f}M" in card.notes
    if name == "mobilenet_v4_conv_small":
        assert round(params / 1e6, 1) == card.paper_params_m and round(madds / 1e3, 1) == card.paper_madds_m / 1e3
    else:
        assert "DISCREPANCY" in card.notes
        assert f"+{100 * want_params:.1f}%" in card.notes and f"+{100 * want_madds:.1f}%" in card.notes


def test_medium_at_224_is_not_the_papers_figure_either() -> None:
    """The csv's note for Conv-M: 827.65M at 224; the paper's 1.0G lies between 224 and 256, at neither."""
    assert counts("mobilenet_v4_conv_medium", 224)[2] == pytest.approx(827.65, abs=0.01)
    assert "827.65M at 224" in model_card("mobilenet_v4_conv_medium").notes


def test_cards() -> None:
    for name, res, top1 in [
        ("mobilenet_v4_conv_small", 224, 73.8),
        ("mobilenet_v4_conv_medium", 256, 79.9),
        ("mobilenet_v4_conv_large", 384, 82.9),
    ]:
        card = model_card(name)
        assert (card.family, card.resolution, card.paper_top1) == ("MobileNetV4", res, top1)
        assert "arXiv:2404.10518" in card.paper and card.torchvision is None


# --------------------------------------------------------------------------------------------------- the UIB block

# (has a starting depthwise conv, has a middle one) -> the paper's name for the case
CASES = {(True, True): "ExtraDW", (False, True): "IB", (True, False): "ConvNext", (False, False): "FFN"}


def _dw(conv: ConvNormAct | None) -> tuple[int, int, bool] | None:
    """(kernel, stride, followed by an activation) of a depthwise ConvNormAct, None when absent."""
    if conv is None:
        return None
    c = conv[0]
    assert c.groups == c.in_channels == c.out_channels  # depthwise
    return c.kernel_size[0], c.stride[0], not isinstance(conv[-1], nn.BatchNorm2d)


@pytest.mark.parametrize(
    ("start", "middle", "stride", "want_start", "want_middle"),
    [
        (5, 3, 1, (5, 1, False), (3, 1, True)),  # ExtraDW
        (5, 3, 2, (5, 1, False), (3, 2, True)),  # ExtraDW: the middle one downsamples
        (0, 3, 1, None, (3, 1, True)),  # IB
        (0, 3, 2, None, (3, 2, True)),
        (5, 0, 1, (5, 1, False), None),  # ConvNext-like
        (5, 0, 2, (5, 2, False), None),  # ConvNext-like: the starting one downsamples
        (0, 0, 1, None, None),  # FFN
    ],
)
def test_uib_cases(start: int, middle: int, stride: int, want_start, want_middle) -> None:
    """Which depthwise convs exist, where the stride goes, which have an activation, and the shapes."""
    block = UniversalInvertedBottleneck(24, 40, start, middle, stride, exp=3.0, bn=BN).eval()
    assert (_dw(block.start_dw), _dw(block.middle_dw)) == (want_start, want_middle)
    # expansion 1x1 with ReLU to make_divisible(24 * 3) = 72, linear 1x1 projection
    assert block.expand[0].kernel_size == (1, 1) and block.expand[0].out_channels == 72
    assert isinstance(block.expand[-1], nn.ReLU)
    assert block.project[0].kernel_size == (1, 1) and isinstance(block.project[-1], nn.BatchNorm2d)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 + bool(start) + bool(middle)
    with torch.no_grad():
        out = block(torch.randn(2, 24, 15, 14))
    assert out.shape == ((2, 40, 8, 7) if stride == 2 else (2, 40, 15, 14))
    assert not block.use_res_connect


@pytest.mark.parametrize(("start", "middle"), [(5, 3), (0, 3), (5, 0), (0, 0)], ids=CASES.values())
def test_uib_residual(start: int, middle: int) -> None:
    """Stride 1 and in == out add the input: with the projection's BN zeroed, the block is the identity."""
    block = UniversalInvertedBottleneck(16, 16, start, middle, 1, exp=2.0, bn=BN).eval()
    assert block.use_res_connect
    nn.init.zeros_(block.project[1].weight)
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x, atol=0, rtol=0)
        nn.init.ones_(block.project[1].weight)
        assert (block(x) - x).abs().max() > 0.1


def test_uib_refusals() -> None:
    with pytest.raises(
        ValueError, match=r"a UIB without depthwise convs \(FFN: start_dw=middle_dw=0\) cannot take stri"
    ):
        UniversalInvertedBottleneck(16, 32, 0, 0, 2, exp=4.0, bn=BN)
    with pytest.raises(ValueError, match="middle_dw must be 0 .no such depthwise conv. or an odd kernel size, got 4"):
        UniversalInvertedBottleneck(16, 32, 3, 4, 1, exp=4.0, bn=BN)
    with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
        UniversalInvertedBottleneck(16, 32, 3, 3, 3, exp=4.0, bn=BN)
    with pytest.raises(ValueError, match="exp must be a number > 0, got 0"):
        UniversalInvertedBottleneck(16, 32, 3, 3, 1, exp=0, bn=BN)


def test_fused_ib() -> None:
    """Conv-M/L's stem block: a full 3x3 s2 conv expanding 4x (32 -> 128), a linear 1x1 projection; no residual."""
    block = FusedInvertedBottleneck(32, 48, 3, 2, 4.0, BN, 0.0).eval()
    assert block.expand[0].groups == 1 and block.expand[0].kernel_size == (3, 3) and block.expand[0].stride == (2, 2)
    assert block.expand[0].out_channels == 128 and isinstance(block.expand[-1], nn.ReLU)
    assert block.project[0].kernel_size == (1, 1) and isinstance(block.project[-1], nn.BatchNorm2d)
    assert not block.use_res_connect
    with torch.no_grad():
        assert block(torch.randn(1, 32, 15, 16)).shape == (1, 48, 8, 8)


# ------------------------------------------------------------------------------------------------ the block tables


def _case(row: UIB) -> str:
    return CASES[(row.start_dw > 0, row.middle_dw > 0)]


@pytest.mark.parametrize(
    ("arch", "cases", "info"),
    [
        # the ExtraDW / IB / ConvNext / FFN mix of each table, and the stage features: (channels, reduction)
        ("conv_small", {"ExtraDW": 3, "IB": 8, "ConvNext": 1}, [(32, 2), (32, 4), (64, 8), (96, 16), (960, 32)]),
        (
            "conv_medium",
            {"ExtraDW": 13, "ConvNext": 4, "FFN": 4},
            [(32, 2), (48, 4), (80, 8), (160, 16), (960, 32)],
        ),
        ("conv_large", {"ExtraDW": 19, "ConvNext": 7}, [(24, 2), (48, 4), (96, 8), (192, 16), (960, 32)]),
    ],
)
def test_tables(arch: str, cases: dict[str, int], info: list[tuple[int, int]]) -> None:
    spec = ARCHS[arch]
    uibs = [r for r in spec.rows if isinstance(r, UIB)]
    got: dict[str, int] = {}
    for row in uibs:
        got[_case(row)] = got.get(_case(row), 0) + 1
    assert got == cases
    # every strided UIB downsamples in its middle depthwise conv, which it has
    assert all(r.middle_dw for r in uibs if r.stride == 2)
    assert [type(r) for r in spec.rows if not isinstance(r, UIB)] == (
        [ConvBN] * 5 + [ConvBN] if arch == "conv_small" else [ConvBN, FusedIB, ConvBN]
    )
    assert spec.rows[-1] == ConvBN(kernel=1, stride=1, out=960) and spec.head == 1280
    model = MobileNetV4(arch)
    assert [(i.num_chs, i.reduction) for i in model.feature_info] == info
    assert len(model.features) == len(spec.rows)
    with torch.no_grad():
        pre = model.eval().forward_head(model.forward_features(torch.randn(1, 3, 64, 64)), pre_logits=True)
    assert pre.shape == (1, 1280) == (1, model.num_features)


# ------------------------------------------------------------------------------ TF's training settings as defaults


def _bn(model: nn.Module) -> set[tuple[float, float]]:
    return {(m.eps, m.momentum) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}


def _drop_paths(model: nn.Module) -> list[float]:
    return [b.drop_path for b in model.features if isinstance(b, UniversalInvertedBottleneck)]


def test_training_defaults_from_the_tf_configs() -> None:
    """TF's imagenet_mobilenetv4_conv_*_tpu.yaml: dropout 0.3 / 0.2 / 0.2; BN (eps, TF momentum) (1e-6, 0.95) /
    (1e-3, 0.997) / (1e-3, 0.997); stochastic depth none / 0.075 growing with the spec row / a flat 0.2."""
    small, medium, large = (create_model(f"mobilenet_v4_conv_{s}") for s in ("small", "medium", "large"))
    assert [m.classifier[0].p for m in (small, medium, large)] == [0.3, 0.2, 0.2]
    assert _bn(small) == {(1e-6, 0.05)}
    assert _bn(medium) == _bn(large) == {(1e-3, 0.003)}
    assert set(_drop_paths(small)) == {0.0}
    assert set(_drop_paths(large)) == {0.2}
    # TF rate x (row index + 1) / 26: the 26 rows of the medium spec, pooling and last 1x1 conv included
    rows = [i for i, r in enumerate(ARCHS["conv_medium"].rows) if isinstance(r, UIB)]
    assert _drop_paths(medium) == pytest.approx([0.075 * (i + 1) / 26 for i in rows])
    assert _drop_paths(medium)[-1] == pytest.approx(0.075 * 23 / 26)
    assert _drop_paths(create_model("mobilenet_v4_conv_medium", stochastic_depth_rate=0.1)) == pytest.approx(
        [0.1 * (i + 1) / 26 for i in rows]
    )
    assert _bn(create_model("mobilenet_v4_conv_small", bn_eps=1e-5)) == {(1e-5, 0.05)}
    with pytest.raises(ValueError, match=r"stochastic_depth_rate is a drop probability in \[0, 1\), got 1.0"):
        create_model("mobilenet_v4_conv_large", stochastic_depth_rate=1.0)
    with pytest.raises(ValueError, match="arch='hybrid_medium' is not a MobileNetV4 architecture; expected one of"):
        MobileNetV4("hybrid_medium")


def test_stochastic_depth_drops_whole_residual_branches_in_training_only() -> None:
    torch.manual_seed(0)
    block = UniversalInvertedBottleneck(8, 8, 3, 3, 1, exp=2.0, bn=BN, drop_path=0.5).eval()
    x = torch.randn(64, 8, 6, 6)
    with torch.no_grad():
        branch = block.project(block.middle_dw(block.expand(block.start_dw(x))))
        torch.testing.assert_close(block(x), x + branch)  # eval: the full branch, unscaled
        block.train()
        for m in block.modules():  # BN with its running statistics, so that only the stochastic depth differs
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        out = block(x)
    dropped = (out - x).flatten(1).abs().amax(1) == 0
    assert 16 <= int(dropped.sum()) <= 48  # about half the samples keep only their shortcut
    torch.testing.assert_close(out[~dropped], x[~dropped] + 2 * branch[~dropped])  # survivors scaled by 1 / (1 - p)


# ------------------------------------------------------------------------------------------------------ timm parity


def _calibrated(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    return model.eval()


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_timm_parity(size: str) -> None:
    """timm's mobilenetv4_conv_{size} (the same TF spec): tensor for tensor the same shapes in the same order, and
    with its weights the same logits (both with timm's BN epsilon 1e-5)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = _calibrated(timm.create_model(f"mobilenetv4_conv_{size}", pretrained=False))
    ours = create_model(f"mobilenet_v4_conv_{size}", bn_eps=1e-5).eval()
    pairs = list(zip(theirs.state_dict().items(), ours.state_dict().items(), strict=True))
    assert all(t.shape == o.shape for (_, t), (_, o) in pairs)
    ours.load_state_dict({k: t for (_, t), (k, _) in pairs}, strict=True)
    x = torch.randn(2, 3, 67, 64)
    with torch.no_grad():
        want = theirs(x)
        assert (want[0] - want[1]).abs().max() > 1e-3  # the logits depend on the input
        torch.testing.assert_close(ours(x), want, atol=1e-4 * want.abs().max().item(), rtol=1e-4)


# ------------------------------------------------------------------------------------------------ ONNX and int8


def test_conv_small_onnx_parity_and_int8_at_an_odd_size_and_another_batch(tmp_path) -> None:
    """export_model writes the fp32 file (checked there against PyTorch) and an int8 one calibrated on noise, both at
    75x67; ONNX Runtime then runs them on a batch of 5 against the PyTorch model with the same weights."""
    torch.manual_seed(0)
    model = _calibrated(create_model("mobilenet_v4_conv_small", num_classes=10))
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    res = (75, 67)
    kw = {"num_classes": 10, "resolution": res, "weights": str(weights)}
    fp32 = export_model("mobilenet_v4_conv_small", tmp_path / "m.onnx", format="onnx", **kw)
    assert fp32.max_abs_diff is not None and fp32.max_abs_diff <= 1e-3
    int8 = {"format": "onnx-int8", "calibration": "random", "calibration_images": 8}
    q = export_model("mobilenet_v4_conv_small", tmp_path / "q.onnx", **int8, **kw)
    x = np.random.default_rng(1).standard_normal((5, 3, *res), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    s32, s8 = onnx_session(fp32.path, 1), onnx_session(q.path, 1)
    want = s32.run(None, {s32.get_inputs()[0].name: x})[0]
    got = s8.run(None, {s8.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(want, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())), rtol=1e-4)
    assert got.shape == (5, 10) and np.isfinite(got).all()
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9  # int8 follows fp32 (random weights and inputs)
