"""What a training run reports: a :class:`ProgressEvent` per step and evaluation, a :class:`TrainResult` at its end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from mobilezoo.train.config import TrainConfig
from mobilezoo.train.evaluate import EvalResult


@dataclass
class ProgressEvent:
    """Sent to the ``progress`` callback after every optimizer step (``kind="step"``) and evaluation (``"epoch"``)."""

    kind: str
    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    lr: float
    images_per_s: float
    eta_s: float
    record: dict[str, Any] | None = None


@dataclass
class TrainResult:
    """The outcome of a run: its best and last evaluation, per-epoch history and where the files are."""

    config: TrainConfig
    run_dir: str | None
    best_top1: float
    best_epoch: int
    last: dict[str, Any]
    history: list[dict[str, Any]]
    wall_s: float
    steps: int
    skipped_images: int
    model: nn.Module | None = field(default=None, repr=False)
    final_eval: EvalResult | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "recipe": self.config.recipe,
            "run_dir": self.run_dir,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "last": self.last,
            "wall_s": self.wall_s,
            "steps": self.steps,
            "skipped_images": self.skipped_images,
            "history": self.history,
            "config": self.config.to_dict(),
        }


__all__ = ["ProgressEvent", "TrainResult"]
