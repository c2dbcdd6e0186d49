"""Checks that stop a training run instead of letting it produce garbage.

* a non-finite loss or non-finite weights stop the run with :class:`TrainingDivergedError` before anything of the
  diverged step is written (the run folder keeps its last finite checkpoint);
* BatchNorm in train mode needs at least 2 images per micro-batch: a single image gives statistics of one image, and
  where the last feature maps are 1x1 (``img_size`` < 64) PyTorch refuses it with a message that names neither
  the batch size nor the image size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

BN_ONE_VALUE = "Expected more than 1 value per channel"  # PyTorch's BatchNorm error for a batch of 1 at 1x1


class TrainingDivergedError(ValueError):
    """The loss or the weights of a run became NaN or infinite; nothing from the diverged step on was saved."""


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def check_micro_batch(model: nn.Module, name: str, batch_size: int, accum_steps: int, world_size: int) -> None:
    """Raise a ValueError if ``model`` has BatchNorm and a micro-batch (batch / accum_steps / processes) is 1 image."""
    micro = batch_size // (accum_steps * world_size)
    if micro < 2 and has_batchnorm(model):
        raise ValueError(
            f"batch_size {batch_size} split over accum_steps {accum_steps} x {world_size} process(es) leaves {micro} "
            f"image per micro-batch; {name}'s BatchNorm layers need at least 2 (batch statistics of one image, and "
            f"an error where feature maps are 1x1): raise batch_size or lower accum_steps"
        )


def nonfinite_tensors(module: nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers of ``module`` holding a NaN or an infinity."""
    return [k for k, v in module.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def nonfinite_report(modules: Sequence[tuple[str, nn.Module | None]]) -> str | None:
    """What is not finite in the named ``modules`` (None entries are skipped), e.g. "3 tensor(s) of the model ..."."""
    for what, module in modules:
        bad = nonfinite_tensors(module) if module is not None else []
        if bad:
            return f"{len(bad)} tensor(s) of the {what} are NaN or infinite (first: {bad[0]})"
    return None


def nonfinite_loss_report(losses: Sequence[float]) -> str | None:
    """ "the loss is nan" if one of a step's micro-batch ``losses`` is NaN or infinite, else None."""
    bad = [v for v in losses if not math.isfinite(v)]
    return f"the loss is {bad[0]}" if bad else None


DIVERGED_ADVICE = "start a new run with a lower lr (--lr) or with gradient clipping (--set grad_clip=1)"


def diverged_error(where: str, what: str, lr: float, advice: str = DIVERGED_ADVICE) -> TrainingDivergedError:
    """The error that stops a diverged run: where (epoch, step), what (loss or tensors), the learning rate and
    ``advice`` (what to change; the default names the classifier's flags)."""
    return TrainingDivergedError(
        f"training diverged {where}: {what} at lr {lr:.3g}; nothing from this step on was saved (the run folder "
        f"keeps its last finite checkpoint): {advice}"
    )


def forward_checked(net: nn.Module, x: Tensor, img_size: int, skipped: int) -> Tensor:
    """``net(x)``, with PyTorch's BatchNorm error for a single image at 1x1 explained (batch and image size)."""
    try:
        return net(x)
    except ValueError as e:
        if BN_ONE_VALUE not in str(e):
            raise
        raise ValueError(
            f"BatchNorm cannot train on a batch of {x.shape[0]} image(s) at img_size {img_size} (1x1 feature maps): "
            f"{skipped} image(s) of this batch were undecodable and skipped (see the warnings); remove them from the "
            f"data or use a larger batch_size"
        ) from None


__all__ = [
    "TrainingDivergedError",
    "check_micro_batch",
    "diverged_error",
    "forward_checked",
    "has_batchnorm",
    "nonfinite_loss_report",
    "nonfinite_report",
    "nonfinite_tensors",
]
