"""What follows a selection: the chosen model written as the deployable file of its backend, and for an int8 choice
how often its top-1 agrees with fp32 on the built-in images."""

from __future__ import annotations

import tempfile
from os import PathLike
from pathlib import Path
from typing import Any

from mobilezoo.selection.search import Choice

# the export format that produces what each backend runs (eager and channels_last run the PyTorch module: TorchScript
# is its deployable form; openvino-bf16 runs the fp32 IR with a bf16 inference hint)
EXPORT_FORMATS = {
    "eager": "torchscript",
    "channels_last": "torchscript",
    "torchscript": "torchscript",
    "compile": "torchscript",
    "onnxruntime": "onnx",
    "onnxruntime-streams": "onnx",
    "onnxruntime-int8": "onnx-int8",
    "onnxruntime-int8-streams": "onnx-int8",
    "openvino": "openvino",
    "openvino-bf16": "openvino",
    "openvino-int8": "openvino-int8",
}
SUFFIX = {
    "torchscript": ".pt",
    "onnx": ".onnx",
    "onnx-int8": ".int8.onnx",
    "openvino": ".xml",
    "openvino-int8": ".int8.xml",
}


def export_choice(
    choice: Choice,
    out_dir: str | PathLike,
    *,
    weights: str | PathLike | None = None,
    calibration: str | PathLike | None = None,
) -> Any:
    """Write ``choice``'s model at its resolution as its backend's deployable file in ``out_dir`` (created).

    ``weights``: as for :func:`mobilezoo.deploy.export_model` (default: random weights, an architecture to deploy and
    time, not to predict with). An int8 choice calibrates on ``calibration`` (an image folder, or ``"random"`` for a
    smoke test). Returns the :class:`~mobilezoo.deploy.export.ExportResult`. Raises ValueError for a backend with no
    export format, or an int8 choice without calibration images.
    """
    from mobilezoo.deploy.export import export_model

    fmt = EXPORT_FORMATS.get(choice.backend)
    if fmt is None:
        raise ValueError(f"backend {choice.backend!r} has no export format; expected one of {sorted(EXPORT_FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c = choice.candidate
    path = out / f"{c.model}_{c.resolution}{SUFFIX[fmt]}"
    if fmt.endswith("int8") and calibration is None:
        raise ValueError(
            f"{c.key} on {choice.backend} is int8: its export needs calibration images (an image folder of the "
            "images it will see: --calib DIR), or 'random' for a smoke test"
        )
    return export_model(c.model, path, format=fmt, weights=weights, resolution=c.resolution,
                        calibration=calibration if fmt.endswith("int8") else None)  # fmt: skip


def int8_agreement(choice: Choice, images: int = 256) -> dict[str, Any]:
    """How often ``choice``'s int8 model (random weights, calibrated on the built-in images) gives the same top-1 as
    its fp32 model on ``images`` built-in validation images: a check that quantization keeps the fp32 decisions, not
    an accuracy (the published top-1 is an fp32 figure). The built-in digits are grayscale with 10 classes, so the
    model checked is the same architecture with a 1-channel stem and a 10-class head. Raises ValueError for a choice
    that is not int8."""
    from mobilezoo.deploy.export import export_model

    fmt = EXPORT_FORMATS.get(choice.backend, "")
    if not fmt.endswith("int8"):
        raise ValueError(f"{choice.candidate.key} on {choice.backend} is not an int8 choice")
    c = choice.candidate
    with tempfile.TemporaryDirectory() as tmp:
        r = export_model(c.model, Path(tmp) / f"m{SUFFIX[fmt]}", format=fmt, resolution=c.resolution, in_chans=1,
                         num_classes=10, calibration="builtin", validation_images=images)  # fmt: skip
    acc = r.details["accuracy"]
    return {"images": acc["images"], "agreement": acc["agreement"], "weights": "random",
            "note": "int8 vs fp32 top-1 agreement on the built-in digits (1-channel stem, 10-class head, random "
            "weights); the published top-1 is fp32"}  # fmt: skip
