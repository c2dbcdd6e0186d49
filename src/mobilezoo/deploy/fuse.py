"""Folding BatchNorm into the conv (or linear) layer that feeds it, for inference.

The pairs are found by running the model once with forward hooks: a BatchNorm whose input is the very tensor a conv
(linear) layer just returned, and whose conv is called once per forward, is folded into that conv and replaced by
``nn.Identity``. This finds the pairs in any module structure (``nn.Sequential`` stacks, ``self.conv``/``self.bn``
attributes) without tracing, which the models' input checks would defeat.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from mobilezoo.deploy._common import as_hw, example_input

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _conv_bn_pairs(model: nn.Module, x: Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) pairs where the BN consumes exactly the output of a conv that runs once."""
    produced: dict[int, tuple[str, Tensor]] = {}  # id(output) -> (conv name, output); holding it keeps ids unique
    calls: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []
    hooks = []

    def on_conv(name: str):
        def hook(_m: nn.Module, _inp: tuple, out: Tensor) -> None:
            calls[name] = calls.get(name, 0) + 1
            produced[id(out)] = (name, out)

        return hook

    def on_bn(name: str):
        def hook(_m: nn.Module, inp: tuple) -> None:
            hit = produced.get(id(inp[0]))
            if hit is not None and hit[1] is inp[0]:
                pairs.append((hit[0], name))

        return hook

    for name, m in model.named_modules():
        if isinstance(m, _FOLDABLE):
            hooks.append(m.register_forward_hook(on_conv(name)))
        elif isinstance(m, _BN):
            hooks.append(m.register_forward_pre_hook(on_bn(name)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    counts: dict[str, int] = {}
    for _, bn in pairs:
        counts[bn] = counts.get(bn, 0) + 1
    # a shared conv or BN (called twice) cannot be folded without changing the other call
    return [(c, b) for c, b in pairs if calls[c] == 1 and counts[b] == 1]


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


def fuse(model: nn.Module, resolution: int | tuple[int, int] = 64) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm folded into the conv or linear layer before it.

    ``resolution`` is the size of the one random input used to find the pairs (any size the model accepts).
    The fused copy's outputs equal the original's (in eval mode) up to float rounding, about 1e-6.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"fuse expects a torch.nn.Module, got {type(model).__name__}")
    fused = copy.deepcopy(model).eval()
    min_size = getattr(model, "min_input_size", 1)
    x = example_input(fused, tuple(max(v, min_size) for v in as_hw(resolution)))
    for conv_name, bn_name in _conv_bn_pairs(fused, x):
        conv = fused.get_submodule(conv_name)
        bn = fused.get_submodule(bn_name)
        if not bn.track_running_stats or bn.running_mean is None:
            continue  # a BN without running statistics normalizes by the batch: nothing to fold
        folded = fuse_linear_bn_eval(conv, bn) if isinstance(conv, nn.Linear) else fuse_conv_bn_eval(conv, bn)
        _set(fused, conv_name, folded)
        _set(fused, bn_name, nn.Identity())
    return fused


def count_batchnorms(model: nn.Module) -> int:
    """How many BatchNorm layers a model still has (0 after :func:`fuse` for the registered models)."""
    return sum(isinstance(m, _BN) for m in model.modules())
