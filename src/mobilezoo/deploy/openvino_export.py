"""OpenVINO IR export (``.xml`` + ``.bin``), checked against PyTorch with OpenVINO's CPU plugin in f32.

The IR is converted from mobilezoo's checked ONNX export (:func:`~mobilezoo.deploy.export_onnx`), or from an int8 QDQ
file of :func:`~mobilezoo.deploy.quantize` (OpenVINO keeps its quantize/dequantize pairs as FakeQuantize nodes and runs
the quantized parts in int8). Weights are stored in fp32: OpenVINO's ``save_model`` would otherwise compress them to
fp16 and change the numbers.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilezoo.deploy._common import as_hw, as_model, example_input, max_abs_diff, output_path
from mobilezoo.deploy.onnx_export import DEFAULT_OPSET, ParityError, export_onnx
from mobilezoo.deploy.sessions import openvino_model

# f32 OpenVINO against PyTorch: the same tolerance as the ONNX export's parity check, relative to the output scale
ATOL = 1e-4


@dataclass(frozen=True)
class OpenVinoExport:
    """An OpenVINO IR: the ``.xml`` (graph) and ``.bin`` (weights) files, their size, and the parity check."""

    path: Path
    bin_path: Path
    size_bytes: int
    max_abs_diff: float | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "bin_path": str(self.bin_path),
            "size_bytes": self.size_bytes,
            "max_abs_diff": self.max_abs_diff,
            "source": self.source,
        }


def convert_onnx(onnx_path: str | PathLike, out: str | PathLike) -> tuple[Path, Path]:
    """Convert an ONNX file to OpenVINO IR at ``out`` (``.xml``; the ``.bin`` beside it), weights kept in fp32."""
    import openvino as ov

    out = output_path(out, (".xml",))
    ov.save_model(ov.convert_model(str(onnx_path)), str(out), compress_to_fp16=False)
    return out, out.with_suffix(".bin")


def export_openvino(
    model: nn.Module | str,
    out: str | PathLike,
    *,
    resolution: int | tuple[int, int] = 224,
    opset: int = DEFAULT_OPSET,
    threads: int | None = None,
) -> OpenVinoExport:
    """Export ``model`` (a module or registered name, put in eval mode) to OpenVINO IR and check it.

    The ONNX export in between (at ``opset``) is parity-checked with ONNX Runtime; the IR is then run by OpenVINO in f32 on a seeded
    batch of 2 at ``resolution`` and compared with PyTorch: beyond :data:`ATOL` x the output scale it raises
    :class:`~mobilezoo.deploy.ParityError`. The batch is dynamic. Raises ImportError without the ``openvino`` package,
    ValueError for a bad path or resolution.
    """
    model = as_model(model).eval()
    hw = as_hw(resolution, model)
    out = output_path(out, (".xml",))
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_onnx(model, Path(tmp) / "model.onnx", resolution=hw, opset=opset)
        xml, bin_path = convert_onnx(onnx.path, out)
    x = example_input(model, hw, batch=2, seed=1)
    with torch.inference_mode():
        want = model(x)
    got = torch.from_numpy(openvino_model(xml, threads, precision="f32").run(x.numpy()).copy())
    diff = max_abs_diff(got, want)
    scale = float(want.abs().max()) or 1.0
    if not diff <= ATOL * max(scale, 1.0):
        xml.unlink(missing_ok=True)  # a file that failed its check must not look like a good export
        bin_path.unlink(missing_ok=True)
        raise ParityError(f"OpenVINO's f32 outputs differ from PyTorch's by {diff:.3g} (scale {scale:.3g})")
    size = xml.stat().st_size + bin_path.stat().st_size
    return OpenVinoExport(xml, bin_path, size, diff, f"ONNX {onnx.exporter} exporter, opset {onnx.opset}")
