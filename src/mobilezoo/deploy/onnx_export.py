"""ONNX export checked against PyTorch with ONNX Runtime, and ONNX Runtime sessions.

The exporter is torch's TorchScript-based one (``dynamo=False``): on this code base it exports a model in about half a
second where the dynamo exporter takes 10-40 s, it writes native ``HardSwish``/``HardSigmoid`` nodes (opset >= 14),
and with ``dynamic_axes`` the batch stays symbolic (a traced channel shuffle is one ``Gather`` of a constant
permutation, ShuffleNet V2's split two constant slices: no shape arithmetic). The dynamo exporter is available with
``dynamo=True`` (opset >= 18, its lowest implemented opset).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from mobilezoo.deploy._common import as_hw, as_model, example_input, output_path
from mobilezoo.deploy.sessions import onnx_session

MIN_OPSET = 17  # the floor; HardSwish needs 14, LayerNorm-free nets need nothing newer
MAX_OPSET_LEGACY = 20  # torch.onnx's TorchScript exporter stops at 20
MIN_OPSET_DYNAMO = 18
INPUT_NAME = "input"
ARCHITECTURE_KEY = "mobilezoo.architecture"  # metadata entry: the exported module's class name


class ParityError(ValueError):
    """An exported model's outputs differ from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class OnnxExport:
    """An exported ONNX file and its parity check against PyTorch (``max_abs_diff`` is None when unchecked)."""

    path: Path
    opset: int
    max_abs_diff: float | None
    size_bytes: int
    input_name: str
    output_names: tuple[str, ...]
    resolution: tuple[int, int]
    dynamic_batch: bool
    check_batch: int | None
    exporter: str
    export_seconds: float
    folded_shuffles: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "opset": self.opset,
            "max_abs_diff": self.max_abs_diff,
            "size_bytes": self.size_bytes,
            "input_name": self.input_name,
            "output_names": list(self.output_names),
            "resolution": list(self.resolution),
            "dynamic_batch": self.dynamic_batch,
            "check_batch": self.check_batch,
            "exporter": self.exporter,
            "export_seconds": round(self.export_seconds, 3),
            "folded_shuffles": self.folded_shuffles,
        }


def check_opset(opset: int, dynamo: bool = False) -> None:
    low, high = (MIN_OPSET_DYNAMO, onnx.defs.onnx_opset_version()) if dynamo else (MIN_OPSET, MAX_OPSET_LEGACY)
    if not isinstance(opset, int) or not low <= opset <= high:
        which = "dynamo" if dynamo else "TorchScript-based"
        raise ValueError(f"unsupported opset {opset!r}: the {which} exporter supports opsets {low}..{high}")


def load_onnx(path: str | PathLike) -> onnx.ModelProto:
    """Read and validate an ONNX model file; a missing file or one that is not a valid model raises clearly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist")
    try:
        onnx.checker.check_model(str(path))  # a path (not a proto) also checks models above 2 GB
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError, onnx ValidationError: all mean "not a model"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{str(path)!r} is not a valid ONNX model: {first}") from None
    if not model.graph.node or not model.graph.input:
        raise ValueError(f"{str(path)!r} is not a valid ONNX model: its graph is empty")
    return model


def _outputs(out: Tensor | list | tuple) -> list[Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def onnx_parity(path: str | PathLike, model: nn.Module, x: Tensor, threads: int | None = None) -> float:
    """Max absolute difference between ONNX Runtime's and PyTorch's outputs for the input ``x``."""
    session = onnx_session(path, threads)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.inference_mode():
        want = [t.numpy() for t in _outputs(model(x))]
    if len(got) != len(want):
        raise ParityError(f"ONNX model returns {len(got)} outputs, PyTorch {len(want)}")
    diffs = []
    for g, w in zip(got, want):
        if g.shape != w.shape:
            raise ParityError(f"ONNX output shape {g.shape} differs from PyTorch's {w.shape}")
        diffs.append(float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max()))
    return max(diffs)


class _AdaptivePoolAsMatmul(nn.Module):
    """``AdaptiveAvgPool2d`` for one fixed input size, as two matrix products (exact same windows and weights).

    The TorchScript-based exporter refuses adaptive pooling whose output size does not divide the input size
    (VGG-16's 7x7 pooling of a 3x2 map at 96x64 input); the spatial size is fixed in the exported graph, so the
    pooling is a constant linear map per axis: ``P_h @ x @ P_w^T``.
    """

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("ph", self._matrix(in_hw[0], out_hw[0]), persistent=False)
        self.register_buffer("pw_t", self._matrix(in_hw[1], out_hw[1]).t().contiguous(), persistent=False)

    @staticmethod
    def _matrix(n_in: int, n_out: int) -> Tensor:
        m = torch.zeros(n_out, n_in)
        for i in range(n_out):  # torch's adaptive windows: [floor(i*in/out), ceil((i+1)*in/out))
            start, end = (i * n_in) // n_out, math.ceil((i + 1) * n_in / n_out)
            m[i, start:end] = 1.0 / (end - start)
        return m

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(torch.matmul(self.ph, x), self.pw_t)


@contextlib.contextmanager
def _exportable_pools(model: nn.Module, x: Tensor) -> Iterator[None]:
    """Swap adaptive average pools the TorchScript exporter cannot express for matmul ones; restore them after."""
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, inp, name=name: sizes.__setitem__(name, tuple(inp[0].shape[-2:])))
        for name, m in model.named_modules()
        if isinstance(m, nn.AdaptiveAvgPool2d)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for name, in_hw in sizes.items():
        pool = model.get_submodule(name)
        out = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size,) * 2
        out_hw = tuple(i if o is None else o for i, o in zip(in_hw, out))
        if all(i % o == 0 for i, o in zip(in_hw, out_hw)):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        swapped.append((parent, attr, pool))
        setattr(parent, attr, _AdaptivePoolAsMatmul(in_hw, out_hw))
    try:
        yield
    finally:
        for parent, attr, pool in swapped:
            setattr(parent, attr, pool)


def _export_dynamo(
    model: nn.Module, path: Path, x: Tensor, opset: int, outputs: list[str], dynamic_batch: bool
) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=True,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=outputs,
        dynamic_shapes=({0: batch},) if dynamic_batch else None,
        external_data=False,
        verbose=False,
    )


def _record_architecture(path: Path, architecture: str) -> None:
    """Store the model's class name in the file's metadata: :func:`~mobilezoo.deploy.quantize` reads it."""
    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != ARCHITECTURE_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=ARCHITECTURE_KEY, value=architecture)
    onnx.save(proto, str(path))


def architecture(path_or_model: str | PathLike | onnx.ModelProto) -> str | None:
    """The class name :func:`export_onnx` recorded in an ONNX file, or None for a file it did not write."""
    proto = path_or_model if isinstance(path_or_model, onnx.ModelProto) else load_onnx(path_or_model)
    return next((p.value for p in proto.metadata_props if p.key == ARCHITECTURE_KEY), None)


def export_onnx(
    model: nn.Module | str,
    path: str | PathLike,
    *,
    resolution: int | tuple[int, int] = 224,
    opset: int = MIN_OPSET,
    dynamic_batch: bool = True,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-5,
    check_batch: int = 2,
    dynamo: bool | None = None,
    fold_shuffles: bool = True,
) -> OnnxExport:
    """Export ``model`` (eval mode, batch 1) to ONNX and check it with ONNX Runtime against PyTorch on a random input.

    ``resolution`` is ``224`` or ``(height, width)``; the batch dimension is symbolic (``batch``) when
    ``dynamic_batch``. The check runs a batch of ``check_batch`` (1 for a fixed batch) and raises
    :class:`ParityError` when the outputs differ by more than ``atol + rtol * max|PyTorch output|`` (1e-4 for
    logits of magnitude below 1, relatively looser for randomly initialised nets whose logits reach hundreds).
    ``dynamo``: None uses the TorchScript-based exporter and falls back to the dynamo exporter (at opset >= 18) for
    an op the former cannot export; True or False forces one exporter. Adaptive average pools whose output size does
    not divide their input size (VGG-16's 7x7 pool below 224 px) are exported as two constant matrix products.
    ``fold_shuffles``: a ShuffleNet V2 is exported as :func:`~mobilezoo.deploy.unshuffle.unshuffle` makes it, its
    channel shuffles and splits folded into the weights (the same function, checked against the model itself).
    The file records the model's class name in its metadata (``mobilezoo.architecture``).
    """
    from mobilezoo.deploy.unshuffle import unshuffle
    from mobilezoo.models.shufflenet_v2 import ShuffleNetV2

    model = as_model(model)
    check_opset(opset, bool(dynamo))
    if not isinstance(check_batch, int) or check_batch < 1:
        raise ValueError(f"check_batch must be an integer >= 1, got {check_batch!r}")
    path = output_path(path, (".onnx",))
    hw = as_hw(resolution, model)
    was_training = model.training
    model.eval()
    try:
        x = example_input(model, hw, batch=1)
        with torch.no_grad():
            n_out = len(_outputs(model(x)))
        outputs = ["logits"] if n_out == 1 else [f"feature_{i}" for i in range(n_out)]
        folded = fold_shuffles and isinstance(model, ShuffleNetV2)
        exported = unshuffle(model) if folded else model
        axes = {name: {0: "batch"} for name in [INPUT_NAME, *outputs]} if dynamic_batch else None
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings from the input checks, the exporter's deprecation notice
            if dynamo:
                _export_dynamo(exported, path, example_input(model, hw, batch=2), opset, outputs, dynamic_batch)
            else:
                try:
                    with _exportable_pools(exported, x):
                        torch.onnx.export(
                            exported,
                            (x,),
                            str(path),
                            dynamo=False,
                            opset_version=opset,
                            input_names=[INPUT_NAME],
                            output_names=outputs,
                            dynamic_axes=axes,
                            do_constant_folding=True,
                        )
                except torch.onnx.errors.OnnxExporterError:
                    if dynamo is False:
                        raise
                    dynamo, opset = True, max(opset, MIN_OPSET_DYNAMO)
                    _export_dynamo(exported, path, example_input(model, hw, batch=2), opset, outputs, dynamic_batch)
        seconds = time.perf_counter() - start
        _record_architecture(path, type(model).__name__)
        diff, batch = None, None
        if check:
            batch = check_batch if dynamic_batch else 1
            x_check = example_input(model, hw, batch=batch, seed=1)
            diff = onnx_parity(path, model, x_check)
            with torch.inference_mode():
                scale = max(float(t.abs().max()) for t in _outputs(model(x_check)))
            if not diff <= atol + rtol * scale:
                raise ParityError(
                    f"ONNX Runtime's output differs from PyTorch's by {diff:.3g} (> {atol:g} + {rtol:g} x {scale:.3g}) "
                    f"for {str(path)!r}"
                )
    finally:
        model.train(was_training)
    return OnnxExport(
        path=path,
        opset=opset,
        max_abs_diff=diff,
        size_bytes=path.stat().st_size,
        input_name=INPUT_NAME,
        output_names=tuple(outputs),
        resolution=hw,
        dynamic_batch=dynamic_batch,
        check_batch=batch,
        exporter="dynamo" if dynamo else "torchscript",
        export_seconds=seconds,
        folded_shuffles=folded,
    )
