"""SqueezeNet: fire modules, no BN (Iandola et al., arXiv:1602.07360, Table 1; Table 3 for the bypass variants).

v1.0 is the paper's Table 1; v1.1 is forresti/SqueezeNet's ``SqueezeNet_v1.1/deploy.prototxt`` (not in the paper).
Every conv has a bias and a ReLU, max pools are Caffe's (ceil mode), and the classifier is conv10 (1x1, one channel
per class) + ReLU + global average pooling after dropout 0.5, with no FC. Module names equal torchvision's
``squeezenet1_0``/``squeezenet1_1`` (``features.N``, a fire's ``squeeze``/``expand1x1``/``expand3x3``,
``classifier.1``), so its checkpoints load with ``strict=True``; the fire convs are therefore plain ``nn.Conv2d``
rather than ConvNormAct, whose Sequential would rename them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mobilezoo.models.base import (
    FeatureInfo,
    SequentialTrunkModel,
    check_drop_rate,
    check_in_chans,
    check_num_classes,
)
from mobilezoo.registry import TorchvisionRef, register_model


@dataclass(frozen=True)
class Fire:
    """One fire row of Table 1: squeeze 1x1 width, expand 1x1 and 3x3 widths (output = e1x1 + e3x3)."""

    name: str
    s1x1: int
    e1x1: int
    e3x3: int

    @property
    def out_chs(self) -> int:
        return self.e1x1 + self.e3x3


@dataclass(frozen=True)
class Stem:
    """conv1: output channels and kernel (stride 2, no padding)."""

    out: int
    kernel: int


POOL = "M"  # max pool 3x3 s2, ceil mode

# Paper Table 1: conv1 96 7x7/2, maxpool, fire2-4, maxpool, fire5-8, maxpool, fire9, dropout 0.5, conv10, avgpool.
SQUEEZENET_1_0 = (
    Stem(out=96, kernel=7),
    POOL,
    Fire(name="fire2", s1x1=16, e1x1=64, e3x3=64),
    Fire(name="fire3", s1x1=16, e1x1=64, e3x3=64),
    Fire(name="fire4", s1x1=32, e1x1=128, e3x3=128),
    POOL,
    Fire(name="fire5", s1x1=32, e1x1=128, e3x3=128),
    Fire(name="fire6", s1x1=48, e1x1=192, e3x3=192),
    Fire(name="fire7", s1x1=48, e1x1=192, e3x3=192),
    Fire(name="fire8", s1x1=64, e1x1=256, e3x3=256),
    POOL,
    Fire(name="fire9", s1x1=64, e1x1=256, e3x3=256),
)
_FIRES = {row.name: row for row in SQUEEZENET_1_0 if isinstance(row, Fire)}
# v1.1 prototxt: conv1 64 3x3/2, and the pools after conv1/fire3/fire5 (v1.0: conv1/fire4/fire8); the same fires.
SQUEEZENET_1_1 = (
    Stem(out=64, kernel=3),
    POOL,
    _FIRES["fire2"],
    _FIRES["fire3"],
    POOL,
    _FIRES["fire4"],
    _FIRES["fire5"],
    POOL,
    _FIRES["fire6"],
    _FIRES["fire7"],
    _FIRES["fire8"],
    _FIRES["fire9"],
)
VERSIONS = {"1_0": SQUEEZENET_1_0, "1_1": SQUEEZENET_1_1}
# Table 3's simple bypass: identity shortcuts around the fires whose input and output widths agree
SIMPLE_BYPASS = ("fire3", "fire5", "fire7", "fire9")


class FireModule(nn.Module):
    """Fig. 1: squeeze 1x1 + ReLU, then expand 1x1 + ReLU and expand 3x3 (pad 1) + ReLU, concatenated.

    ``bypass`` adds the input to the output (Table 3's simple bypass; parameter-free, the widths must agree).
    """

    def __init__(self, in_chs: int, row: Fire, bypass: bool = False) -> None:
        super().__init__()
        if bypass and in_chs != row.out_chs:
            raise ValueError(f"{row.name}: a bypass needs equal input and output widths, got {in_chs} -> {row.out_chs}")
        self.bypass = bypass
        self.squeeze = nn.Conv2d(in_chs, row.s1x1, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(row.s1x1, row.e1x1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(row.s1x1, row.e3x3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)
        self.out_channels = row.out_chs

    def forward(self, x: Tensor) -> Tensor:
        s = self.squeeze_activation(self.squeeze(x))
        out = torch.cat([self.expand1x1_activation(self.expand1x1(s)), self.expand3x3_activation(self.expand3x3(s))], 1)
        if self.bypass:
            out = out + x
        return out


def _pool_out(size: int) -> int:
    """A 3x3/2 ceil-mode max pool's output size (Caffe's and PyTorch's rule, ceil((size - 3) / 2) + 1); 0 where
    PyTorch refuses the input. A 2-px input still gives one (clipped) window."""
    return (size - 2) // 2 + 1 if size >= 2 else 0


def min_input_size(table: tuple) -> int:
    """The smallest input side for which every layer of ``table`` gets a valid input and the final map is >= 1x1.

    Unpadded conv1 and ceil-mode pools, fires keeping the size: 21 px for v1.0 (21 -> 8 -> 4 -> 2 -> 1), 17 px for
    v1.1 (17 -> 8 -> 4 -> 2 -> 1).
    """

    def final(size: int) -> int:
        for row in table:
            if isinstance(row, Stem):
                size = (size - row.kernel) // 2 + 1 if size >= row.kernel else 0
            elif row == POOL:
                size = _pool_out(size)
        return size

    return next(size for size in range(1, 256) if final(size) >= 1)


class SqueezeNet(SequentialTrunkModel):
    """SqueezeNet ``version`` "1_0" (paper) or "1_1" (forresti/SqueezeNet v1.1); ``bypass`` names the fires that get
    an identity shortcut (``SIMPLE_BYPASS``: Table 3's simple bypass on v1.0).

    The pre-logits (``forward_head(x, pre_logits=True)``, and the output with ``num_classes=0``) are the trunk's
    512 channels, average-pooled: conv10 acts before the pooling, so no linear map of them gives the logits.
    """

    def __init__(
        self,
        version: str = "1_0",
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.5,
        bypass: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        if version not in VERSIONS:
            raise ValueError(f"version={version!r} is not a SqueezeNet version; expected one of {list(VERSIONS)}")
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        check_drop_rate(drop_rate)
        table = VERSIONS[version]
        fires = {row.name for row in table if isinstance(row, Fire)}
        if unknown := sorted(set(bypass) - fires):
            raise ValueError(f"bypass names fires {unknown}; SqueezeNet {version} has {sorted(fires)}")
        self.version = version
        self.bypass = tuple(bypass)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.min_input_size = min_input_size(table)
        layers: list[nn.Module] = []
        self.feature_info = []
        in_chs, reduction = in_chans, 1
        for row in table:
            if isinstance(row, Stem):
                layers += [nn.Conv2d(in_chs, row.out, row.kernel, stride=2), nn.ReLU(inplace=True)]
                in_chs, reduction = row.out, 2
            elif row == POOL:
                self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(layers) - 1}"))
                layers.append(
                    nn.MaxPool2d(3, stride=2, ceil_mode=True)
                )  # Caffe rounds up: 227 -> 111 -> 55 -> 27 -> 13
                reduction *= 2
            else:
                layers.append(FireModule(in_chs, row, bypass=row.name in self.bypass))
                in_chs = row.out_chs
        self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(layers) - 1}"))
        self.num_features = in_chs
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(p=drop_rate),
            nn.Conv2d(in_chs, num_classes, 1),
            nn.ReLU(inplace=True),  # before the pooling, as in Caffe: the official weights expect it
            nn.AdaptiveAvgPool2d(1),
        )
        # torchvision's SqueezeNet init (kaiming-uniform, fan_in; conv10 N(0, 0.01) below). The MobileNets' kaiming
        # fan_out init made the 1x1 squeeze convs (fan_out 16-64 against fan_in 128-512) amplify every fire module,
        # and with no BN to rescale them the first steps drove conv10's pre-ReLU outputs negative: every logit
        # stayed 0 (the loss sat at ln 10 on the built-in digits). The release's Caffe "xavier" (variance 1 / fan_in)
        # vanishes instead through the ReLUs: the loss sat at ln 10 too.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.classifier[1] = _conv10(in_chs, num_classes)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if pre_logits:
            return nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x).flatten(1)

    def get_classifier(self) -> nn.Module:
        return self.classifier[1]

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh conv10 for ``num_classes``; 0 removes it (Identity: the model returns its pooled features, the ReLU
        before the pooling then acting on the trunk's already non-negative output)."""
        check_num_classes(num_classes, allow_zero=True)
        self.num_classes = num_classes
        self.classifier[1] = _conv10(self.num_features, num_classes) if num_classes else nn.Identity()


def _conv10(in_chs: int, num_classes: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_chs, num_classes, 1)
    nn.init.normal_(conv.weight, 0, 0.01)  # torchvision's init of the final conv
    nn.init.zeros_(conv.bias)
    return conv


_TABLE = "Table 1 (architecture, params), Table 2 (top-1)"
_NATIVE = (
    "The released Caffe model takes 227x227 crops (the paper's 224 is a typo, forresti/SqueezeNet#6); the card's "
    "resolution is 227. Counts: {c224} at 224 and {c227} at 227 (torchvision's metadata GFLOPS are these MAdds). "
    "The README's {gflops} GFLOPS/image are FLOPs, 2 x MAdds ({madds}M as MAdds); MobileNetV1 Table 9's "
    "'1700 Million Mult-Adds' for SqueezeNet is that FLOP figure, not MAdds."
)
_NOTES_1_0 = "No BN; conv biases; ceil-mode max pools; conv10 1x1 + ReLU + global average pool. " + _NATIVE.format(
    c224="1,248,424 params / 818.92M MAdds",
    c227="832.67M (1.72 GFLOPS = 860M is 3.3% above)",
    gflops="1.72",
    madds="860",
)
_NOTES_1_1 = (
    "v1.1 (forresti/SqueezeNet, not in the paper): conv1 64 3x3/2, pools after conv1/fire3/fire5, the same fires. "
    + _NATIVE.format(
        c224="1,235,496 params / 349.15M MAdds",
        c227="387.75M (0.72 GFLOPS = 360M is 7% below; at 227 v1.0/v1.1 = 2.15x, not the README's 2.4x)",
        gflops="0.72",
        madds="360",
    )
)


@register_model(
    family="SqueezeNet",
    table=_TABLE,
    paper_variant="squeezenet_1.0_227",
    torchvision=TorchvisionRef(builder="squeezenet1_0", weights="SqueezeNet1_0_Weights"),
    notes=_NOTES_1_0,
)
def squeezenet1_0(**kwargs) -> SqueezeNet:
    return SqueezeNet(**{"version": "1_0", **kwargs})


@register_model(
    family="SqueezeNet",
    table="forresti/SqueezeNet SqueezeNet_v1.1/deploy.prototxt (not in the paper)",
    paper_variant="squeezenet_1.1_227",
    torchvision=TorchvisionRef(builder="squeezenet1_1", weights="SqueezeNet1_1_Weights"),
    notes=_NOTES_1_1,
)
def squeezenet1_1(**kwargs) -> SqueezeNet:
    return SqueezeNet(**{"version": "1_1", **kwargs})


@register_model(
    family="SqueezeNet",
    table="Table 3 (simple bypass)",
    paper_variant="squeezenet_1.0_simple_bypass_224",
    notes=(
        "v1.0 with identity shortcuts around fire3/5/7/9: no params, and adds are not MAdds, so it counts as v1.0 "
        "(1,248,424 params / 818.92M MAdds at 224, 832.67M at 227, where the released model runs). Table 3's "
        "complex bypass (58.8%, 7.7MB) is not registered: its wiring is unpublished (no released prototxt), and the "
        "reading with biased 1x1 convs around fire2/4/6/8 gives 6.06 MiB, not 7.7MB. torchvision's squeezenet1_0 "
        "checkpoints load (the same keys) but were not trained with the shortcuts."
    ),
)
def squeezenet1_0_simple_bypass(**kwargs) -> SqueezeNet:
    return SqueezeNet(**{"version": "1_0", "bypass": SIMPLE_BYPASS, **kwargs})
