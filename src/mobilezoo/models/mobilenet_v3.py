"""MobileNetV3 Large and Small (Howard et al., "Searching for MobileNetV3", arXiv:1905.02244v5, Tables 1 and 2).

Module names equal torchvision's ``mobilenet_v3_large`` / ``mobilenet_v3_small`` (``features.N.block.M``, SE ``fc1``/
``fc2``, ``classifier.0``/``classifier.3``), so their checkpoints load with ``strict=True``. The minimalistic variants
come from the tensorflow/models slim README (``V3_*_MINIMALISTIC``), not from the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor, nn

from mobilezoo.layers import (
    PADDINGS,
    ConvNormAct,
    SqueezeExcite,
    get_act,
    init_weights,
    make_divisible,
    set_bn_eps,
    use_tf_padding,
)
from mobilezoo.models.base import (
    FeatureInfo,
    PooledHeadModel,
    check_drop_rate,
    check_in_chans,
    check_num_classes,
    check_width_mult,
)
from mobilezoo.registry import TorchvisionRef, register_model


@dataclass(frozen=True)
class Bneck:
    """One bneck row of the paper's Tables 1-2: depthwise kernel, expansion size, output channels, SE, act, stride."""

    kernel: int
    exp: int
    out: int
    se: bool
    act: str
    stride: int


# Paper Table 1 (Large): conv2d 3x3 16 s2 h-swish, these bnecks, conv2d 1x1 960, pool, conv2d 1x1 NBN 1280, conv2d 1x1 k.
LARGE = (
    Bneck(kernel=3, exp=16, out=16, se=False, act="relu", stride=1),
    Bneck(kernel=3, exp=64, out=24, se=False, act="relu", stride=2),
    Bneck(kernel=3, exp=72, out=24, se=False, act="relu", stride=1),
    Bneck(kernel=5, exp=72, out=40, se=True, act="relu", stride=2),
    Bneck(kernel=5, exp=120, out=40, se=True, act="relu", stride=1),
    Bneck(kernel=5, exp=120, out=40, se=True, act="relu", stride=1),
    Bneck(kernel=3, exp=240, out=80, se=False, act="hswish", stride=2),
    Bneck(kernel=3, exp=200, out=80, se=False, act="hswish", stride=1),
    Bneck(kernel=3, exp=184, out=80, se=False, act="hswish", stride=1),
    Bneck(kernel=3, exp=184, out=80, se=False, act="hswish", stride=1),
    Bneck(kernel=3, exp=480, out=112, se=True, act="hswish", stride=1),
    Bneck(kernel=3, exp=672, out=112, se=True, act="hswish", stride=1),
    Bneck(kernel=5, exp=672, out=160, se=True, act="hswish", stride=2),
    Bneck(kernel=5, exp=960, out=160, se=True, act="hswish", stride=1),
    Bneck(kernel=5, exp=960, out=160, se=True, act="hswish", stride=1),
)

# Paper Table 2 (Small): conv2d 3x3 16 s2 h-swish, these bnecks, conv2d 1x1 576, pool, conv2d 1x1 NBN 1024, conv2d 1x1 k.
# Table 2 ticks SE on the final 576 conv too (in every paper version); no implementation has it: an erratum.
SMALL = (
    Bneck(kernel=3, exp=16, out=16, se=True, act="relu", stride=2),
    Bneck(kernel=3, exp=72, out=24, se=False, act="relu", stride=2),
    Bneck(kernel=3, exp=88, out=24, se=False, act="relu", stride=1),
    Bneck(kernel=5, exp=96, out=40, se=True, act="hswish", stride=2),
    Bneck(kernel=5, exp=240, out=40, se=True, act="hswish", stride=1),
    Bneck(kernel=5, exp=240, out=40, se=True, act="hswish", stride=1),
    Bneck(kernel=5, exp=120, out=48, se=True, act="hswish", stride=1),
    Bneck(kernel=5, exp=144, out=48, se=True, act="hswish", stride=1),
    Bneck(kernel=5, exp=288, out=96, se=True, act="hswish", stride=2),
    Bneck(kernel=5, exp=576, out=96, se=True, act="hswish", stride=1),
    Bneck(kernel=5, exp=576, out=96, se=True, act="hswish", stride=1),
)


@dataclass(frozen=True)
class V3Arch:
    """A whole network: the bneck table, the last 1x1 conv (BN, h-swish) and the head width (1x1 conv without BN)."""

    bnecks: tuple[Bneck, ...]
    last_conv: int
    head: int


ARCHS = {
    "large": V3Arch(bnecks=LARGE, last_conv=960, head=1280),
    # arXiv v5 ends Small in 1024; the pre-v5 text (and the textbook's 2.9M) had 1280: pass last_channel=1280
    "small": V3Arch(bnecks=SMALL, last_conv=576, head=1024),
}
STEM_CHANNELS = 16
WIDTH_RULES = ("paper", "torchvision")
# torchvision's / TF's BatchNorm settings (TF decay 0.99 == PyTorch momentum 0.01)
BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}


class InvertedResidual(nn.Module):
    """Bneck: expand 1x1 (skipped when exp == in) -> depthwise kxk -> SE -> linear 1x1 projection (paper Fig. 4).

    The residual is added iff stride 1 and in == out. The SE squeezes to a quarter of the *expanded* width, rounded to 8.
    """

    def __init__(self, in_chs: int, exp_chs: int, out_chs: int, kernel: int, stride: int, se: bool, act: str) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_chs == out_chs
        layers: list[nn.Module] = []
        if exp_chs != in_chs:
            layers.append(ConvNormAct(in_chs, exp_chs, 1, act=act, **BN))
        layers.append(ConvNormAct(exp_chs, exp_chs, kernel, stride=stride, groups=exp_chs, act=act, **BN))
        if se:
            layers.append(SqueezeExcite(exp_chs, make_divisible(exp_chs / 4, 8), act="relu", gate="hsigmoid"))
        layers.append(ConvNormAct(exp_chs, out_chs, 1, act=None, **BN))
        self.block = nn.Sequential(*layers)
        self.out_channels = out_chs

    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result += x  # in place, as torchvision: one allocation fewer per residual block
        return result


def _widths(arch: V3Arch, width_mult: float, width_rule: str) -> tuple[int, list[tuple[int, int]], int, int]:
    """Stem, per-bneck (exp, out), last conv and head widths for a width multiplier.

    ``"paper"`` (TF, timm and the published 0.75 models): exp = make_divisible(rounded_in * exp/in from the table), the
    last conv scales like an expansion, and the head is never narrowed (TF ``finegrain_classification_mode``).
    ``"torchvision"`` (``_mobilenet_v3_conf(width_mult=...)``): the table's exp sizes and the head are scaled directly.
    """
    stem = make_divisible(STEM_CHANNELS * width_mult, 8)
    in_chs, table_in = stem, STEM_CHANNELS
    blocks = []
    for row in arch.bnecks:
        if width_rule == "paper":
            exp = make_divisible(in_chs * row.exp / table_in, 8)
        else:
            exp = make_divisible(row.exp * width_mult, 8)
        out = make_divisible(row.out * width_mult, 8)
        blocks.append((exp, out))
        in_chs, table_in = out, row.out
    last_conv = make_divisible(in_chs * arch.last_conv / table_in, 8)
    head_mult = max(1.0, width_mult) if width_rule == "paper" else width_mult
    return stem, blocks, last_conv, make_divisible(arch.head * head_mult, 8)


def _reduce_tail(arch: V3Arch) -> V3Arch:
    """The paper's detection variant (section 6.2, torchvision's ``reduced_tail``): from the last stride-2 bneck on,
    the outputs halve, and so do the later expansions, the last conv and the head (the first one keeps its expansion)."""
    first = max(i for i, row in enumerate(arch.bnecks) if row.stride == 2)
    rows = [
        row if i < first else replace(row, out=row.out // 2, exp=row.exp if i == first else row.exp // 2)
        for i, row in enumerate(arch.bnecks)
    ]
    return V3Arch(bnecks=tuple(rows), last_conv=arch.last_conv // 2, head=arch.head // 2)


class MobileNetV3(PooledHeadModel):
    """MobileNetV3 ``arch="large"`` or ``"small"``.

    ``width_rule`` picks how ``width_mult`` scales the expansions and the head (see :func:`_widths`); ``last_channel``
    overrides the head width (``1280`` on Small gives the pre-v5 paper's 2.9M-parameter model). ``minimal=True`` builds
    the TF README's minimalistic variant: no SE, ReLU everywhere (stem and tail included), all depthwise kernels 3x3.
    ``drop_rate`` 0.2 is the paper's dropout (TF's keep_prob 0.8). ``reduced_tail=True`` halves the last stage's
    channels, the last conv and the head, as torchvision's ``reduced_tail`` (the paper's detection setting, section 6.2).
    ``padding="tf"`` gives the strided convs TensorFlow's "SAME" padding (the extra pixel of an even side on the
    bottom/right) and ``bn_eps`` overrides the BatchNorm epsilon (default TF's 1e-3; timm's own-trained
    ``mobilenetv3_*`` use 1e-5): what the ported checkpoints need, ``tf_mobilenetv3_*`` and ``mobilenetv3_*``.
    """

    def __init__(
        self,
        arch: str = "large",
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        width_rule: str = "paper",
        last_channel: int | None = None,
        minimal: bool = False,
        reduced_tail: bool = False,
        padding: str = "symmetric",
        bn_eps: float | None = None,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
        if width_rule not in WIDTH_RULES:
            raise ValueError(f"width_rule must be one of {WIDTH_RULES}, got {width_rule!r}")
        if last_channel is not None and (not isinstance(last_channel, int) or last_channel < 1):
            raise ValueError(f"last_channel must be an integer >= 1 or None, got {last_channel!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        check_width_mult(width_mult)
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        check_drop_rate(drop_rate)
        self.arch = arch
        self.width_mult = width_mult
        self.in_chans = in_chans
        self.num_classes = num_classes
        spec = _reduce_tail(ARCHS[arch]) if reduced_tail else ARCHS[arch]
        stem, widths, last_conv, head = _widths(spec, width_mult, width_rule)
        self.num_features = head if last_channel is None else last_channel
        hswish = "relu" if minimal else "hswish"

        features: list[nn.Module] = [ConvNormAct(in_chans, stem, 3, stride=2, act=hswish, **BN)]
        self.feature_info = []
        in_chs, reduction = stem, 2
        for row, (exp, out) in zip(spec.bnecks, widths, strict=True):
            if row.stride == 2:
                self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(features) - 1}"))
                reduction *= 2
            if minimal:
                block = InvertedResidual(in_chs, exp, out, kernel=3, stride=row.stride, se=False, act="relu")
            else:
                block = InvertedResidual(in_chs, exp, out, row.kernel, row.stride, row.se, row.act)
            features.append(block)
            in_chs = out
        features.append(ConvNormAct(in_chs, last_conv, 1, act=hswish, **BN))
        self.feature_info.append(FeatureInfo(last_conv, reduction, f"features.{len(features) - 1}"))
        self.features = nn.Sequential(*features)
        # the paper's "conv2d 1x1, NBN" after pooling acts on a 1x1 map: a Linear with bias, as torchvision's keys
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, self.num_features),
            get_act(hswish),
            nn.Dropout(p=drop_rate),
            nn.Linear(self.num_features, num_classes),
        )
        if padding == "tf":
            use_tf_padding(self.features)
        if bn_eps is not None:
            set_bn_eps(self, bn_eps)
        init_weights(self)


def _tv(builder: str, weights: str | None = None, width: float = 1.0) -> TorchvisionRef:
    if width == 1.0:
        return TorchvisionRef(builder=builder, weights=weights)
    return TorchvisionRef(
        builder=builder,
        weights=weights,
        builder_kwargs={"width_mult": width},
        model_kwargs={"width_rule": "torchvision"},
    )


_TABLE = "Tables 1-2 (architecture), Table 3 (ImageNet); arXiv v5"
_TABLE_MINIMAL = "tensorflow/models research/slim/nets/mobilenet README (minimalistic table; not in the paper)"
_NOTES_075 = (
    "Paper/timm width rule: exp = make_divisible(rounded_in x table ratio, 8), head kept at {head}. torchvision's "
    "width_mult=0.75 scales the table's exp sizes and the head instead ({tv}); build it with width_rule='torchvision'."
)


@register_model(
    family="MobileNetV3",
    table=_TABLE,
    paper_variant="mobilenet_v3_large_1.0_224",
    torchvision=_tv("mobilenet_v3_large", "MobileNet_V3_Large_Weights"),
    notes="Paper Table 3 says 219M MAdds, the TF README 217M; this architecture (== torchvision, timm) counts 216.6M.",
)
def mobilenet_v3_large(**kwargs) -> MobileNetV3:
    return MobileNetV3(**{"arch": "large", **kwargs})


@register_model(
    family="MobileNetV3",
    table=_TABLE,
    paper_variant="mobilenet_v3_large_0.75_224",
    torchvision=_tv("mobilenet_v3_large", width=0.75),
    notes=_NOTES_075.format(head=1280, tv="3.38M params / 140M MAdds"),
)
def mobilenet_v3_large_x0_75(**kwargs) -> MobileNetV3:
    return MobileNetV3(**{"arch": "large", "width_mult": 0.75, **kwargs})


@register_model(
    family="MobileNetV3",
    table=_TABLE,
    paper_variant="mobilenet_v3_small_1.0_224",
    torchvision=_tv("mobilenet_v3_small", "MobileNet_V3_Small_Weights"),
    notes=(
        "arXiv v5: 56M MAdds / 2.5M params with a 1024 head. The textbook's 66M / 2.9M is the pre-v5 paper, whose "
        "Table 2 ends in 1280: last_channel=1280 reproduces 2.9M (2,946,568) but 56.9M MAdds, 66M is not reproducible. "
        "No SE on the final 576 conv (Table 2's tick is an erratum)."
    ),
)
def mobilenet_v3_small(**kwargs) -> MobileNetV3:
    return MobileNetV3(**{"arch": "small", **kwargs})


@register_model(
    family="MobileNetV3",
    table=_TABLE,
    paper_variant="mobilenet_v3_small_0.75_224",
    torchvision=_tv("mobilenet_v3_small", width=0.75),
    notes=_NOTES_075.format(head=1024, tv="1.65M params / 39.1M MAdds")
    + " The pre-v5 paper's 2.4M is last_channel=1280.",
)
def mobilenet_v3_small_x0_75(**kwargs) -> MobileNetV3:
    return MobileNetV3(**{"arch": "small", "width_mult": 0.75, **kwargs})


@register_model(
    family="MobileNetV3",
    table=_TABLE_MINIMAL,
    paper_variant="mobilenet_v3_large_minimalistic_1.0_224",
    notes="TF V3_LARGE_MINIMALISTIC, not in the paper: Large's channels, no SE, ReLU everywhere, all depthwise 3x3.",
)
def mobilenet_v3_large_minimal(**kwargs) -> MobileNetV3:
    return MobileNetV3(**{"arch": "large", "minimal": True, **kwargs})


@register_model(
    family="MobileNetV3",
    table=_TABLE_MINIMAL,
    paper_variant="mobilenet_v3_small_minimalistic_1.0_224",
    notes=(
        "TF V3_SMALL_MINIMALISTIC, not in the paper: Small's channels, no SE, ReLU everywhere, all depthwise 3x3. "
        "README 65M MACs is not reproducible (52.3M; 52.7M even with a 1280 head); its 2.0M params match."
    ),
)
def mobilenet_v3_small_minimal(**kwargs) -> MobileNetV3:
    return MobileNetV3(**{"arch": "small", "minimal": True, **kwargs})
