"""Helpers shared by the deploy modules: models by name or instance, resolutions, example inputs, output paths."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import torch
from torch import Tensor, nn


def as_model(model_or_name: nn.Module | str) -> nn.Module:
    """A registered model name is built with random weights; a module is returned as it is."""
    if isinstance(model_or_name, str):
        from mobilezoo.registry import create_model

        return create_model(model_or_name)
    if not isinstance(model_or_name, nn.Module):
        raise ValueError(f"expected a torch.nn.Module or a registered model name, got {type(model_or_name).__name__}")
    return model_or_name


def as_hw(resolution: int | tuple[int, int], model: nn.Module | None = None) -> tuple[int, int]:
    """``224`` or ``(height, width)`` as ``(height, width)``, checked against the model's ``min_input_size``."""
    if isinstance(resolution, int) and not isinstance(resolution, bool):
        hw = (resolution, resolution)
    elif (
        isinstance(resolution, (tuple, list))
        and len(resolution) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in resolution)
    ):
        hw = (resolution[0], resolution[1])
    else:
        raise ValueError(f"resolution must be an int or a (height, width) pair of ints, got {resolution!r}")
    min_size = getattr(model, "min_input_size", 1) if model is not None else 1
    if min(hw) < max(1, min_size):
        raise ValueError(f"resolution {hw[0]}x{hw[1]} is too small: this model needs at least {min_size}x{min_size}")
    return hw


def example_input(model: nn.Module, resolution: tuple[int, int], batch: int = 1, seed: int = 0) -> Tensor:
    """A seeded random (batch, in_chans, H, W) float32 input."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, getattr(model, "in_chans", 3), *resolution, generator=gen)


def output_path(path: str | PathLike, suffixes: tuple[str, ...]) -> Path:
    """Check an output path: its directory must exist and its suffix be one of ``suffixes``."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"output file {str(path)!r} should end in {' or '.join(suffixes)}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {str(path.parent)!r} does not exist")
    return path


def max_abs_diff(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max())
