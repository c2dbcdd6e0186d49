"""The reference nets of MobileNet V1 Table 8 (textbook Table 5-10): VGG-16 and GoogLeNet.

VGG-16: Simonyan & Zisserman, arXiv:1409.1556, Table 1 column D; module names equal torchvision's ``vgg16``.
GoogLeNet: Szegedy et al., "Going deeper with convolutions", arXiv:1409.4842, Table 1, built as published (true 5x5
branches, conv biases, no BN, LRN in the stem, no auxiliary heads). torchvision's ``googlenet`` differs (3x3 in the
"5x5" branch, pytorch/vision#906, and BN), so its checkpoints do not fit this one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mobilezoo.layers import ConvNormAct, init_weights
from mobilezoo.models.base import (
    FeatureInfo,
    PooledFcModel,
    SequentialTrunkModel,
    check_drop_rate,
    check_in_chans,
    check_num_classes,
    new_classifier,
)
from mobilezoo.registry import TorchvisionRef, register_model

# VGG paper Table 1, configuration D: 3x3 conv widths, "M" = 2x2 max pool; then FC-4096, FC-4096, FC-1000.
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG_HIDDEN = 4096


def _linear(in_features: int, out_features: int) -> nn.Linear:
    # skips nn.Linear's own init: init_weights redraws these 120M weights anyway, and drawing them twice is slow
    return nn.utils.skip_init(nn.Linear, in_features, out_features, device=torch.get_default_device())


class VGG16Net(SequentialTrunkModel):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        check_drop_rate(drop_rate)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.num_features = VGG_HIDDEN
        layers: list[nn.Module] = []
        self.feature_info = []
        in_chs, reduction = in_chans, 1
        for v in VGG16:
            if v == "M":
                self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(layers) - 1}"))
                layers.append(nn.MaxPool2d(2, 2))
                reduction *= 2
            else:
                layers += [nn.Conv2d(in_chs, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                in_chs = int(v)
        self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(layers) - 1}"))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))  # as torchvision: any input >= 32 px gives the 7x7x512 FC input
        self.classifier = nn.Sequential(
            _linear(512 * 7 * 7, VGG_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(p=drop_rate),
            _linear(VGG_HIDDEN, VGG_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(p=drop_rate),
            _linear(VGG_HIDDEN, num_classes),
        )
        init_weights(self)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        c = self.classifier
        x = torch.flatten(self.avgpool(x), 1)
        x = c[5](c[4](c[3](c[2](c[1](c[0](x))))))  # pre-logits: the 4096-d output of the second FC
        if pre_logits:
            return x
        return c[6](x)

    def get_classifier(self) -> nn.Module:
        return self.classifier[6]

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for ``num_classes``; 0 removes it (Identity: the model returns its pre-logits)."""
        check_num_classes(num_classes, allow_zero=True)
        self.num_classes = num_classes
        self.classifier[6] = new_classifier(VGG_HIDDEN, num_classes)


@dataclass(frozen=True)
class Inception:
    """One row of GoogLeNet's Table 1: the widths of the four branches of an inception module."""

    name: str
    c1x1: int
    c3x3_reduce: int
    c3x3: int
    c5x5_reduce: int
    c5x5: int
    pool_proj: int

    @property
    def out_chs(self) -> int:
        return self.c1x1 + self.c3x3 + self.c5x5 + self.pool_proj


# GoogLeNet paper Table 1. Stem: conv 7x7/2 64, maxpool 3x3/2, LRN, conv 1x1 64, conv 3x3 192, LRN, maxpool 3x3/2.
# "M" = max pool 3x3/2 between the inception groups; then avg pool 7x7, dropout 40%, linear 1000.
GOOGLENET = (
    Inception(name="inception3a", c1x1=64, c3x3_reduce=96, c3x3=128, c5x5_reduce=16, c5x5=32, pool_proj=32),
    Inception(name="inception3b", c1x1=128, c3x3_reduce=128, c3x3=192, c5x5_reduce=32, c5x5=96, pool_proj=64),
    "M",
    Inception(name="inception4a", c1x1=192, c3x3_reduce=96, c3x3=208, c5x5_reduce=16, c5x5=48, pool_proj=64),
    Inception(name="inception4b", c1x1=160, c3x3_reduce=112, c3x3=224, c5x5_reduce=24, c5x5=64, pool_proj=64),
    Inception(name="inception4c", c1x1=128, c3x3_reduce=128, c3x3=256, c5x5_reduce=24, c5x5=64, pool_proj=64),
    Inception(name="inception4d", c1x1=112, c3x3_reduce=144, c3x3=288, c5x5_reduce=32, c5x5=64, pool_proj=64),
    Inception(name="inception4e", c1x1=256, c3x3_reduce=160, c3x3=320, c5x5_reduce=32, c5x5=128, pool_proj=128),
    "M",
    Inception(name="inception5a", c1x1=256, c3x3_reduce=160, c3x3=320, c5x5_reduce=32, c5x5=128, pool_proj=128),
    Inception(name="inception5b", c1x1=384, c3x3_reduce=192, c3x3=384, c5x5_reduce=48, c5x5=128, pool_proj=128),
)


def _conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> ConvNormAct:
    return ConvNormAct(in_chs, out_chs, kernel_size, stride=stride, norm=False)  # conv with bias + ReLU


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)  # Caffe rounds pooled sizes up: 112 -> 56 -> 28 -> 14 -> 7


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)  # BVLC GoogLeNet's LRN


class InceptionModule(nn.Module):
    """Fig. 2 (b): 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1, concatenated; every conv has a ReLU."""

    def __init__(self, in_chs: int, row: Inception) -> None:
        super().__init__()
        self.branch1 = _conv(in_chs, row.c1x1, 1)
        self.branch2 = nn.Sequential(_conv(in_chs, row.c3x3_reduce, 1), _conv(row.c3x3_reduce, row.c3x3, 3))
        self.branch3 = nn.Sequential(_conv(in_chs, row.c5x5_reduce, 1), _conv(row.c5x5_reduce, row.c5x5, 5))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), _conv(in_chs, row.pool_proj, 1))
        self.out_channels = row.out_chs

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class GoogLeNet(PooledFcModel):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.4) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        check_drop_rate(drop_rate)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.conv1 = _conv(in_chans, 64, 7, stride=2)
        self.maxpool1 = _pool()
        self.lrn1 = _lrn()
        self.conv2 = _conv(64, 64, 1)
        self.conv3 = _conv(64, 192, 3)
        self.lrn2 = _lrn()
        self.maxpool2 = _pool()
        names = ["conv1", "maxpool1", "lrn1", "conv2", "conv3", "lrn2", "maxpool2"]
        self.feature_info = [FeatureInfo(64, 2, "conv1"), FeatureInfo(192, 4, "lrn2")]
        in_chs, reduction, n_pools = 192, 8, 2
        for row in GOOGLENET:
            if isinstance(row, Inception):
                setattr(self, row.name, InceptionModule(in_chs, row))
                names.append(row.name)
                in_chs = row.out_chs
            else:
                self.feature_info.append(FeatureInfo(in_chs, reduction, names[-1]))
                n_pools += 1
                setattr(self, f"maxpool{n_pools}", _pool())
                names.append(f"maxpool{n_pools}")
                reduction *= 2
        self.feature_info.append(FeatureInfo(in_chs, reduction, names[-1]))
        self._trunk_names = tuple(names)
        self.num_features = in_chs
        self.dropout = nn.Dropout(p=drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    def trunk(self) -> list[tuple[str, nn.Module]]:
        return [(name, getattr(self, name)) for name in self._trunk_names]

    def forward_features(self, x: Tensor) -> Tensor:
        self.check_input(x)
        x = self.lrn1(self.maxpool1(self.conv1(x)))
        x = self.maxpool2(self.lrn2(self.conv3(self.conv2(x))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4c(self.inception4b(self.inception4a(x)))
        x = self.maxpool4(self.inception4e(self.inception4d(x)))
        return self.inception5b(self.inception5a(x))


@register_model(
    family="Reference",
    table="Table 8 (MobileNet paper; reference network)",
    paper_variant="vgg16",
    torchvision=TorchvisionRef(builder="vgg16", weights="VGG16_Weights"),
    notes="The papers' 15300M counts the convolutions only (15,346.6M); with the 3 FC layers 15,470.3M.",
)
def vgg16(**kwargs) -> VGG16Net:
    return VGG16Net(**kwargs)


@register_model(
    family="Reference",
    table="Table 8 (MobileNet paper; reference network)",
    paper_variant="googlenet",
    notes=(
        "Paper-faithful Szegedy-2014 net (true 5x5, no BN, conv biases, LRN, no aux heads): 6,998,552 params / "
        "1,582.67M MAdds; neither the quoted 6.8M nor 1550M is exactly reproducible. Differs from torchvision's "
        "googlenet (3x3 in the '5x5' branch, pytorch/vision#906, plus BN: 6,624,904 params / 1,498M; 13.0M with its "
        "aux heads), whose checkpoints therefore do not load."
    ),
)
def googlenet(**kwargs) -> GoogLeNet:
    return GoogLeNet(**kwargs)
