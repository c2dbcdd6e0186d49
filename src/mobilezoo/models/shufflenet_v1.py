"""ShuffleNet: pointwise group convolution and channel shuffle (Zhang et al., arXiv:1707.01083v2, Table 1).

The unit is the official one (megvii-model/ShuffleNet-Series ``ShuffleNetV1/blocks.py``): the bottleneck is a quarter
of the unit's output channels even in stride-2 units, the first 1x1 of stage 2 is not grouped (24 input channels),
and the classifier has no bias. Counted with the FC, g=3 1.0x is 1,864,728 params / 137.46M MAdds; the paper's
Table 1 complexities (143/140/137/133/137M) are the counts without the FC layer (142.50/140.04/136.50/133.25/136.83M),
while its Table 5 figures (292/524M for g=3 1.5x/2x) include it.

``shuffle="megvii"`` builds the official code's channel order: its unit shuffles after the depthwise conv, viewing
the channels as (C/g, g) where the paper (and ``channel_shuffle``) views them as (g, C/g), the inverse permutation.
Here the shuffle stays before the depthwise conv, so the official checkpoints load with the depthwise conv's and its
BN's channels permuted (``mobilezoo.weights``' megvii key map); a depthwise conv commutes with any channel order.
The default order cannot take those checkpoints in general: for g=8 at 0.5x/1.0x/1.5x no permutation of the grouped
convs' channels maps one order onto the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mobilezoo.layers import ChannelShuffle, ConvNormAct, init_weights
from mobilezoo.models.base import (
    FeatureInfo,
    PooledFcModel,
    check_drop_rate,
    check_in_chans,
    check_num_classes,
    check_width_mult,
)
from mobilezoo.registry import register_model

GROUPS = (1, 2, 3, 4, 8)
SHUFFLES = ("paper", "megvii")


@dataclass(frozen=True)
class Stage:
    """One stage row of Table 1: output size at 224 px, units (the first has stride 2), output channels per g."""

    name: str
    size: int
    units: int
    channels: tuple[int, ...]  # for g = 1, 2, 3, 4, 8 (GROUPS), at 1.0x


# Paper Table 1 (textbook Table 5-11): conv1 3x3 s2 24 ch + maxpool 3x3 s2, then these stages, pool, FC 1000.
CONV1_CHANNELS = 24
SHUFFLENET_V1 = (
    Stage(name="stage2", size=28, units=4, channels=(144, 200, 240, 272, 384)),
    Stage(name="stage3", size=14, units=8, channels=(288, 400, 480, 544, 768)),
    Stage(name="stage4", size=7, units=4, channels=(576, 800, 960, 1088, 1536)),
)


@dataclass(frozen=True)
class Config:
    """conv1 channels and the output channels of stages 2, 3, 4."""

    conv1: int
    stages: tuple[int, int, int]


# megvii ShuffleNetV1/network.py scaled models (conv1 is not 24 x width: 12/16 at 0.5x, 24 at 1.5x, 48 at 2x).
OFFICIAL_CONFIGS: dict[tuple[int, float], Config] = {
    (3, 0.5): Config(conv1=12, stages=(120, 240, 480)),
    (3, 1.5): Config(conv1=24, stages=(360, 720, 1440)),
    (3, 2.0): Config(conv1=48, stages=(480, 960, 1920)),
    (8, 0.5): Config(conv1=16, stages=(192, 384, 768)),  # 12 would leave 192 - 12 channels, not divisible by 8
    (8, 1.5): Config(conv1=24, stages=(576, 1152, 2304)),
    (8, 2.0): Config(conv1=48, stages=(768, 1536, 3072)),
}
# The paper's 0.25x models are unpublished; this conv1 is the choice of paper_numbers.csv (ASSUMED), meeting Table 2's
# "13 MFLOPs" (13.30M). The general rule below would give conv1 = 6 (11.0M).
ASSUMED_CONFIGS: dict[tuple[int, float], Config] = {
    (3, 0.25): Config(conv1=12, stages=(60, 120, 240)),
}


def _round_up(value: float, divisor: int) -> int:
    return math.ceil(value / divisor) * divisor


def shufflenet_v1_config(groups: int, width_mult: float) -> Config:
    """The channels of ShuffleNet V1 ``width_mult``x with ``groups`` groups.

    Table 1 at 1.0x and the official (or assumed) configs where they exist, otherwise :func:`scaled_config`'s rule.
    """
    if groups not in GROUPS:
        raise ValueError(f"groups={groups!r} is not a ShuffleNet V1 setting; expected one of {GROUPS}")
    check_width_mult(width_mult)
    if width_mult == 1.0:
        g = GROUPS.index(groups)
        return Config(
            CONV1_CHANNELS, (SHUFFLENET_V1[0].channels[g], SHUFFLENET_V1[1].channels[g], SHUFFLENET_V1[2].channels[g])
        )
    known = OFFICIAL_CONFIGS.get((groups, width_mult)) or ASSUMED_CONFIGS.get((groups, width_mult))
    return known if known is not None else scaled_config(groups, width_mult)


def scaled_config(groups: int, width_mult: float) -> Config:
    """The rule for widths without a published config; it reproduces Table 1 and every official config.

    Stage 2 = Table 1's width x ``width_mult``, rounded half-up to a multiple of 4g (so that the unit output, its
    bottleneck out/4 and out - in all divide by g); stages 3 and 4 are twice and four times that. conv1 = 24 x width
    below 1.0x, 24 from 1.0x and 48 from 2.0x on (as megvii), rounded up to a multiple of g. Raises ValueError when
    the rounding leaves no channels.
    """
    if groups not in GROUPS:
        raise ValueError(f"groups={groups!r} is not a ShuffleNet V1 setting; expected one of {GROUPS}")
    check_width_mult(width_mult)
    step = 4 * groups
    target = SHUFFLENET_V1[0].channels[GROUPS.index(groups)] * width_mult
    stage2 = int(target / step + 0.5) * step
    if stage2 == 0:
        raise ValueError(
            f"width_mult={width_mult!r} is too small for groups={groups}: stage 2 would have {target:.1f} channels, "
            f"which rounds to 0 (stage widths must be multiples of 4 x groups = {step})"
        )
    conv1_base = CONV1_CHANNELS * width_mult if width_mult < 1.0 else (48 if width_mult >= 2.0 else 24)
    conv1 = max(groups, _round_up(conv1_base, groups))
    if conv1 >= stage2:
        raise ValueError(
            f"width_mult={width_mult!r} with groups={groups} gives conv1 {conv1} >= stage-2 width {stage2}: the first "
            "unit's residual branch (stage width - input width) would be empty"
        )
    return Config(conv1, (stage2, 2 * stage2, 4 * stage2))


class ShuffleV1Unit(nn.Module):
    """Fig. 2 (b)/(c): GConv1x1 -> shuffle -> DWConv3x3 (no ReLU) -> GConv1x1, added to (stride 1) or concatenated
    with a 3x3 average-pooled shortcut (stride 2), then ReLU. ``shuffle="megvii"``: the inverse shuffle, (C/g, g)."""

    def __init__(
        self, in_chs: int, out_chs: int, groups: int, stride: int, group_first: bool = True, shuffle: str = "paper"
    ) -> None:
        super().__init__()
        self.stride = stride
        mid = out_chs // 4  # megvii: output_channel // 4, also in stride-2 units
        branch_out = out_chs - in_chs if stride == 2 else out_chs
        self.branch = nn.Sequential(
            ConvNormAct(in_chs, mid, 1, groups=groups if group_first else 1),
            ChannelShuffle(groups if shuffle == "paper" else mid // groups) if groups > 1 else nn.Identity(),
            ConvNormAct(mid, mid, 3, stride=stride, groups=mid, act=None),
            ConvNormAct(mid, branch_out, 1, groups=groups, act=None),
        )
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.out_channels = out_chs

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return self.act(x + self.branch(x))
        # the shortcut input is a ReLU output, so ReLU after the concat equals megvii's ReLU on the branch alone
        return self.act(torch.cat([self.shortcut(x), self.branch(x)], dim=1))


class ShuffleNetV1(PooledFcModel):
    def __init__(
        self,
        groups: int = 3,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        shuffle: str = "paper",
    ) -> None:
        """``shuffle="megvii"``: the official code's channel order (see the module docstring)."""
        super().__init__()
        config = shufflenet_v1_config(groups, width_mult)
        if shuffle not in SHUFFLES:
            raise ValueError(f"shuffle must be one of {SHUFFLES}, got {shuffle!r}")
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        check_drop_rate(drop_rate)
        self.groups = groups
        self.width_mult = width_mult
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.shuffle = shuffle
        self.conv1 = ConvNormAct(in_chans, config.conv1, 3, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.feature_info = [
            FeatureInfo(config.conv1, 2, "conv1"),
            FeatureInfo(config.conv1, 4, "maxpool"),
        ]
        in_chs, reduction = config.conv1, 4
        for i, (stage, out_chs) in enumerate(zip(SHUFFLENET_V1, config.stages)):
            units = [
                ShuffleV1Unit(
                    in_chs if u == 0 else out_chs,
                    out_chs,
                    groups,
                    stride=2 if u == 0 else 1,
                    group_first=not (i == 0 and u == 0),  # stage 2's first 1x1 sees only conv1's channels
                    shuffle=shuffle,
                )
                for u in range(stage.units)
            ]
            setattr(self, stage.name, nn.Sequential(*units))
            in_chs, reduction = out_chs, reduction * 2
            self.feature_info.append(FeatureInfo(out_chs, reduction, stage.name))
        self.num_features = in_chs
        self.dropout = nn.Dropout(p=drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes, bias=False)  # megvii: no bias
        init_weights(self)

    def trunk(self) -> list[tuple[str, nn.Module]]:
        return [(name, getattr(self, name)) for name in ("conv1", "maxpool", "stage2", "stage3", "stage4")]

    def forward_features(self, x: Tensor) -> Tensor:
        self.check_input(x)
        x = self.maxpool(self.conv1(x))
        return self.stage4(self.stage3(self.stage2(x)))


_TABLE = "Table 1 (channels, complexity) + Table 2 (top-1); scaled models: megvii ShuffleNet-Series"


def _v1(groups: int, width_mult: float, kwargs: dict) -> ShuffleNetV1:
    return ShuffleNetV1(**{"groups": groups, "width_mult": width_mult, **kwargs})


@register_model(
    family="ShuffleNetV1",
    table=_TABLE,
    paper_variant="shufflenet_v1_g1_1.0x",
    notes="Table 1's 143M excludes the FC (142.50M); with the FC 143.08M.",
)
def shufflenet_v1_g1_x1_0(**kwargs) -> ShuffleNetV1:
    return _v1(1, 1.0, kwargs)


@register_model(
    family="ShuffleNetV1",
    table=_TABLE,
    paper_variant="shufflenet_v1_g2_1.0x",
    notes="Table 1's 140M excludes the FC (140.04M); with the FC 140.84M.",
)
def shufflenet_v1_g2_x1_0(**kwargs) -> ShuffleNetV1:
    return _v1(2, 1.0, kwargs)


@register_model(
    family="ShuffleNetV1",
    table=_TABLE,
    paper_variant="shufflenet_v1_g3_1.0x",
    notes="Table 1's 137M excludes the FC (136.50M); with the FC 137.46M (megvii README: 138M).",
)
def shufflenet_v1_g3_x1_0(**kwargs) -> ShuffleNetV1:
    return _v1(3, 1.0, kwargs)


@register_model(
    family="ShuffleNetV1",
    table=_TABLE,
    paper_variant="shufflenet_v1_g4_1.0x",
    notes="Table 1's 133M excludes the FC (133.25M); with the FC 134.34M.",
)
def shufflenet_v1_g4_x1_0(**kwargs) -> ShuffleNetV1:
    return _v1(4, 1.0, kwargs)


@register_model(
    family="ShuffleNetV1",
    table=_TABLE,
    paper_variant="shufflenet_v1_g8_1.0x",
    notes="Table 1's 137M excludes the FC (136.83M); with the FC 138.37M. Tables 2 and 5 print 140M.",
)
def shufflenet_v1_g8_x1_0(**kwargs) -> ShuffleNetV1:
    return _v1(8, 1.0, kwargs)


@register_model(
    family="ShuffleNetV1", table=_TABLE, paper_variant="shufflenet_v1_g3_0.5x", notes="megvii config: conv1 12."
)
def shufflenet_v1_g3_x0_5(**kwargs) -> ShuffleNetV1:
    return _v1(3, 0.5, kwargs)


@register_model(
    family="ShuffleNetV1",
    table=_TABLE,
    paper_variant="shufflenet_v1_g3_1.5x",
    notes="megvii config: conv1 24 (not 36). Table 5's 292M includes the FC.",
)
def shufflenet_v1_g3_x1_5(**kwargs) -> ShuffleNetV1:
    return _v1(3, 1.5, kwargs)


@register_model(
    family="ShuffleNetV1",
    table=_TABLE,
    paper_variant="shufflenet_v1_g3_2.0x",
    notes="megvii config: conv1 48. Table 5's 524M includes the FC.",
)
def shufflenet_v1_g3_x2_0(**kwargs) -> ShuffleNetV1:
    return _v1(3, 2.0, kwargs)


@register_model(
    family="ShuffleNetV1",
    table=_TABLE,
    paper_variant="shufflenet_v1_g8_0.5x",
    notes="megvii config: conv1 16 (12 would not divide by 8); 40.5M (megvii README 40M, Table 2 row header 38M).",
)
def shufflenet_v1_g8_x0_5(**kwargs) -> ShuffleNetV1:
    return _v1(8, 0.5, kwargs)


@register_model(
    family="ShuffleNetV1",
    table=_TABLE,
    paper_variant="shufflenet_v1_g8_1.5x",
    notes="Not in the paper: megvii README model (conv1 24).",
)
def shufflenet_v1_g8_x1_5(**kwargs) -> ShuffleNetV1:
    return _v1(8, 1.5, kwargs)


@register_model(
    family="ShuffleNetV1",
    table=_TABLE,
    paper_variant="shufflenet_v1_g8_2.0x",
    notes="Not in the paper: megvii README model (conv1 48).",
)
def shufflenet_v1_g8_x2_0(**kwargs) -> ShuffleNetV1:
    return _v1(8, 2.0, kwargs)
