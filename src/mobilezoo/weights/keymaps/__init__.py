"""Which public checkpoints load into which model, and the key map of each layout: one module per family.

A family's module (``mobilenet_v3.py``, ...) builds its key maps from a model instance (a function
``model -> KeyMap`` per layout: ``timm``, ``megvii``) and lists the checkpoints that load: for timm, every timm
architecture with a counterpart here, the model it loads into, the model arguments the port needs (``padding="tf"``,
``bn_eps``, ``act``: set by ``create_model``), those that make the architecture (``width_mult``: the caller's) and the
published weights with their preprocessing (timm's ``pretrained_cfg``, copied: timm is not needed at run time). It
ends with :func:`register_family`. A new family (MnasNet, GhostNet, EfficientNet-Lite, MobileNetV4) adds one such
module here; nothing else changes.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from mobilezoo.weights.keymap import KeyMap
from mobilezoo.weights.preprocessing import Preprocessing


@dataclass(frozen=True)
class TimmTag:
    """One set of weights timm publishes for an architecture (``<arch>.<tag>`` on the Hugging Face hub, ``timm/``)."""

    tag: str
    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int = 1000


@dataclass(frozen=True)
class TimmArch:
    """A timm architecture with a counterpart here.

    ``model``: the registered model it loads into; ``port``: model arguments the port needs, which ``create_model``
    sets (and refuses when given otherwise); ``arch``: arguments that make the architecture, which the caller must give
    (``create_model("mobilenet_v1", width_mult=1.25, weights="timm:mobilenetv1_125")``); ``tags``: the published
    weights, timm's default first (none: timm publishes no weights for it, only a file of one's own loads);
    ``default_cfg``: the preprocessing timm declares for it without weights (used for such files).
    """

    name: str
    model: str
    port: dict[str, Any] = field(default_factory=dict)
    arch: dict[str, Any] = field(default_factory=dict)
    tags: tuple[TimmTag, ...] = ()
    default_cfg: TimmTag | None = None

    def tag(self, tag: str | None) -> TimmTag | None:
        """The named tag (None: timm's default), or None when the architecture has no published weights."""
        if tag is None:
            return self.tags[0] if self.tags else None
        for t in self.tags:
            if t.tag == tag:
                return t
        have = ", ".join(f"{self.name}.{t.tag}" for t in self.tags) or "none"
        raise ValueError(f"timm has no weights {self.name}.{tag}; published for {self.name}: {have}")

    def preprocessing(self, tag: str | None) -> Preprocessing:
        """The preprocessing of ``tag`` (None: the default tag, or timm's default config without weights)."""
        cfg = self.tag(tag) or self.default_cfg
        assert cfg is not None, f"{self.name}: a TimmArch without tags needs a default_cfg"
        label = f"timm:{self.name}.{cfg.tag}" if cfg in self.tags else f"timm:{self.name}"
        return Preprocessing(
            source=label,
            input_size=cfg.input_size,
            crop_pct=cfg.crop_pct,
            interpolation=cfg.interpolation,
            mean=cfg.mean,
            std=cfg.std,
            num_classes=cfg.num_classes,
        )


@dataclass(frozen=True)
class MegviiModels:
    """The models the official megvii-model/ShuffleNet-Series checkpoints load into, and the arguments they need."""

    models: tuple[str, ...]
    port: dict[str, Any] = field(default_factory=dict)
    arch: dict[str, Any] = field(default_factory=dict)
    marker: str = ""  # a module name only this family's official checkpoints hold (tells V1 from V2 files)


@dataclass(frozen=True)
class FamilyWeights:
    """A family's layouts: its key maps (model -> KeyMap) and the checkpoints that load."""

    family: str
    timm_keymap: Callable[[nn.Module], KeyMap] | None = None
    timm: tuple[TimmArch, ...] = ()
    megvii_keymap: Callable[[nn.Module], KeyMap] | None = None
    megvii: MegviiModels | None = None


_FAMILIES: dict[str, FamilyWeights] = {}


def register_family(weights: FamilyWeights) -> FamilyWeights:
    """Register a family's key maps and checkpoints (once per family)."""
    if weights.family in _FAMILIES:
        raise ValueError(f"family {weights.family!r} registers its weights twice")
    _FAMILIES[weights.family] = weights
    return weights


@functools.cache
def _import_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def families() -> dict[str, FamilyWeights]:
    """Every family with a key map, by ``ModelCard.family``."""
    _import_all()
    return dict(_FAMILIES)


def timm_arch(name: str) -> TimmArch | None:
    """The timm architecture ``name`` (without tag) if it has a counterpart here, else None."""
    for fw in families().values():
        for arch in fw.timm:
            if arch.name == name:
                return arch
    return None


def timm_family(name: str) -> FamilyWeights | None:
    """The family whose map loads timm architecture ``name``, else None."""
    for fw in families().values():
        if any(arch.name == name for arch in fw.timm):
            return fw
    return None


def tag(name: str, input_size: int, crop_pct: float, interpolation: str, mean: str, num_classes: int = 1000) -> TimmTag:
    """A :class:`TimmTag` with one of the mean/std pairs timm uses: ``"imagenet"``, ``"inception"`` (0.5) or ``"none"``
    (mean 0, std 1: pixels in [0, 1])."""
    mean_std = {
        "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    }[mean]
    return TimmTag(name, input_size, crop_pct, interpolation, mean_std[0], mean_std[1], num_classes)


def stage_positions(outs: list[int]) -> list[tuple[int, int]]:
    """timm's ``blocks.<stage>.<index>`` of each block of a table, in order: timm starts a stage wherever the table's
    output width changes (MobileNet V1, V2 and V3 alike)."""
    positions: list[tuple[int, int]] = []
    stage, index = -1, 0
    for i, out in enumerate(outs):
        if i == 0 or out != outs[i - 1]:
            stage, index = stage + 1, 0
        positions.append((stage, index))
        index += 1
    return positions


def add_timm_inverted_residual(km: KeyMap, src: str, dst: str, block: nn.Sequential) -> None:
    """Map one timm ``InvertedResidual`` (``conv_pw``/``bn1``, ``conv_dw``/``bn2``, [``se``], ``conv_pwl``/``bn3``) or
    ``DepthwiseSeparableConv`` (``conv_dw``/``bn1``, [``se``], ``conv_pw``/``bn2``) at ``src`` onto ``block``, our
    Sequential of (conv, BN[, act]) layers with an optional :class:`~mobilezoo.layers.SqueezeExcite`, at ``dst``
    (MobileNetV3 and EfficientNet). Which of the two it is follows from the first conv: a 1x1 expansion or not."""
    from mobilezoo.layers import SqueezeExcite

    layers = list(block)
    last = len(layers) - 1
    if layers[0][0].groups == 1:  # expansion 1x1, depthwise, [SE], projection
        names = {0: ("conv_pw", "bn1"), 1: ("conv_dw", "bn2"), last: ("conv_pwl", "bn3")}
    else:  # depthwise, [SE], projection: timm's DepthwiseSeparableConv
        names = {0: ("conv_dw", "bn1"), last: ("conv_pw", "bn2")}
    for k, (conv, bn) in names.items():
        km.add(f"{src}.{conv}", f"{dst}.{k}.0")
        km.add(f"{src}.{bn}", f"{dst}.{k}.1")
    se = next((k for k, m in enumerate(layers) if isinstance(m, SqueezeExcite)), None)
    if se is not None:
        km.add(f"{src}.se.conv_reduce", f"{dst}.{se}.fc1")
        km.add(f"{src}.se.conv_expand", f"{dst}.{se}.fc2")
