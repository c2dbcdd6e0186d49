"""GhostNet 0.5x / 1.0x / 1.3x (Han et al., "GhostNet: More Features from Cheap Operations", arXiv:1911.11907v2,
CVPR 2020; Table 1: the architecture, Table 7: the ImageNet figures).

The bottleneck table below is the paper's Table 1, identical to the official PyTorch code's ``cfgs``
(huawei-noah/Efficient-AI-Backbones ``ghostnet_pytorch/ghostnet.py``, which timm's ``ghostnet_050/100/130`` port):
MobileNetV3-Large's layout with every bneck replaced by a Ghost bottleneck. A Ghost module makes ``ceil(out / 2)``
"intrinsic" maps with a 1x1 conv and as many "ghost" maps from them with a cheap 3x3 depthwise conv, concatenated
(and sliced to ``out`` when it is odd). ReLU throughout (no h-swish: the paper finds it slow), SE with a hard-sigmoid
gate, and a head of 1x1 conv -> 960 (BN, ReLU), pooling, 1x1 conv -> 1280 (bias, no BN), ReLU, dropout, FC.
Widths are ``make_divisible(c * width, 4)``; the 1280 head is never scaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mobilezoo.layers import ConvNormAct, SqueezeExcite, init_weights, make_divisible
from mobilezoo.models.base import (
    FeatureInfo,
    PooledHeadModel,
    check_drop_rate,
    check_in_chans,
    check_num_classes,
    check_width_mult,
)
from mobilezoo.registry import register_model


@dataclass(frozen=True)
class GBneck:
    """One G-bneck row of Table 1: depthwise kernel (of the stride-2 and shortcut convs), expansion size (#exp),
    output channels (#out), SE, stride."""

    kernel: int
    exp: int
    out: int
    se: bool
    stride: int


# Paper Table 1: conv2d 3x3 16 s2, these G-bnecks, conv2d 1x1 960, AvgPool 7x7, conv2d 1x1 1280, FC. The kernel column
# is the official code's (Table 1 leaves it implicit: MobileNetV3-Large's 3x3 / 5x5 per stage).
GHOSTNET = (
    GBneck(kernel=3, exp=16, out=16, se=False, stride=1),
    GBneck(kernel=3, exp=48, out=24, se=False, stride=2),
    GBneck(kernel=3, exp=72, out=24, se=False, stride=1),
    GBneck(kernel=5, exp=72, out=40, se=True, stride=2),
    GBneck(kernel=5, exp=120, out=40, se=True, stride=1),
    GBneck(kernel=3, exp=240, out=80, se=False, stride=2),
    GBneck(kernel=3, exp=200, out=80, se=False, stride=1),
    GBneck(kernel=3, exp=184, out=80, se=False, stride=1),
    GBneck(kernel=3, exp=184, out=80, se=False, stride=1),
    GBneck(kernel=3, exp=480, out=112, se=True, stride=1),
    GBneck(kernel=3, exp=672, out=112, se=True, stride=1),
    GBneck(kernel=5, exp=672, out=160, se=True, stride=2),
    GBneck(kernel=5, exp=960, out=160, se=False, stride=1),
    GBneck(kernel=5, exp=960, out=160, se=True, stride=1),
    GBneck(kernel=5, exp=960, out=160, se=False, stride=1),
    GBneck(kernel=5, exp=960, out=160, se=True, stride=1),
)
STEM_CHANNELS = 16
LAST_CONV = 960  # scaled with the width
HEAD_CHANNELS = 1280  # never scaled
DIVISOR = 4  # the official _make_divisible(c * width, 4)
GHOST_RATIO = 2  # s in the paper: 1/s of a Ghost module's outputs come from the primary conv
CHEAP_KERNEL = 3  # d in the paper: the cheap depthwise conv's kernel
SE_RATIO = 0.25


def se_channels(exp_chs: int) -> int:
    """The SE squeeze width: a quarter of the *expanded* width, rounded to a multiple of 4 (the official code)."""
    return make_divisible(exp_chs * SE_RATIO, DIVISOR)


class GhostModule(nn.Module):
    """The Ghost module (paper Fig. 2(b), Eq. 3): a primary 1x1 conv to ``m = ceil(out / ratio)`` intrinsic maps, a
    cheap ``dw_size`` x ``dw_size`` depthwise conv giving ``ratio - 1`` ghost maps per intrinsic one, both with BN
    (and ReLU when ``relu``), concatenated: ``m * ratio`` maps, sliced to the first ``out_chs`` when that is more.
    """

    def __init__(
        self, in_chs: int, out_chs: int, ratio: int = GHOST_RATIO, dw_size: int = CHEAP_KERNEL, relu: bool = True
    ) -> None:
        super().__init__()
        if not isinstance(ratio, int) or ratio < 2:
            raise ValueError(f"ratio must be an integer >= 2 (1 / ratio of the maps are intrinsic), got {ratio!r}")
        init_chs = math.ceil(out_chs / ratio)
        act = "relu" if relu else None
        self.primary_conv = ConvNormAct(in_chs, init_chs, 1, act=act)
        self.cheap_operation = ConvNormAct(init_chs, init_chs * (ratio - 1), dw_size, groups=init_chs, act=act)
        self.out_chs = out_chs
        # the official code always slices; at an even out_chs (every registered width) the slice keeps everything,
        # so it is left out of the graph there
        self.trim = init_chs * ratio != out_chs

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary_conv(x)
        out = torch.cat([x1, self.cheap_operation(x1)], dim=1)
        if self.trim:
            out = out[:, : self.out_chs]
        return out


class GhostBottleneck(nn.Module):
    """The Ghost bottleneck (paper Fig. 3): Ghost module (ReLU) -> [depthwise kxk stride 2 + BN, no activation, when
    stride 2] -> [SE] -> Ghost module (linear). The shortcut is the identity when stride 1 and in == out; otherwise a
    depthwise kxk (the block's stride) + BN and a 1x1 conv + BN to ``out_chs`` (the official code: also at stride 1
    when the width changes, as the 80 -> 112 block)."""

    def __init__(self, in_chs: int, exp_chs: int, out_chs: int, kernel: int, stride: int, se: bool) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        self.ghost1 = GhostModule(in_chs, exp_chs, relu=True)
        # Identity placeholders keep one forward for every configuration (TorchScript, torch.fx)
        self.conv_dw = (
            ConvNormAct(exp_chs, exp_chs, kernel, stride=stride, groups=exp_chs, act=None)
            if stride == 2
            else nn.Identity()
        )
        self.se = SqueezeExcite(exp_chs, se_channels(exp_chs), act="relu", gate="hsigmoid") if se else nn.Identity()
        self.ghost2 = GhostModule(exp_chs, out_chs, relu=False)
        self.identity_shortcut = stride == 1 and in_chs == out_chs
        if self.identity_shortcut:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                ConvNormAct(in_chs, in_chs, kernel, stride=stride, groups=in_chs, act=None),
                ConvNormAct(in_chs, out_chs, 1, act=None),
            )
        self.out_channels = out_chs

    def forward(self, x: Tensor) -> Tensor:
        return self.ghost2(self.se(self.conv_dw(self.ghost1(x)))) + self.shortcut(x)


class GhostNet(PooledHeadModel):
    """GhostNet at width multiplier ``width_mult`` (the paper's 0.5x / 1.0x / 1.3x; any width > 0 builds).

    ``features``: the stem (conv 3x3 s2, BN, ReLU), the 16 Ghost bottlenecks of :data:`GHOSTNET`, the 1x1 conv to
    960 x width (BN, ReLU). ``classifier``: the 1x1 conv to 1280 on the pooled map (a Linear with bias: no BN, as
    MobileNetV3's head), ReLU, dropout ``drop_rate`` (0.2, the official code's) and the FC.
    """

    def __init__(
        self, width_mult: float = 1.0, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2
    ) -> None:
        super().__init__()
        check_width_mult(width_mult)
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        check_drop_rate(drop_rate)
        self.width_mult = width_mult
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = HEAD_CHANNELS
        stem = make_divisible(STEM_CHANNELS * width_mult, DIVISOR)
        features: list[nn.Module] = [ConvNormAct(in_chans, stem, 3, stride=2, act="relu")]
        self.feature_info = []
        in_chs, reduction = stem, 2
        for row in GHOSTNET:
            if row.stride == 2:
                self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(features) - 1}"))
                reduction *= 2
            exp = make_divisible(row.exp * width_mult, DIVISOR)
            out = make_divisible(row.out * width_mult, DIVISOR)
            features.append(GhostBottleneck(in_chs, exp, out, row.kernel, row.stride, row.se))
            in_chs = out
        last_conv = make_divisible(LAST_CONV * width_mult, DIVISOR)
        features.append(ConvNormAct(in_chs, last_conv, 1, act="relu"))
        self.feature_info.append(FeatureInfo(last_conv, reduction, f"features.{len(features) - 1}"))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, HEAD_CHANNELS),  # Table 1's "Conv2d 1x1, 1280" on the 1x1 pooled map
            nn.ReLU(inplace=True),
            nn.Dropout(p=drop_rate),
            nn.Linear(HEAD_CHANNELS, num_classes),
        )
        init_weights(self)


_TABLE = "Table 7 (ImageNet: top-1, params, FLOPs); Table 1 (architecture)"
_NOTES = (
    "The paper's 'FLOPs' are multiply-adds. Architecture == the official PyTorch code "
    "(huawei-noah/Efficient-AI-Backbones ghostnet_pytorch) == timm ghostnet_{timm}. Ghost modules: ratio s = 2, "
    "3x3 depthwise cheap op, the second module linear; stride-2 bottlenecks add a depthwise kxk s2 + BN between "
    "them; the shortcut is a depthwise kxk + BN + 1x1 conv + BN whenever stride != 1 or in != out (at stride 1 too: "
    "the 80 -> 112 block); SE squeezes to make_divisible(exp / 4, 4) with a hard-sigmoid gate. Widths "
    "make_divisible(c x {width}, 4); the 1x1 conv to 1280 after pooling has a bias and no BN, then ReLU, dropout 0.2 "
    "and the FC. {counts}"
)


@register_model(
    family="GhostNet",
    table=_TABLE,
    paper_variant="ghostnet_0.5_224",
    notes=_NOTES.format(
        timm="050",
        width=0.5,
        counts="Counted 2,587,292 params / 42.33M MAdds at 224: Table 7's 2.6M / 42M (+0.8%, within rounding).",
    ),
)
def ghostnet_x0_5(**kwargs) -> GhostNet:
    return GhostNet(**{"width_mult": 0.5, **kwargs})


@register_model(
    family="GhostNet",
    table=_TABLE,
    paper_variant="ghostnet_1.0_224",
    notes=_NOTES.format(
        timm="100",
        width=1.0,
        counts="Counted 5,182,508 params / 141.15M MAdds at 224: Table 7's 5.2M / 141M. The official weights are "
        "quoted at 73.98% / '142M' (pytorch/hub#98); the GhostNetV2 paper quotes this model at 74.5% (retrained).",
    ),
)
def ghostnet_x1_0(**kwargs) -> GhostNet:
    return GhostNet(**{"width_mult": 1.0, **kwargs})


@register_model(
    family="GhostNet",
    table=_TABLE,
    paper_variant="ghostnet_1.3_224",
    notes=_NOTES.format(
        timm="130",
        width=1.3,
        counts="Counted 7,358,820 params / 227.00M MAdds at 224 against Table 7's 7.3M / 226M: MAdds +0.4%, params "
        "+0.8% (7.36M would round to 7.4M; without BN gamma/beta 7,330,284, still 7.3M). The same as timm ghostnet_130.",
    ),
)
def ghostnet_x1_3(**kwargs) -> GhostNet:
    return GhostNet(**{"width_mult": 1.3, **kwargs})
