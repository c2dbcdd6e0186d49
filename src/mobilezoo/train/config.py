"""The typed training configuration: the :class:`TrainConfig` dataclass, its resolution from a recipe, and validation.

A :class:`TrainConfig` leaves most fields ``None``; :func:`resolve_config` fills each from, in order of precedence,
the value the user set, the data set's defaults (:data:`DATA_DEFAULTS`, for the built-in digits), and the recipe.
The resolved config is what a run saves (``config.yaml``) and what ``--resume`` reads back.

Recipes and data-set defaults are in :mod:`mobilezoo.train.recipes`; config files in :mod:`mobilezoo.train.config_io`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, fields
from typing import Any

from mobilezoo.data import AUTO_AUGMENT, BUILTIN
from mobilezoo.train.recipes import DATA_DEFAULTS, Recipe, get_recipe, recipe_names

OPTIMIZERS = ("sgd", "rmsprop_tf", "adamw")
SCHEDULES = ("cosine", "step", "exponential", "linear", "sqrt", "constant")


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
    keep_freed_memory: bool = True
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
    for name in ("amp", "channels_last", "keep_freed_memory"):
        need(isinstance(getattr(cfg, name), bool), name, "true or false")
    need(cfg.num_workers >= 0, "num_workers", "an integer >= 0")
    need(cfg.checkpoint_every >= 0, "checkpoint_every", "0 (each epoch) or a step interval >= 1")
    need(cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"), "device", "auto, cpu or cuda[:N]")
    need(len(cfg.mean) == cfg.in_chans and len(cfg.std) == cfg.in_chans, "mean", f"{cfg.in_chans} values (in_chans)")
    need(all(s > 0 for s in cfg.std), "std", "positive values")
    need(cfg.recipe in recipe_names(), "recipe", f"one of {recipe_names()}")


__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig", "resolve_config"]
