"""MobileNetV1: depthwise separable convolutions (Howard et al., arXiv:1704.04861, Table 1).

torchvision has no V1, so module names follow this library's V2 (``features`` Sequential, ``classifier``). Each block
is ``dw`` (depthwise 3x3 + BN + ReLU) then ``pw`` (pointwise 1x1 + BN + ReLU), both ConvNormAct.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from mobilezoo.layers import ConvNormAct, init_weights, make_divisible
from mobilezoo.models.base import (
    FeatureInfo,
    PooledClassifierModel,
    check_drop_rate,
    check_in_chans,
    check_num_classes,
    check_width_mult,
)
from mobilezoo.registry import register_model


@dataclass(frozen=True)
class Separable:
    """One depthwise-separable row of the paper's Table 1: depthwise stride, then pointwise output channels."""

    stride: int
    out: int


# Paper Table 1: conv 3x3 32 s2, then these 13 dw/pw pairs, then avg pool 7x7, FC 1024 -> 1000.
MOBILENET_V1 = (
    Separable(stride=1, out=64),
    Separable(stride=2, out=128),
    Separable(stride=1, out=128),
    Separable(stride=2, out=256),
    Separable(stride=1, out=256),
    Separable(stride=2, out=512),
    Separable(stride=1, out=512),
    Separable(stride=1, out=512),
    Separable(stride=1, out=512),
    Separable(stride=1, out=512),
    Separable(stride=1, out=512),
    Separable(stride=2, out=1024),
    # Table 1 prints "Conv dw / s2" here, but its input size stays 7x7: a misprint, stride 1 in the TF code and all ports
    Separable(stride=1, out=1024),
)
STEM_CHANNELS = 32
ACTS = ("relu", "relu6")


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 (stride) + BN + act, then pointwise 1x1 + BN + act (paper Fig. 3, right)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, act: str = "relu") -> None:
        super().__init__()
        self.dw = ConvNormAct(in_chs, in_chs, 3, stride=stride, groups=in_chs, act=act)
        self.pw = ConvNormAct(in_chs, out_chs, 1, act=act)
        self.out_channels = out_chs

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(PooledClassifierModel):
    """MobileNetV1 with width multiplier ``width_mult`` (the paper's alpha; channels rounded by ``make_divisible``).

    ``act="relu"`` is the paper's activation; TF-slim's checkpoints use ``"relu6"``. ``drop_rate`` defaults to 0: TF-slim
    trains with keep_prob 0.999, i.e. a drop rate of 0.001, which is negligible.
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        act: str = "relu",
        round_nearest: int = 8,
    ) -> None:
        super().__init__()
        check_width_mult(width_mult)
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        check_drop_rate(drop_rate)
        if act not in ACTS:
            raise ValueError(f"act must be one of {ACTS}, got {act!r}")
        self.width_mult = width_mult
        self.in_chans = in_chans
        self.num_classes = num_classes
        # make_divisible(c*alpha, 8) equals TF-slim's max(int(c*alpha), 8) for alpha in {1, .75, .5, .25}
        stem = make_divisible(STEM_CHANNELS * width_mult, round_nearest)
        features: list[nn.Module] = [ConvNormAct(in_chans, stem, 3, stride=2, act=act)]
        self.feature_info = []
        in_chs, reduction = stem, 2
        for row in MOBILENET_V1:
            if row.stride == 2:
                self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(features) - 1}"))
                reduction *= 2
            out_chs = make_divisible(row.out * width_mult, round_nearest)
            features.append(DepthwiseSeparable(in_chs, out_chs, row.stride, act=act))
            in_chs = out_chs
        self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(features) - 1}"))
        self.num_features = in_chs
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=drop_rate), nn.Linear(self.num_features, num_classes))
        init_weights(self)


_TABLE = "Table 1 (architecture), Table 6 (width multiplier), Table 7 (resolution)"
_NOTES = (
    "Paper activation ReLU (act='relu6' gives TF-slim's). Last depthwise conv is stride 1 (Table 1 misprints s2). "
    "FC counted in MAdds and params, as in paper Table 2."
)


@register_model(family="MobileNetV1", table=_TABLE, paper_variant="mobilenet_v1_1.0_224", notes=_NOTES)
def mobilenet_v1(**kwargs) -> MobileNetV1:
    return MobileNetV1(**{"width_mult": 1.0, **kwargs})


@register_model(
    family="MobileNetV1",
    table=_TABLE,
    paper_variant="mobilenet_v1_0.75_224",
    notes=_NOTES + " TF-slim README lists 317M MACs; the architecture counts 325.4M, as the paper's 325.",
)
def mobilenet_v1_x0_75(**kwargs) -> MobileNetV1:
    return MobileNetV1(**{"width_mult": 0.75, **kwargs})


@register_model(family="MobileNetV1", table=_TABLE, paper_variant="mobilenet_v1_0.5_224", notes=_NOTES)
def mobilenet_v1_x0_5(**kwargs) -> MobileNetV1:
    return MobileNetV1(**{"width_mult": 0.5, **kwargs})


@register_model(family="MobileNetV1", table=_TABLE, paper_variant="mobilenet_v1_0.25_224", notes=_NOTES)
def mobilenet_v1_x0_25(**kwargs) -> MobileNetV1:
    return MobileNetV1(**{"width_mult": 0.25, **kwargs})
