"""EfficientNet-Lite0..4 and B0: timm's ``efficientnet_lite*``, ``tf_efficientnet_lite*``, ``efficientnet_b0`` and
``tf_efficientnet_b0`` (``timm/models/efficientnet.py``, ``_gen_efficientnet_lite``, ``_gen_efficientnet``).

timm's layout: ``conv_stem``/``bn1``; ``blocks.<stage>.<i>``, one stage per row of B0's Table 1 (the model's
``features.1``-``features.7``): the first (no expansion) a ``DepthwiseSeparableConv`` (``conv_dw``, ``bn1``,
[``se``], ``conv_pw``, ``bn2``), the others ``InvertedResidual`` (``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, [``se``],
``conv_pwl``, ``bn3``), the SE with ``conv_reduce``/``conv_expand``; ``conv_head``/``bn2``; ``classifier``.

The ``tf_`` weights are Google's TensorFlow checkpoints: TF "SAME" padding (``padding="tf"``) and TF's BatchNorm
(``bn="paper"``: epsilon 1e-3). timm's own ``efficientnet_lite0``/``efficientnet_b0`` use PyTorch's padding and
BatchNorm (``bn="torchvision"``: epsilon 1e-5). timm's ``efficientnet_b0_gn``, ``efficientnet_b0_g8_gn`` (GroupNorm)
and ``efficientnet_b0_g16_evos`` (grouped convs, EvoNorm) have no counterpart.
"""

from __future__ import annotations

from mobilezoo.models.efficientnet_lite import EFFICIENTNET_B0, EfficientNet
from mobilezoo.weights.keymap import KeyMap
from mobilezoo.weights.keymaps import (
    FamilyWeights,
    TimmArch,
    TimmTag,
    add_timm_inverted_residual,
    register_family,
    tag,
)


def timm_keymap(model: EfficientNet) -> KeyMap:
    """timm's ``efficientnet_lite*``/``efficientnet_b0`` (and ``tf_``) layout onto ``model``."""
    km = KeyMap("timm EfficientNet")
    km.add("conv_stem", "features.0.0")
    km.add("bn1", "features.0.1")
    for stage in range(len(EFFICIENTNET_B0)):
        for i, block in enumerate(model.features[stage + 1]):
            add_timm_inverted_residual(km, f"blocks.{stage}.{i}", f"features.{stage + 1}.{i}.block", block.block)
    head = len(EFFICIENTNET_B0) + 1
    km.add("conv_head", f"features.{head}.0")
    km.add("bn2", f"features.{head}.1")
    km.add("classifier", "classifier.1")
    return km


_TIMM = {"bn": "torchvision"}  # PyTorch's padding and BatchNorm (eps 1e-5)
_TF = {"bn": "paper", "padding": "tf"}  # TF's "SAME" padding and BatchNorm (eps 1e-3)


def _untrained(size: int, crop_pct: float) -> TimmTag:
    """timm's cfg for an architecture without published weights (ImageNet mean/std, bicubic)."""
    return tag("", size, crop_pct, "bicubic", "imagenet")


def _tf_in1k(size: int, crop_pct: float, interpolation: str) -> TimmTag:
    """The ``in1k`` tag of a ``tf_efficientnet_lite*``: Google's weights, inputs scaled to [-1, 1]."""
    return tag("in1k", size, crop_pct, interpolation, "inception")


register_family(
    FamilyWeights(
        family="EfficientNet",
        timm_keymap=timm_keymap,
        timm=(
            TimmArch(
                "efficientnet_lite0",
                "efficientnet_lite0",
                _TIMM,
                tags=(tag("ra_in1k", 224, 0.875, "bicubic", "imagenet"),),
            ),
            TimmArch("efficientnet_lite1", "efficientnet_lite1", _TIMM, default_cfg=_untrained(240, 0.882)),
            TimmArch("efficientnet_lite2", "efficientnet_lite2", _TIMM, default_cfg=_untrained(260, 0.89)),
            TimmArch("efficientnet_lite3", "efficientnet_lite3", _TIMM, default_cfg=_untrained(300, 0.904)),
            TimmArch("efficientnet_lite4", "efficientnet_lite4", _TIMM, default_cfg=_untrained(380, 0.922)),
            TimmArch("tf_efficientnet_lite0", "efficientnet_lite0", _TF, tags=(_tf_in1k(224, 0.875, "bicubic"),)),
            TimmArch("tf_efficientnet_lite1", "efficientnet_lite1", _TF, tags=(_tf_in1k(240, 0.882, "bicubic"),)),
            TimmArch("tf_efficientnet_lite2", "efficientnet_lite2", _TF, tags=(_tf_in1k(260, 0.89, "bicubic"),)),
            TimmArch("tf_efficientnet_lite3", "efficientnet_lite3", _TF, tags=(_tf_in1k(300, 0.904, "bilinear"),)),
            TimmArch("tf_efficientnet_lite4", "efficientnet_lite4", _TF, tags=(_tf_in1k(380, 0.92, "bilinear"),)),
            TimmArch(
                "efficientnet_b0",
                "efficientnet_b0",
                _TIMM,
                tags=(
                    tag("ra_in1k", 224, 0.875, "bicubic", "imagenet"),
                    tag("ra4_e3600_r224_in1k", 224, 0.9, "bicubic", "inception"),
                ),
            ),
            TimmArch(
                "tf_efficientnet_b0",
                "efficientnet_b0",
                _TF,
                tags=(
                    tag("ns_jft_in1k", 224, 0.875, "bicubic", "imagenet"),
                    tag("aa_in1k", 224, 0.875, "bicubic", "imagenet"),
                    tag("ap_in1k", 224, 0.875, "bicubic", "inception"),
                    tag("in1k", 224, 0.875, "bicubic", "imagenet"),
                ),
            ),
        ),
    )
)
