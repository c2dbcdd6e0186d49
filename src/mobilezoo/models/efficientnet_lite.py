"""EfficientNet-Lite0..4 and EfficientNet-B0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks", arXiv:1905.11946v5, ICML 2019; Table 1: the B0 architecture, Table 2: its ImageNet figures).

EfficientNet-Lite is not in any paper: it is tensorflow/tpu ``models/official/efficientnet/lite``
(``efficientnet_lite_builder.py`` and its README's table), B0's block table with the mobile rules: no SE, ReLU6
instead of swish, the stem (32) and the head (1280) never scaled, and the repeats of the first and the last stage never
depth-scaled (``fix_head_stem``). Each LiteN is the builder's (width, depth, resolution, dropout) coefficients.

Module names equal torchvision's ``efficientnet_b0`` (``features.0``-``features.8``, stages of ``MBConv`` whose
``block`` holds conv-norm-act Sequentials and a ``SqueezeExcite`` with ``fc1``/``fc2``, ``classifier.1``), so its
checkpoint loads into ``efficientnet_b0`` with ``strict=True``; the Lite models have the same layout without SE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mobilezoo.layers import PADDINGS, ConvNormAct, SqueezeExcite, init_weights, make_divisible, use_tf_padding
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
class MBConvStage:
    """One stage row of Table 1: MBConv{exp}, k{kernel}x{kernel}, ``out`` channels, ``repeats`` layers, the first with
    ``stride`` (TF's ``r{repeats}_k{kernel}_s{stride}{stride}_e{exp}_o{out}``)."""

    exp: int
    kernel: int
    out: int
    repeats: int
    stride: int


# Paper Table 1 (B0) between the stem (Conv3x3, 32) and the head (Conv1x1 1280, pooling, FC). Table 1 misprints the
# strides of stages 5-6 (tensorflow/tpu#383); these are the code's: 1, 2, 2, 2, 1, 2, 1.
EFFICIENTNET_B0 = (
    MBConvStage(exp=1, kernel=3, out=16, repeats=1, stride=1),
    MBConvStage(exp=6, kernel=3, out=24, repeats=2, stride=2),
    MBConvStage(exp=6, kernel=5, out=40, repeats=2, stride=2),
    MBConvStage(exp=6, kernel=3, out=80, repeats=3, stride=2),
    MBConvStage(exp=6, kernel=5, out=112, repeats=3, stride=1),
    MBConvStage(exp=6, kernel=5, out=192, repeats=4, stride=2),
    MBConvStage(exp=6, kernel=3, out=320, repeats=1, stride=1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
SE_RATIO = 0.25


@dataclass(frozen=True)
class Scaling:
    """A model's compound-scaling coefficients (width, depth, native resolution, dropout) and whether the Lite rules
    apply: no SE, ReLU6, stem and head fixed, first and last stages' repeats fixed."""

    width: float
    depth: float
    resolution: int
    drop_rate: float
    lite: bool


# efficientnet_lite_builder.py efficientnet_lite_params; efficientnet_builder.py efficientnet_params for B0
SCALINGS = {
    "lite0": Scaling(width=1.0, depth=1.0, resolution=224, drop_rate=0.2, lite=True),
    "lite1": Scaling(width=1.0, depth=1.1, resolution=240, drop_rate=0.2, lite=True),
    "lite2": Scaling(width=1.1, depth=1.2, resolution=260, drop_rate=0.3, lite=True),
    "lite3": Scaling(width=1.2, depth=1.4, resolution=280, drop_rate=0.3, lite=True),
    "lite4": Scaling(width=1.4, depth=1.8, resolution=300, drop_rate=0.3, lite=True),
    "b0": Scaling(width=1.0, depth=1.0, resolution=224, drop_rate=0.2, lite=False),
}
# BatchNorm settings. "paper": TF's batch_norm_momentum 0.99 (PyTorch momentum 0.01) and epsilon 1e-3. "torchvision":
# PyTorch's defaults (momentum 0.1, eps 1e-5), which torchvision's efficientnet_b0 checkpoint was trained with.
BN_SETTINGS = {
    "paper": {"bn_eps": 1e-3, "bn_momentum": 0.01},
    "torchvision": {"bn_eps": 1e-5, "bn_momentum": 0.1},
}


def round_filters(channels: int, width: float) -> int:
    """TF's ``round_filters``: ``channels * width`` to a multiple of 8, never below 90% of it."""
    return make_divisible(channels * width, 8)


def round_repeats(repeats: int, depth: float) -> int:
    """TF's ``round_repeats``: ``ceil(depth * repeats)`` (Lite1's 2 -> 3, 3 -> 4, 4 -> 5)."""
    return math.ceil(depth * repeats)


def se_channels(in_chs: int) -> int:
    """B0's SE squeeze width: a quarter of the block's INPUT channels (TF ``int(input_filters * se_ratio)``), not of
    the expanded width; at least 1."""
    return max(1, int(in_chs * SE_RATIO))


def _conv(
    in_chs: int, out_chs: int, kernel: int, act: str | None, bn: dict, stride: int = 1, groups: int = 1
) -> ConvNormAct:
    """ConvNormAct, with swish (SiLU, which :func:`mobilezoo.layers.get_act` does not name) as ``act="swish"``."""
    if act != "swish":
        return ConvNormAct(in_chs, out_chs, kernel, stride=stride, groups=groups, act=act, **bn)
    layer = ConvNormAct(in_chs, out_chs, kernel, stride=stride, groups=groups, act=None, **bn)
    layer.append(nn.SiLU(inplace=True))
    return layer


class StochasticDepth(nn.Module):
    """TF's ``drop_connect`` (torchvision's ``StochasticDepth(p, "row")``): in training, zero a residual branch for
    whole examples with probability ``p`` and scale the kept ones by ``1 / (1 - p)``; the identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty([x.shape[0], 1, 1, 1], dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MBConv(nn.Module):
    """MBConv (paper Table 1; TF ``MBConvBlock``): [expand 1x1 + BN + act, when exp != 1] -> depthwise kxk + BN + act ->
    [SE: squeeze to a quarter of the block's input channels, ``act``, sigmoid gate] -> linear 1x1 + BN. The residual
    (stride 1 and in == out) passes through :class:`StochasticDepth` with ``drop_path`` first."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel: int,
        stride: int,
        exp: int,
        se: bool,
        act: str,
        drop_path: float,
        bn: dict,
    ) -> None:
        super().__init__()
        mid = in_chs * exp
        layers: list[nn.Module] = []
        if exp != 1:
            layers.append(_conv(in_chs, mid, 1, act, bn))
        layers.append(_conv(mid, mid, kernel, act, bn, stride=stride, groups=mid))
        if se:
            squeeze = SqueezeExcite(mid, se_channels(in_chs), act="relu", gate="sigmoid")
            if act == "swish":
                squeeze.activation = nn.SiLU(inplace=True)
            layers.append(squeeze)
        layers.append(_conv(mid, out_chs, 1, None, bn))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and in_chs == out_chs
        self.stochastic_depth = StochasticDepth(drop_path if self.use_res_connect else 0.0)
        self.out_channels = out_chs

    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = self.stochastic_depth(result) + x
        return result


class EfficientNet(PooledClassifierModel):
    """EfficientNet ``variant`` "lite0".."lite4" or "b0" (:data:`SCALINGS`).

    ``features``: the stem (conv 3x3 s2, BN, act), the seven MBConv stages of :data:`EFFICIENTNET_B0` with widths
    :func:`round_filters` and repeats :func:`round_repeats` of the variant's coefficients, the 1x1 conv to the head
    width (BN, act); ``classifier``: dropout ``drop_rate`` (default the variant's) and the FC. The Lite rules keep the
    stem at 32, the head at 1280 and the first and last stages at one block each, use ReLU6 and no SE; B0 has SE and
    swish. ``drop_path_rate`` is TF's drop-connect rate (0.2 in both builders): block ``i`` of ``n`` drops its residual
    branch with probability ``drop_path_rate * i / n`` in training only. ``bn`` picks the BatchNorm settings
    (:data:`BN_SETTINGS`): "paper" (TF's, the Lite default) or "torchvision" (B0's default: its checkpoint's).
    ``width_mult`` overrides the variant's width coefficient (the Lite stem and head stay fixed). ``padding="tf"`` gives
    the stride-2 convs TensorFlow's "SAME" padding (the extra pixel of an even side on the bottom/right), as the TF
    checkpoints need.
    """

    def __init__(
        self,
        variant: str = "lite0",
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float | None = None,
        drop_path_rate: float = 0.2,
        bn: str | None = None,
        width_mult: float | None = None,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        if variant not in SCALINGS:
            raise ValueError(f"variant={variant!r} is not an EfficientNet variant; expected one of {sorted(SCALINGS)}")
        spec = SCALINGS[variant]
        bn = ("paper" if spec.lite else "torchvision") if bn is None else bn
        if bn not in BN_SETTINGS:
            raise ValueError(f"bn={bn!r} is not a BatchNorm setting; expected one of {sorted(BN_SETTINGS)}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if (
            isinstance(drop_path_rate, bool)
            or not isinstance(drop_path_rate, (int, float))
            or not 0 <= drop_path_rate < 1
        ):
            raise ValueError(f"drop_path_rate is a drop probability in [0, 1), got {drop_path_rate!r}")
        width = spec.width if width_mult is None else width_mult
        drop_rate = spec.drop_rate if drop_rate is None else drop_rate
        check_width_mult(width)
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        check_drop_rate(drop_rate)
        self.variant = variant
        self.lite = spec.lite
        self.width_mult = width
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_path_rate = float(drop_path_rate)
        norm = BN_SETTINGS[bn]
        act = "relu6" if spec.lite else "swish"
        # Lite: stem and head fixed (TF fix_head_stem: round_filters(..., skip=True))
        stem = STEM_CHANNELS if spec.lite else round_filters(STEM_CHANNELS, width)
        self.num_features = HEAD_CHANNELS if spec.lite else round_filters(HEAD_CHANNELS, width)
        last = len(EFFICIENTNET_B0) - 1
        # Lite: the first and last stages keep their single block (TF fix_head_stem, timm fix_first_last)
        repeats = [
            row.repeats if spec.lite and i in (0, last) else round_repeats(row.repeats, spec.depth)
            for i, row in enumerate(EFFICIENTNET_B0)
        ]
        total = sum(repeats)
        features: list[nn.Module] = [_conv(in_chans, stem, 3, act, norm, stride=2)]
        self.feature_info = []
        in_chs, reduction, index = stem, 2, 0
        for row, n in zip(EFFICIENTNET_B0, repeats, strict=True):
            if row.stride == 2:
                self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(features) - 1}"))
                reduction *= 2
            out_chs = round_filters(row.out, width)
            blocks = []
            for i in range(n):
                drop_path = self.drop_path_rate * index / total  # TF: drop_connect_rate * idx / len(blocks)
                stride = row.stride if i == 0 else 1
                blocks.append(MBConv(in_chs, out_chs, row.kernel, stride, row.exp, not spec.lite, act, drop_path, norm))
                in_chs, index = out_chs, index + 1
            features.append(nn.Sequential(*blocks))
        features.append(_conv(in_chs, self.num_features, 1, act, norm))
        self.feature_info.append(FeatureInfo(self.num_features, reduction, f"features.{len(features) - 1}"))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=drop_rate), nn.Linear(self.num_features, num_classes))
        if padding == "tf":
            use_tf_padding(self.features)
        init_weights(self)


_LITE_TABLE = (
    "not in the paper: tensorflow/tpu models/official/efficientnet/lite README (top-1, params, MAdds) and "
    "efficientnet_lite_builder.py (architecture); B0's Table 1 blocks"
)
_LITE_NOTES = (
    "EfficientNet-Lite{n} == timm efficientnet_lite{n} == tf_efficientnet_lite{n} (counts identical): B0's block "
    "table at width {w} and depth {d} (repeats ceil(d x r)) with the Lite rules: no SE, ReLU6, stem 32 and head 1280 "
    "not scaled, the first and last stages one block each (not depth-scaled); native resolution {res}, dropout "
    "{drop}, drop-connect 0.2 (training only). Counted {params} params / {madds}M MAdds at {res}. The README's "
    "{readme_p}M params match only with BN gamma/beta ({no_bn:,} without: TF counts them as trainable variables). "
    "DISCREPANCY: the README's {readme_m} MAdds are {gap} above the count; over Lite0-4 the gap is +3.4% to +5.7%, "
    "about 3 ops per BN output element (Lite0: +21.8M against 6.74M BN outputs), as if the README's profiler also "
    "counted the BN and ReLU6 arithmetic (a hypothesis; tensorflow/tpu#841 questions these figures too). The README "
    "even puts Lite0 (407M, no SE) above B0 (0.39B, with SE), which the conv MAdds cannot do (385.19M vs 385.81M). "
    "BatchNorm: TF's eps 1e-3 / momentum 0.01 (bn='torchvision' gives PyTorch's defaults, what timm's own-trained "
    "efficientnet_lite0 used); padding='tf' gives the stride-2 convs TensorFlow's SAME padding, which the TF "
    "checkpoints (timm tf_efficientnet_lite*) need."
)


def _lite(n: int, params: int, no_bn: int, madds: str, readme_p: str, readme_m: str, gap: str) -> dict[str, str]:
    spec = SCALINGS[f"lite{n}"]
    notes = _LITE_NOTES.format(
        n=n,
        w=spec.width,
        d=spec.depth,
        res=spec.resolution,
        drop=spec.drop_rate,
        params=f"{params:,}",
        no_bn=no_bn,
        madds=madds,
        readme_p=readme_p,
        readme_m=readme_m,
        gap=gap,
    )
    return {"family": "EfficientNet", "table": _LITE_TABLE, "notes": notes}


@register_model(
    paper_variant="efficientnet_lite0_224",
    **_lite(0, 4_652_008, 4_609_992, "385.19", "4.7", "407M", "+5.7% (+21.8M)"),
)
def efficientnet_lite0(**kwargs) -> EfficientNet:
    return EfficientNet(**{"variant": "lite0", **kwargs})


@register_model(
    paper_variant="efficientnet_lite1_240",
    **_lite(1, 5_416_680, 5_363_016, "600.19", "5.4", "631M", "+5.1% (+30.8M)"),
)
def efficientnet_lite1(**kwargs) -> EfficientNet:
    return EfficientNet(**{"variant": "lite1", **kwargs})


@register_model(
    paper_variant="efficientnet_lite2_260",
    **_lite(2, 6_092_072, 6_033_976, "859.74", "6.1", "899M", "+4.6% (+39.3M)"),
)
def efficientnet_lite2(**kwargs) -> EfficientNet:
    return EfficientNet(**{"variant": "lite2", **kwargs})


@register_model(
    paper_variant="efficientnet_lite3_280",
    **_lite(3, 8_197_096, 8_120_424, "1383.32", "8.2", "1.44B", "+4.1% (+56.7M)"),
)
def efficientnet_lite3(**kwargs) -> EfficientNet:
    return EfficientNet(**{"variant": "lite3", **kwargs})


@register_model(
    paper_variant="efficientnet_lite4_300",
    **_lite(4, 13_006_568, 12_894_200, "2553.03", "13.0", "2.64B", "+3.4% (+87.0M)"),
)
def efficientnet_lite4(**kwargs) -> EfficientNet:
    return EfficientNet(**{"variant": "lite4", **kwargs})


@register_model(
    family="EfficientNet",
    table="Table 2 (B0: 77.1 / 93.3, 5.3M, 0.39B FLOPS); Table 1 (architecture)",
    paper_variant="efficientnet_b0_224",
    torchvision=TorchvisionRef(
        builder="efficientnet_b0", weights="EfficientNet_B0_Weights", model_kwargs={"bn": "torchvision"}
    ),
    notes=(
        "EfficientNet-B0, the reference point of the Lite models: == torchvision efficientnet_b0 (same keys; its "
        "checkpoint loads strict) == timm efficientnet_b0. The paper's 'FLOPS' are multiply-adds: counted 5,288,548 "
        "params / 385.81M MAdds at 224, Table 2's 5.3M / 0.39B (MAdds -1.1% against 390, within the table's two "
        "digits). SE squeezes to a quarter of the block's INPUT channels (not the expanded width), swish everywhere "
        "(the SE's reduce too), sigmoid gate; dropout 0.2; drop-connect 0.2 (block i of 16 drops its residual branch "
        "with probability 0.2 x i / 16, in training only). Table 1 misprints the stage strides (tensorflow/tpu#383); "
        "the code's 1, 2, 2, 2, 1, 2, 1 are used. BatchNorm defaults to torchvision's (eps 1e-5, momentum 0.1: its "
        "checkpoint's); bn='paper' gives TF's eps 1e-3 / momentum 0.01. Top-1 depends on the recipe: the TF README "
        "gives 76.7 (baseline), 77.1 (AutoAugment, the paper), 77.6 (AdvProp), 78.8 (NoisyStudent)."
    ),
)
def efficientnet_b0(**kwargs) -> EfficientNet:
    return EfficientNet(**{"variant": "b0", **kwargs})
