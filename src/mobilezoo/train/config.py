"""The typed training configuration and the named recipes that fill it.

A :class:`TrainConfig` leaves most fields ``None``; :func:`resolve_config` fills each from, in order of precedence,
the value the user set, the data set's defaults (:data:`DATA_DEFAULTS`, for the built-in digits), and the recipe.
The resolved config is what a run saves (``config.yaml``) and what ``--resume`` reads back.

Recipes and their sources are in ``../shared/reference/RECIPES.md`` (papers' §§ and official code); the
TF-vs-PyTorch translations applied here: dropout as a drop probability (TF keep_prob 0.8 -> 0.2), RMSprop with TF
semantics (``rmsprop_tf``: epsilon inside the square root, accumulator starting at 1, lr folded into momentum), slim's
L2 ``s`` as coupled ``weight_decay=s`` with no decay on depthwise filters, BN/bias never decayed, and learning rates
given at the paper's batch size and scaled linearly to ours (Goyal et al., arXiv:1706.02677).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, fields
from os import PathLike
from pathlib import Path
from typing import Any

import yaml

from mobilezoo.data import AUTO_AUGMENT, BUILTIN

OPTIMIZERS = ("sgd", "rmsprop_tf", "adamw")
SCHEDULES = ("cosine", "step", "exponential", "linear", "constant")


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
        "eval_crop_pct": 1.0,
        "warmup_epochs": 1.0,
    },
}


@dataclass
class TrainConfig:
    """Everything a training run needs. ``None`` fields come from the recipe (see :func:`resolve_config`).

    ``batch_size`` is the global batch (split over processes and ``accum_steps`` micro-batches); ``lr`` is the
    learning rate at that batch (None: the recipe's, scaled linearly from its ``lr_batch``).
    """

    model: str
    data: str = BUILTIN
    recipe: str = "modern"
    out: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    accum_steps: int = 1
    img_size: int | None = None
    in_chans: int | None = None
    opt: str | None = None
    lr: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    rmsprop_decay: float | None = None
    eps: float | None = None
    weight_decay: float | None = None
    wd_depthwise: bool | None = None
    sched: str | None = None
    decay_epochs: float | None = None
    decay_rate: float | None = None
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    drop_rate: float | None = None
    ema_decay: float | None = None
    bn_momentum: float | None = None
    bn_recalibrate: int | None = None
    grad_clip: float = 0.0
    auto_augment: str | None = None
    random_erasing: float | None = None
    crop_scale: tuple[float, float] | None = None
    hflip: float | None = None
    eval_crop_pct: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    train_subset: int | None = None
    val_subset: int | None = None
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    checkpoint_every: int = 0
    weights: str | None = None
    resolved: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping, rejecting unknown keys with a suggestion."""
        if not isinstance(values, dict):
            raise ValueError(f"a training config is a mapping of field names to values, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = [k for k in values if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(str(k), known, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"unknown config key(s) {', '.join(hints)}; known keys: {', '.join(sorted(known))}")
        if "model" not in values:
            raise ValueError("a training config needs a 'model' key")
        kwargs = dict(values)
        for k in ("crop_scale", "mean", "std"):
            if isinstance(kwargs.get(k), list):
                kwargs[k] = tuple(kwargs[k])
        return cls(**kwargs)


def load_config(path: str | PathLike) -> TrainConfig:
    """Read a config saved as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        values = yaml.safe_load(text)
    elif path.suffix == ".json":
        values = json.loads(text)
    else:
        raise ValueError(f"config files are .yaml, .yml or .json, got {str(path)!r}")
    return TrainConfig.from_dict(values)


def save_config(cfg: TrainConfig, path: str | PathLike) -> Path:
    path = Path(path)
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False) if path.suffix != ".json" else json.dumps(cfg.to_dict())
    from mobilezoo.train.checkpoint import atomic_write_text

    atomic_write_text(path, text)
    return path


def recipe_names() -> list[str]:
    return ["modern", "paper"]


def get_recipe(name: str, model: str) -> Recipe:
    """The recipe ``name`` ("modern" or "paper", the latter per the model's family) for ``model``."""
    if name == "modern":
        return MODERN
    if name == "paper":
        from mobilezoo.registry import model_card

        family = model_card(model).family
        if family not in PAPER:
            raise ValueError(
                f"no 'paper' recipe for {model!r} (family {family}); families with one: {', '.join(sorted(PAPER))}; "
                "use --recipe modern"
            )
        return PAPER[family]
    raise ValueError(f"unknown recipe {name!r}; expected one of {recipe_names()}")


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Fill every ``None`` field (user value > data-set default > recipe), then validate the whole config."""
    if cfg.resolved:
        validate_config(cfg)
        return cfg
    from mobilezoo.registry import list_models

    if cfg.model not in list_models():
        from mobilezoo.registry import create_model

        create_model(cfg.model)  # raises the registry's "unknown model ... did you mean" error
    recipe = get_recipe(cfg.recipe, cfg.model)
    data_defaults = DATA_DEFAULTS.get(cfg.data, {})
    values = cfg.to_dict()
    for f in fields(Recipe):
        # lr is the only recipe field not copied as is: it is scaled to the batch size below
        if f.name in values and values[f.name] is None and f.name != "lr":
            values[f.name] = data_defaults.get(f.name, getattr(recipe, f.name))
    if cfg.warmup_epochs is None and values["warmup_epochs"]:
        # a default warm-up (the data set's if it sets one, else the recipe's) is at most a tenth of the run
        values["warmup_epochs"] = min(recipe.warmup_epochs, data_defaults.get("warmup_epochs", math.inf))
        values["warmup_epochs"] = min(values["warmup_epochs"], values["epochs"] / 10)
    if values["in_chans"] is None:
        values["in_chans"] = data_defaults.get("in_chans", 3)
    if values["lr"] is None:
        values["lr"] = recipe.lr * (values["batch_size"] / recipe.lr_batch)
    if values["mean"] is None or values["std"] is None:
        from mobilezoo.data import default_normalization

        norm = default_normalization(values["in_chans"], cfg.data == BUILTIN)
        values["mean"] = values["mean"] or norm.mean
        values["std"] = values["std"] or norm.std
    values["resolved"] = True
    out = TrainConfig.from_dict(values)
    validate_config(out)
    return out


def validate_config(cfg: TrainConfig) -> None:
    """Raise a ValueError naming the first bad value and what was expected."""

    def need(ok: bool, name: str, expected: str) -> None:
        if not ok:
            raise ValueError(f"config {name}={getattr(cfg, name)!r} is invalid: expected {expected}")

    def pos_int(name: str) -> None:
        v = getattr(cfg, name)
        need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "an integer >= 1")

    for name in ("epochs", "batch_size", "accum_steps", "img_size", "in_chans"):
        pos_int(name)
    need(cfg.img_size >= 32, "img_size", "at least 32 (the nets reduce by 32)")
    need(cfg.opt in OPTIMIZERS, "opt", f"one of {OPTIMIZERS}")
    need(cfg.sched in SCHEDULES, "sched", f"one of {SCHEDULES}")
    need(cfg.auto_augment in AUTO_AUGMENT, "auto_augment", f"one of {AUTO_AUGMENT}")
    need(cfg.lr > 0, "lr", "a learning rate > 0")
    need(0 <= cfg.momentum < 1, "momentum", "a value in [0, 1)")
    need(0 < cfg.rmsprop_decay < 1, "rmsprop_decay", "a value in (0, 1)")
    need(cfg.eps > 0, "eps", "a value > 0")
    need(cfg.weight_decay >= 0, "weight_decay", "a value >= 0")
    need(cfg.decay_epochs > 0, "decay_epochs", "a value > 0")
    need(0 < cfg.decay_rate <= 1, "decay_rate", "a value in (0, 1]")
    need(0 <= cfg.warmup_epochs < cfg.epochs, "warmup_epochs", f"a value in [0, epochs={cfg.epochs})")
    need(0 <= cfg.label_smoothing < 1, "label_smoothing", "a value in [0, 1)")
    need(cfg.drop_rate is None or 0 <= cfg.drop_rate < 1, "drop_rate", "a drop probability in [0, 1)")
    need(0 <= cfg.ema_decay < 1, "ema_decay", "0 (off) or a decay in (0, 1)")
    need(cfg.bn_momentum is None or 0 < cfg.bn_momentum <= 1, "bn_momentum", "None or a value in (0, 1]")
    need(isinstance(cfg.bn_recalibrate, int) and cfg.bn_recalibrate >= 0, "bn_recalibrate", "a batch count >= 0")
    need(cfg.grad_clip >= 0, "grad_clip", "0 (off) or a max gradient norm > 0")
    need(cfg.train_subset is None or cfg.train_subset >= 1, "train_subset", "None or an integer >= 1")
    need(cfg.val_subset is None or cfg.val_subset >= 1, "val_subset", "None or an integer >= 1")
    need(cfg.num_workers >= 0, "num_workers", "an integer >= 0")
    need(cfg.checkpoint_every >= 0, "checkpoint_every", "0 (each epoch) or a step interval >= 1")
    need(cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"), "device", "auto, cpu or cuda[:N]")
    need(len(cfg.mean) == cfg.in_chans and len(cfg.std) == cfg.in_chans, "mean", f"{cfg.in_chans} values (in_chans)")
    need(all(s > 0 for s in cfg.std), "std", "positive values")
    need(cfg.recipe in recipe_names(), "recipe", f"one of {recipe_names()}")


__all__ = [
    "DATA_DEFAULTS",
    "MODERN",
    "OPTIMIZERS",
    "PAPER",
    "SCHEDULES",
    "Recipe",
    "TrainConfig",
    "get_recipe",
    "load_config",
    "recipe_names",
    "resolve_config",
    "save_config",
]
