"""Optimizers, weight-decay parameter groups and learning-rate schedules.

:class:`RMSpropTF` reproduces TensorFlow 1's ``tf.train.RMSPropOptimizer`` (the optimizer of MobileNet V1/V2/V3), whose
update differs from ``torch.optim.RMSprop`` in three ways (TensorFlow 1's ``training/rmsprop.py``; timm's
``RMSpropTF`` copies the same behaviour and documents it): the mean-square accumulator starts at 1 rather than 0,
epsilon is added inside the square root, and the learning rate is folded into the momentum buffer (a changed lr only
scales new gradients)::

    ms  <- rho * ms + (1 - rho) * g^2                 (ms starts at 1)
    mom <- momentum * mom + lr * g / sqrt(ms + eps)
    w   <- w - mom

Weight decay is coupled (``g <- g + wd * w``), like slim's L2 regulariser ``wd * sum(w^2) / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from mobilezoo.train.config import TrainConfig


class RMSpropTF(torch.optim.Optimizer):
    """RMSprop with TensorFlow 1 semantics (see the module docstring); ``alpha`` is TF's ``decay`` (rho)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.01,
        alpha: float = 0.9,
        eps: float = 1e-10,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha (TF decay) must be in (0, 1), got {alpha!r}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        super().__init__(
            params, {"lr": lr, "alpha": alpha, "eps": eps, "momentum": momentum, "weight_decay": weight_decay}
        )

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, alpha, eps, mu, wd = group["lr"], group["alpha"], group["eps"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if wd != 0:
                    grad = grad.add(p, alpha=wd)
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    if mu > 0:
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                ms = state["square_avg"]
                ms.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
                step = grad / ms.add(eps).sqrt_()
                if mu > 0:
                    buf = state["momentum_buffer"]
                    buf.mul_(mu).add_(step, alpha=lr)
                    p.sub_(buf)
                else:
                    p.sub_(step, alpha=lr)
        return loss


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def param_groups(model: nn.Module, weight_decay: float, wd_depthwise: bool = True) -> list[dict]:
    """Split parameters into decayed and not-decayed groups.

    Never decayed: BN/norm weights and biases and every bias (all 1-d tensors), as megvii's ShuffleNet code and
    torchvision's ``--norm-weight-decay 0``. Depthwise conv filters are decayed only when ``wd_depthwise`` (slim's
    MobileNets leave them unregularised: ``regularize_depthwise=False``).
    """
    depthwise = {id(m.weight) for m in model.modules() if is_depthwise(m)}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or (id(p) in depthwise and not wd_depthwise):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.opt`` over :func:`param_groups`, at ``cfg.lr`` (already scaled to the batch)."""
    groups = param_groups(model, cfg.weight_decay, cfg.wd_depthwise)
    if cfg.opt == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.opt == "rmsprop_tf":
        return RMSpropTF(groups, lr=cfg.lr, alpha=cfg.rmsprop_decay, eps=cfg.eps, momentum=cfg.momentum)
    if cfg.opt == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.eps)
    raise ValueError(f"unknown optimizer {cfg.opt!r}")


WARMUP_START = 0.01  # warm-up starts at 1% of the lr, as torchvision's --lr-warmup-decay default


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """The multiplier of ``cfg.lr`` at optimizer step ``step`` (schedules advance per step, not per epoch).

    Linear warm-up over ``warmup_epochs``, then over the remaining epochs: ``cosine`` to 0, ``linear`` to 0 (ShuffleNet),
    ``sqrt`` to 0 as (1 - t) ** 0.5 (Caffe's ``poly`` with power 0.5: SqueezeNet's solver),
    ``step`` (x``decay_rate`` every ``decay_epochs``, staircase: TF's ``exponential_decay(staircase=True)``, e.g.
    MobileNetV2's 0.98 per epoch), ``exponential`` (the same, smooth) or ``constant``.
    """
    epoch = step / steps_per_epoch
    warm = cfg.warmup_epochs
    if warm > 0 and epoch < warm:
        return WARMUP_START + (1 - WARMUP_START) * epoch / warm
    since = epoch - warm
    t = min(1.0, since / max(cfg.epochs - warm, 1e-12))
    if cfg.sched == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if cfg.sched == "linear":
        return 1.0 - t
    if cfg.sched == "sqrt":
        return (1.0 - t) ** 0.5
    if cfg.sched == "step":
        return cfg.decay_rate ** math.floor(since / cfg.decay_epochs + 1e-9)
    if cfg.sched == "exponential":
        return cfg.decay_rate ** (since / cfg.decay_epochs)
    return 1.0


__all__ = ["RMSpropTF", "build_optimizer", "is_depthwise", "lr_factor", "param_groups"]
