"""MobileNetV4: timm's ``mobilenetv4_conv_small/medium/large`` (``timm/models/mobilenetv3.py``, ``_gen_mobilenet_v4``).

timm's layout: the first spec row as ``conv_stem``/``bn1``; ``blocks.<stage>.<i>``, a stage starting at every
strided row and at the closing 1x1 conv to 960 (:func:`timm_stages`): a conv-BN row a ``ConvBnAct`` (``conv``,
``bn1``), the fused IB an ``EdgeResidual`` (``conv_exp``, ``bn1``, ``conv_pwl``, ``bn2``), a UIB a
``UniversalInvertedResidual`` (``dw_start``, ``pw_exp``, ``dw_mid``, ``pw_proj``, each with ``conv``/``bn``; the
depthwise ones only where the row has them); ``conv_head``/``norm_head`` (the 1x1 conv to 1280 and its BN on the pooled
map: the model's ``head``); ``classifier``. timm trains with BatchNorm epsilon 1e-5 (``bn_eps=1e-5``; the TF configs
use 1e-6 or 1e-3).

No counterpart: ``mobilenetv4_conv_small_035``/``_050`` (width multipliers, which the model here does not take),
``mobilenetv4_conv_blur_medium`` and ``mobilenetv4_conv_aa_*`` (blur-pool anti-aliased downsampling), and the
``mobilenetv4_hybrid_*`` (Mobile MQA attention: not built here).
"""

from __future__ import annotations

from mobilezoo.models.mobilenet_v4 import ARCHS, ConvBN, FusedIB, MobileNetV4, Row
from mobilezoo.weights.keymap import KeyMap
from mobilezoo.weights.keymaps import FamilyWeights, TimmArch, register_family, tag


def timm_stages(rows: tuple[Row, ...]) -> list[tuple[int, int]]:
    """timm's ``blocks.<stage>.<index>`` of each spec row after the stem row: a new stage at every stride-2 row and at
    the last row (the 1x1 conv to 960)."""
    positions: list[tuple[int, int]] = []
    stage, index = -1, 0
    last = len(rows) - 1
    for i, row in enumerate(rows[1:], start=1):
        if stage < 0 or row.stride == 2 or i == last:
            stage, index = stage + 1, 0
        positions.append((stage, index))
        index += 1
    return positions


def timm_keymap(model: MobileNetV4) -> KeyMap:
    """timm's ``mobilenetv4_conv_*`` layout onto ``model``."""
    km = KeyMap("timm MobileNetV4")
    km.add("conv_stem", "features.0.0")
    km.add("bn1", "features.0.1")
    rows = ARCHS[model.arch].rows
    for k, (row, (stage, i)) in enumerate(zip(rows[1:], timm_stages(rows), strict=True), start=1):
        src, dst = f"blocks.{stage}.{i}", f"features.{k}"
        if isinstance(row, ConvBN):
            km.add(f"{src}.conv", f"{dst}.0")
            km.add(f"{src}.bn1", f"{dst}.1")
        elif isinstance(row, FusedIB):
            km.add(f"{src}.conv_exp", f"{dst}.expand.0")
            km.add(f"{src}.bn1", f"{dst}.expand.1")
            km.add(f"{src}.conv_pwl", f"{dst}.project.0")
            km.add(f"{src}.bn2", f"{dst}.project.1")
        else:
            convs = [("pw_exp", "expand"), ("pw_proj", "project")]
            if row.start_dw:
                convs.append(("dw_start", "start_dw"))
            if row.middle_dw:
                convs.append(("dw_mid", "middle_dw"))
            for theirs, ours in convs:
                km.add(f"{src}.{theirs}.conv", f"{dst}.{ours}.0")
                km.add(f"{src}.{theirs}.bn", f"{dst}.{ours}.1")
    km.add("conv_head", "head.0")
    km.add("norm_head", "head.1")
    km.add("classifier", "classifier.1")
    return km


_TIMM = {"bn_eps": 1e-5}


register_family(
    FamilyWeights(
        family="MobileNetV4",
        timm_keymap=timm_keymap,
        timm=(
            TimmArch(
                "mobilenetv4_conv_small",
                "mobilenet_v4_conv_small",
                _TIMM,
                tags=(
                    tag("e2400_r224_in1k", 224, 0.875, "bicubic", "imagenet"),
                    tag("e1200_r224_in1k", 224, 0.875, "bicubic", "imagenet"),
                    tag("e3600_r256_in1k", 256, 0.95, "bicubic", "inception"),
                ),
            ),
            TimmArch(
                "mobilenetv4_conv_medium",
                "mobilenet_v4_conv_medium",
                _TIMM,
                tags=(
                    tag("e500_r256_in1k", 256, 0.95, "bicubic", "imagenet"),
                    tag("e500_r224_in1k", 224, 0.95, "bicubic", "imagenet"),
                    tag("e250_r384_in12k_ft_in1k", 384, 0.95, "bicubic", "imagenet"),
                    tag("e250_r384_in12k", 384, 1.0, "bicubic", "imagenet", num_classes=11821),
                    tag("e180_r384_in12k", 384, 1.0, "bicubic", "imagenet", num_classes=11821),
                    tag("e180_ad_r384_in12k", 384, 1.0, "bicubic", "imagenet", num_classes=11821),
                ),
            ),
            TimmArch(
                "mobilenetv4_conv_large",
                "mobilenet_v4_conv_large",
                _TIMM,
                tags=(
                    tag("e600_r384_in1k", 384, 0.95, "bicubic", "imagenet"),
                    tag("e500_r256_in1k", 256, 0.95, "bicubic", "imagenet"),
                ),
            ),
        ),
    )
)
