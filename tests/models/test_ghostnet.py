"""GhostNet specifics: every counted paper_numbers.csv row and the withheld 1.3x count, the Ghost module's channel
arithmetic, the Ghost bottleneck's shortcut, depthwise and SE rules, widths, the head without BN, ONNX and int8."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from mobilezoo import create_model, list_models, model_card
from mobilezoo.layers import SqueezeExcite
from mobilezoo.models.ghostnet import GhostBottleneck, GhostModule, GhostNet, se_channels
from mobilezoo.registry import PaperRow, paper_rows
from tests.models.helpers import calibrated, check_onnx_and_int8_at_an_odd_size, counts

ROWS = [r for r in paper_rows() if r.family == "GhostNet"]
VARIANTS = {
    "ghostnet_0.5_224": "ghostnet_x0_5",
    "ghostnet_1.0_224": "ghostnet_x1_0",
    "ghostnet_1.3_224": "ghostnet_x1_3",
}
# the row whose exact count the reference withholds, derived here from the architecture (== timm ghostnet_130):
# (params, params without BN gamma/beta, MAdds in millions at 224)
WITHHELD = {"ghostnet_1.3_224": (7_358_820, 7_330_284, 227.00)}


def test_every_row_is_registered() -> None:
    assert {r.variant for r in ROWS} == set(VARIANTS)
    assert list_models("ghostnet*") == sorted(VARIANTS.values())
    for variant, name in VARIANTS.items():
        card = model_card(name)
        assert (card.family, card.paper_variant, card.resolution) == ("GhostNet", variant, 224)
        assert "Table 7" in card.table and "Counted" in card.notes
    card = model_card("ghostnet_x1_0")
    assert (card.paper_top1, card.paper_madds_m, card.paper_params_m) == (73.9, 141, 5.2)


@pytest.mark.parametrize("row", [r for r in ROWS if r.counted_params is not None], ids=lambda r: r.variant)
def test_counts_match_paper_numbers(row: PaperRow) -> None:
    params, params_no_bn, madds = counts(VARIANTS[row.variant], row.resolution)
    assert params == row.counted_params
    assert madds == pytest.approx(row.counted_madds_m, rel=0.005)
    no_bn = re.search(r"\[impl params without BN gamma/beta: (\d+)\]", row.notes)
    assert no_bn is not None, row.notes
    assert params_no_bn == int(no_bn.group(1))
    # and the paper's (rounded) figures: 2.6M / 42M, 5.2M / 141M
    assert round(params / 1e6, 1) == row.params_m
    assert madds == pytest.approx(row.madds_m, rel=0.01)


def test_withheld_1_3x_count() -> None:
    """1.3x counts 7,358,820 params (7,330,284 without BN gamma/beta) / 227.00M MAdds against Table 7's 7.3M / 226M:
    MAdds +0.4%, params +0.8% (the count without BN would round to the paper's 7.3M, the full one to 7.4M)."""
    row = next(r for r in ROWS if r.variant == "ghostnet_1.3_224")
    assert row.counted_params is None and row.counted_madds_m is None  # the csv keeps the reference's blanks
    params, params_no_bn, madds = counts("ghostnet_x1_3", row.resolution)
    want_params, want_no_bn, want_madds = WITHHELD[row.variant]
    assert (params, params_no_bn) == (want_params, want_no_bn)
    assert madds == pytest.approx(want_madds, abs=0.005)
    assert params / 1e6 == pytest.approx(row.params_m, rel=0.02) and madds == pytest.approx(row.madds_m, rel=0.02)
    assert round(params_no_bn / 1e6, 1) == row.params_m == 7.3
    notes = model_card("ghostnet_x1_3").notes
    assert "7,358,820" in notes and "227.00M" in notes and "+0.4%" in notes and "+0.8%" in notes


def test_ghost_module_channel_arithmetic() -> None:
    """ceil(out / s) intrinsic maps from the 1x1 conv, (s - 1) ghost maps each from the depthwise cheap op,
    concatenated intrinsic-first and sliced to ``out``."""
    for out, ratio, intrinsic, ghosts in [(16, 2, 8, 8), (7, 2, 4, 4), (10, 3, 4, 8), (9, 3, 3, 6)]:
        module = GhostModule(5, out, ratio=ratio).eval()
        primary, cheap = module.primary_conv[0], module.cheap_operation[0]
        assert (primary.in_channels, primary.out_channels, primary.kernel_size) == (5, intrinsic, (1, 1))
        assert (cheap.in_channels, cheap.out_channels, cheap.groups, cheap.kernel_size) == (
            intrinsic, ghosts, intrinsic, (3, 3)
        )  # fmt: skip
        assert module.trim == (intrinsic + ghosts != out)
        x = torch.randn(2, 5, 9, 7)
        with torch.no_grad():
            y = module(x)
            x1 = module.primary_conv(x)
            assert y.shape == (2, out, 9, 7)
            torch.testing.assert_close(y, torch.cat([x1, module.cheap_operation(x1)], 1)[:, :out])
    # the first Ghost module of a bottleneck ends in ReLU, the second is linear (no activation at all)
    relu, linear = GhostModule(4, 8, relu=True), GhostModule(4, 8, relu=False)
    assert isinstance(relu.primary_conv[2], nn.ReLU) and isinstance(relu.cheap_operation[2], nn.ReLU)
    assert len(linear.primary_conv) == len(linear.cheap_operation) == 2  # conv + BN
    with pytest.raises(ValueError, match="ratio must be an integer >= 2 .*got 1"):
        GhostModule(4, 8, ratio=1)


def _blocks(model: GhostNet) -> list[GhostBottleneck]:
    return [m for m in model.features if isinstance(m, GhostBottleneck)]


def test_shortcut_and_depthwise_rules() -> None:
    """The shortcut is the identity iff stride 1 and in == out; otherwise depthwise kxk (the block's stride) + BN and
    1x1 + BN, also at stride 1 when the width changes (80 -> 112). Only stride-2 blocks have the depthwise kxk s2 +
    BN (no activation) between the Ghost modules."""
    model = create_model("ghostnet_x1_0")
    blocks = _blocks(model)
    assert len(blocks) == 16
    identity = [True, False, True, False, True, False, True, True, True, False, True, False, True, True, True, True]
    assert [b.identity_shortcut for b in blocks] == identity
    kernels = [3, 3, 3, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5]
    strides = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    in_chs = [16, 16, 24, 24, 40, 40, 80, 80, 80, 80, 112, 112, 160, 160, 160, 160]
    for block, k, s, cin, is_identity in zip(blocks, kernels, strides, in_chs, identity, strict=True):
        if is_identity:
            assert isinstance(block.shortcut, nn.Identity)
        else:
            dw, pw = block.shortcut
            assert (dw[0].in_channels, dw[0].groups, dw[0].kernel_size, dw[0].stride) == (cin, cin, (k, k), (s, s))
            assert (pw[0].kernel_size, pw[0].out_channels) == ((1, 1), block.out_channels)
            assert [type(m) for m in (*dw, *pw)] == [nn.Conv2d, nn.BatchNorm2d] * 2  # linear: no activation
        if s == 2:
            conv_dw = block.conv_dw
            assert (conv_dw[0].kernel_size, conv_dw[0].stride, conv_dw[0].groups) == (
                (k, k),
                (2, 2),
                conv_dw[0].in_channels,
            )
            assert [type(m) for m in conv_dw] == [nn.Conv2d, nn.BatchNorm2d]
        else:
            assert isinstance(block.conv_dw, nn.Identity)
    with torch.no_grad():  # the identity shortcut really adds the input: a zeroed residual branch returns x
        block = blocks[2].eval()
        nn.init.zeros_(block.ghost2.primary_conv[1].weight), nn.init.zeros_(block.ghost2.primary_conv[1].bias)
        nn.init.zeros_(block.ghost2.cheap_operation[1].weight), nn.init.zeros_(block.ghost2.cheap_operation[1].bias)
        x = torch.randn(1, 24, 8, 8)
        torch.testing.assert_close(block(x), x)


def test_se_rules() -> None:
    """SE on the seven rows Table 1 ticks, after the depthwise conv (or the first Ghost module), squeezing to
    make_divisible(exp / 4, 4) of the expanded width, ReLU, hard-sigmoid gate."""
    for name, squeezes in [
        ("ghostnet_x1_0", [20, 32, 120, 168, 168, 240, 240]),
        ("ghostnet_x0_5", [12, 16, 60, 84, 84, 120, 120]),  # exp 36 -> 9 -> 8 is below 90%: 12
        ("ghostnet_x1_3", [24, 40, 156, 220, 220, 312, 312]),
    ]:
        blocks = _blocks(create_model(name))
        ses = [b.se for b in blocks if isinstance(b.se, SqueezeExcite)]
        assert [i for i, b in enumerate(blocks) if isinstance(b.se, SqueezeExcite)] == [3, 4, 9, 10, 11, 13, 15]
        assert [se.fc1.out_channels for se in ses] == squeezes
        assert [se_channels(se.fc1.in_channels) for se in ses] == squeezes
        assert all(isinstance(se.activation, nn.ReLU) and isinstance(se.scale_activation, nn.Hardsigmoid) for se in ses)
    gate = nn.Hardsigmoid()
    x = torch.linspace(-5, 5, 101)
    torch.testing.assert_close(gate(x), torch.nn.functional.relu6(x + 3) / 6)  # the official hard_sigmoid


def test_widths_head_and_features() -> None:
    """Widths make_divisible(c x w, 4): stem, each block's (exp, out), the last conv; the 1280 head is fixed, a 1x1
    conv with bias and no BN on the pooled map (a Linear), then ReLU, dropout 0.2 and the FC."""
    want = {
        "ghostnet_x0_5": (8, [(8, 8), (24, 12), (36, 12), (36, 20), (60, 20), (120, 40)], 480),
        "ghostnet_x1_0": (16, [(16, 16), (48, 24), (72, 24), (72, 40), (120, 40), (240, 80)], 960),
        "ghostnet_x1_3": (20, [(20, 20), (64, 32), (92, 32), (92, 52), (156, 52), (312, 104)], 1248),
    }
    for name, (stem, first_six, last) in want.items():
        model = create_model(name)
        blocks = _blocks(model)
        assert model.features[0].out_channels == stem
        assert [(b.ghost1.out_chs, b.out_channels) for b in blocks[:6]] == first_six
        assert model.features[-1].out_channels == last
        fc1280, relu, dropout, fc = model.classifier
        assert (fc1280.in_features, fc1280.out_features, fc1280.bias is not None) == (last, 1280, True)
        assert isinstance(relu, nn.ReLU) and dropout.p == 0.2 and fc.in_features == 1280 == model.num_features
        assert not any(isinstance(m, nn.BatchNorm1d) for m in model.classifier)
    model = create_model("ghostnet_x1_0", num_classes=10).eval()
    assert [(f.num_chs, f.reduction) for f in model.feature_info] == [(16, 2), (24, 4), (40, 8), (112, 16), (960, 32)]
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 960, 2, 2)
        assert model.forward_head(torch.randn(2, 960, 2, 2), pre_logits=True).shape == (2, 1280)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)


def test_onnx_parity_and_int8_at_an_odd_resolution_and_another_batch(tmp_path) -> None:
    torch.manual_seed(0)
    q = check_onnx_and_int8_at_an_odd_size(calibrated(create_model("ghostnet_x0_5", num_classes=10)), tmp_path)
    assert q.rewrites["uint8-hardsigmoid"] == 7  # every SE gate computed on uint8


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="width_mult must be a number > 0, got -1"):
        create_model("ghostnet_x1_0", width_mult=-1)
    with pytest.raises(ValueError, match="drop_rate"):
        create_model("ghostnet_x0_5", drop_rate=1.0)
    with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
        GhostBottleneck(16, 32, 16, 3, 3, False)
    with pytest.raises(ValueError, match="too small"):
        create_model("ghostnet_x0_5")(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        create_model("ghostnet_x0_5")(torch.randn(1, 1, 64, 64))
