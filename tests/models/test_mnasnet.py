"""MnasNet specifics: every counted paper_numbers.csv row (A1 at 96-224 px, B1, small, the A1-without-SE ablation), the
withheld counts, torchvision parity for B1, the BatchNorm settings, the SE squeeze rule, widths, and the rows that have
no published architecture (A2, A3, search1), which stay unregistered."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
from torch import nn

from mobilezoo import create_model, list_models, load_weights, model_card
from mobilezoo import weights as wts
from mobilezoo.benchmark.harness import torchvision_counterpart
from mobilezoo.layers import SqueezeExcite
from mobilezoo.models.mnasnet import BN_SETTINGS, MnasBlock, MnasNet, SepConvResidual, se_channels
from mobilezoo.registry import PaperRow, paper_rows
from tests.models.helpers import calibrated, counts

ROWS = [r for r in paper_rows() if r.family == "MnasNet"]
A1 = {1.4: "mnasnet_a1_x1_4", 1.0: "mnasnet_a1_x1_0", 0.75: "mnasnet_a1_x0_75", 0.5: "mnasnet_a1_x0_5"}
A1 |= {0.35: "mnasnet_a1_x0_35"}
B1 = {0.5: "mnasnet_b1_x0_5", 0.75: "mnasnet_b1_x0_75", 1.0: "mnasnet_b1_x1_0", 1.3: "mnasnet_b1_x1_3"}
# paper_numbers.csv variant -> (registered model, extra kwargs); the row gives the resolution
VARIANTS: dict[str, tuple[str, dict]] = {
    f"mnasnet_a1_{w}_{res}": (name, {}) for w, name in A1.items() for res in (224, 192, 160, 128, 96)
}
VARIANTS |= {f"mnasnet_b1_{w}_224": (name, {}) for w, name in B1.items()}
VARIANTS |= {
    "mnasnet_a1_noSE_1.0_224": ("mnasnet_a1_x1_0", {"se": False}),  # an ablation, not a paper model
    "mnasnet_b1_0.35_224": ("mnasnet_b1_x1_0", {"width_mult": 0.35}),  # no torchvision builder: not registered
    "mnasnet_b1_1.4_224": ("mnasnet_b1_x1_0", {"width_mult": 1.4}),  # timm mnasnet_140
    "mnasnet_small_224": ("mnasnet_small", {}),
}
# The rows whose exact counts the reference withholds, derived here from the architecture (== timm semnasnet_035 /
# mnasnet_small == TF): (params, params without BN gamma/beta, MAdds in millions)
WITHHELD = {
    "mnasnet_a1_0.35_224": (1_747_018, 1_733_002, 61.68),
    "mnasnet_small_224": (2_030_264, 2_013_336, 68.34),
}
# paper rows with no published architecture: listed, never registered
UNPUBLISHED = {"mnasnet_a2_224", "mnasnet_a3_224", "mnasnet_search1_224"}


def test_every_row_is_mapped_or_unpublished() -> None:
    assert {r.variant for r in ROWS} == set(VARIANTS) | UNPUBLISHED
    assert len(ROWS) == 36  # the reference's MnasNet rows, all of them


@pytest.mark.parametrize("row", [r for r in ROWS if r.counted_params is not None], ids=lambda r: r.variant)
def test_counts_match_paper_numbers(row: PaperRow) -> None:
    name, kwargs = VARIANTS[row.variant]
    params, params_no_bn, madds = counts(name, row.resolution, **kwargs)
    assert params == row.counted_params
    assert madds == pytest.approx(row.counted_madds_m, rel=0.005)
    no_bn = re.search(r"\[impl params without BN gamma/beta: (\d+)\]", row.notes)
    assert no_bn is not None, row.notes
    assert params_no_bn == int(no_bn.group(1))


@pytest.mark.parametrize("variant", sorted(WITHHELD))
def test_withheldcounts(variant: str) -> None:
    """The withheld rows, pinned, and how they compare with the paper: A1 0.35 counts 1.75M / 61.68M against Table 4's
    1.7M / 63M (+2.1%, the README's 63.2 +2.5%: the gap of every README figure at this width); small counts 2.03M /
    68.34M against the paper's 2.0M / 68M."""
    row = next(r for r in ROWS if r.variant == variant)
    assert row.counted_params is None and row.counted_madds_m is None  # the csv keeps the reference's blanks
    name, kwargs = VARIANTS[variant]
    params, params_no_bn, madds = counts(name, row.resolution, **kwargs)
    want_params, want_no_bn, want_madds = WITHHELD[variant]
    assert (params, params_no_bn) == (want_params, want_no_bn)
    assert madds == pytest.approx(want_madds, abs=0.005)
    assert round(params / 1e6, 1) == row.params_m
    assert madds == pytest.approx(row.madds_m, rel=0.025)


def test_a1_at_every_resolution_is_one_model_per_width() -> None:
    """The README's width x resolution grid: one registered model per width, whose card is the 224 row."""
    assert list_models("mnasnet_a1_*") == sorted(A1.values())
    for width, name in A1.items():
        card = model_card(name)
        assert card.paper_variant == f"mnasnet_a1_{width}_224" and card.resolution == 224
    assert {r.resolution for r in ROWS if r.variant.startswith("mnasnet_a1_0.5_")} == {224, 192, 160, 128, 96}
    card = model_card("mnasnet_a1_x1_0")
    assert (card.paper_top1, card.paper_madds_m, card.paper_params_m) == (75.2, 312, 3.9)
    assert model_card("mnasnet_a1_x0_35").paper_madds_m == 63  # Table 4; the README's 63.2 is in the notes


def test_unpublished_architectures_are_not_registered() -> None:
    for variant in UNPUBLISHED:
        row = next(r for r in ROWS if r.variant == variant)
        assert row.counted_params is None and row.counted_madds_m is None and row.madds_m is not None
    cards = [model_card(n) for n in list_models("mnasnet*")]
    assert not {c.paper_variant for c in cards} & UNPUBLISHED
    assert not [n for n in list_models() if re.search(r"mnasnet_(a2|a3|search)", n)]
    assert list_models("mnasnet*") == sorted([*A1.values(), *B1.values(), "mnasnet_small"])


@pytest.mark.parametrize("width", sorted(B1))
def test_torchvision_parity(width: float) -> None:
    """torchvision's mnasnet{0_5,0_75,1_0,1_3}: the same keys, its state_dict loads strict, the same logits at two
    resolutions; and torchvision loads ours back (our state_dict says version 2, the alpha-scaled stem)."""
    alpha = B1[width].removeprefix("mnasnet_b1_x")
    torch.manual_seed(0)
    theirs = calibrated(getattr(torchvision.models, f"mnasnet{alpha}")())
    ours = create_model(B1[width])
    assert list(ours.state_dict()) == list(theirs.state_dict())
    load_weights(ours, theirs.state_dict(), strict=True)
    ours.eval()
    for res in (112, 67):
        x = torch.randn(2, 3, res, res)
        with torch.inference_mode():
            want = theirs(x)
            assert (want[0] - want[1]).abs().max() > 0.1  # the logits depend on the input
            torch.testing.assert_close(ours(x), want, atol=1e-5, rtol=1e-5)
    back = getattr(torchvision.models, f"mnasnet{alpha}")()
    back.load_state_dict(ours.state_dict(), strict=True)
    ref = model_card(B1[width]).torchvision
    assert ref.builder == f"mnasnet{alpha}" and ref.weights == f"MNASNet{alpha}_Weights"
    assert "B1" in model_card(B1[width]).notes and "not the headline A1" in model_card(B1[width]).notes


def test_bench_vs_torchvision_builds_both() -> None:
    ours, theirs = torchvision_counterpart("mnasnet_b1_x0_5")
    assert isinstance(theirs, torchvision.models.MNASNet) and theirs.alpha == 0.5
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    for name in ("mnasnet_a1_x1_0", "mnasnet_small"):
        assert model_card(name).torchvision is None
        with pytest.raises(ValueError, match="no torchvision counterpart"):
            torchvision_counterpart(name)


def _bn(model: nn.Module) -> set[tuple[float, float]]:
    return {(m.eps, m.momentum) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}


def test_bn_settings() -> None:
    """B1 defaults to torchvision's BN (eps 1e-5, momentum 1 - 0.9997: what its checkpoints were trained with);
    bn='paper' is TF's decay 0.99 / epsilon 1e-3, the default of A1 and small."""
    paper, tv = (1e-3, 0.01), (1e-5, 1 - 0.9997)
    assert BN_SETTINGS["paper"] == {"eps": paper[0], "momentum": paper[1]}
    assert _bn(create_model("mnasnet_b1_x0_5")) == _bn(create_model("mnasnet_b1_x1_3")) == {tv}
    assert _bn(create_model("mnasnet_b1_x0_5", bn="paper")) == {paper}
    assert _bn(create_model("mnasnet_a1_x0_35")) == _bn(create_model("mnasnet_small")) == {paper}
    assert _bn(create_model("mnasnet_a1_x0_35", bn="torchvision")) == {tv}
    assert _bn(torchvision.models.mnasnet0_5()) == {tv}
    # the same parameters; in eval mode the settings differ only through eps, which changes the outputs
    tv_bn = calibrated(create_model("mnasnet_b1_x0_5"))
    paper_bn = create_model("mnasnet_b1_x0_5", bn="paper")
    paper_bn.load_state_dict(tv_bn.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        diff = (tv_bn.forward_features(x) - paper_bn.eval().forward_features(x)).abs().max()
    assert diff > 1e-4
    with pytest.raises(ValueError, match=r"bn='tf' is not a BatchNorm setting; expected one of \['paper', 'torch"):
        create_model("mnasnet_b1_x0_5", bn="tf")


def test_torchvision_weights_need_torchvisions_bn(monkeypatch) -> None:
    """weights='torchvision' builds B1 with the BN its checkpoint was trained with and refuses the paper's."""
    calls = []

    def state_dict(enum_name: str, member: str = "DEFAULT", progress: bool = True) -> dict:
        calls.append(enum_name)
        torch.manual_seed(1)
        return torchvision.models.mnasnet0_5().state_dict()

    monkeypatch.setattr(wts, "torchvision_state_dict", state_dict)
    model = create_model("mnasnet_b1_x0_5", weights="torchvision")
    assert calls == ["MNASNet0_5_Weights"] and _bn(model) == {(1e-5, 1 - 0.9997)}
    torch.manual_seed(1)
    torch.testing.assert_close(model.state_dict()["layers.0.weight"], torchvision.models.mnasnet0_5().layers[0].weight)
    with pytest.raises(ValueError, match=r"checkpoint for 'mnasnet_b1_x0_5' needs bn='torchvision', got 'paper'"):
        create_model("mnasnet_b1_x0_5", weights="torchvision", bn="paper")
    with pytest.raises(ValueError, match=r"torchvision has no checkpoint for 'mnasnet_a1_x1_0'"):
        create_model("mnasnet_a1_x1_0", weights="torchvision")


def _ses(model: nn.Module) -> list[tuple[int, int, int]]:
    """(block input, expanded, squeeze) channels of every SE block."""
    out = []
    for block in model.modules():
        if isinstance(block, MnasBlock):
            ses = [m for m in block.layers if isinstance(m, SqueezeExcite)]
            if ses:
                out.append((block.layers[0].in_channels, ses[0].fc1.in_channels, ses[0].fc1.out_channels))
    return out


def test_se_squeezes_a_quarter_of_the_block_input() -> None:
    """A1's SE squeezes to int(0.25 x the block's INPUT channels) (TF), not 0.25 x the expanded width (MobileNetV3):
    the first 40-channel block takes 24 channels, expands to 72 and squeezes to 6, not 18."""
    a1 = create_model("mnasnet_a1_x1_0")
    assert _ses(a1) == [
        (24, 72, 6), (40, 120, 10), (40, 120, 10),
        (80, 480, 20), (112, 672, 28),
        (112, 672, 28), (160, 960, 40), (160, 960, 40),
    ]  # fmt: skip
    assert [s for _, _, s in _ses(create_model("mnasnet_small"))] == [4, 8, 8, 8, 8, 8, 8, 8, 22, 22]
    assert [s for _, _, s in _ses(create_model("mnasnet_a1_x0_35"))][:3] == [2, 4, 4]  # 8 -> 2, 16 -> 4
    assert se_channels(3) == 1 and se_channels(88) == 22 and se_channels(90) == 22
    for block in (m for m in a1.modules() if isinstance(m, MnasBlock)):
        kinds = [type(m) for m in block.layers]
        if SqueezeExcite in kinds:  # after the depthwise conv's BN + ReLU, before the linear projection
            se = block.layers[kinds.index(SqueezeExcite)]
            assert kinds[kinds.index(SqueezeExcite) - 3 : kinds.index(SqueezeExcite) + 2] == [
                nn.Conv2d, nn.BatchNorm2d, nn.ReLU, SqueezeExcite, nn.Conv2d
            ]  # fmt: skip
            assert isinstance(se.activation, nn.ReLU) and isinstance(se.scale_activation, nn.Sigmoid)
            assert se.fc1.bias is not None and se.fc2.bias is not None
    assert _ses(create_model("mnasnet_a1_x1_0", se=False)) == [] == _ses(create_model("mnasnet_b1_x1_0"))
    with pytest.raises(ValueError, match="se must be True or False, got 'no'"):
        create_model("mnasnet_a1_x1_0", se="no")


def _widths(model: MnasNet) -> list[int]:
    """Stem, SepConv, then each stack's output, then the head."""
    return [model.layers[0].out_channels, model.layers[6].out_channels] + [
        stack[-1].out_channels for stack in model.layers[8:14]
    ] + [model.layers[14].out_channels]  # fmt: skip


def test_widths_rounding_and_fixed_head() -> None:
    # the 10% rule: 0.35 rounds the stem 11.2 up to 16; 1.4 gives 48/24 and 32/56/112/160/224/448; the head stays 1280
    assert _widths(create_model("mnasnet_a1_x0_35")) == [16, 8, 8, 16, 32, 40, 56, 112, 1280]
    assert _widths(create_model("mnasnet_a1_x1_4")) == [48, 24, 32, 56, 112, 160, 224, 448, 1280]
    assert _widths(create_model("mnasnet_a1_x1_0")) == [32, 16, 24, 40, 80, 112, 160, 320, 1280]
    # torchvision's version 2 scales B1's stem and SepConv with alpha: 16/8 at 0.5 (version 1 kept 32/16)
    assert _widths(create_model("mnasnet_b1_x0_5")) == [16, 8, 16, 24, 40, 48, 96, 160, 1280]
    assert _widths(create_model("mnasnet_small")) == [8, 8, 16, 16, 32, 32, 88, 144, 1280]
    assert all(create_model(n).num_features == 1280 for n in ("mnasnet_a1_x0_35", "mnasnet_b1_x1_3"))


def test_structure_skips_strides_and_dropout() -> None:
    a1 = create_model("mnasnet_a1_x1_0")
    assert isinstance(a1.layers[2], nn.ReLU)  # the stem's ReLU (TF's relu(bn0(conv_stem)))
    assert a1.layers[3].groups == 32 and not isinstance(a1.layers[7], nn.ReLU)  # SepConv: linear projection
    blocks = [b for stack in a1.layers[8:14] for b in stack]
    assert [b.layers[-2].in_channels // b.layers[0].in_channels for b in blocks] == [6] * 2 + [3] * 3 + [6] * 10
    # stages 24 (x2), 40 (x3), 80 (x4), 112 (x2), 160 (x3), 320 (x1): each first block changes the width
    skips = [False, True, False, True, True, False, True, True, True, False, True, False, True, True, False]
    assert [b.use_res_connect for b in blocks] == skips
    kernels = [b.layers[3].kernel_size[0] for b in blocks]
    assert kernels == [3, 3, 5, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5, 3]
    assert [f.reduction for f in a1.feature_info] == [2, 4, 8, 16, 32]
    assert [f.num_chs for f in a1.feature_info] == [16, 24, 40, 112, 1280]
    assert a1.classifier[0].p == 0.2 and create_model("mnasnet_small").classifier[0].p == 0.0
    small = create_model("mnasnet_small")
    assert [f.num_chs for f in small.feature_info] == [8, 16, 16, 32, 1280]
    with torch.no_grad():
        assert small.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 1280, 2, 2)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"arch='a2' is not a MnasNet architecture; expected one of \['a1', 'b1'"):
        MnasNet(arch="a2")
    with pytest.raises(ValueError, match="width_mult must be a number > 0, got 0"):
        create_model("mnasnet_small", width_mult=0)
    with pytest.raises(ValueError, match="drop_rate"):
        create_model("mnasnet_a1_x0_5", drop_rate=1.0)
    with pytest.raises(ValueError, match="too small"):
        create_model("mnasnet_b1_x0_5")(torch.randn(1, 3, 31, 64))


def test_bn_eps_and_sepconv_skip_for_timms_weights() -> None:
    """What timm's checkpoints need: ``bn_eps`` sets every BatchNorm's epsilon (the momentum stays the setting's);
    ``sepconv_skip`` adds the SepConv's input to its output (timm's mnasnet_small), only where both are as wide."""
    assert _bn(create_model("mnasnet_a1_x0_35", bn_eps=1e-5)) == {(1e-5, 0.01)}
    assert _bn(create_model("mnasnet_b1_x0_5", bn_eps=1e-3)) == {(1e-3, 1 - 0.9997)}
    with pytest.raises(ValueError, match="bn_eps must be a number > 0, got 0"):
        create_model("mnasnet_small", bn_eps=0)
    plain = calibrated(create_model("mnasnet_small"))
    skip = create_model("mnasnet_small", sepconv_skip=True).eval()
    assert isinstance(skip.layers[3], SepConvResidual) and len(skip.layers) == len(plain.layers) - 4
    # the same tensors in the same order, the SepConv's under layers.3.<i>
    assert [v.shape for v in skip.state_dict().values()] == [v.shape for v in plain.state_dict().values()]
    skip.load_state_dict(dict(zip(skip.state_dict(), plain.state_dict().values())), strict=True)
    assert "layers.3.3.weight" in skip.state_dict() and "layers.6.weight" in plain.state_dict()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stem = plain.layers[:3](x)
        sepconv = plain.layers[3:8](stem)
        torch.testing.assert_close(skip.layers[3](stem), sepconv + stem)
        torch.testing.assert_close(skip.layers[4:](sepconv + stem), plain.layers[8:](sepconv + stem))
        torch.testing.assert_close(torch.jit.script(skip)(x), skip(x))
        assert (skip(x) - plain(x)).abs().max() > 1e-3
        features = create_model("mnasnet_small", sepconv_skip=True, features_only=True)(x)
    assert [f.shape[1] for f in features] == [8, 16, 16, 32, 1280]
    with pytest.raises(ValueError, match=r"sepconv_skip=True needs .* a1 at width_mult=1.0 maps 32 -> 16 channels"):
        create_model("mnasnet_a1_x1_0", sepconv_skip=True)
    with pytest.raises(ValueError, match="sepconv_skip must be True or False, got 1"):
        create_model("mnasnet_small", sepconv_skip=1)
