"""Deployment: BatchNorm folding, checked ONNX export, int8 quantization, TorchScript / torch.export, runtimes.

- :func:`fuse` folds BatchNorm into the conv/linear before it; :func:`unshuffle` folds ShuffleNet V2's channel
  shuffles and splits into its weights (what :func:`export_onnx` exports for a ShuffleNet V2).
- :func:`export_onnx` exports to ONNX (opset 7-20, 17 by default with native HardSwish/HardSigmoid; dynamic batch, or
  a fixed one; optionally dynamic height and width) and checks the file with ONNX Runtime against PyTorch; :func:`onnx_session` opens it for inference, with ``streams`` a
  :class:`StreamedSession` that splits each batch over the cores (how int8 models use more than one at batch > 1).
- :func:`quantize` makes an int8 ONNX model with ONNX Runtime's post-training quantization;
  :func:`compare_accuracy` reports fp32 vs int8 top-1 and their agreement.
- :func:`export_torch` writes a TorchScript or ``torch.export`` program, checked for equal outputs.
- :func:`export_openvino` writes OpenVINO IR (``.xml`` + ``.bin``, fp32 weights), checked with OpenVINO against PyTorch.
- :func:`onnx_session` and :func:`openvino_model` open an exported file for inference with this machine's policies
  (:mod:`mobilezoo.policies`); the measured choice between backends is :func:`mobilezoo.benchmark.fastest_backend`.
"""

from mobilezoo.deploy.fuse import count_batchnorms, fuse
from mobilezoo.deploy.onnx_export import OnnxExport, ParityError, export_onnx, load_onnx, onnx_parity
from mobilezoo.deploy.openvino_export import OpenVinoExport, export_openvino
from mobilezoo.deploy.quantize import AccuracyComparison, QuantizedModel, compare_accuracy, float_nodes, quantize
from mobilezoo.deploy.sessions import OpenVinoModel, onnx_session, openvino_model
from mobilezoo.deploy.streams import StreamedSession
from mobilezoo.deploy.torch_export import TorchExport, export_torch
from mobilezoo.deploy.unshuffle import unshuffle

__all__ = [
    "AccuracyComparison",
    "OnnxExport",
    "OpenVinoExport",
    "OpenVinoModel",
    "ParityError",
    "QuantizedModel",
    "StreamedSession",
    "TorchExport",
    "compare_accuracy",
    "count_batchnorms",
    "export_onnx",
    "export_openvino",
    "export_torch",
    "float_nodes",
    "fuse",
    "load_onnx",
    "onnx_parity",
    "onnx_session",
    "openvino_model",
    "quantize",
    "unshuffle",
]
