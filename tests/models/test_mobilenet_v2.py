"""MobileNetV2 specifics: the paper/README table, torchvision parity, the rounding rules and the t=1 first block."""

import re

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mobilezoo import create_model, load_weights
from mobilezoo.models.mobilenet_v2 import InvertedResidual
from mobilezoo.registry import paper_rows

ROWS = [r for r in paper_rows() if r.family == "MobileNetV2"]
BUILDERS = {1.4: "mobilenet_v2_x1_4", 1.3: "mobilenet_v2_x1_3", 1.0: "mobilenet_v2", 0.75: "mobilenet_v2_x0_75"}
BUILDERS |= {0.5: "mobilenet_v2_x0_5", 0.35: "mobilenet_v2_x0_35"}


def _width(variant: str) -> float:
    return float(variant.split("_")[2])


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.variant)
def test_paper_counts(row) -> None:
    with torch.device("meta"):
        model = create_model(BUILDERS[_width(row.variant)]).eval()
    params = sum(p.numel() for p in model.parameters())
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, row.resolution, row.resolution, device="meta"))
    madds = counter.get_total_flops() / 2e6
    if row.counted_params is not None:
        assert params == row.counted_params
        assert madds == pytest.approx(row.counted_madds_m, rel=0.005)
    elif "1.4" in row.variant:  # paper Table 4's 585M (NOTES.md item 5: the architecture counts 582.2M)
        assert madds == pytest.approx(row.madds_m, rel=0.02)
    else:  # the slim README truncates its MACs: 0.35-96 counts 11.93M and lists 11, so compare floor(count)
        assert int(madds) == row.madds_m
    assert params - bn == int(re.search(r"without BN gamma/beta: (\d+)", row.notes).group(1))


@pytest.mark.parametrize("width", [1.0, 0.5])
def test_torchvision_parity(width: float) -> None:
    theirs = torchvision.models.mobilenet_v2(width_mult=width)
    with torch.no_grad():  # random BN statistics too, so equal outputs mean equal wiring
        for key, t in theirs.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in key else torch.randn_like(t) * 0.1)
    theirs.eval()
    ours = create_model(BUILDERS[width])
    load_weights(ours, theirs.state_dict(), strict=True)
    ours.eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)


def _channels(model: nn.Module) -> list[int]:
    return [model.features[0].out_channels] + [
        b.out_channels for b in model.features if isinstance(b, InvertedResidual)
    ]


def test_rounding_rule_with_ten_percent_bump() -> None:
    # stem then the seven stage outputs (NOTES.md): 0.35 bumps 32*0.35 = 11.2 -> 8 up to 16 (stem and stage 3);
    # 0.75 bumps 24*0.75 = 18 -> 16 up to 24 (16 < 90% of 18)
    repeats = [1, 2, 3, 4, 3, 3, 1]

    def expand(stem: int, outs: list[int]) -> list[int]:
        return [stem] + [c for c, n in zip(outs, repeats) for _ in range(n)]

    assert _channels(create_model("mobilenet_v2_x0_35")) == expand(16, [8, 8, 16, 24, 32, 56, 112])
    assert _channels(create_model("mobilenet_v2_x0_75")) == expand(24, [16, 24, 24, 48, 72, 120, 240])
    assert _channels(create_model("mobilenet_v2_x1_4")) == expand(48, [24, 32, 48, 88, 136, 224, 448])


def test_last_conv_never_shrinks_below_1280() -> None:
    assert create_model("mobilenet_v2_x0_35").num_features == 1280
    assert create_model("mobilenet_v2_x0_5").num_features == 1280
    assert create_model("mobilenet_v2_x1_4").num_features == 1792


def test_first_block_has_no_expansion_conv_and_projections_are_linear() -> None:
    model = create_model("mobilenet_v2")
    first = model.features[1]
    assert first.conv[0][0].groups == 32  # straight into the depthwise conv: no 1x1 expansion for t=1
    for block in model.features:
        if isinstance(block, InvertedResidual):
            assert isinstance(block.conv[-1], nn.BatchNorm2d)  # projection ends in BN, no activation
            assert not any(isinstance(m, nn.ReLU6) for m in block.conv[-2:])
    residual = [i for i, b in enumerate(model.features) if isinstance(b, InvertedResidual) and b.use_res_connect]
    assert residual == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
