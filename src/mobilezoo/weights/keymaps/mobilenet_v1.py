"""MobileNet V1: timm's ``mobilenetv1_*`` (``timm/models/efficientnet.py``, ``_gen_mobilenet_v1``).

timm's layout: ``conv_stem``/``bn1``, ``blocks.<stage>.<i>`` (``DepthwiseSeparableConv``: ``conv_dw``, ``bn1``,
``conv_pw``, ``bn2``; no residual), ``classifier``. Its V1 uses ReLU6 (``act="relu6"`` here). ``mobilenetv1_100h``
(an extra 1x1 head conv) has no counterpart.
"""

from __future__ import annotations

from mobilezoo.models.mobilenet_v1 import MOBILENET_V1, MobileNetV1
from mobilezoo.weights.keymap import KeyMap
from mobilezoo.weights.keymaps import FamilyWeights, TimmArch, register_family, stage_positions, tag


def timm_keymap(model: MobileNetV1) -> KeyMap:
    """timm's ``mobilenetv1_*`` layout onto ``model``."""
    km = KeyMap("timm MobileNetV1")
    km.add("conv_stem", "features.0.0")
    km.add("bn1", "features.0.1")
    for i, (stage, j) in enumerate(stage_positions([row.out for row in MOBILENET_V1]), start=1):
        src, dst = f"blocks.{stage}.{j}", f"features.{i}"
        km.add(f"{src}.conv_dw", f"{dst}.dw.0")
        km.add(f"{src}.bn1", f"{dst}.dw.1")
        km.add(f"{src}.conv_pw", f"{dst}.pw.0")
        km.add(f"{src}.bn2", f"{dst}.pw.1")
    km.add("classifier", "classifier.1")
    return km


_RA4 = tag("ra4_e3600_r224_in1k", 224, 0.875, "bicubic", "inception")
_PORT = {"act": "relu6"}

register_family(
    FamilyWeights(
        family="MobileNetV1",
        timm_keymap=timm_keymap,
        timm=(
            TimmArch("mobilenetv1_100", "mobilenet_v1", _PORT, tags=(_RA4,)),
            TimmArch(
                "mobilenetv1_125",
                "mobilenet_v1",
                _PORT,
                arch={"width_mult": 1.25},
                tags=(tag("ra4_e3600_r224_in1k", 224, 0.9, "bicubic", "inception"),),
            ),
        ),
    )
)
