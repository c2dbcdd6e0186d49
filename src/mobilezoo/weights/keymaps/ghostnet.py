"""GhostNet: timm's ``ghostnet_050/100/130`` (``timm/models/ghostnet.py``, the official PyTorch code's layout).

timm's layout: ``conv_stem``/``bn1``; ``blocks.<stage>.<i>``, the official ``cfgs``' stages (:data:`STAGES`), each a
``GhostBottleneck`` whose names equal this library's (``ghost1``/``ghost2`` with ``primary_conv``/``cheap_operation``
Sequentials) except the stride-2 depthwise conv (``conv_dw``, ``bn_dw``: one ConvNormAct here), the SE
(``conv_reduce``/``conv_expand``: ``fc1``/``fc2``) and the shortcut (one flat Sequential of conv, BN, conv, BN: two
ConvNormAct here); ``blocks.9.0`` the 1x1 conv to 960 (``conv``, ``bn1``); ``conv_head`` (the 1x1 conv with bias on
the pooled map: a Linear here, its weight flattened) and ``classifier``. BatchNorm epsilon 1e-5 in both (no port
argument). timm's ``ghostnetv2_*``, ``ghostnetv3_*`` and ``repghostnet_*`` are other architectures.
"""

from __future__ import annotations

from torch import nn

from mobilezoo.models.ghostnet import GhostNet
from mobilezoo.weights.keymap import KeyMap, flatten_1x1
from mobilezoo.weights.keymaps import FamilyWeights, TimmArch, register_family, tag

# The official cfgs group Table 1's 16 bottlenecks in 9 stages (the 80- and 112-wide ones share one, as the last four
# 160-wide ones do); timm keeps that grouping as blocks.<stage>.<i>.
STAGES = (1, 1, 1, 1, 1, 1, 5, 1, 4)  # sums to len(GHOSTNET)


def timm_keymap(model: GhostNet) -> KeyMap:
    """timm's ``ghostnet_*`` layout onto ``model``."""
    km = KeyMap("timm GhostNet")
    km.add("conv_stem", "features.0.0")
    km.add("bn1", "features.0.1")
    positions = [(stage, i) for stage, n in enumerate(STAGES) for i in range(n)]
    for k, (stage, i) in enumerate(positions, start=1):
        src, dst = f"blocks.{stage}.{i}", f"features.{k}"
        block = model.features[k]
        for ghost in ("ghost1", "ghost2"):
            for op in ("primary_conv", "cheap_operation"):
                km.add(f"{src}.{ghost}.{op}.0", f"{dst}.{ghost}.{op}.0")
                km.add(f"{src}.{ghost}.{op}.1", f"{dst}.{ghost}.{op}.1")
        if not isinstance(block.conv_dw, nn.Identity):  # stride 2
            km.add(f"{src}.conv_dw", f"{dst}.conv_dw.0")
            km.add(f"{src}.bn_dw", f"{dst}.conv_dw.1")
        if not isinstance(block.se, nn.Identity):
            km.add(f"{src}.se.conv_reduce", f"{dst}.se.fc1")
            km.add(f"{src}.se.conv_expand", f"{dst}.se.fc2")
        if not block.identity_shortcut:  # depthwise conv, BN, 1x1 conv, BN
            km.add(f"{src}.shortcut.0", f"{dst}.shortcut.0.0")
            km.add(f"{src}.shortcut.1", f"{dst}.shortcut.0.1")
            km.add(f"{src}.shortcut.2", f"{dst}.shortcut.1.0")
            km.add(f"{src}.shortcut.3", f"{dst}.shortcut.1.1")
    last = len(positions) + 1
    km.add(f"blocks.{len(STAGES)}.0.conv", f"features.{last}.0")
    km.add(f"blocks.{len(STAGES)}.0.bn1", f"features.{last}.1")
    km.add("conv_head", "classifier.0", flatten_1x1, "a 1x1 conv on the pooled map: a Linear here")
    km.add("classifier", "classifier.3")
    return km


_DEFAULT = tag("", 224, 0.875, "bicubic", "imagenet")  # timm's cfg for the widths it publishes no weights for

register_family(
    FamilyWeights(
        family="GhostNet",
        timm_keymap=timm_keymap,
        timm=(
            TimmArch("ghostnet_050", "ghostnet_x0_5", default_cfg=_DEFAULT),
            TimmArch("ghostnet_100", "ghostnet_x1_0", tags=(tag("in1k", 224, 0.875, "bicubic", "imagenet"),)),
            TimmArch("ghostnet_130", "ghostnet_x1_3", default_cfg=_DEFAULT),
        ),
    )
)
