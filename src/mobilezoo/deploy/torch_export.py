"""PyTorch-side deployment: TorchScript and ``torch.export`` programs, each checked for equal outputs after reloading."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilezoo.deploy._common import as_hw, as_model, example_input, max_abs_diff, output_path
from mobilezoo.deploy.onnx_export import ParityError

FORMATS = {"torchscript": (".pt", ".ts", ".torchscript"), "exported-program": (".pt2",)}


@dataclass(frozen=True)
class TorchExport:
    """A saved TorchScript module or ExportedProgram and the reloaded file's max difference from the eager model."""

    path: Path
    format: str
    how: str  # "script", "trace" or "torch.export"
    max_abs_diff: float | None
    size_bytes: int
    resolution: tuple[int, int]
    dynamic_batch: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "how": self.how,
            "max_abs_diff": self.max_abs_diff,
            "size_bytes": self.size_bytes,
            "resolution": list(self.resolution),
            "dynamic_batch": self.dynamic_batch,
        }


def _flat(out: Any) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def export_torch(
    model: nn.Module | str,
    path: str | PathLike,
    *,
    format: str = "torchscript",
    resolution: int | tuple[int, int] = 224,
    dynamic_batch: bool = True,
    check: bool = True,
    atol: float = 1e-5,
    batch_size: int = 1,
) -> TorchExport:
    """Save ``model`` (eval mode) as TorchScript (``.pt``; scripted, traced if scripting fails) or as a
    ``torch.export`` ExportedProgram (``.pt2``, batch dimension dynamic when ``dynamic_batch``, else ``batch_size``;
    a scripted module takes any batch).

    With ``check``, the saved file is loaded back and run on a batch of 3 (``batch_size`` for a fixed batch); outputs
    that differ from the eager model's by more than ``atol`` raise :class:`ParityError`.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {sorted(FORMATS)}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size (the fixed batch) must be an integer >= 1, got {batch_size!r}")
    model = as_model(model)
    path = output_path(path, FORMATS[format])
    hw = as_hw(resolution, model)
    was_training = model.training
    model.eval()
    try:
        x = example_input(model, hw, batch=2 if dynamic_batch else batch_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice, TracerWarnings
            if format == "torchscript":
                try:
                    program, how = torch.jit.script(model), "script"
                except Exception:  # a model using Python features TorchScript lacks: trace it
                    program, how = torch.jit.trace(model, x), "trace"
                torch.jit.save(program, str(path))
            else:
                dims = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
                program, how = torch.export.export(model, (x,), dynamic_shapes=dims), "torch.export"
                torch.export.save(program, str(path))
        diff = None
        if check:
            x_check = example_input(model, hw, batch=3 if dynamic_batch else batch_size, seed=1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = torch.jit.load(str(path)) if format == "torchscript" else torch.export.load(str(path)).module()
            with torch.inference_mode():
                got, want = _flat(loaded(x_check)), _flat(model(x_check))
            if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
                raise ParityError(f"the reloaded {format} returns other shapes than the eager model")
            diff = max(max_abs_diff(g, w) for g, w in zip(got, want))
            if not diff <= atol:
                raise ParityError(f"the reloaded {format} differs from the eager model by {diff:.3g} (> atol {atol:g})")
    finally:
        model.train(was_training)
    return TorchExport(path, format, how, diff, path.stat().st_size, hw, dynamic_batch)
