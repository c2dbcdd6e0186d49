"""The named training recipes (``modern``, and ``paper`` per model family) and the data sets' own defaults.

Each recipe's ``source`` names the paper sections and official code it follows; the TF-vs-PyTorch translations
applied here: dropout as a drop probability (TF keep_prob 0.8 -> 0.2), RMSprop with TF
semantics (``rmsprop_tf``: epsilon inside the square root, accumulator starting at 1, lr folded into momentum), slim's
L2 ``s`` as coupled ``weight_decay=s`` with no decay on depthwise filters, BN/bias never decayed, and learning rates
given at the paper's batch size and scaled linearly to ours (Goyal et al., arXiv:1706.02677).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mobilezoo.data import BUILTIN, BUILTIN_EVAL_CROP_PCT


@dataclass(frozen=True)
class Recipe:
    """A named set of optimisation and augmentation settings; ``lr`` is given at batch size ``lr_batch``."""

    source: str
    opt: str
    lr: float
    lr_batch: int
    epochs: int
    batch_size: int
    sched: str
    momentum: float = 0.9
    nesterov: bool = False
    rmsprop_decay: float = 0.9
    eps: float = 1e-8
    weight_decay: float = 0.0
    wd_depthwise: bool = True
    decay_epochs: float = 1.0
    decay_rate: float = 1.0
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    drop_rate: float | None = None  # None keeps the model's own default
    ema_decay: float = 0.0
    bn_momentum: float | None = None  # None keeps the model's own BN momentum
    bn_recalibrate: int = 0
    auto_augment: str = "none"
    random_erasing: float = 0.0
    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    eval_crop_pct: float = 0.875
    img_size: int = 224


# ``modern``: torchvision's current classification recipe (PR #5560 / #5906: SGD lr 0.5 at batch 1024, cosine with
# warm-up, label smoothing 0.1, EMA, norm weight decay 0, wd 2e-5, random erasing 0.1; RECIPES.md §5) with
# AutoAugment as the issue asks, and a BN recalibration pass before each evaluation (see bn_recalibrate).
MODERN = Recipe(
    source="torchvision references/classification new recipe (PR #5560, #5906), AutoAugment instead of TA-wide",
    opt="sgd",
    lr=0.5,
    lr_batch=1024,
    epochs=600,
    batch_size=128,
    sched="cosine",
    nesterov=True,
    weight_decay=2e-5,
    warmup_epochs=5,
    label_smoothing=0.1,
    ema_decay=0.9999,
    bn_recalibrate=20,
    auto_augment="autoaugment",
    random_erasing=0.1,
)

# ``paper``: one per family, from the paper's training section, completed by the official code where it is silent.
PAPER: dict[str, Recipe] = {
    # MNv1 §3.2: "RMSprop ... similar to Inception V3"; Inception-v3 §8: decay 0.9, eps 1.0, lr 0.045 x0.94 every
    # 2 epochs. slim: wd 4e-5, depthwise not regularised, keep_prob 0.999 (p=0.001), BN decay 0.9997.
    "MobileNetV1": Recipe(
        source="MobileNets §3.2 (as Inception-v3 §8); tensorflow/models slim mobilenet_v1.py",
        opt="rmsprop_tf",
        lr=0.045,
        lr_batch=32,
        epochs=100,
        batch_size=32,
        sched="step",
        rmsprop_decay=0.9,
        eps=1.0,
        weight_decay=4e-5,
        wd_depthwise=False,
        decay_epochs=2.0,
        decay_rate=0.94,
        drop_rate=0.001,
        bn_momentum=0.0003,
        bn_recalibrate=20,
        crop_scale=(0.25, 1.0),  # "less aggressive" crops; the paper gives no floor, 0.25 is our choice
    ),
    # MNv2 §6.1: RMSProp decay 0.9 momentum 0.9, lr 0.045 x0.98 per epoch, wd 4e-5, batch 96. slim: eps 1.0,
    # label smoothing 0.1, EMA 0.9999, keep_prob 0.8, BN decay 0.997, depthwise unregularised.
    "MobileNetV2": Recipe(
        source="MobileNetV2 §6.1; tensorflow/models slim train_image_classifier flags and mobilenet training_scope",
        opt="rmsprop_tf",
        lr=0.045,
        lr_batch=96,
        epochs=420,
        batch_size=96,
        sched="step",
        rmsprop_decay=0.9,
        eps=1.0,
        weight_decay=4e-5,
        wd_depthwise=False,
        decay_epochs=1.0,
        decay_rate=0.98,
        label_smoothing=0.1,
        drop_rate=0.2,
        ema_decay=0.9999,
        bn_momentum=0.003,
        bn_recalibrate=20,
        crop_scale=(0.05, 1.0),
    ),
    # MNv3 §6.1.1: TF RMSProp momentum 0.9, lr 0.1 at batch 4096, "decay 0.01 every 3 epochs" read as x0.99,
    # wd 1e-5, dropout 0.8 keep (p=0.2), EMA 0.9999, BN decay 0.99 (momentum 0.01). rho 0.9 and eps 1e-3 (timm's
    # rmsproptf command for MNv3) are not in the paper.
    "MobileNetV3": Recipe(
        source="Searching for MobileNetV3 §6.1.1; eps from timm's mobilenetv3 command (issue #108)",
        opt="rmsprop_tf",
        lr=0.1,
        lr_batch=4096,
        epochs=600,
        batch_size=128,
        sched="step",
        rmsprop_decay=0.9,
        eps=1e-3,
        weight_decay=1e-5,
        wd_depthwise=False,
        decay_epochs=3.0,
        decay_rate=0.99,
        drop_rate=0.2,
        ema_decay=0.9999,
        bn_recalibrate=20,
    ),
}
# ShuffleNet V1 §4 (and V2 §4, "identical"): linear decay 0.5 -> 0, batch 1024, wd 4e-5, 3e5 iterations (~240
# epochs). megvii train.py: SGD momentum 0.9, label smoothing 0.1, no decay on BN/bias, colour jitter, BN recalibration.
PAPER["ShuffleNetV1"] = Recipe(
    source="ShuffleNet §4; ShuffleNet V2 §4; megvii-model/ShuffleNet-Series train.py",
    opt="sgd",
    lr=0.5,
    lr_batch=1024,
    epochs=240,
    batch_size=128,
    sched="linear",
    weight_decay=4e-5,
    label_smoothing=0.1,
    bn_recalibrate=20,
)
PAPER["ShuffleNetV2"] = PAPER["ShuffleNetV1"]
# The SqueezeNet paper gives no training details; its official release does (forresti/SqueezeNet SqueezeNet_v1.0
# solver.prototxt + train_val.prototxt): SGD momentum 0.9, lr 0.08 at batch 1024 (32 x iter_size 32), Caffe "poly"
# power 0.5 over 85,000 iterations (~68 epochs), weight decay 2e-4, dropout 0.5 before conv10.
PAPER["SqueezeNet"] = Recipe(
    source="forresti/SqueezeNet SqueezeNet_v1.0 solver.prototxt and train_val.prototxt (the paper is silent)",
    opt="sgd",
    lr=0.08,
    lr_batch=1024,
    epochs=68,
    batch_size=128,
    sched="sqrt",
    weight_decay=2e-4,
    drop_rate=0.5,
)
# A family without BatchNorm does not train with the modern recipe's SGD. SqueezeNet's conv10 ReLU sits before the
# pooling: once its pre-ReLU outputs are all negative, every logit is 0, no gradient flows and the loss stays at ln 10.
# Measured on the built-in digits with their defaults (12 epochs, batch 64, 64 px, a 1-epoch warm-up): SGD at the
# modern 0.5 per 1024 images sat at ln 10 for 5 epochs; at the release's 0.08 per 1024 it stuck at 19.8% val top-1
# from epoch 7; at 0.16 with gradient clipping (norm 1) it reached 85.8%. AdamW at 5e-4 per 64 images reached 97.1%,
# and 85.6-91.8% after 2 epochs over seeds 0-4 (1e-3: 97.7%, but 17-93% after 2 epochs; 2e-3: 94.3%). Only the
# digits were measured; the lr scales linearly with the batch like every recipe's.
MODERN_OVERRIDES: dict[str, dict[str, Any]] = {"SqueezeNet": {"opt": "adamw", "lr": 5e-4, "lr_batch": 64}}

# Settings that suit a data set better than the ImageNet recipes, applied unless the user sets them: the digits are
# 28x28 (upscaled to 64: the nets reduce by 32, and 32x32 leaves a 1x1 map after the stem), not flip-invariant,
# centred in the frame (no centre crop), and 4,000 images make a 600-epoch schedule pointless. AutoAugment's ImageNet
# policy (invert, solarize, posterize, ...) cost 0.2-2 points of val top-1 on them in 12-epoch runs (measured:
# mobilenet_v3_small 97.3 vs 98.0, shufflenet_v2_x0_5 96.0 vs 96.2, mobilenet_v1_x0_25 94.9 vs 97.0), so it is off.
DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    BUILTIN: {
        "auto_augment": "none",
        "epochs": 12,
        "batch_size": 64,
        "img_size": 64,
        "in_chans": 1,
        "crop_scale": (0.6, 1.0),
        "hflip": 0.0,
        "eval_crop_pct": BUILTIN_EVAL_CROP_PCT,
        "warmup_epochs": 1.0,
    },
}


def recipe_names() -> list[str]:
    return ["modern", "paper"]


def get_recipe(name: str, model: str) -> Recipe:
    """The recipe ``name`` ("modern" or "paper", the latter per the model's family) for ``model``."""
    from mobilezoo.registry import model_card

    if name == "modern":
        family = model_card(model).family
        if family in MODERN_OVERRIDES:
            over = MODERN_OVERRIDES[family]
            said = ", ".join(f"{k} {v}" for k, v in over.items())
            return replace(MODERN, **over, source=f"{MODERN.source}; for {family} (no BatchNorm): {said}")
        return MODERN
    if name == "paper":
        family = model_card(model).family
        if family not in PAPER:
            raise ValueError(
                f"no 'paper' recipe for {model!r} (family {family}); families with one: {', '.join(sorted(PAPER))}; "
                "use --recipe modern"
            )
        return PAPER[family]
    raise ValueError(f"unknown recipe {name!r}; expected one of {recipe_names()}")


__all__ = ["DATA_DEFAULTS", "MODERN", "MODERN_OVERRIDES", "PAPER", "Recipe", "get_recipe", "recipe_names"]
