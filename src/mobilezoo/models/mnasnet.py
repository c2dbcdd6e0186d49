"""MnasNet-A1, MnasNet-B1 and MnasNet-small (Tan et al., "MnasNet: Platform-Aware Neural Architecture Search for
Mobile", arXiv:1807.11626v3, CVPR 2019; Fig. 7(a), Tables 1, 2 and 4).

The block lists are tensorflow/tpu ``models/official/mnasnet/mnasnet_models.py`` (``mnasnet_a1``, ``mnasnet_b1``,
``mnasnet_small``), the official code behind the paper: A1 is the paper's headline model (Fig. 7(a), with SE), B1 the
best model of the search without SE (Table 2; torchvision's ``mnasnet*`` and timm's ``mnasnet_*``), small the paper's
"MnasNet-search2" (Table 4). All three share one layout: a 3x3 s2 stem, a separable conv (3x3 depthwise + linear 1x1),
six stacks of MBConv blocks, a 1x1 conv to 1280 (never width-scaled), global average pooling, dropout and FC; ReLU
everywhere. Widths are ``make_divisible(c * width_mult, 8)`` (TF's ``round_filters``: divisor 8, never below 90%).

Module names equal torchvision's ``MNASNet`` (``layers.0``-``layers.16`` flat, stacks ``layers.8``-``layers.13`` of
blocks whose own ``layers`` are flat conv/BN/ReLU, ``classifier.1``), so its ``mnasnet0_5/0_75/1_0/1_3`` checkpoints
load into B1 with ``strict=True``. The convs are therefore plain ``nn.Conv2d``/``nn.BatchNorm2d`` in flat Sequentials
rather than ConvNormAct, whose Sequential would rename them; A1's SE (a block's ``layers.6``) is
:class:`~mobilezoo.layers.SqueezeExcite`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from mobilezoo.layers import SqueezeExcite, init_weights, make_divisible, set_bn_eps
from mobilezoo.models.base import (
    DropoutLinearModel,
    FeatureInfo,
    check_drop_rate,
    check_in_chans,
    check_num_classes,
    check_width_mult,
)
from mobilezoo.registry import TorchvisionRef, register_model


@dataclass(frozen=True)
class MBConv:
    """One block row of Fig. 7: MBConv{exp} (k{kernel}x{kernel})[, SE] x{repeats} giving ``out`` channels; the first
    repeat has ``stride`` (TF's ``r{repeats}_k{kernel}_s{stride}{stride}_e{exp}_o{out}[_se0.25]``)."""

    exp: int
    kernel: int
    out: int
    repeats: int
    stride: int
    se: bool = False


@dataclass(frozen=True)
class MnasArch:
    """A whole network: stem width (3x3 s2 conv), SepConv (k3x3) width, the MBConv rows, head width and dropout."""

    stem: int
    sepconv: int
    blocks: tuple[MBConv, ...]
    drop_rate: float
    head: int = 1280


# Paper Fig. 7(a), TF mnasnet_a1: Conv3x3 32, SepConv 16, these MBConv rows, Conv1x1 1280, pooling, FC.
MNASNET_A1 = MnasArch(
    stem=32,
    sepconv=16,
    blocks=(
        MBConv(exp=6, kernel=3, out=24, repeats=2, stride=2),
        MBConv(exp=3, kernel=5, out=40, repeats=3, stride=2, se=True),
        MBConv(exp=6, kernel=3, out=80, repeats=4, stride=2),
        MBConv(exp=6, kernel=3, out=112, repeats=2, stride=1, se=True),
        MBConv(exp=6, kernel=5, out=160, repeats=3, stride=2, se=True),
        MBConv(exp=6, kernel=3, out=320, repeats=1, stride=1),
    ),
    drop_rate=0.2,
)
# TF mnasnet_b1 (paper Table 2's model searched without SE; arXiv v1's "MnasNet"): the same stem and SepConv.
MNASNET_B1 = MnasArch(
    stem=32,
    sepconv=16,
    blocks=(
        MBConv(exp=3, kernel=3, out=24, repeats=3, stride=2),
        MBConv(exp=3, kernel=5, out=40, repeats=3, stride=2),
        MBConv(exp=6, kernel=5, out=80, repeats=3, stride=2),
        MBConv(exp=6, kernel=3, out=96, repeats=2, stride=1),
        MBConv(exp=6, kernel=5, out=192, repeats=4, stride=2),
        MBConv(exp=6, kernel=3, out=320, repeats=1, stride=1),
    ),
    drop_rate=0.2,
)
# TF mnasnet_small (paper Table 4's "MnasNet-search2"): stem 8, no dropout. TF declares the SepConv's input as 16 while
# the stem gives 8; it decides the skip from the declared widths (16 != 8: none), timm from the actual ones (a skip).
# The SepConv never skips here, as in TF (sepconv_skip=True adds timm's skip, for its weights); params and MAdds are the
# same either way.
MNASNET_SMALL = MnasArch(
    stem=8,
    sepconv=8,
    blocks=(
        MBConv(exp=3, kernel=3, out=16, repeats=1, stride=2),
        MBConv(exp=6, kernel=3, out=16, repeats=2, stride=2),
        MBConv(exp=6, kernel=5, out=32, repeats=4, stride=2, se=True),
        MBConv(exp=6, kernel=3, out=32, repeats=3, stride=1, se=True),
        MBConv(exp=6, kernel=5, out=88, repeats=3, stride=2, se=True),
        MBConv(exp=6, kernel=3, out=144, repeats=1, stride=1),
    ),
    drop_rate=0.0,
)
ARCHS = {"a1": MNASNET_A1, "b1": MNASNET_B1, "small": MNASNET_SMALL}

SE_RATIO = 0.25
# BatchNorm settings. "paper": TF's batch_norm_momentum 0.99 (PyTorch momentum 0.01) and epsilon 1e-3 (paper Sec. 5,
# mnasnet_models.py). "torchvision": its MNASNet's momentum 1 - 0.9997 ("Paper suggests 0.9997", a misreading) and
# PyTorch's default eps 1e-5, which its checkpoints were trained with.
BN_SETTINGS = {
    "paper": {"eps": 1e-3, "momentum": 0.01},
    "torchvision": {"eps": 1e-5, "momentum": 1 - 0.9997},
}


def se_channels(in_chs: int) -> int:
    """The SE squeeze width: a quarter of the block's INPUT channels, truncated (TF ``int(input_filters * se_ratio)``),
    not of the expanded width that MobileNetV3 uses; at least 1."""
    return max(1, int(in_chs * SE_RATIO))


class MnasBlock(nn.Module):
    """MBConv (paper Fig. 7(b)-(d)): [expand 1x1 + BN + ReLU] -> depthwise kxk + BN + ReLU -> [SE] -> linear 1x1 + BN.

    The expansion is ``in_chs * exp`` (no rounding) and is skipped when ``exp == 1``; the SE (ReLU, sigmoid gate) sits
    after the depthwise conv and squeezes to :func:`se_channels` of ``in_chs``. The residual is added iff stride 1 and
    in == out. ``bn`` holds the BatchNorm ``eps`` and ``momentum``.
    """

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int, stride: int, exp: int, se: bool, bn: dict[str, float]
    ) -> None:
        super().__init__()
        mid = in_chs * exp
        layers: list[nn.Module] = []
        if exp != 1:
            layers += [nn.Conv2d(in_chs, mid, 1, bias=False), nn.BatchNorm2d(mid, **bn), nn.ReLU(inplace=True)]
        layers += [
            nn.Conv2d(mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid, **bn),
            nn.ReLU(inplace=True),
        ]
        if se:
            layers.append(SqueezeExcite(mid, se_channels(in_chs), act="relu", gate="sigmoid"))
        layers += [nn.Conv2d(mid, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs, **bn)]
        self.layers = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and in_chs == out_chs
        self.out_channels = out_chs

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return self.layers(x) + x
        return self.layers(x)


class SepConvResidual(nn.Sequential):
    """The SepConv's layers (depthwise + BN + ReLU, linear pointwise + BN) with the input added: timm's
    ``mnasnet_small``, whose first block skips wherever its input and output widths are equal (8 -> 8), unlike TF's."""

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for layer in self:
            out = layer(out)
        return out + x


class MnasNet(DropoutLinearModel):
    """MnasNet ``arch`` "a1", "b1" or "small" at depth multiplier ``width_mult``.

    ``bn`` picks the BatchNorm settings (:data:`BN_SETTINGS`): "paper" (TF's) or "torchvision" (what torchvision's
    checkpoints were trained with). ``se=False`` removes the SE modules (an ablation: A1 without SE is not a paper
    model; the paper's no-SE model is B1). ``drop_rate`` defaults to the arch's (0.2; 0 for small). ``bn_eps`` (if
    given) overrides the setting's BatchNorm epsilon: timm's checkpoints were trained with 1e-5, the momentum stays.
    ``sepconv_skip=True`` adds the SepConv's input to its output (timm's ``mnasnet_small``; the SepConv's five layers
    then form one :class:`SepConvResidual`, ``layers.3``, and the later indices shift by 4); it needs a SepConv as wide
    as the stem (small's 8 -> 8), else a ValueError.
    """

    # torchvision's MNASNet is version 2 (stem scaled by alpha): a state_dict saved with version 1 metadata makes
    # torchvision rebuild the unscaled v1 stem at alpha != 1, so ours says 2 for its checkpoints to load there
    _version = 2

    def __init__(
        self,
        arch: str = "a1",
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float | None = None,
        bn: str = "paper",
        se: bool = True,
        bn_eps: float | None = None,
        sepconv_skip: bool = False,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} is not a MnasNet architecture; expected one of {sorted(ARCHS)}")
        if bn not in BN_SETTINGS:
            raise ValueError(f"bn={bn!r} is not a BatchNorm setting; expected one of {sorted(BN_SETTINGS)}")
        if not isinstance(se, bool):
            raise ValueError(f"se must be True or False, got {se!r}")
        if not isinstance(sepconv_skip, bool):
            raise ValueError(f"sepconv_skip must be True or False, got {sepconv_skip!r}")
        spec = ARCHS[arch]
        drop_rate = spec.drop_rate if drop_rate is None else drop_rate
        check_width_mult(width_mult)
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        check_drop_rate(drop_rate)
        self.arch = arch
        self.width_mult = width_mult
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = spec.head
        norm = BN_SETTINGS[bn]
        stem = make_divisible(spec.stem * width_mult, 8)
        sep = make_divisible(spec.sepconv * width_mult, 8)
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, stem, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem, **norm),
            nn.ReLU(inplace=True),
            # SepConv (k3x3): depthwise + BN + ReLU, then a linear pointwise conv + BN; no skip (see sepconv_skip)
            nn.Conv2d(stem, stem, 3, padding=1, groups=stem, bias=False),
            nn.BatchNorm2d(stem, **norm),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem, sep, 1, bias=False),
            nn.BatchNorm2d(sep, **norm),
        ]
        if sepconv_skip:
            if stem != sep:
                raise ValueError(
                    f"sepconv_skip=True needs the SepConv's input and output equally wide; {arch} at width_mult="
                    f"{width_mult} maps {stem} -> {sep} channels"
                )
            layers = [*layers[:3], SepConvResidual(*layers[3:])]
        self.feature_info = []
        in_chs, reduction = sep, 2
        for row in spec.blocks:
            if row.stride == 2:
                self.feature_info.append(FeatureInfo(in_chs, reduction, f"layers.{len(layers) - 1}"))
                reduction *= 2
            out_chs = make_divisible(row.out * width_mult, 8)
            blocks = []
            for i in range(row.repeats):
                stride = row.stride if i == 0 else 1
                blocks.append(MnasBlock(in_chs, out_chs, row.kernel, stride, row.exp, row.se and se, norm))
                in_chs = out_chs
            layers.append(nn.Sequential(*blocks))
        layers += [
            nn.Conv2d(in_chs, spec.head, 1, bias=False),
            nn.BatchNorm2d(spec.head, **norm),
            nn.ReLU(inplace=True),
        ]
        self.feature_info.append(FeatureInfo(spec.head, reduction, f"layers.{len(layers) - 1}"))
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=drop_rate), nn.Linear(spec.head, num_classes))
        if bn_eps is not None:
            set_bn_eps(self, bn_eps)
        init_weights(self)

    def trunk(self) -> list[tuple[str, nn.Module]]:
        return [(f"layers.{i}", m) for i, m in enumerate(self.layers)]

    def forward_features(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.layers(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean([2, 3])  # global average pooling, as torchvision's MNASNet computes it
        if pre_logits:
            return x
        return self.classifier(x)


_README = "tensorflow/tpu models/official/mnasnet README (A1 width x resolution table)"
_TABLE_A1 = f"Table 1 (A1 1.0), Fig. 7(a) (architecture); {_README}"
_TABLE_A1_WIDTH = f"Fig. 7(a) (architecture), Fig. 5 (plotted without numbers); {_README}"
_NOTES_A1 = (
    "MnasNet-A1, the paper's model (TF mnasnet_a1 == timm semnasnet_*; torchvision has no A1: its 'mnasnet' is B1). "
    "SE squeezes to int(0.25 x the block's INPUT channels) (not the expanded width), ReLU + sigmoid gate, after the "
    "depthwise conv. The 1x1 head stays 1280 at every width. Registered per width; the README's 96-224 px rows are "
    "this model at that input size, counted in tests at each row's resolution. The README MAdds are 0.9-2.7% above "
    "the counts at every width and resolution ({gap} at this width), nearly independent of resolution (Google's "
    "counter seems to add per-activation ops; a hypothesis); its params match. TF's 'same' padding of stride-2 convs "
    "is asymmetric (right/bottom); this model pads symmetrically, as timm (matters only for porting TF weights)."
)
_NOTES_B1 = (
    "MnasNet-B1: torchvision's 'mnasnet{tv}' (its docstring says only 'MNASNet') is B1, the paper's model searched "
    "without SE (Table 2: 74.5% vs A1 75.2%), not the headline A1; == TF mnasnet_b1 == timm mnasnet_{timm}. "
    "Defaults to torchvision's BatchNorm (momentum 1-0.9997, whose comment 'Paper suggests 0.9997' misreads the paper; "
    "eps 1e-5), which its checkpoints need; bn='paper' gives the paper's/TF's momentum 0.01 (decay 0.99) and eps 1e-3. "
    "torchvision's _version 2 scales the stem and SepConv with alpha (32/16 -> 16/8 at 0.5; version-1 checkpoints, "
    "which kept 32/16, do not load here); a ReLU follows the stem, as in TF (pytorch/vision#1163 calls it a bug). "
    "{extra}"
)


@register_model(
    family="MnasNet",
    table=_TABLE_A1_WIDTH,
    paper_variant="mnasnet_a1_1.4_224",
    notes=_NOTES_A1.format(gap="+0.9-1.1%") + " Width 1.4: stem 48, SepConv 24, stages 32/56/112/160/224/448.",
)
def mnasnet_a1_x1_4(**kwargs) -> MnasNet:
    return MnasNet(**{"arch": "a1", "width_mult": 1.4, **kwargs})


@register_model(
    family="MnasNet",
    table=_TABLE_A1,
    paper_variant="mnasnet_a1_1.0_224",
    notes=_NOTES_A1.format(gap="+1.2-1.4%")
    + " Paper Table 1: 3.9M / 312M, counted 3,887,038 / 311.58M; the README prints 315.2M.",
)
def mnasnet_a1_x1_0(**kwargs) -> MnasNet:
    return MnasNet(**{"arch": "a1", "width_mult": 1.0, **kwargs})


@register_model(
    family="MnasNet",
    table=_TABLE_A1_WIDTH,
    paper_variant="mnasnet_a1_0.75_224",
    notes=_NOTES_A1.format(gap="+1.4-1.6%"),
)
def mnasnet_a1_x0_75(**kwargs) -> MnasNet:
    return MnasNet(**{"arch": "a1", "width_mult": 0.75, **kwargs})


@register_model(
    family="MnasNet", table=_TABLE_A1_WIDTH, paper_variant="mnasnet_a1_0.5_224", notes=_NOTES_A1.format(gap="+1.9-2.3%")
)
def mnasnet_a1_x0_5(**kwargs) -> MnasNet:
    return MnasNet(**{"arch": "a1", "width_mult": 0.5, **kwargs})


@register_model(
    family="MnasNet",
    table=f"Table 4 (A1 0.35x); {_README}",
    paper_variant="mnasnet_a1_0.35_224",
    notes=_NOTES_A1.format(gap="+2.1-2.7%")
    + " Table 4: 1.7M / 63M, counted 1,747,018 / 61.68M at 224 (paper +2.1%, README 63.2M +2.5%: the width's "
    "usual gap); the stem rounds 32 x 0.35 = 11.2 up to 16 (10% rule). The README's 0.35@160 top-1 52.3 is a typo "
    "for 59.3 (its duplicate column, the neighbouring resolutions and the row's top-5 agree on 59.3).",
)
def mnasnet_a1_x0_35(**kwargs) -> MnasNet:
    return MnasNet(**{"arch": "a1", "width_mult": 0.35, **kwargs})


def _tv(alpha: str) -> TorchvisionRef:
    return TorchvisionRef(
        builder=f"mnasnet{alpha}", weights=f"MNASNet{alpha}_Weights", model_kwargs={"bn": "torchvision"}
    )


_TABLE_B1 = "Table 2 (B1: the SE study); tensorflow/tpu mnasnet_models.py mnasnet_b1 (architecture)"
_B1_WIDTHS = "Widths 0.35 and 1.4 (timm mnasnet_140, no torchvision builder) are width_mult=0.35/1.4 of any B1 builder."


@register_model(
    family="MnasNet",
    table=_TABLE_B1,
    paper_variant="mnasnet_b1_0.5_224",
    torchvision=_tv("0_5"),
    notes=_NOTES_B1.format(tv="0_5", timm="050", extra="No paper figures for the width variants. " + _B1_WIDTHS),
)
def mnasnet_b1_x0_5(**kwargs) -> MnasNet:
    return MnasNet(**{"arch": "b1", "width_mult": 0.5, "bn": "torchvision", **kwargs})


@register_model(
    family="MnasNet",
    table=_TABLE_B1,
    paper_variant="mnasnet_b1_0.75_224",
    torchvision=_tv("0_75"),
    notes=_NOTES_B1.format(tv="0_75", timm="075", extra="No paper figures for the width variants. " + _B1_WIDTHS),
)
def mnasnet_b1_x0_75(**kwargs) -> MnasNet:
    return MnasNet(**{"arch": "b1", "width_mult": 0.75, "bn": "torchvision", **kwargs})


@register_model(
    family="MnasNet",
    table=_TABLE_B1,
    paper_variant="mnasnet_b1_1.0_224",
    torchvision=_tv("1_0"),
    notes=_NOTES_B1.format(
        tv="1_0",
        timm="100",
        extra="The paper (v3) gives B1 no params or MAdds: counted 4,383,312 / 314.42M (torchvision: 0.31 GFLOPS, "
        "which are MAdds). arXiv v1 lists this model as 4.2M params: not reproducible (4.35M even without BN). "
        + _B1_WIDTHS,
    ),
)
def mnasnet_b1_x1_0(**kwargs) -> MnasNet:
    return MnasNet(**{"arch": "b1", "width_mult": 1.0, "bn": "torchvision", **kwargs})


@register_model(
    family="MnasNet",
    table=_TABLE_B1,
    paper_variant="mnasnet_b1_1.3_224",
    torchvision=_tv("1_3"),
    notes=_NOTES_B1.format(tv="1_3", timm="130", extra="No paper figures for the width variants. " + _B1_WIDTHS),
)
def mnasnet_b1_x1_3(**kwargs) -> MnasNet:
    return MnasNet(**{"arch": "b1", "width_mult": 1.3, "bn": "torchvision", **kwargs})


@register_model(
    family="MnasNet",
    table="Table 4 ('MnasNet-search2'); tensorflow/tpu mnasnet_models.py mnasnet_small (architecture)",
    paper_variant="mnasnet_small_224",
    notes=(
        "The paper's 'MnasNet-search2' (Table 4, searched for a 22 ms target: 2.0M / 68M / 66.0%), named mnasnet-small "
        "in the TF code (== timm mnasnet_small). Stem 8, SepConv 8, SE on the 32- and 88-channel stages, no dropout. "
        "Counted 2,030,264 params / 68.34M MAdds at 224: the paper's 2.0M / 68M. The SepConv has no skip, as in TF, "
        "which decides it from the declared widths (16 -> 8); timm adds one (8 -> 8): sepconv_skip=True, which its "
        "weights need. 'search1' (Table 4, 1.9M / 65M) has no published architecture and is not registered."
    ),
)
def mnasnet_small(**kwargs) -> MnasNet:
    return MnasNet(**{"arch": "small", **kwargs})
