"""MobileNet V3: timm's ``mobilenetv3_*`` and ``tf_mobilenetv3_*`` (``timm/models/mobilenetv3.py``).

timm's layout: ``conv_stem``/``bn1``; ``blocks.<stage>.<i>``, a stage per output width of the paper's table: the
first bneck (no expansion) a ``DepthwiseSeparableConv`` (``conv_dw``, ``bn1``, ``se``, ``conv_pw``, ``bn2``), the
others ``InvertedResidual`` (``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``se``, ``conv_pwl``, ``bn3``), the SE with
``conv_reduce``/``conv_expand``; the last 1x1 conv a ``ConvBnAct`` (``conv``, ``bn1``); ``conv_head`` (the 1x1 conv
with bias after pooling: a Linear here, its weight flattened) and ``classifier``.

The ``tf_`` weights are the papers' TensorFlow checkpoints: TF "SAME" padding (``padding="tf"``) and BN epsilon 1e-3
(the default here). timm's own ``mobilenetv3_*`` use PyTorch's padding and epsilon 1e-5 (``bn_eps=1e-5``).
``mobilenetv3_small_050`` (its stem is not narrowed), ``mobilenetv3_large_150d`` and ``mobilenetv3_rw`` have no
counterpart.
"""

from __future__ import annotations

from mobilezoo.models.mobilenet_v3 import ARCHS, MobileNetV3
from mobilezoo.weights.keymap import KeyMap, flatten_1x1
from mobilezoo.weights.keymaps import (
    FamilyWeights,
    TimmArch,
    add_timm_inverted_residual,
    register_family,
    stage_positions,
    tag,
)


def timm_keymap(model: MobileNetV3) -> KeyMap:
    """timm's ``mobilenetv3_*``/``tf_mobilenetv3_*`` layout onto ``model``."""
    km = KeyMap("timm MobileNetV3")
    km.add("conv_stem", "features.0.0")
    km.add("bn1", "features.0.1")
    positions = stage_positions([row.out for row in ARCHS[model.arch].bnecks])
    for i, (stage, j) in enumerate(positions, start=1):
        add_timm_inverted_residual(km, f"blocks.{stage}.{j}", f"features.{i}.block", model.features[i].block)
    last_conv = len(positions) + 1
    km.add(f"blocks.{positions[-1][0] + 1}.0.conv", f"features.{last_conv}.0")
    km.add(f"blocks.{positions[-1][0] + 1}.0.bn1", f"features.{last_conv}.1")
    km.add("conv_head", "classifier.0", flatten_1x1, "a 1x1 conv on the pooled map: a Linear here")
    km.add("classifier", "classifier.3")
    return km


_TF = {"padding": "tf"}  # BN epsilon 1e-3: the default here
_TIMM = {"bn_eps": 1e-5}
_TF_IN1K = tag("in1k", 224, 0.875, "bilinear", "inception")
_LAMB = tag("lamb_in1k", 224, 0.875, "bicubic", "imagenet")

register_family(
    FamilyWeights(
        family="MobileNetV3",
        timm_keymap=timm_keymap,
        timm=(
            TimmArch(
                "mobilenetv3_large_100",
                "mobilenet_v3_large",
                _TIMM,
                tags=(
                    tag("ra_in1k", 224, 0.875, "bicubic", "imagenet"),
                    tag("ra4_e3600_r224_in1k", 224, 0.95, "bicubic", "inception"),
                    tag("miil_in21k_ft_in1k", 224, 0.875, "bilinear", "none"),
                    tag("miil_in21k", 224, 0.875, "bilinear", "none", num_classes=11221),
                ),
            ),
            TimmArch(
                "mobilenetv3_large_075",
                "mobilenet_v3_large_x0_75",
                _TIMM,
                default_cfg=tag("", 224, 0.875, "bilinear", "imagenet"),
            ),
            TimmArch("mobilenetv3_small_100", "mobilenet_v3_small", _TIMM, tags=(_LAMB,)),
            TimmArch("mobilenetv3_small_075", "mobilenet_v3_small_x0_75", _TIMM, tags=(_LAMB,)),
            TimmArch("tf_mobilenetv3_large_100", "mobilenet_v3_large", _TF, tags=(_TF_IN1K,)),
            TimmArch("tf_mobilenetv3_large_075", "mobilenet_v3_large_x0_75", _TF, tags=(_TF_IN1K,)),
            TimmArch("tf_mobilenetv3_large_minimal_100", "mobilenet_v3_large_minimal", _TF, tags=(_TF_IN1K,)),
            TimmArch("tf_mobilenetv3_small_100", "mobilenet_v3_small", _TF, tags=(_TF_IN1K,)),
            TimmArch("tf_mobilenetv3_small_075", "mobilenet_v3_small_x0_75", _TF, tags=(_TF_IN1K,)),
            TimmArch("tf_mobilenetv3_small_minimal_100", "mobilenet_v3_small_minimal", _TF, tags=(_TF_IN1K,)),
        ),
    )
)
