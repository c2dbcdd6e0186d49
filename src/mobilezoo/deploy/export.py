"""One call from a registered model name to a deployable file: what ``mobilezoo export`` runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from mobilezoo.deploy._common import as_hw
from mobilezoo.deploy.calibration import image_batches, random_batches
from mobilezoo.deploy.onnx_export import export_onnx
from mobilezoo.deploy.quantize import DEFAULT_EXCLUDE, compare_accuracy, quantize
from mobilezoo.deploy.torch_export import export_torch

FORMATS = ("onnx", "onnx-int8", "torchscript", "exported-program")


@dataclass(frozen=True)
class ExportResult:
    """What was written, its size, its parity with PyTorch (max abs diff), and for int8 the accuracy comparison."""

    model: str
    format: str
    path: Path
    size_bytes: int
    max_abs_diff: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "format": self.format,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "max_abs_diff": self.max_abs_diff,
            **self.details,
        }


def export_model(
    name: str,
    out: str | PathLike,
    *,
    format: str = "onnx",
    weights: str | PathLike | None = None,
    num_classes: int = 1000,
    in_chans: int = 3,
    resolution: int | tuple[int, int] = 224,
    opset: int = 17,
    dynamic_batch: bool = True,
    calibration: str | PathLike | None = None,
    calibration_images: int = 256,
    validation_images: int = 1000,
    per_channel: bool = True,
    exclude: str | list[str] | None = DEFAULT_EXCLUDE,
) -> ExportResult:
    """Build registered model ``name`` (with ``weights``) and write it as ``format`` to ``out``.

    ``onnx-int8`` calibrates on ``calibration``: ``"builtin"``, an image folder, or ``"random"`` (noise, for smoke
    tests only). With real images it also reports fp32 vs int8 top-1 on up to ``validation_images`` of the ``val``
    split and how often the two agree.
    """
    from mobilezoo.registry import create_model

    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")
    model = create_model(name, weights=weights, num_classes=num_classes, in_chans=in_chans).eval()
    if format == "onnx":
        r = export_onnx(model, out, resolution=resolution, opset=opset, dynamic_batch=dynamic_batch)
        return ExportResult(name, format, r.path, r.size_bytes, r.max_abs_diff, r.to_dict())
    if format in ("torchscript", "exported-program"):
        r = export_torch(model, out, format=format, resolution=resolution, dynamic_batch=dynamic_batch)
        return ExportResult(name, format, r.path, r.size_bytes, r.max_abs_diff, r.to_dict())
    if calibration is None:
        raise ValueError("onnx-int8 needs calibration images: 'builtin', an image folder, or 'random' (smoke tests)")
    hw = as_hw(resolution, model)
    if str(calibration) == "random":
        batches: Any = random_batches(in_chans, hw, num_images=calibration_images)
    else:
        batches = image_batches(calibration, in_chans=in_chans, resolution=hw[0] if hw[0] == hw[1] else hw,
                                num_images=calibration_images)  # fmt: skip
    q = quantize(model, batches, out_path=out, per_channel=per_channel, resolution=hw, exclude=exclude, opset=opset)
    details = q.to_dict()
    if str(calibration) != "random":
        val = image_batches(calibration, split="val", in_chans=in_chans, resolution=hw[0], num_images=validation_images)
        details["accuracy"] = compare_accuracy(q.fp32_path, q.path, val).to_dict()
    return ExportResult(name, format, q.path, q.size_bytes, None, details)
