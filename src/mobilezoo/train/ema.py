"""The exponential moving average of a model's weights that a run evaluates when ``ema_decay`` > 0."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """Exponential moving average of weights and buffers, as TF's ``ExponentialMovingAverage(decay, num_updates)``.

    The decay used at update n is ``min(decay, (1 + n) / (10 + n))``, so a short run's average does not stay
    stuck near the random initialisation (0.9999 needs ~10^4 steps to forget it).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        d = min(self.decay, (1 + num_updates) / (10 + num_updates))
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_v.lerp_(v.detach(), 1 - d)
            else:
                ema_v.copy_(v)


__all__ = ["ModelEma"]
