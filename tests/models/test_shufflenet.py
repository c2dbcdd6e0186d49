"""ShuffleNet V1 and V2 specifics: paper counts, the textbook's tables, torchvision parity, architecture, bad input."""

from __future__ import annotations

import functools
import re

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mobilezoo import create_model, list_models, load_weights, model_card
from mobilezoo.layers import ChannelShuffle
from mobilezoo.models import shufflenet_v1
from mobilezoo.models.shufflenet_v1 import (
    ASSUMED_CONFIGS,
    OFFICIAL_CONFIGS,
    SHUFFLENET_V1,
    ShuffleNetV1,
    scaled_config,
    shufflenet_v1_config,
)
from mobilezoo.models.shufflenet_v2 import ShuffleNetV2
from mobilezoo.registry import PaperRow, paper_rows

V1_ROWS = [r for r in paper_rows() if r.family == "ShuffleNetV1"]
V2_ROWS = [r for r in paper_rows() if r.family == "ShuffleNetV2"]
NO_BN = re.compile(r"\[impl params without BN gamma/beta: (\d+)\]")
# Withheld counts are checked against the paper's (or, where the paper has none, megvii's README) MAdds within 2%.
# g8 0.5x: the paper's Table 2 prints the row header 38 for every g; the official model counts 40.5 (README: 40M).
WITHHELD_MADDS = {"shufflenet_v1_g8_0.5x": 40, "shufflenet_v1_g3_1.5x": 292, "shufflenet_v1_g8_2.0x": 522}


def count(model: nn.Module, res: int = 224) -> tuple[int, int, float, float]:
    """(params, params without BN, MAdds in millions, FC MAdds in millions) at 1 x 3 x res x res.

    MAdds = FlopCounterMode total / 2 (NOTES.md section 0). A CPU forward is faster than the meta device for these nets.
    """
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, res, res))
    params = sum(p.numel() for p in model.parameters())
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    return params, params - bn, counter.get_total_flops() / 2e6, model.fc.weight.numel() / 1e6


def v1(variant: str) -> ShuffleNetV1:
    groups, width = re.fullmatch(r"shufflenet_v1_g(\d)_([\d.]+)x", variant).groups()
    return ShuffleNetV1(groups=int(groups), width_mult=float(width))


def v2(variant: str, torchvision_compat: bool = False) -> ShuffleNetV2:
    star, width = re.fullmatch(r"shufflenet_v2_(star_)?([\d.]+)x", variant).groups()
    return ShuffleNetV2(width_mult=float(width), torchvision_compat=torchvision_compat, star=star is not None)


@functools.cache
def counted(variant: str, torchvision_compat: bool = False) -> tuple[int, int, float, float]:
    """:func:`count` of a paper_numbers.csv variant, once per test process."""
    model = v1(variant) if variant.startswith("shufflenet_v1") else v2(variant, torchvision_compat)
    return count(model)


def counted_row(row: PaperRow) -> tuple[int, int, float, float]:
    return counted(row.variant, row.counted_on.startswith("torchvision"))


@pytest.mark.parametrize(
    "row", [r for r in V1_ROWS + V2_ROWS if r.counted_params is not None], ids=lambda r: f"{r.variant}-{r.counted_on}"
)
def test_counts_match_paper_numbers(row: PaperRow) -> None:
    params, no_bn, madds, _ = counted_row(row)
    assert params == row.counted_params
    assert int(NO_BN.search(row.notes).group(1)) == no_bn
    assert madds == pytest.approx(row.counted_madds_m, rel=0.005)


@pytest.mark.parametrize(
    "row", [r for r in V1_ROWS + V2_ROWS if "withheld" in r.counted_on], ids=lambda r: f"{r.variant}-{r.counted_on}"
)
def test_withheld_counts_match_no_bn_params_and_paper_madds(row: PaperRow) -> None:
    _, no_bn, madds, _ = counted_row(row)
    assert no_bn == int(NO_BN.search(row.notes).group(1))
    paper_madds = WITHHELD_MADDS.get(row.variant, row.madds_m)
    assert madds == pytest.approx(paper_madds, rel=0.02)


def test_textbook_table_5_11_is_the_fc_excluded_count() -> None:
    """Table 5-11 (paper Table 1: 143/140/137/133/137M) is reproduced only WITHOUT the FC layer; counted with the FC,
    g=2/4/8 come out at 141/134/138M."""
    stages = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088), 8: (384, 768, 1536)}
    with_fc, without_fc = [], []
    for groups, channels in stages.items():
        model = v1(f"shufflenet_v1_g{groups}_1.0x")
        assert model.conv1[0].out_channels == 24
        assert tuple(getattr(model, s)[-1].out_channels for s in ("stage2", "stage3", "stage4")) == channels
        _, _, madds, fc = counted(f"shufflenet_v1_g{groups}_1.0x")
        with_fc.append(round(madds))
        without_fc.append(round(madds - fc))
    assert without_fc == [143, 140, 137, 133, 137]
    assert with_fc == [143, 141, 137, 134, 138]


def test_paper_table_5_is_the_fc_included_count() -> None:
    """Paper Table 5 gives g=3 1.5x / 2x as 292 / 524M: those ARE the FC-included counts (FC-excluded 291 / 522)."""
    included, excluded = [], []
    for variant in ("shufflenet_v1_g3_1.5x", "shufflenet_v1_g3_2.0x"):
        _, _, madds, fc = counted(variant)
        included.append(round(madds))
        excluded.append(round(madds - fc))
    assert included == [292, 524]
    assert excluded == [291, 522]


def test_textbook_table_5_12_shufflenet_v2() -> None:
    """Table 5-12 (paper Table 5): channels, FLOPs (FC included) and weights of the official ShuffleNet V2."""
    table = {  # width: conv1, stage2, stage3, stage4, conv5, FLOPs (M), weights (M), as printed
        0.5: (24, 48, 96, 192, 1024, 41, 1.4),
        1.0: (24, 116, 232, 464, 1024, 146, 2.3),
        1.5: (24, 176, 352, 704, 1024, 299, 3.5),
        2.0: (24, 244, 488, 976, 2048, 591, 7.4),
    }
    for width, (*channels, flops, weights) in table.items():
        model = v2(f"shufflenet_v2_{width}x")
        stages = [getattr(model, s)[-1].out_channels for s in ("stage2", "stage3", "stage4")]
        assert [model.conv1[0].out_channels, *stages, model.conv5[0].out_channels] == channels
        params, _, madds, _ = counted(f"shufflenet_v2_{width}x")
        assert round(params / 1e6, 1) == weights
        # 0.5x counts 40.48M against the printed 41 (a 0.5M convention gap, NOTES.md item 10); the others round exactly
        assert round(madds) == flops or (width == 0.5 and madds == pytest.approx(flops, abs=0.55))


def test_registered_v1_builders_match_their_paper_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shufflenet_v1, "ShuffleNetV1", lambda **kwargs: kwargs)  # record what a builder asks for
    names = list_models("shufflenet_v1*")
    assert len(names) == 11
    for name in names:
        variant = model_card(name).paper_variant
        groups, width = re.fullmatch(r"shufflenet_v1_g(\d)_([\d.]+)x", variant).groups()
        assert name == f"shufflenet_v1_g{groups}_x{width.replace('.', '_')}"
        assert getattr(shufflenet_v1, name)(num_classes=7) == {
            "groups": int(groups),
            "width_mult": float(width),
            "num_classes": 7,
        }


def test_v1_rule_reproduces_table_1_and_the_official_configs() -> None:
    for g_index, groups in enumerate((1, 2, 3, 4, 8)):
        rule = scaled_config(groups, 1.0)
        assert rule.conv1 == 24
        assert rule.stages == tuple(stage.channels[g_index] for stage in SHUFFLENET_V1)
    for (groups, width), official in OFFICIAL_CONFIGS.items():
        assert scaled_config(groups, width) == official
    # the one assumed 0.25x config departs from the rule on purpose (conv1 12 meets Table 2's 13 MFLOPs, 6 gives 11)
    assert scaled_config(3, 0.25).conv1 == 6 and ASSUMED_CONFIGS[(3, 0.25)].conv1 == 12


@pytest.mark.parametrize(("groups", "width"), [(1, 0.5), (2, 0.5), (4, 0.5), (8, 0.75), (2, 1.25), (4, 0.25)])
def test_v1_unpublished_widths_build_and_run(groups: int, width: float) -> None:
    config = shufflenet_v1_config(groups, width)
    assert config.conv1 % groups == 0 and all(c % (4 * groups) == 0 for c in config.stages)
    model = ShuffleNetV1(groups=groups, width_mult=width, num_classes=5).eval()
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_v1_unit_structure() -> None:
    """g=3 1.0x: stage-2's first 1x1 is ungrouped, shuffle follows the first 1x1, bottleneck = out/4 even at stride 2."""
    model = ShuffleNetV1(groups=3)
    first = model.stage2[0]
    gconv1, shuffle, dwconv, gconv2 = first.branch
    assert (gconv1[0].in_channels, gconv1[0].out_channels, gconv1[0].groups) == (24, 60, 1)
    assert isinstance(shuffle, ChannelShuffle) and shuffle.groups == 3
    assert len(dwconv) == 2  # conv + BN, no ReLU
    assert (gconv2[0].out_channels, gconv2[0].groups) == (240 - 24, 3)
    assert isinstance(first.shortcut, nn.AvgPool2d)
    unit = model.stage3[0]
    assert (unit.branch[0][0].groups, unit.branch[0][0].out_channels, unit.branch[3][0].out_channels) == (3, 120, 240)
    assert model.fc.bias is None
    assert not isinstance(ShuffleNetV1(groups=1).stage2[1].branch[1], ChannelShuffle)  # g=1 needs no shuffle


def test_v2_official_first_unit_and_head() -> None:
    official, compat = ShuffleNetV2(1.0), ShuffleNetV2(1.0, torchvision_compat=True)
    left, right = official.stage2[0].branch1, official.stage2[0].branch2
    assert (left[2].in_channels, left[2].out_channels) == (24, 24)
    assert (right[0].out_channels, right[5].out_channels) == (58, 92)
    assert compat.stage2[0].branch1[2].out_channels == compat.stage2[0].branch2[5].out_channels == 58
    assert official.fc.bias is None and compat.fc.bias is not None
    # the same key layout (torchvision's), apart from the FC bias; shapes differ only in stage 2's first unit
    assert set(official.state_dict()) == set(compat.state_dict()) - {"fc.bias"}
    assert ShuffleNetV2(2.0).dropout.p == 0.2 and ShuffleNetV2(1.5).dropout.p == 0.0
    assert ShuffleNetV2(2.0, torchvision_compat=True).dropout.p == 0.0
    ref = model_card("shufflenet_v2_x1_0").torchvision
    assert (ref.builder, ref.weights, ref.model_kwargs) == (
        "shufflenet_v2_x1_0",
        "ShuffleNet_V2_X1_0_Weights",
        {"torchvision_compat": True},
    )


def randomize(model: nn.Module) -> None:
    """Fan-in-scaled random weights and random BN statistics, so that parity is tested on non-trivial values."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif t.dim() > 1:
                t.normal_(0, (2 / t[0].numel()) ** 0.5)
            else:
                t.normal_(0, 0.1)


@pytest.mark.parametrize("suffix", ["x0_5", "x1_0", "x1_5", "x2_0"])
def test_v2_torchvision_parity(suffix: str) -> None:
    theirs = getattr(torchvision.models, f"shufflenet_v2_{suffix}")().eval()
    randomize(theirs)
    ours = create_model(f"shufflenet_v2_{suffix}", torchvision_compat=True).eval()
    load_weights(ours, theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_bad_input_raises_value_error() -> None:
    with pytest.raises(ValueError, match="groups=5"):
        ShuffleNetV1(groups=5)
    with pytest.raises(ValueError, match=r"width_mult=0\.01 is too small"):
        ShuffleNetV1(groups=3, width_mult=0.01)
    with pytest.raises(ValueError, match="width_mult"):
        ShuffleNetV1(groups=3, width_mult=0)
    with pytest.raises(ValueError, match=r"width_mult=0\.75 is not a ShuffleNet V2 width"):
        ShuffleNetV2(width_mult=0.75)
    with pytest.raises(ValueError, match="drop_rate"):
        ShuffleNetV2(drop_rate=1.5)
    for model in (ShuffleNetV1(groups=8, width_mult=0.5), ShuffleNetV2(0.5)):
        with pytest.raises(ValueError, match="16x16 is too small"):
            model(torch.randn(1, 3, 16, 16))


def test_v2_star_adds_one_depthwise_conv_at_the_head_of_each_right_branch() -> None:
    """ShuffleNet v2* (paper section 4): a stride-1 DW3x3 + BN before the first pointwise conv of every unit; the plain
    net's modules keep their names and shapes (only branch2's indices shift by two)."""
    plain, star = ShuffleNetV2(1.0), create_model("shufflenet_v2_star_x1_0")
    units = [u for s in ("stage2", "stage3", "stage4") for u in getattr(star, s)]
    assert len(units) == 16
    for unit in units:
        dw, bn, pw = unit.branch2[0], unit.branch2[1], unit.branch2[2]
        assert dw.groups == dw.in_channels == dw.out_channels and dw.kernel_size == (3, 3) and dw.stride == (1, 1)
        assert isinstance(bn, nn.BatchNorm2d) and pw.kernel_size == (1, 1)
        assert len(unit.branch2) == 10
    extra = {k for k in star.state_dict() if re.search(r"branch2\.[01]\.", k)}
    assert {re.sub(r"branch2\.(\d+)", lambda m: f"branch2.{int(m.group(1)) + 2}", k) for k in plain.state_dict()} | (
        extra
    ) == set(star.state_dict())
    assert model_card("shufflenet_v2_star_x0_5").paper_variant == "shufflenet_v2_star_0.5x"
    assert "leaves open" in model_card("shufflenet_v2_star_x2_0").notes
