"""ShuffleNet V2: channel split, concat and shuffle (Ma et al., arXiv:1807.11164, Fig. 3 and Table 5).

The default is the official architecture (megvii-model/ShuffleNet-Series ``ShuffleNetV2/``): in the first unit of
stage 2 the left branch keeps conv1's 24 channels and the right branch gives ``out - 24`` (bottleneck ``out / 2``), the
FC has no bias, and 2.0x has dropout 0.2 before the FC. ``torchvision_compat=True`` builds torchvision's variant (both
branches ``out / 2``, FC with bias). Module names equal torchvision's ``shufflenet_v2_x*`` in both variants, so
torchvision's checkpoints load with ``strict=True`` into the compatible one.

ShuffleNet v2* (paper section 4, "Object Detection", Table 7): ``star=True`` adds "an additional 3x3 depthwise
convolution before the first pointwise convolution in each building block" to enlarge the receptive field (3 -> 5 per
block). Only the right branch begins with a pointwise conv (the stride-2 unit's left branch already begins with a
depthwise conv), so the extra DW3x3 + BN (no ReLU, like the net's other depthwise convs) heads ``branch2`` of every
unit; its indices shift by two, the other modules keep their names.

``shuffle="megvii"`` gives the official code's channel order. Its stride-1 unit begins by sending the even channels
past the branch and the odd ones into it, and no unit shuffles after its concat; that equals ending every unit with
the inverse shuffle (the channels viewed as (C/2, 2): evens first, then odds) instead of this module's (2, C/2)
interleave, with the permutations left at each stage's end folded into the next convs (the megvii key map in
``mobilezoo.weights`` does that). The default order cannot take the official 1.0x-2.0x checkpoints: with stage 2's
first unit giving 24 + (out - 24) channels, the interleave passes all 24 left-branch channels past the next unit,
where the official net passes 12 of them, and no permutation of the weights makes up for it (0.5x, 24 + 24, can).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mobilezoo.layers import ConvNormAct, channel_shuffle, init_weights
from mobilezoo.models.base import (
    FeatureInfo,
    PooledFcModel,
    check_drop_rate,
    check_in_chans,
    check_num_classes,
)
from mobilezoo.registry import TorchvisionRef, register_model


@dataclass(frozen=True)
class Stage:
    """One stage row of Table 5: output size at 224 px, units (the first has stride 2)."""

    name: str
    size: int
    units: int


@dataclass(frozen=True)
class Width:
    """One column of Table 5: output channels of stages 2, 3, 4 and of conv5."""

    stages: tuple[int, int, int]
    conv5: int


SHUFFLES = ("paper", "megvii")

# Paper Table 5 (textbook Table 5-12): conv1 3x3 s2 24 ch + maxpool 3x3 s2, stages, conv5 1x1, pool, FC 1000.
CONV1_CHANNELS = 24
SHUFFLENET_V2 = (
    Stage(name="stage2", size=28, units=4),
    Stage(name="stage3", size=14, units=8),
    Stage(name="stage4", size=7, units=4),
)
WIDTHS: dict[float, Width] = {
    0.5: Width(stages=(48, 96, 192), conv5=1024),
    1.0: Width(stages=(116, 232, 464), conv5=1024),
    1.5: Width(stages=(176, 352, 704), conv5=1024),
    2.0: Width(stages=(244, 488, 976), conv5=2048),
}


class InvertedResidual(nn.Module):
    """Fig. 3 (c) stride 1: split, right branch 1x1 -> dw3x3 (no ReLU) -> 1x1, concat, shuffle(2).
    Fig. 3 (d) stride 2: no split; left branch dw3x3 s2 -> 1x1, right branch as above with the dw at stride 2.

    ``branch1``/``branch2`` are flat Sequentials with torchvision's indices. A stride-2 unit maps ``in_chs`` to
    ``left_chs`` (left) + ``out_chs - left_chs`` (right, through ``mid_chs``). ``star=True`` (ShuffleNet v2*) puts a
    stride-1 DW3x3 + BN at the head of ``branch2``, the branch that begins with a pointwise conv.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, mid_chs: int, left_chs: int, star: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.keep = in_chs // 2 if stride == 1 else 0
        self.shuffle_groups = 2  # ShuffleNetV2(shuffle="megvii") sets out_chs // 2: the inverse shuffle
        if stride == 1:
            # the left half passes through unchanged
            right_in, right_out = in_chs - self.keep, out_chs - self.keep
            self.branch1 = nn.Sequential()
        else:
            right_in, right_out = in_chs, out_chs - left_chs
            self.branch1 = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, 3, stride, 1, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, left_chs, 1, bias=False),
                nn.BatchNorm2d(left_chs),
                nn.ReLU(inplace=True),
            )
        extra: list[nn.Module] = []
        if star:
            extra = [nn.Conv2d(right_in, right_in, 3, 1, 1, groups=right_in, bias=False), nn.BatchNorm2d(right_in)]
        self.branch2 = nn.Sequential(
            *extra,
            nn.Conv2d(right_in, mid_chs, 1, bias=False),
            nn.BatchNorm2d(mid_chs),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_chs, mid_chs, 3, stride, 1, groups=mid_chs, bias=False),
            nn.BatchNorm2d(mid_chs),
            nn.Conv2d(mid_chs, right_out, 1, bias=False),
            nn.BatchNorm2d(right_out),
            nn.ReLU(inplace=True),
        )
        self.out_channels = out_chs

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            # slices at a fixed channel (not chunk, whose traced split point is computed from the input's shape)
            out = torch.cat((x[:, : self.keep], self.branch2(x[:, self.keep :])), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, self.shuffle_groups)


class ShuffleNetV2(PooledFcModel):
    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float | None = None,
        torchvision_compat: bool = False,
        star: bool = False,
        shuffle: str = "paper",
    ) -> None:
        """``drop_rate`` None means the official choice: 0.2 at 2.0x (megvii), else 0 (and 0 for torchvision's).
        ``star=True`` builds ShuffleNet v2* (the extra depthwise conv per unit, see the module docstring)."""
        super().__init__()
        if width_mult not in WIDTHS:
            raise ValueError(f"width_mult={width_mult!r} is not a ShuffleNet V2 width; expected one of {list(WIDTHS)}")
        if shuffle not in SHUFFLES:
            raise ValueError(f"shuffle must be one of {SHUFFLES}, got {shuffle!r}")
        if drop_rate is None:
            drop_rate = 0.2 if width_mult == 2.0 and not torchvision_compat else 0.0
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        check_drop_rate(drop_rate)
        self.width_mult = width_mult
        self.torchvision_compat = torchvision_compat
        self.star = star
        self.shuffle = shuffle
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        width = WIDTHS[width_mult]
        self.conv1 = ConvNormAct(in_chans, CONV1_CHANNELS, 3, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.feature_info = [FeatureInfo(CONV1_CHANNELS, 2, "conv1"), FeatureInfo(CONV1_CHANNELS, 4, "maxpool")]
        in_chs, reduction = CONV1_CHANNELS, 4
        for stage, out_chs in zip(SHUFFLENET_V2, width.stages):
            # official: the left branch keeps the input width (24 -> 24 in stage 2); torchvision: out / 2 per branch.
            # From stage 3 on both coincide (in = out / 2).
            left = out_chs // 2 if torchvision_compat else in_chs
            units = [InvertedResidual(in_chs, out_chs, 2, out_chs // 2, left, star)]
            units += [
                InvertedResidual(out_chs, out_chs, 1, out_chs // 2, out_chs // 2, star) for _ in range(stage.units - 1)
            ]
            if shuffle == "megvii":
                for unit in units:
                    unit.shuffle_groups = out_chs // 2
            setattr(self, stage.name, nn.Sequential(*units))
            in_chs, reduction = out_chs, reduction * 2
            if stage.name != "stage4":
                self.feature_info.append(FeatureInfo(out_chs, reduction, stage.name))
        self.num_features = width.conv5
        self.conv5 = ConvNormAct(in_chs, self.num_features, 1)
        self.feature_info.append(FeatureInfo(self.num_features, reduction, "conv5"))
        self.dropout = nn.Dropout(p=drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes, bias=torchvision_compat)
        init_weights(self)

    def trunk(self) -> list[tuple[str, nn.Module]]:
        return [(name, getattr(self, name)) for name in ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5")]

    def forward_features(self, x: Tensor) -> Tensor:
        self.check_input(x)
        x = self.maxpool(self.conv1(x))
        return self.conv5(self.stage4(self.stage3(self.stage2(x))))


def _tv(suffix: str) -> TorchvisionRef:
    return TorchvisionRef(
        builder=f"shufflenet_v2_{suffix}",
        weights=f"ShuffleNet_V2_{suffix.upper()}_Weights",
        model_kwargs={"torchvision_compat": True},
    )


_TABLE = "Table 5 (channels, FLOPs, weights) + Table 8 (top-1)"
_TV_NOTE = (
    "torchvision_compat=True builds torchvision's variant (stage-2 first unit out/2 + out/2, FC bias): {tv}. "
    "The default is the official megvii net (left branch 24, right out-24, FC without bias)."
)


@register_model(
    family="ShuffleNetV2",
    table=_TABLE,
    paper_variant="shufflenet_v2_0.5x",
    torchvision=_tv("x0_5"),
    notes=_TV_NOTE.format(tv="1,366,792 params / 40.48M, the same MAdds as the official net"),
)
def shufflenet_v2_x0_5(**kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(**{"width_mult": 0.5, **kwargs})


@register_model(
    family="ShuffleNetV2",
    table=_TABLE,
    paper_variant="shufflenet_v2_1.0x",
    torchvision=_tv("x1_0"),
    notes=_TV_NOTE.format(tv="2,278,604 params / 144.91M vs 145.81M official"),
)
def shufflenet_v2_x1_0(**kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(**{"width_mult": 1.0, **kwargs})


@register_model(
    family="ShuffleNetV2",
    table=_TABLE,
    paper_variant="shufflenet_v2_1.5x",
    torchvision=_tv("x1_5"),
    notes=_TV_NOTE.format(tv="3,503,624 params / 295.76M vs 298.97M official"),
)
def shufflenet_v2_x1_5(**kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(**{"width_mult": 1.5, **kwargs})


@register_model(
    family="ShuffleNetV2",
    table=_TABLE,
    paper_variant="shufflenet_v2_2.0x",
    torchvision=_tv("x2_0"),
    notes=_TV_NOTE.format(tv="7,393,996 params / 583.25M vs 590.78M official; dropout 0.2 before the FC officially"),
)
def shufflenet_v2_x2_0(**kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(**{"width_mult": 2.0, **kwargs})


_STAR_TABLE = "Section 4 (Object Detection) + Table 7 (ShuffleNet v2*); widths of Table 5"
_STAR_NOTE = (
    "ShuffleNet v2*: the paper adds 'an additional 3x3 depthwise convolution before the first pointwise convolution "
    "in each building block' and gives only detection results (Table 7: COCO mmAP, GPU speed at 800x1200), no "
    "ImageNet accuracy, FLOPs or weights. What it leaves open, read literally here: the extra conv is a stride-1 "
    "DW3x3 + BN without ReLU (as the net's other depthwise convs) at the head of the right branch of every unit; "
    "the stride-2 unit's left branch begins with a depthwise conv already and gets none; conv1, the stages' widths "
    "and conv5 are those of shufflenet_v2_{w}; the official megvii layout (torchvision_compat=False). No reference "
    "implementation exists: counts are this architecture's."
)


@register_model(
    family="ShuffleNetV2", table=_STAR_TABLE, paper_variant="shufflenet_v2_star_0.5x", notes=_STAR_NOTE.format(w="x0_5")
)
def shufflenet_v2_star_x0_5(**kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(**{"width_mult": 0.5, "star": True, **kwargs})


@register_model(
    family="ShuffleNetV2", table=_STAR_TABLE, paper_variant="shufflenet_v2_star_1.0x", notes=_STAR_NOTE.format(w="x1_0")
)
def shufflenet_v2_star_x1_0(**kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(**{"width_mult": 1.0, "star": True, **kwargs})


@register_model(
    family="ShuffleNetV2", table=_STAR_TABLE, paper_variant="shufflenet_v2_star_1.5x", notes=_STAR_NOTE.format(w="x1_5")
)
def shufflenet_v2_star_x1_5(**kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(**{"width_mult": 1.5, "star": True, **kwargs})


@register_model(
    family="ShuffleNetV2", table=_STAR_TABLE, paper_variant="shufflenet_v2_star_2.0x", notes=_STAR_NOTE.format(w="x2_0")
)
def shufflenet_v2_star_x2_0(**kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(**{"width_mult": 2.0, "star": True, **kwargs})
