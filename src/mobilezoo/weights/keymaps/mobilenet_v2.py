"""MobileNet V2: timm's ``mobilenetv2_*`` (``timm/models/efficientnet.py``, ``_gen_mobilenet_v2``).

timm's layout: ``conv_stem``/``bn1``; ``blocks.<row>.<i>``, one stage per row of the paper's Table 2: the t=1 block is
a ``DepthwiseSeparableConv`` (``conv_dw``, ``bn1``, ``conv_pw``, ``bn2``), the others ``InvertedResidual``
(``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``conv_pwl``, ``bn3``); ``conv_head``/``bn2``; ``classifier``. The
``mobilenetv2_110d``/``_120d`` (a depth multiplier, fixed stem and head) have no counterpart.
"""

from __future__ import annotations

from mobilezoo.models.mobilenet_v2 import MOBILENET_V2, MobileNetV2
from mobilezoo.weights.keymap import KeyMap
from mobilezoo.weights.keymaps import FamilyWeights, TimmArch, register_family, stage_positions, tag


def timm_keymap(model: MobileNetV2) -> KeyMap:
    """timm's ``mobilenetv2_*`` layout onto ``model``."""
    km = KeyMap("timm MobileNetV2")
    km.add("conv_stem", "features.0.0")
    km.add("bn1", "features.0.1")
    outs = [row.c for row in MOBILENET_V2 for _ in range(row.n)]
    for i, (stage, j) in enumerate(stage_positions(outs), start=1):
        src, dst = f"blocks.{stage}.{j}", f"features.{i}.conv"
        if len(model.features[i].conv) == 3:  # t=1: depthwise (ConvNormAct), projection conv, BN
            km.add(f"{src}.conv_dw", f"{dst}.0.0")
            km.add(f"{src}.bn1", f"{dst}.0.1")
            km.add(f"{src}.conv_pw", f"{dst}.1")
            km.add(f"{src}.bn2", f"{dst}.2")
        else:  # expansion (ConvNormAct), depthwise (ConvNormAct), projection conv, BN
            km.add(f"{src}.conv_pw", f"{dst}.0.0")
            km.add(f"{src}.bn1", f"{dst}.0.1")
            km.add(f"{src}.conv_dw", f"{dst}.1.0")
            km.add(f"{src}.bn2", f"{dst}.1.1")
            km.add(f"{src}.conv_pwl", f"{dst}.2")
            km.add(f"{src}.bn3", f"{dst}.3")
    last = len(outs) + 1
    km.add("conv_head", f"features.{last}.0")
    km.add("bn2", f"features.{last}.1")
    km.add("classifier", "classifier.1")
    return km


_DEFAULT = tag("", 224, 0.875, "bicubic", "imagenet")  # timm's cfg for the widths it publishes no weights for


def _arch(name: str, model: str, *tags) -> TimmArch:
    return TimmArch(name, model, tags=tuple(tags), default_cfg=None if tags else _DEFAULT)


register_family(
    FamilyWeights(
        family="MobileNetV2",
        timm_keymap=timm_keymap,
        timm=(
            _arch("mobilenetv2_035", "mobilenet_v2_x0_35"),
            _arch("mobilenetv2_050", "mobilenet_v2_x0_5", tag("lamb_in1k", 224, 0.875, "bicubic", "imagenet")),
            _arch("mobilenetv2_075", "mobilenet_v2_x0_75"),
            _arch("mobilenetv2_100", "mobilenet_v2", tag("ra_in1k", 224, 0.875, "bicubic", "imagenet")),
            _arch("mobilenetv2_140", "mobilenet_v2_x1_4", tag("ra_in1k", 224, 0.875, "bicubic", "imagenet")),
        ),
    )
)
