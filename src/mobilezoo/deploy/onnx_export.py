"""ONNX export checked against PyTorch with ONNX Runtime, and ONNX Runtime sessions.

The exporter is torch's TorchScript-based one (``dynamo=False``): on this code base it exports a model in about half a
second where the dynamo exporter takes 10-40 s, it writes native ``HardSwish``/``HardSigmoid`` nodes (opset >= 14;
below, HardSwish is ``x * HardSigmoid(x)`` with alpha 1/6, exact), and with ``dynamic_axes`` the batch (and with
``dynamic_hw`` the height and width) stays symbolic (a traced channel shuffle is one ``Gather`` of a constant
permutation, ShuffleNet V2's split two constant slices: no shape arithmetic). It exports every opset from 7 to 20,
for older runtimes (TensorRT 7, older OpenVINO, embedded ones); every registered model exports and matches PyTorch at
each (tests: opsets 7, 11, 13 and 17). The dynamo exporter is available with ``dynamo=True`` (opset >= 18, its lowest
implemented opset). The choice is measured (``benchmarks/exporters.py``, results/exporters.json; Intel Xeon with
AVX-512/AMX, 2 threads, ONNX Runtime 1.32): the dynamo graph ran 0.96-1.02x the TorchScript-based one's latency for
MobileNet V1/V2/V3 and ShuffleNet V2 at batch 1 and 32 (ties), and 1.12-1.15x (slower) for ShuffleNet V1 g=3, and
took 3-6 s to export against 0.3-0.6 s. The AMD kind was not measured.
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

# torch.onnx's TorchScript-based exporter implements opsets 7..20 (torch.onnx._constants.ONNX_MIN_OPSET and
# ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET in torch 2.14), and every registered model exports at 7 with ONNX Runtime parity:
# HardSigmoid exists since opset 6 and HardSwish is x * HardSigmoid(x) below 14. Below opset 9 torch does not fold
# constants, so the BatchNormalization nodes stay in the file (ONNX Runtime folds them when it loads it).
MIN_OPSET = 7
MAX_OPSET_LEGACY = 20
DEFAULT_OPSET = 17  # native HardSwish/HardSigmoid (>= 14), and what ONNX Runtime, TensorRT 8.6+ and OpenVINO 2022+ read
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
    dynamic_hw: bool = False
    batch_size: int | None = None  # the fixed batch; None when dynamic
    check_resolutions: tuple[tuple[int, int], ...] = ()

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
            "dynamic_hw": self.dynamic_hw,
            "batch_size": self.batch_size,
            "check_resolutions": [list(r) for r in self.check_resolutions],
        }


def check_opset(opset: int, dynamo: bool = False) -> None:
    """Raise a ValueError unless the exporter (TorchScript-based: 7..20; dynamo: 18..onnx's newest) has ``opset``."""
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


def second_resolution(hw: tuple[int, int]) -> tuple[int, int]:
    """The other input size a ``dynamic_hw`` export is checked at: odd, and larger in both dimensions."""
    return hw[0] + 33, hw[1] + 17


def _fixed_size_modules(model: nn.Module, opset: int) -> list[str]:
    """The modules torch's TorchScript-based exporter cannot give a symbolic input size, grouped by the reason."""
    found: dict[str, list[str]] = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,) * 2
            if any(s not in (1, None) for s in size):
                why = f"adaptive pooling to {m.output_size}, whose kernel depends on the input size"
                found.setdefault(why, []).append(name)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and m.ceil_mode and opset < 10:
            found.setdefault("ceil-mode pooling, symbolic only from opset 10 on", []).append(name)
    return [f"{', '.join(names)} ({why})" for why, names in found.items()]


def _dynamic_hw_refusal(model: nn.Module, opset: int, why: str) -> ValueError:
    return ValueError(
        f"{type(model).__name__} cannot be exported with a dynamic height and width at opset {opset}: {why}; export "
        "one file per input size instead (dynamic_hw=False, resolution=...)"
    )


def export_onnx(
    model: nn.Module | str,
    path: str | PathLike,
    *,
    resolution: int | tuple[int, int] = 224,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    dynamic_hw: bool = False,
    batch_size: int = 1,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-5,
    check_batch: int = 2,
    dynamo: bool | None = None,
    fold_shuffles: bool = True,
) -> OnnxExport:
    """Export ``model`` (eval mode) to ONNX and check it with ONNX Runtime against PyTorch on a random input.

    ``resolution`` is ``224`` or ``(height, width)``. ``opset``: 7..20 (the TorchScript-based exporter's range; 17 by
    default). Shapes: the batch dimension is symbolic (``batch``) when ``dynamic_batch``, else fixed at
    ``batch_size``; ``dynamic_hw=True`` makes the height and width symbolic too (``height``, ``width``; the graph
    then takes any size of at least the model's ``min_input_size``). VGG-16's 7x7 adaptive pool, and GoogLeNet's
    ceil-mode pools below opset 10, have no symbolic-size form: ``dynamic_hw`` refuses them with a ValueError.
    The check runs a batch of ``check_batch`` (``batch_size`` for a fixed batch), at ``resolution`` and with
    ``dynamic_hw`` also at :func:`second_resolution`, and raises :class:`ParityError` when the outputs differ by more
    than ``atol + rtol * max|PyTorch output|`` (1e-4 for logits of magnitude below 1, relatively looser for randomly
    initialised nets whose logits reach hundreds). ``dynamo``: None uses the TorchScript-based exporter and, at the
    default opset or above, falls back to the dynamo exporter (at opset >= 18) for an op the former cannot export (an
    explicitly lower opset is a runtime's requirement, so there the error is raised); True or False forces one
    exporter. Adaptive average pools whose output size does not divide their input size (VGG-16's 7x7 pool below
    224 px) are exported as two constant matrix products. ``fold_shuffles``: a ShuffleNet V2 is exported as
    :func:`~mobilezoo.deploy.unshuffle.unshuffle` makes it, its channel shuffles and splits folded into the weights
    (the same function, checked against the model itself). The file records the model's class name in its metadata
    (``mobilezoo.architecture``).
    """
    from mobilezoo.deploy.unshuffle import unshuffle
    from mobilezoo.models.shufflenet_v2 import ShuffleNetV2

    model = as_model(model)
    check_opset(opset, bool(dynamo))
    if not isinstance(check_batch, int) or check_batch < 1:
        raise ValueError(f"check_batch must be an integer >= 1, got {check_batch!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size (the fixed batch) must be an integer >= 1, got {batch_size!r}")
    if dynamic_batch and batch_size != 1:
        raise ValueError(f"batch_size={batch_size} fixes the batch: pass dynamic_batch=False with it")
    if dynamic_hw and dynamo:
        raise ValueError("dynamic_hw is implemented with the TorchScript-based exporter: pass dynamo=None or False")
    fixed = _fixed_size_modules(model, opset) if dynamic_hw else []
    if fixed:
        raise _dynamic_hw_refusal(model, opset, "; ".join(fixed))
    path = output_path(path, (".onnx",))
    hw = as_hw(resolution, model)
    was_training = model.training
    model.eval()
    try:
        x = example_input(model, hw, batch=1 if dynamic_batch else batch_size)
        with torch.no_grad():
            n_out = len(_outputs(model(x)))
        outputs = ["logits"] if n_out == 1 else [f"feature_{i}" for i in range(n_out)]
        folded = fold_shuffles and isinstance(model, ShuffleNetV2)
        exported = unshuffle(model) if folded else model
        axes: dict[str, dict[int, str]] = {
            name: {0: "batch"} if dynamic_batch else {} for name in [INPUT_NAME, *outputs]
        }
        if dynamic_hw:
            axes[INPUT_NAME].update({2: "height", 3: "width"})
            for name in outputs if n_out > 1 else []:  # feature maps: their sizes follow the input's
                axes[name].update({2: f"{name}_height", 3: f"{name}_width"})
        axes = {name: dims for name, dims in axes.items() if dims}
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings from the input checks, the exporter's deprecation notice
            if dynamo:
                batch = 2 if dynamic_batch else batch_size
                _export_dynamo(exported, path, example_input(model, hw, batch=batch), opset, outputs, dynamic_batch)
            else:
                try:
                    # with a symbolic size the pools cannot be constant matrices: the exporter refuses them instead
                    pools = contextlib.nullcontext() if dynamic_hw else _exportable_pools(exported, x)
                    with pools:
                        torch.onnx.export(
                            exported,
                            (x,),
                            str(path),
                            dynamo=False,
                            opset_version=opset,
                            input_names=[INPUT_NAME],
                            output_names=outputs,
                            dynamic_axes=axes or None,
                            do_constant_folding=True,
                        )
                except torch.onnx.errors.OnnxExporterError as e:
                    if dynamic_hw:
                        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                        raise _dynamic_hw_refusal(model, opset, f"torch's exporter: {first}") from None
                    if dynamo is False or opset < DEFAULT_OPSET:
                        raise
                    dynamo, opset = True, max(opset, MIN_OPSET_DYNAMO)
                    batch = 2 if dynamic_batch else batch_size
                    _export_dynamo(exported, path, example_input(model, hw, batch=batch), opset, outputs, dynamic_batch)
        seconds = time.perf_counter() - start
        _record_architecture(path, type(model).__name__)
        diff, batch, checked = None, None, ()
        if check:
            batch = check_batch if dynamic_batch else batch_size
            checked = (hw, second_resolution(hw)) if dynamic_hw else (hw,)
            diffs = []
            for size in checked:
                x_check = example_input(model, size, batch=batch, seed=1)
                diffs.append(onnx_parity(path, model, x_check))
                with torch.inference_mode():
                    scale = max(float(t.abs().max()) for t in _outputs(model(x_check)))
                if not diffs[-1] <= atol + rtol * scale:
                    raise ParityError(
                        f"ONNX Runtime's output differs from PyTorch's by {diffs[-1]:.3g} (> {atol:g} + {rtol:g} x "
                        f"{scale:.3g}) for {str(path)!r} at {size[0]}x{size[1]}"
                    )
            diff = max(diffs)
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
        dynamic_hw=dynamic_hw,
        batch_size=None if dynamic_batch else batch_size,
        check_resolutions=checked,
    )
