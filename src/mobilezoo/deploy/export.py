"""One call from a registered model name to a deployable file: what ``mobilezoo export`` runs."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import torch

from mobilezoo.deploy._common import as_hw, example_input, max_abs_diff, output_path
from mobilezoo.deploy.calibration import image_batches, random_batches
from mobilezoo.deploy.onnx_export import DEFAULT_OPSET, ParityError, export_onnx, second_resolution
from mobilezoo.deploy.openvino_export import convert_onnx, export_openvino
from mobilezoo.deploy.quantize import DEFAULT_EXCLUDE, check_int8_opset, compare_accuracy, quantize
from mobilezoo.deploy.torch_export import export_torch

FORMATS = ("onnx", "onnx-int8", "torchscript", "exported-program", "openvino", "openvino-int8")
INT8_FORMATS = ("onnx-int8", "openvino-int8")


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
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    dynamic_hw: bool = False,
    batch_size: int = 1,
    calibration: str | PathLike | None = None,
    calibration_images: int = 256,
    validation_images: int = 1000,
    per_channel: bool = True,
    exclude: str | list[str] | None = DEFAULT_EXCLUDE,
) -> ExportResult:
    """Build registered model ``name`` (with ``weights``) and write it as ``format`` to ``out``.

    Shapes: the batch is dynamic unless ``dynamic_batch=False``, which fixes it at ``batch_size`` (``onnx`` and
    ``exported-program``; a scripted TorchScript module takes any batch). ``dynamic_hw=True`` makes the height and
    width dynamic: ``onnx`` (see :func:`~mobilezoo.deploy.export_onnx`) and ``torchscript`` (a scripted module takes
    any size; checked at a second size here), not ``exported-program``, ``openvino`` or the int8 formats, which refuse
    it with a ValueError, as ``openvino`` and the int8 formats refuse a fixed batch and the int8 ones an ``opset``
    below 13. ``openvino`` and ``openvino-int8`` write OpenVINO IR (``out`` ends in ``.xml``; the ``.bin`` beside it).
    The int8 formats calibrate on ``calibration``: ``"builtin"``, an image folder, or ``"random"`` (noise, for smoke
    tests only); other formats refuse it. With real images they also report fp32 vs int8 top-1 on up to
    ``validation_images`` of the ``val`` split and how often the two agree. ``weights`` are loaded exactly (a
    checkpoint for another class count or input channels is an error), except the public ImageNet checkpoints
    (``"torchvision"``, ``"timm:..."``, ``"megvii:..."``), whose head and stem are adapted to ``num_classes`` and
    ``in_chans``; their preprocessing goes into the result's details, into an ONNX file's metadata
    (:data:`PREPROCESSING_KEY`, JSON) and into the int8 calibration images.
    """
    from mobilezoo.registry import create_model

    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")
    if dynamic_batch and batch_size != 1:
        raise ValueError(f"batch_size={batch_size} fixes the batch: pass dynamic_batch=False with it")
    if dynamic_hw and format in ("exported-program", *INT8_FORMATS, "openvino"):
        raise ValueError(
            f"a dynamic height and width is not available for {format}: use format 'onnx' or 'torchscript', or "
            "export one file per input size (resolution=...)"
        )
    if format in INT8_FORMATS:
        check_int8_opset(opset)
    elif calibration is not None:
        raise ValueError(f"calibration images apply to the int8 formats {INT8_FORMATS}, not to {format!r}")
    if format in (*INT8_FORMATS, "openvino") and not dynamic_batch:
        raise ValueError(f"{format} files have a dynamic batch: a fixed batch is available for 'onnx' (fp32)")
    # exact unless the weights are a public ImageNet checkpoint (whose 1000-class head is replaced on purpose):
    # exporting someone's checkpoint with a random classifier swapped in would be a silent error
    from mobilezoo.weights import is_source_spec

    tv = isinstance(weights, str) and (weights == "torchvision" or weights.startswith("torchvision:"))
    adapt = tv or is_source_spec(weights)  # public ImageNet checkpoints: torchvision's, timm's, megvii's
    model = create_model(name, weights=weights, num_classes=num_classes, in_chans=in_chans, adapt_weights=adapt).eval()
    pre = getattr(model, "preprocessing", None)  # a public checkpoint's: recorded in the result and the ONNX file
    result = _export(model, name, out, format, resolution, opset, dynamic_batch, dynamic_hw, batch_size, calibration,
                     calibration_images, validation_images, per_channel, exclude, in_chans, pre)  # fmt: skip
    if pre is not None:
        result.details["preprocessing"] = pre.to_dict()
        if result.path.suffix == ".onnx":
            set_onnx_preprocessing(result.path, pre.to_dict())
    return result


def _export(
    model: torch.nn.Module,
    name: str,
    out: str | PathLike,
    format: str,
    resolution: int | tuple[int, int],
    opset: int,
    dynamic_batch: bool,
    dynamic_hw: bool,
    batch_size: int,
    calibration: str | PathLike | None,
    calibration_images: int,
    validation_images: int,
    per_channel: bool,
    exclude: str | list[str] | None,
    in_chans: int,
    pre: Any,
) -> ExportResult:
    if format == "onnx":
        r = export_onnx(
            model,
            out,
            resolution=resolution,
            opset=opset,
            dynamic_batch=dynamic_batch,
            dynamic_hw=dynamic_hw,
            batch_size=batch_size,
        )
        return ExportResult(name, format, r.path, r.size_bytes, r.max_abs_diff, r.to_dict())
    if format in ("torchscript", "exported-program"):
        r = export_torch(
            model, out, format=format, resolution=resolution, dynamic_batch=dynamic_batch, batch_size=batch_size
        )
        details = r.to_dict()
        diff = r.max_abs_diff
        if dynamic_hw:
            diff = max(diff, _check_other_size(model, r.path, r.how, as_hw(resolution, model)))
            details.update(max_abs_diff=diff, dynamic_hw=True)
        return ExportResult(name, format, r.path, r.size_bytes, diff, details)
    if format == "openvino":
        r = export_openvino(model, out, resolution=resolution, opset=opset)
        return ExportResult(name, format, r.path, r.size_bytes, r.max_abs_diff, r.to_dict())
    if calibration is None:
        raise ValueError(f"{format} needs calibration images: 'builtin', an image folder, or 'random' (smoke tests)")
    hw = as_hw(resolution, model)
    if str(calibration) == "random":
        batches: Any = random_batches(in_chans, hw, num_images=calibration_images)
    else:
        batches = image_batches(calibration, in_chans=in_chans, resolution=hw[0] if hw[0] == hw[1] else hw,
                                num_images=calibration_images, preprocessing=pre)  # fmt: skip
    target = "openvino" if format == "openvino-int8" else "onnxruntime"
    with tempfile.TemporaryDirectory() as tmp:
        qdq = output_path(out, (".onnx",)) if target == "onnxruntime" else Path(tmp) / "model.int8.onnx"
        q = quantize(model, batches, out_path=qdq, per_channel=per_channel, resolution=hw, exclude=exclude,
                     opset=opset, target=target)  # fmt: skip
        details = q.to_dict()
        path, size = q.path, q.size_bytes
        if target == "openvino":
            path, bin_path = convert_onnx(q.path, out)
            size = path.stat().st_size + bin_path.stat().st_size
            details.update(path=str(path), bin_path=str(bin_path), size_bytes=size, fp32_path=None)
        if str(calibration) != "random":
            val = image_batches(calibration, split="val", in_chans=in_chans, resolution=hw[0] if hw[0] == hw[1] else hw,
                                num_images=validation_images, preprocessing=pre)  # fmt: skip
            details["accuracy"] = compare_accuracy(q.fp32_path, path, val).to_dict()
    return ExportResult(name, format, path, size, None, details)


PREPROCESSING_KEY = "mobilezoo.preprocessing"  # ONNX metadata: the checkpoint's preprocessing, as JSON


def set_onnx_preprocessing(path: Path, preprocessing: dict[str, Any]) -> None:
    """Store a public checkpoint's preprocessing (mean, std, crop, interpolation, channel order) in an ONNX file's
    metadata under :data:`PREPROCESSING_KEY`, so whoever feeds the file knows what it expects."""
    import json

    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    kept = [p for p in proto.metadata_props if p.key != PREPROCESSING_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=PREPROCESSING_KEY, value=json.dumps(preprocessing))
    onnx.save(proto, str(path))


def _check_other_size(model: torch.nn.Module, path: Path, how: str, hw: tuple[int, int], atol: float = 1e-5) -> float:
    """A saved TorchScript module's max abs difference from ``model`` at :func:`second_resolution`; a traced one has
    its input size fixed, which a ``dynamic_hw`` export refuses."""
    if how != "script":
        raise ValueError(
            f"the TorchScript file was traced ({how}), so its input size is fixed: dynamic_hw needs scripting"
        )
    x = example_input(model, second_resolution(hw), batch=2, seed=2)
    with torch.inference_mode():
        diff = max_abs_diff(torch.jit.load(str(path))(x), model(x))
    if not diff <= atol:
        raise ParityError(f"the reloaded TorchScript differs from the eager model by {diff:.3g} at another input size")
    return diff
