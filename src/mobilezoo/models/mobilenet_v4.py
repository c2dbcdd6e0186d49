"""MobileNetV4 Conv-S, Conv-M and Conv-L (Qin et al., "MobileNetV4: Universal Models for the Mobile Ecosystem",
arXiv:2404.10518, ECCV 2024; the appendix's architecture tables, and the ImageNet table for the figures).

The block tables are the official specification the paper links to, tensorflow/models
``official/vision/modeling/backbones/mobilenet.py`` (``MNV4ConvSmall_BLOCK_SPECS``, ``_mnv4_conv_medium_block_specs``,
``MNV4ConvLarge_BLOCK_SPECS``), row for row. Each network is a plain stack: conv-BN rows and one fused inverted
bottleneck in the stem, then Universal Inverted Bottlenecks (UIB), a 1x1 conv to 960, global average pooling, a 1x1
conv to 1280 with BN and ReLU (on the pooled 1x1 map), dropout and FC. ReLU everywhere; no SE, no layer scale (the
conv specs leave ``use_layer_scale`` off; only the hybrids use it). Symmetric padding, as timm: TF's "same" pads a
stride-2 conv on an even side bottom/right, which only matters for porting TF weights (none were released).

Training settings that are no part of the block specs come from the TF experiment configs
``imagenet_mobilenetv4_conv_{small,medium,large}_tpu.yaml``, the runs behind the paper's accuracies: dropout 0.3 / 0.2 /
0.2, BatchNorm (epsilon, TF momentum) (1e-6, 0.95) / (1e-3, 0.997) / (1e-3, 0.997), and stochastic depth on the
residual branches: none for S, 0.075 x (block index + 1) / (number of spec rows) for M, a flat 0.2 for L.

The hybrids (Mobile MQA attention; the paper's Hybrid-M/L rows) are not built: their attention block normalises its
input with a BatchNorm that follows no conv, which :func:`mobilezoo.deploy.fuse` cannot fold yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torchvision.ops import stochastic_depth

from mobilezoo.layers import ConvNormAct, init_weights, make_divisible, set_bn_eps
from mobilezoo.models.base import (
    FeatureInfo,
    PooledClassifierModel,
    check_drop_rate,
    check_in_chans,
    check_num_classes,
)
from mobilezoo.registry import register_model


@dataclass(frozen=True)
class ConvBN:
    """TF ``convbn``: a ``kernel`` x ``kernel`` conv with ``stride`` to ``out`` channels, BN, ReLU."""

    kernel: int
    stride: int
    out: int


@dataclass(frozen=True)
class FusedIB:
    """TF ``fused_ib``: a full ``kernel`` x ``kernel`` conv with ``stride`` expanding to ``exp`` x the input channels
    (BN, ReLU), then a linear 1x1 projection to ``out`` (BN)."""

    kernel: int
    stride: int
    out: int
    exp: float = 4.0


@dataclass(frozen=True)
class UIB:
    """TF ``uib``: the Universal Inverted Bottleneck with a starting depthwise conv of kernel ``start_dw`` and a middle
    one of kernel ``middle_dw`` (0: absent), expansion ``exp``, ``out`` channels; the first conv that exists of
    (middle, start) takes the ``stride``. The paper's names: ExtraDW (k, k), IB (0, k), ConvNext (k, 0), FFN (0, 0)."""

    start_dw: int
    middle_dw: int
    stride: int
    out: int
    exp: float


Row = ConvBN | FusedIB | UIB


@dataclass(frozen=True)
class MNv4Arch:
    """A whole network: the spec rows up to the 1x1 conv to 960 (the trunk), the width of the 1x1 conv after pooling,
    and the training settings of its TF experiment config: dropout, BatchNorm epsilon and PyTorch momentum (1 - TF's),
    stochastic depth rate, flat or growing with the block index."""

    rows: tuple[Row, ...]
    head: int
    drop_rate: float
    bn_eps: float
    bn_momentum: float
    stochastic_depth: float
    stochastic_depth_flat: bool


# Paper appendix, MNv4-Conv-S (224 px); TF MNV4ConvSmall_BLOCK_SPECS. No fused IB: two strided 3x3 convs, each followed
# by a 1x1 conv, make the stem.
CONV_SMALL = (
    ConvBN(kernel=3, stride=2, out=32),  # 112 px
    ConvBN(kernel=3, stride=2, out=32),  # 56 px
    ConvBN(kernel=1, stride=1, out=32),
    ConvBN(kernel=3, stride=2, out=96),  # 28 px
    ConvBN(kernel=1, stride=1, out=64),
    UIB(start_dw=5, middle_dw=5, stride=2, out=96, exp=3.0),  # 14 px: ExtraDW
    UIB(start_dw=0, middle_dw=3, stride=1, out=96, exp=2.0),  # IB
    UIB(start_dw=0, middle_dw=3, stride=1, out=96, exp=2.0),  # IB
    UIB(start_dw=0, middle_dw=3, stride=1, out=96, exp=2.0),  # IB
    UIB(start_dw=0, middle_dw=3, stride=1, out=96, exp=2.0),  # IB
    UIB(start_dw=3, middle_dw=0, stride=1, out=96, exp=4.0),  # ConvNext
    UIB(start_dw=3, middle_dw=3, stride=2, out=128, exp=6.0),  # 7 px: ExtraDW
    UIB(start_dw=5, middle_dw=5, stride=1, out=128, exp=4.0),  # ExtraDW
    UIB(start_dw=0, middle_dw=5, stride=1, out=128, exp=4.0),  # IB
    UIB(start_dw=0, middle_dw=5, stride=1, out=128, exp=3.0),  # IB
    UIB(start_dw=0, middle_dw=3, stride=1, out=128, exp=4.0),  # IB
    UIB(start_dw=0, middle_dw=3, stride=1, out=128, exp=4.0),  # IB
    ConvBN(kernel=1, stride=1, out=960),
)

# Paper appendix, MNv4-Conv-M (256 px); TF _mnv4_conv_medium_block_specs.
CONV_MEDIUM = (
    ConvBN(kernel=3, stride=2, out=32),
    FusedIB(kernel=3, stride=2, out=48),
    UIB(start_dw=3, middle_dw=5, stride=2, out=80, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=3, stride=1, out=80, exp=2.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=5, stride=2, out=160, exp=6.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=3, stride=1, out=160, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=3, stride=1, out=160, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=5, stride=1, out=160, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=3, stride=1, out=160, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=0, stride=1, out=160, exp=4.0),  # ConvNext
    UIB(start_dw=0, middle_dw=0, stride=1, out=160, exp=2.0),  # FFN
    UIB(start_dw=3, middle_dw=0, stride=1, out=160, exp=4.0),  # ConvNext
    UIB(start_dw=5, middle_dw=5, stride=2, out=256, exp=6.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=5, stride=1, out=256, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=5, stride=1, out=256, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=5, stride=1, out=256, exp=4.0),  # ExtraDW
    UIB(start_dw=0, middle_dw=0, stride=1, out=256, exp=4.0),  # FFN
    UIB(start_dw=3, middle_dw=0, stride=1, out=256, exp=4.0),  # ConvNext
    UIB(start_dw=3, middle_dw=5, stride=1, out=256, exp=2.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=5, stride=1, out=256, exp=4.0),  # ExtraDW
    UIB(start_dw=0, middle_dw=0, stride=1, out=256, exp=4.0),  # FFN
    UIB(start_dw=0, middle_dw=0, stride=1, out=256, exp=4.0),  # FFN
    UIB(start_dw=5, middle_dw=0, stride=1, out=256, exp=2.0),  # ConvNext
    ConvBN(kernel=1, stride=1, out=960),
)

# Paper appendix, MNv4-Conv-L (384 px); TF MNV4ConvLarge_BLOCK_SPECS. The stem is 24 wide (not 32); every UIB expands 4x.
CONV_LARGE = (
    ConvBN(kernel=3, stride=2, out=24),
    FusedIB(kernel=3, stride=2, out=48),
    UIB(start_dw=3, middle_dw=5, stride=2, out=96, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=3, stride=1, out=96, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=5, stride=2, out=192, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=3, stride=1, out=192, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=3, stride=1, out=192, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=3, stride=1, out=192, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=5, stride=1, out=192, exp=4.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=3, stride=1, out=192, exp=4.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=3, stride=1, out=192, exp=4.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=3, stride=1, out=192, exp=4.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=3, stride=1, out=192, exp=4.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=3, stride=1, out=192, exp=4.0),  # ExtraDW
    UIB(start_dw=3, middle_dw=0, stride=1, out=192, exp=4.0),  # ConvNext
    UIB(start_dw=5, middle_dw=5, stride=2, out=512, exp=4.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=5, stride=1, out=512, exp=4.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=5, stride=1, out=512, exp=4.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=5, stride=1, out=512, exp=4.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=0, stride=1, out=512, exp=4.0),  # ConvNext
    UIB(start_dw=5, middle_dw=3, stride=1, out=512, exp=4.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=0, stride=1, out=512, exp=4.0),  # ConvNext
    UIB(start_dw=5, middle_dw=0, stride=1, out=512, exp=4.0),  # ConvNext
    UIB(start_dw=5, middle_dw=3, stride=1, out=512, exp=4.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=5, stride=1, out=512, exp=4.0),  # ExtraDW
    UIB(start_dw=5, middle_dw=0, stride=1, out=512, exp=4.0),  # ConvNext
    UIB(start_dw=5, middle_dw=0, stride=1, out=512, exp=4.0),  # ConvNext
    UIB(start_dw=5, middle_dw=0, stride=1, out=512, exp=4.0),  # ConvNext
    ConvBN(kernel=1, stride=1, out=960),
)

ARCHS = {
    "conv_small": MNv4Arch(
        rows=CONV_SMALL,
        head=1280,
        drop_rate=0.3,
        bn_eps=1e-6,
        bn_momentum=0.05,
        stochastic_depth=0.0,
        stochastic_depth_flat=True,
    ),
    "conv_medium": MNv4Arch(
        rows=CONV_MEDIUM,
        head=1280,
        drop_rate=0.2,
        bn_eps=1e-3,
        bn_momentum=0.003,
        stochastic_depth=0.075,
        stochastic_depth_flat=False,
    ),
    "conv_large": MNv4Arch(
        rows=CONV_LARGE,
        head=1280,
        drop_rate=0.2,
        bn_eps=1e-3,
        bn_momentum=0.003,
        stochastic_depth=0.2,
        stochastic_depth_flat=True,
    ),
}


def _check_rate(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} is a drop probability in [0, 1), got {value!r}")


class _Residual(nn.Module):
    """The residual add of a block whose ``use_res_connect`` holds (stride 1, in == out), with stochastic depth of
    probability ``drop_path`` on the branch in training (per sample, survivors scaled by 1 / (1 - p), as TF's).
    Subclasses set both attributes."""

    def _add(self, out: Tensor, x: Tensor) -> Tensor:
        if not self.use_res_connect:
            return out
        if self.training and self.drop_path > 0.0:
            out = stochastic_depth(out, self.drop_path, "row", True)
        return out + x


class UniversalInvertedBottleneck(_Residual):
    """The Universal Inverted Bottleneck (the paper's UIB; TF ``UniversalInvertedBottleneckBlock``):

    [``start_dw``: depthwise kxk + BN, no activation] -> ``expand``: 1x1 to ``make_divisible(in_chs * exp, 8)`` + BN +
    ReLU -> [``middle_dw``: depthwise kxk + BN + ReLU] -> ``project``: linear 1x1 + BN, plus the input when stride 1 and
    in == out. A kernel of 0 leaves that depthwise conv out (its attribute is None), which gives the four cases:
    ExtraDW (both), IB (middle only: MobileNetV2's block), ConvNext-like (start only: spatial mixing before the
    expansion) and FFN (neither: two 1x1 convs). The stride goes to the middle depthwise conv when there is one
    (TF's ``middle_dw_downsample``, set in every MNv4 spec), else to the starting one; an FFN cannot downsample.

    Raises a ValueError for a stride other than 1 or 2, a negative or even kernel, an expansion <= 0, or a strided FFN.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        start_dw: int,
        middle_dw: int,
        stride: int,
        exp: float,
        bn: dict[str, float],
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        for name, kernel in (("start_dw", start_dw), ("middle_dw", middle_dw)):
            if not isinstance(kernel, int) or kernel < 0 or (kernel and kernel % 2 == 0):
                raise ValueError(f"{name} must be 0 (no such depthwise conv) or an odd kernel size, got {kernel!r}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        if stride > 1 and not (start_dw or middle_dw):
            raise ValueError("a UIB without depthwise convs (FFN: start_dw=middle_dw=0) cannot take stride 2")
        if not isinstance(exp, (int, float)) or not exp > 0:
            raise ValueError(f"exp must be a number > 0, got {exp!r}")
        _check_rate("drop_path", drop_path)
        mid = make_divisible(in_chs * exp, 8)
        self.start_dw = (
            ConvNormAct(in_chs, in_chs, start_dw, stride=1 if middle_dw else stride, groups=in_chs, act=None, **bn)
            if start_dw
            else None
        )
        self.expand = ConvNormAct(in_chs, mid, 1, act="relu", **bn)
        self.middle_dw = (
            ConvNormAct(mid, mid, middle_dw, stride=stride, groups=mid, act="relu", **bn) if middle_dw else None
        )
        self.project = ConvNormAct(mid, out_chs, 1, act=None, **bn)
        self.use_res_connect = stride == 1 and in_chs == out_chs
        self.drop_path = float(drop_path)
        self.out_channels = out_chs

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.start_dw is not None:
            out = self.start_dw(out)
        out = self.expand(out)
        if self.middle_dw is not None:
            out = self.middle_dw(out)
        return self._add(self.project(out), x)


class FusedInvertedBottleneck(_Residual):
    """The fused IB of Conv-M/L's stem (TF ``InvertedBottleneckBlock`` with ``use_depthwise=False``): a full kxk conv
    with the stride, expanding to ``make_divisible(in_chs * exp, 8)`` (BN, ReLU), then a linear 1x1 projection (BN);
    the input is added when stride 1 and in == out (never in the MNv4 specs, whose fused IB has stride 2)."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int, stride: int, exp: float, bn: dict[str, float], drop_path: float
    ) -> None:
        super().__init__()
        _check_rate("drop_path", drop_path)
        mid = make_divisible(in_chs * exp, 8)
        self.expand = ConvNormAct(in_chs, mid, kernel, stride=stride, act="relu", **bn)
        self.project = ConvNormAct(mid, out_chs, 1, act=None, **bn)
        self.use_res_connect = stride == 1 and in_chs == out_chs
        self.drop_path = float(drop_path)
        self.out_channels = out_chs

    def forward(self, x: Tensor) -> Tensor:
        return self._add(self.project(self.expand(x)), x)


class MobileNetV4(PooledClassifierModel):
    """MobileNetV4 ``arch`` "conv_small", "conv_medium" or "conv_large" (:data:`ARCHS`).

    The trunk ``features`` runs the spec rows up to the 1x1 conv to 960; the head pools, applies ``head`` (a 1x1 conv
    to 1280 + BN + ReLU on the 1x1 map: BatchNorm there needs more than one sample per batch in training), then
    ``classifier`` (dropout, FC). ``drop_rate``, ``stochastic_depth_rate`` and ``bn_eps`` default to the arch's TF
    training config (:class:`MNv4Arch`); ``stochastic_depth_rate`` keeps the arch's schedule (flat for L, growing with
    the block index for M) and acts only in training mode.
    """

    def __init__(
        self,
        arch: str = "conv_small",
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float | None = None,
        stochastic_depth_rate: float | None = None,
        bn_eps: float | None = None,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} is not a MobileNetV4 architecture; expected one of {sorted(ARCHS)}")
        spec = ARCHS[arch]
        drop_rate = spec.drop_rate if drop_rate is None else drop_rate
        rate = spec.stochastic_depth if stochastic_depth_rate is None else stochastic_depth_rate
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        check_drop_rate(drop_rate)
        _check_rate("stochastic_depth_rate", rate)
        self.arch = arch
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = spec.head
        bn = {"bn_eps": spec.bn_eps, "bn_momentum": spec.bn_momentum}
        # TF counts every spec row for the growing schedule, the pooling and the 1x1 conv after it included
        num_rows = len(spec.rows) + 2
        features: list[nn.Module] = []
        self.feature_info = []
        in_chs, reduction = in_chans, 1
        for i, row in enumerate(spec.rows):
            if row.stride == 2 and features:
                self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(features) - 1}"))
            reduction *= row.stride
            drop_path = rate if spec.stochastic_depth_flat else rate * (i + 1) / num_rows
            if isinstance(row, ConvBN):
                block: nn.Module = ConvNormAct(in_chs, row.out, row.kernel, stride=row.stride, act="relu", **bn)
            elif isinstance(row, FusedIB):
                block = FusedInvertedBottleneck(in_chs, row.out, row.kernel, row.stride, row.exp, bn, drop_path)
            else:
                block = UniversalInvertedBottleneck(
                    in_chs, row.out, row.start_dw, row.middle_dw, row.stride, row.exp, bn, drop_path
                )
            features.append(block)
            in_chs = row.out
        self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(features) - 1}"))
        self.features = nn.Sequential(*features)
        self.head = ConvNormAct(in_chs, spec.head, 1, act="relu", **bn)
        self.classifier = nn.Sequential(nn.Dropout(p=drop_rate), nn.Linear(spec.head, num_classes))
        if bn_eps is not None:
            set_bn_eps(self, bn_eps)
        init_weights(self)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head(nn.functional.adaptive_avg_pool2d(x, 1)).flatten(1)
        if pre_logits:
            return x
        return self.classifier(x)


_TABLE = "appendix architecture table of MNv4-{name} ({res} px); ImageNet-1k table (figures; Table 5 in v2, unverified)"
_NOTES = (
    "Block for block the official spec, tensorflow/models backbones/mobilenet.py {spec} (== timm {timm}). "
    "Head: 1x1 conv to 960 (BN, ReLU), global pool, 1x1 conv 960->1280 with BN and ReLU (num_features is 1280; "
    "timm's num_features says 960), dropout, FC. Dropout, BN and stochastic depth defaults from "
    "TF's experiment config ({train}). TF trains with 1001 classes (+1,281 FC params); the counts use 1000. "
)


@register_model(
    family="MobileNetV4",
    table=_TABLE.format(name="Conv-S", res=224),
    paper_variant="mnv4_conv_s_224",
    notes=_NOTES.format(
        spec="MNV4ConvSmall_BLOCK_SPECS",
        timm="mobilenetv4_conv_small",
        train="dropout 0.3, BN eps 1e-6 / momentum 0.95, no stochastic depth",
    )
    + "Counted 3,774,024 params / 186.01M MAdds at 224: the paper's 3.8M (-0.7%) and 0.2G (186.01 rounds to 0.2 "
    "at the table's one significant digit; -7.0% against 200 taken literally). Stem: two strided 3x3 convs, each "
    "followed by a 1x1 conv; no fused IB.",
)
def mobilenet_v4_conv_small(**kwargs) -> MobileNetV4:
    return MobileNetV4(**{"arch": "conv_small", **kwargs})


@register_model(
    family="MobileNetV4",
    table=_TABLE.format(name="Conv-M", res=256),
    paper_variant="mnv4_conv_m_256",
    notes=_NOTES.format(
        spec="_mnv4_conv_medium_block_specs",
        timm="mobilenetv4_conv_medium",
        train="dropout 0.2, BN eps 1e-3 / momentum 0.997, stochastic depth 0.075 x (i + 1) / 26 at spec row i",
    )
    + "DISCREPANCY: counted 9,715,512 params / 1080.24M MAdds at 256 against the paper's 9.2M / 1.0G: params "
    "+5.6%, MAdds +8.0% (827.65M at 224, so no other input size explains it either). TF and timm agree block for "
    "block and timm's card prints 9.7M / 1.1 GMACs; no configuration found (head removed, BN excluded, other "
    "resolution) gives 9.2M: unexplained, the spec is taken as the definition.",
)
def mobilenet_v4_conv_medium(**kwargs) -> MobileNetV4:
    return MobileNetV4(**{"arch": "conv_medium", **kwargs})


@register_model(
    family="MobileNetV4",
    table=_TABLE.format(name="Conv-L", res=384),
    paper_variant="mnv4_conv_l_384",
    notes=_NOTES.format(
        spec="MNV4ConvLarge_BLOCK_SPECS",
        timm="mobilenetv4_conv_large",
        train="dropout 0.2, BN eps 1e-3 / momentum 0.997, flat stochastic depth 0.2",
    )
    + "DISCREPANCY: counted 32,590,864 params / 6376.22M MAdds at 384 against the paper's 31M / 5.9G: params "
    "+5.1%, MAdds +8.1%; TF and timm agree block for block: unexplained, the spec is taken as the definition. "
    "Stem 24 wide (not 32). The distilled Conv-L's 85.9% (paper Sec. 8, 2000 epochs) is a training result, not "
    "this architecture's card figure (82.9%).",
)
def mobilenet_v4_conv_large(**kwargs) -> MobileNetV4:
    return MobileNetV4(**{"arch": "conv_large", **kwargs})
