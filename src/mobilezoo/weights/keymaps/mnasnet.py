"""MnasNet: timm's ``mnasnet_*`` (B1) and ``semnasnet_*`` (A1) (``timm/models/efficientnet.py``, ``_gen_mnasnet_b1``,
``_gen_mnasnet_a1``).

timm's layout: ``conv_stem``/``bn1``; ``blocks.0.0`` the SepConv, a ``DepthwiseSeparableConv`` (``conv_dw``, ``bn1``,
``conv_pw``, ``bn2``); ``blocks.<row>.<i>`` one stage per MBConv row of the paper's Fig. 7, ``InvertedResidual``
(``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, [``se`` with ``conv_reduce``/``conv_expand``], ``conv_pwl``, ``bn3``);
``conv_head``/``bn2``; ``classifier``. Here the model follows torchvision's flat ``layers`` (see
:mod:`mobilezoo.models.mnasnet`). timm's weights were trained with BatchNorm epsilon 1e-5 (``bn_eps=1e-5``; the
momentum is training-only and stays the model's).

``mnasnet_small``: timm gives its SepConv (8 -> 8 channels at stride 1) a residual connection that TF's
``mnasnet_small`` and the model's default lack (TF decides the skip from the declared widths, 16 -> 8), so the port
builds it with ``sepconv_skip=True`` (the SepConv then one module, ``layers.3``).
"""

from __future__ import annotations

from mobilezoo.layers import SqueezeExcite
from mobilezoo.models.mnasnet import ARCHS, MnasNet, SepConvResidual
from mobilezoo.weights.keymap import KeyMap
from mobilezoo.weights.keymaps import FamilyWeights, TimmArch, register_family, tag


def timm_keymap(model: MnasNet) -> KeyMap:
    """timm's ``mnasnet_*``/``semnasnet_*`` layout onto ``model``."""
    km = KeyMap("timm MnasNet")
    km.add("conv_stem", "layers.0")
    km.add("bn1", "layers.1")
    if isinstance(model.layers[3], SepConvResidual):  # sepconv_skip: the SepConv's five layers in one module
        sepconv = ("layers.3.0", "layers.3.1", "layers.3.3", "layers.3.4")
    else:  # flat: depthwise conv (3), BN (4), ReLU, pointwise conv (6), BN (7)
        sepconv = ("layers.3", "layers.4", "layers.6", "layers.7")
    for src, dst in zip(("conv_dw", "bn1", "conv_pw", "bn2"), sepconv, strict=True):
        km.add(f"blocks.0.0.{src}", dst)
    rows = len(ARCHS[model.arch].blocks)
    first = len(model.layers) - 3 - rows  # the stages sit between the SepConv and the head's conv, BN, ReLU
    for row in range(1, rows + 1):
        stage = first + row - 1
        for i, block in enumerate(model.layers[stage]):
            src, dst = f"blocks.{row}.{i}", f"layers.{stage}.{i}.layers"
            # every row here expands (exp 3 or 6): expansion conv, BN, ReLU (0-2); depthwise conv, BN, ReLU (3-5);
            # [SE (6)]; projection conv, BN
            km.add(f"{src}.conv_pw", f"{dst}.0")
            km.add(f"{src}.bn1", f"{dst}.1")
            km.add(f"{src}.conv_dw", f"{dst}.3")
            km.add(f"{src}.bn2", f"{dst}.4")
            proj = 6
            if isinstance(block.layers[6], SqueezeExcite):
                km.add(f"{src}.se.conv_reduce", f"{dst}.6.fc1")
                km.add(f"{src}.se.conv_expand", f"{dst}.6.fc2")
                proj = 7
            km.add(f"{src}.conv_pwl", f"{dst}.{proj}")
            km.add(f"{src}.bn3", f"{dst}.{proj + 1}")
    head = len(model.layers) - 3  # conv, BN, ReLU
    km.add("conv_head", f"layers.{head}")
    km.add("bn2", f"layers.{head + 1}")
    km.add("classifier", "classifier.1")
    return km


_TIMM = {"bn_eps": 1e-5}
_DEFAULT = tag("", 224, 0.875, "bicubic", "imagenet")  # timm's cfg for the widths it publishes no weights for
_RMSP = tag("rmsp_in1k", 224, 0.875, "bicubic", "imagenet")


def _arch(name: str, model: str, *tags, width: float | None = None) -> TimmArch:
    arch = {"width_mult": width} if width is not None else {}
    return TimmArch(name, model, _TIMM, arch, tags=tuple(tags), default_cfg=None if tags else _DEFAULT)


register_family(
    FamilyWeights(
        family="MnasNet",
        timm_keymap=timm_keymap,
        timm=(
            _arch("mnasnet_050", "mnasnet_b1_x0_5"),
            _arch("mnasnet_075", "mnasnet_b1_x0_75"),
            _arch("mnasnet_100", "mnasnet_b1_x1_0", _RMSP),
            _arch("mnasnet_140", "mnasnet_b1_x1_0", width=1.4),
            _arch("semnasnet_050", "mnasnet_a1_x0_5"),
            _arch("semnasnet_075", "mnasnet_a1_x0_75", _RMSP),
            _arch("semnasnet_100", "mnasnet_a1_x1_0", _RMSP),
            _arch("semnasnet_140", "mnasnet_a1_x1_4"),
            TimmArch(
                "mnasnet_small",
                "mnasnet_small",
                {**_TIMM, "sepconv_skip": True},
                tags=(tag("lamb_in1k", 224, 0.875, "bicubic", "imagenet"),),
            ),
        ),
    )
)
