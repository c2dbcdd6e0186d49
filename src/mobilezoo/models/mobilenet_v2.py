"""MobileNetV2: inverted residuals and linear bottlenecks (Sandler et al., arXiv:1801.04381, Table 2).

Module names equal torchvision's ``mobilenet_v2`` at every width, so its checkpoints load with ``strict=True``.
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
from mobilezoo.registry import TorchvisionRef, register_model


@dataclass(frozen=True)
class Bottleneck:
    """One row of the paper's Table 2: expansion t, output channels c, repeats n, stride s of the first repeat."""

    t: int
    c: int
    n: int
    s: int


# Paper Table 2 (textbook Table 5-5): conv2d 32 s2, then these bottleneck rows, then conv2d 1x1 1280.
MOBILENET_V2 = (
    Bottleneck(t=1, c=16, n=1, s=1),
    Bottleneck(t=6, c=24, n=2, s=2),
    Bottleneck(t=6, c=32, n=3, s=2),
    Bottleneck(t=6, c=64, n=4, s=2),
    Bottleneck(t=6, c=96, n=3, s=1),
    Bottleneck(t=6, c=160, n=3, s=2),
    Bottleneck(t=6, c=320, n=1, s=1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


class InvertedResidual(nn.Module):
    """Expand 1x1 (skipped when t=1) -> depthwise 3x3 -> linear 1x1 projection; residual iff stride 1 and in == out."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(in_chs * expand_ratio)
        self.use_res_connect = stride == 1 and in_chs == out_chs
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_chs, hidden, 1, act="relu6"))
        layers += [
            ConvNormAct(hidden, hidden, 3, stride=stride, groups=hidden, act="relu6"),
            # the linear projection sits flat in `conv` (not a ConvNormAct), as in torchvision's keys
            nn.Conv2d(hidden, out_chs, 1, bias=False),
            nn.BatchNorm2d(out_chs),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_chs

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(PooledClassifierModel):
    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        round_nearest: int = 8,
    ) -> None:
        super().__init__()
        check_width_mult(width_mult)
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        check_drop_rate(drop_rate)
        self.width_mult = width_mult
        self.in_chans = in_chans
        self.num_classes = num_classes
        stem = make_divisible(STEM_CHANNELS * width_mult, round_nearest)
        # the last conv is never narrower than 1280 (TF's finegrain_classification_mode), wider above width 1.0
        self.num_features = make_divisible(LAST_CHANNELS * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [ConvNormAct(in_chans, stem, 3, stride=2, act="relu6")]
        self.feature_info = []
        in_chs, reduction = stem, 2
        for row in MOBILENET_V2:
            out_chs = make_divisible(row.c * width_mult, round_nearest)
            for i in range(row.n):
                stride = row.s if i == 0 else 1
                if stride == 2:
                    self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(features) - 1}"))
                    reduction *= 2
                features.append(InvertedResidual(in_chs, out_chs, stride, row.t))
                in_chs = out_chs
        features.append(ConvNormAct(in_chs, self.num_features, 1, act="relu6"))
        self.feature_info.append(FeatureInfo(self.num_features, reduction, f"features.{len(features) - 1}"))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=drop_rate), nn.Linear(self.num_features, num_classes))
        init_weights(self)


def _tv(width: float, weights: str | None = None) -> TorchvisionRef:
    return TorchvisionRef(builder="mobilenet_v2", weights=weights, builder_kwargs={"width_mult": width})


_TABLE = "Table 4 (paper); tensorflow/models slim README V2 checkpoints table"


@register_model(
    family="MobileNetV2",
    table=_TABLE,
    paper_variant="mobilenet_v2_1.0_224",
    torchvision=_tv(1.0, "MobileNet_V2_Weights"),
)
def mobilenet_v2(**kwargs) -> MobileNetV2:
    return MobileNetV2(**{"width_mult": 1.0, **kwargs})


@register_model(
    family="MobileNetV2",
    table=_TABLE,
    paper_variant="mobilenet_v2_1.4_224",
    torchvision=_tv(1.4),
    notes="Paper Table 4 prints 6.9M / 585M; the released checkpoint and this architecture are 6.06M (no BN) / 582M.",
)
def mobilenet_v2_x1_4(**kwargs) -> MobileNetV2:
    return MobileNetV2(**{"width_mult": 1.4, **kwargs})


@register_model(family="MobileNetV2", table=_TABLE, paper_variant="mobilenet_v2_1.3_224", torchvision=_tv(1.3))
def mobilenet_v2_x1_3(**kwargs) -> MobileNetV2:
    return MobileNetV2(**{"width_mult": 1.3, **kwargs})


@register_model(family="MobileNetV2", table=_TABLE, paper_variant="mobilenet_v2_0.75_224", torchvision=_tv(0.75))
def mobilenet_v2_x0_75(**kwargs) -> MobileNetV2:
    return MobileNetV2(**{"width_mult": 0.75, **kwargs})


@register_model(family="MobileNetV2", table=_TABLE, paper_variant="mobilenet_v2_0.5_224", torchvision=_tv(0.5))
def mobilenet_v2_x0_5(**kwargs) -> MobileNetV2:
    return MobileNetV2(**{"width_mult": 0.5, **kwargs})


@register_model(family="MobileNetV2", table=_TABLE, paper_variant="mobilenet_v2_0.35_224", torchvision=_tv(0.35))
def mobilenet_v2_x0_35(**kwargs) -> MobileNetV2:
    return MobileNetV2(**{"width_mult": 0.35, **kwargs})
