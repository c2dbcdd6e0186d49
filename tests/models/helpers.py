"""Checks several model families' tests share: BN statistics that make random-weight logits meaningful, ONNX + int8
at an odd size and another batch, and drop-path being exact in eval and random only in training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def calibrated(model: nn.Module) -> nn.Module:
    """Random BN affine terms and running statistics measured on a random batch (cumulative averages), so that the
    logits are O(1) and depend on the input: equal outputs then mean equal wiring. Returns the model in eval mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        model.train()(torch.randn(4, 3, 64, 64))
    return model.eval()


def check_onnx_and_int8_at_an_odd_size(model: nn.Module, tmp_path: Path) -> Any:
    """``model`` (10 classes, eval mode) exported at 65 px and batch 1 matches PyTorch at batch 3 in ONNX Runtime,
    and its int8 model (noise calibration) runs at batch 3 and tracks fp32. Returns the quantization result."""
    from mobilezoo.deploy import export_onnx, onnx_parity, onnx_session, quantize
    from mobilezoo.deploy.calibration import random_batches

    x = torch.randn(3, 3, 65, 65)  # both exported at batch 1
    with torch.no_grad():
        want = model(x)
    assert (want[0] - want[1]).abs().max() > 0.05  # O(1) logits that depend on the input
    r = export_onnx(model, tmp_path / "m.onnx", resolution=65, check_batch=3)
    assert r.max_abs_diff <= 1e-4 and onnx_parity(r.path, model, x) <= 1e-4
    q = quantize(
        model, random_batches(3, (65, 65), num_images=8, batch_size=4), out_path=tmp_path / "q.onnx", resolution=65
    )
    got = onnx_session(q.path, threads=1).run(None, {"input": x.numpy()})[0]
    assert got.shape == (3, 10) and np.isfinite(got).all()
    # random weights and noise calibration: int8 tracks fp32 (correlation 0.97-0.99 measured) without matching it
    assert np.corrcoef(got.ravel(), want.numpy().ravel())[0, 1] > 0.9
    return q


def check_drop_path_exact_in_eval(model: nn.Module, plain: nn.Module) -> None:
    """``model`` (with drop-path) and ``plain`` (the same weights, none): equal in eval mode; in training ``model``
    differs from seed to seed (random masks) and ``plain`` does not (nothing else random)."""
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), plain.eval()(x), atol=0, rtol=0)
        model.train(), plain.train()
        runs = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            runs.append((model(x), plain(x)))
    assert not torch.equal(runs[0][0], runs[1][0])  # random masks in training
    torch.testing.assert_close(runs[0][1], runs[1][1], atol=0, rtol=0)  # and nothing random without them


def counts(name: str, resolution: int, **kwargs: Any) -> tuple[int, int, float]:
    """Params, params without BN gamma/beta, and MAdds in millions (FlopCounterMode / 2) of the registered model
    ``name`` (built with ``kwargs``) at batch 1 and ``resolution``, on meta."""
    from torch.utils.flop_counter import FlopCounterMode

    from mobilezoo import create_model

    with torch.device("meta"):
        model = create_model(name, **kwargs).eval()
    params = sum(p.numel() for p in model.parameters())
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, resolution, resolution, device="meta"))
    return params, params - bn, counter.get_total_flops() / 2e6
