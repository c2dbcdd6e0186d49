"""MobileNet V1 and V3 specifics: paper counts, torchvision parity, architectural details, bad input."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import mobilenetv3 as tv_mnv3

from mobilezoo import create_model, load_weights
from mobilezoo.layers import SqueezeExcite
from mobilezoo.models.mobilenet_v1 import DepthwiseSeparable, MobileNetV1
from mobilezoo.models.mobilenet_v3 import MobileNetV3
from mobilezoo.registry import paper_rows

# the TF-slim checkpoint grid's (width, resolution) rows that the paper's Tables 6-7 do not have
V1_GRID_REST = [("0.75", r) for r in (192, 160, 128)] + [("0.5", 192), ("0.5", 128)]
V1_GRID_REST += [("0.25", r) for r in (192, 160, 128)]
# paper_numbers.csv variant -> (registered model, extra kwargs); the resolution comes from the row
VARIANTS: dict[str, tuple[str, dict]] = {
    "mobilenet_v1_1.0_224": ("mobilenet_v1", {}),
    "mobilenet_v1_0.75_224": ("mobilenet_v1_x0_75", {}),
    "mobilenet_v1_0.5_224": ("mobilenet_v1_x0_5", {}),
    "mobilenet_v1_0.25_224": ("mobilenet_v1_x0_25", {}),
    "mobilenet_v1_1.0_192": ("mobilenet_v1", {}),
    "mobilenet_v1_1.0_160": ("mobilenet_v1", {}),
    "mobilenet_v1_1.0_128": ("mobilenet_v1", {}),
    "mobilenet_v1_0.5_160": ("mobilenet_v1_x0_5", {}),
    **{f"mobilenet_v1_{w}_{r}": (f"mobilenet_v1_x{w.replace('.', '_')}", {}) for w, r in V1_GRID_REST},
    "mobilenet_v3_large_1.0_224": ("mobilenet_v3_large", {}),
    "mobilenet_v3_large_0.75_224": ("mobilenet_v3_large_x0_75", {}),
    "mobilenet_v3_small_1.0_224": ("mobilenet_v3_small", {}),
    "mobilenet_v3_small_1.0_224_pre_v5_1280head": ("mobilenet_v3_small", {"last_channel": 1280}),
    "mobilenet_v3_small_0.75_224": ("mobilenet_v3_small_x0_75", {}),
    "mobilenet_v3_small_0.75_224_pre_v5_1280head": ("mobilenet_v3_small_x0_75", {"last_channel": 1280}),
    "mobilenet_v3_large_minimalistic_1.0_224": ("mobilenet_v3_large_minimal", {}),
    "mobilenet_v3_small_minimalistic_1.0_224": ("mobilenet_v3_small_minimal", {}),
}
ROWS = [r for r in paper_rows() if r.family in ("MobileNetV1", "MobileNetV3")]


def _counts(model: nn.Module, resolution: int) -> tuple[int, int, float]:
    """Params, params without BN gamma/beta, and MAdds (FlopCounterMode / 2) at batch 1, on a meta-device model."""
    params = sum(p.numel() for p in model.parameters())
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.empty(1, 3, resolution, resolution, device="meta"))
    return params, params - bn, counter.get_total_flops() / 2e6


def test_every_mobilenet_v1_v3_row_is_mapped() -> None:
    assert {r.variant for r in ROWS} == set(VARIANTS)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.variant)
def test_paper_counts(row) -> None:
    name, kwargs = VARIANTS[row.variant]
    with torch.device("meta"):  # counting needs shapes only
        model = create_model(name, **kwargs)
    params, params_no_bn, madds = _counts(model, row.resolution)
    if row.counted_params is not None:
        assert params == row.counted_params
        assert madds == pytest.approx(row.counted_madds_m, rel=0.005)
    else:  # "exact count withheld": the paper's MAdds within 2%, and the notes' BN-free figure exactly
        assert madds == pytest.approx(row.madds_m, rel=0.02)
    no_bn = re.search(r"\[impl params without BN gamma/beta: (\d+)\]", row.notes)
    assert no_bn is not None, row.notes
    assert params_no_bn == int(no_bn.group(1))


def _randomised(model: nn.Module) -> nn.Module:
    """Fill every float tensor of the state (BN running stats included) with random values, so parity means something."""
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in key else torch.randn_like(tensor) * 0.1)
    return model.eval()


def _assert_parity(ours: nn.Module, theirs: nn.Module) -> None:
    _randomised(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    load_weights(ours, theirs.state_dict(), strict=True)
    ours.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["large", "small"])
def test_torchvision_parity(arch: str) -> None:
    theirs = getattr(tv_mnv3, f"mobilenet_v3_{arch}")()
    _assert_parity(create_model(f"mobilenet_v3_{arch}"), theirs)


@pytest.mark.parametrize("arch", ["large", "small"])
def test_torchvision_width_rule_parity(arch: str) -> None:
    setting, last_channel = tv_mnv3._mobilenet_v3_conf(f"mobilenet_v3_{arch}", width_mult=0.75)
    theirs = tv_mnv3.MobileNetV3(setting, last_channel)
    ours = create_model(f"mobilenet_v3_{arch}_x0_75", width_rule="torchvision")
    _assert_parity(ours, theirs)
    # the paper rule is a different network: it keeps the head and derives expansions from the rounded input
    assert create_model(f"mobilenet_v3_{arch}_x0_75").num_features == {"large": 1280, "small": 1024}[arch]
    assert ours.num_features == {"large": 960, "small": 768}[arch]


def _bneck_widths(model: MobileNetV3) -> list[tuple[int, int]]:
    blocks = list(model.features)[1:-1]
    # the projection's input is the expansion width
    return [(b.block[-1][0].in_channels, b.out_channels) for b in blocks]


def test_v3_0_75_widths_match_published_models() -> None:
    large = create_model("mobilenet_v3_large_x0_75")
    assert _bneck_widths(large) == [
        (16, 16), (64, 24), (72, 24), (72, 32), (96, 32), (96, 32), (192, 64), (160, 64), (144, 64), (144, 64),
        (384, 88), (528, 88), (528, 120), (720, 120), (720, 120),
    ]  # fmt: skip
    small = create_model("mobilenet_v3_small_x0_75")
    assert _bneck_widths(small) == [
        (16, 16), (72, 24), (88, 24), (96, 32), (192, 32), (192, 32), (96, 40), (120, 40), (240, 72), (432, 72),
        (432, 72),
    ]  # fmt: skip
    for model, last_conv, head in ((large, 720, 1280), (small, 432, 1024)):
        assert model.features[-1][0].out_channels == last_conv
        assert model.classifier[0].out_features == head  # head kept at width 0.75
        assert model.forward_head(torch.randn(1, last_conv, 2, 2), pre_logits=True).shape == (1, head)


def test_v3_first_bneck_has_no_expansion_conv() -> None:
    large, small = create_model("mobilenet_v3_large"), create_model("mobilenet_v3_small")
    # Large: dw 3x3 s1 -> project; Small: dw 3x3 s2 -> SE -> project
    assert [type(m).__name__ for m in large.features[1].block] == ["ConvNormAct", "ConvNormAct"]
    assert large.features[1].block[0][0].groups == 16 and large.features[1].use_res_connect
    assert [type(m).__name__ for m in small.features[1].block] == ["ConvNormAct", "SqueezeExcite", "ConvNormAct"]
    assert small.features[1].block[0][0].groups == 16 and small.features[1].block[0][0].stride == (2, 2)
    assert large.features[2].block[0][0].kernel_size == (1, 1)  # exp 64 != 16: expansion present


def test_v3_se_squeeze_widths() -> None:
    def pairs(name: str) -> list[tuple[int, int]]:
        ses = [m for m in create_model(name).modules() if isinstance(m, SqueezeExcite)]
        assert all(isinstance(s.scale_activation, nn.Hardsigmoid) and s.fc1.bias is not None for s in ses)
        return [(s.fc1.in_channels, s.fc1.out_channels) for s in ses]

    assert sorted(set(pairs("mobilenet_v3_large"))) == [(72, 24), (120, 32), (480, 120), (672, 168), (960, 240)]
    # Small: no SE on the final 576 conv (the paper's tick is an erratum), 16 -> 8 rounds 4 up to 8
    assert pairs("mobilenet_v3_small") == [(16, 8), (96, 24), (240, 64), (240, 64), (120, 32), (144, 40), (288, 72),
                                           (576, 144), (576, 144)]  # fmt: skip


def test_v3_tail_head_and_norm() -> None:
    model = create_model("mobilenet_v3_large")
    stem, tail = model.features[0], model.features[-1]
    assert stem[0].out_channels == 16 and isinstance(stem[2], nn.Hardswish)
    assert tail[0].out_channels == 960 and isinstance(tail[2], nn.Hardswish)
    head, act, drop, fc = model.classifier
    assert head.bias is not None and (head.in_features, head.out_features) == (960, 1280)
    assert isinstance(act, nn.Hardswish) and drop.p == 0.2 and fc.in_features == 1280
    assert all(bn.eps == 1e-3 and bn.momentum == 0.01 for bn in model.modules() if isinstance(bn, nn.BatchNorm2d))
    assert create_model("mobilenet_v3_small", last_channel=1280).classifier[0].out_features == 1280


@pytest.mark.parametrize("name", ["mobilenet_v3_large_minimal", "mobilenet_v3_small_minimal"])
def test_v3_minimal(name: str) -> None:
    model = create_model(name)
    kinds = {type(m) for m in model.modules()}
    assert SqueezeExcite not in kinds and nn.Hardswish not in kinds
    dws = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert dws and all(m.kernel_size == (3, 3) for m in dws)


def test_v1_structure() -> None:
    model = create_model("mobilenet_v1")
    blocks = [m for m in model.features if isinstance(m, DepthwiseSeparable)]
    assert len(blocks) == 13
    assert [b.dw[0].stride[0] for b in blocks] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]  # last dw is stride 1
    assert [b.out_channels for b in blocks][-2:] == [1024, 1024]
    assert model.classifier[0].p == 0.0 and isinstance(blocks[0].dw[2], nn.ReLU)
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 1024, 2, 2)
    assert [f.reduction for f in model.feature_info] == [2, 4, 8, 16, 32]
    quarter = create_model("mobilenet_v1_x0_25")
    assert [quarter.features[0].out_channels] + [b.out_channels for b in quarter.features[1:]] == [
        8, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256
    ]  # fmt: skip
    relu6 = create_model("mobilenet_v1", act="relu6")
    assert any(isinstance(m, nn.ReLU6) for m in relu6.modules())
    assert not any(isinstance(m, nn.ReLU) for m in relu6.modules())


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v3_large", "mobilenet_v3_small_minimal"])
@pytest.mark.parametrize("width", [0, -0.5, 0.0])
def test_bad_width_mult(name: str, width: float) -> None:
    with pytest.raises(ValueError, match="width_mult"):
        create_model(name, width_mult=width)


@pytest.mark.parametrize(
    ("builder", "kwargs", "match"),
    [
        (MobileNetV3, {"arch": "medium"}, "arch"),
        (MobileNetV3, {"width_rule": "timm"}, "width_rule"),
        (MobileNetV3, {"last_channel": 0}, "last_channel"),
        (MobileNetV3, {"drop_rate": 1.0}, "drop_rate"),
        (MobileNetV1, {"act": "hswish"}, "act"),
        (MobileNetV1, {"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_arguments(builder: type, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        builder(**kwargs)
