"""TensorFlow's "SAME" padding for stride-2 ops, in a form every PyTorch tool keeps exact at every input size.

TF pads a stride-2 op so that its output is ceil(n / 2) and its windows end on the last pixel: an even side gets its
extra pixel on the right/bottom, where PyTorch's symmetric ``padding=k // 2`` would centre the windows one pixel to the
left/top. The pads depend on the input's parity, so they are computed when the graph runs: :func:`pad_same` and
:func:`avg_pool_same` are leaves of torch.fx graphs (``torch.fx.wrap`` below, so FX quantization keeps them in float),
size arithmetic that TorchScript, ``torch.jit.trace``, ``torch.compile`` and ``torch.export`` follow, and in ONNX
export one ``Pad`` (constant pads at a fixed size, at every opset; computed from ``Shape`` for a dynamic height and
width, opset >= 11) or one ``AveragePool`` with ``auto_pad=SAME_UPPER``. Used by NASNet (TF-slim's reference).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _same_pads(height: int, width: int, kernel: int) -> list[int]:
    """TensorFlow "SAME" padding of a stride-2 op with an odd ``kernel``, as F.pad's (left, right, top, bottom).

    TF pads ``total = (ceil(n / 2) - 1) * 2 + kernel - n`` and puts ``total // 2`` before: ``(kernel - 3) // 2`` before
    and ``(kernel - 1) // 2`` after on an even side, one more before on an odd one. Only the parity of the input
    matters, and no ``max``/branching is needed (total >= 1), so traced graphs keep it symbolic.
    """
    return [
        (kernel - 3) // 2 + width % 2,
        (kernel - 1) // 2,
        (kernel - 3) // 2 + height % 2,
        (kernel - 1) // 2,
    ]


def _static_hw(value) -> tuple[int, int] | None:  # an ONNX graph value's height and width, when the export fixes them
    try:
        sizes = value.type().varyingSizes()
    except RuntimeError:  # not a tensor type with known rank
        return None
    if sizes is None or len(sizes) != 4 or sizes[2] is None or sizes[3] is None:
        return None
    return int(sizes[2]), int(sizes[3])


def _traced_hw(x: Tensor) -> tuple[int, int]:
    """The height and width as constants, for the body of an ONNX-export Function: torch.onnx traces that body, but
    the Function's ``symbolic`` replaces it in the graph, so the TracerWarning about constant sizes does not apply."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(x.shape[2]), int(x.shape[3])


class _PadSameOnnx(torch.autograd.Function):
    """:func:`pad_same` in ONNX export: a ``Pad`` whose pads are constants when the export fixes the input size (any
    opset, 7 included, whose Pad takes constant pads only) and are computed from the input's ``Shape`` when the height
    and width are dynamic (opset >= 11)."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel: int, mode: str) -> Tensor:
        height, width = _traced_hw(x)
        return F.pad(x, _same_pads(height, width, kernel), mode=mode)

    @staticmethod
    def symbolic(g, x, kernel: int, mode: str):
        onnx_mode = {"constant": "constant", "replicate": "edge"}[mode]
        hw = _static_hw(x)
        if hw is not None:
            left, right, top, bottom = _same_pads(hw[0], hw[1], kernel)
            pads = [0, 0, top, left, 0, 0, bottom, right]  # ONNX: all begins, then all ends
            if g.opset < 11:
                return g.op("Pad", x, pads_i=pads, mode_s=onnx_mode)
            return g.op("Pad", x, g.op("Constant", value_t=torch.tensor(pads)), mode_s=onnx_mode)
        if g.opset < 11:
            raise ValueError(
                f"TensorFlow 'SAME' padding (NASNet's) needs ONNX opset >= 11 for a dynamic height and width (its "
                f"pads depend on the input size), got opset {g.opset}; export at a fixed size or at opset >= 11"
            )

        def const(values: list[int]):
            return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

        hw_value = g.op("Slice", g.op("Shape", x), const([2]), const([4]))  # (H, W)
        before = g.op("Add", g.op("Mod", hw_value, const([2])), const([(kernel - 3) // 2]))  # odd sides pad one more
        after = const([0, 0, (kernel - 1) // 2, (kernel - 1) // 2])
        return g.op("Pad", x, g.op("Concat", const([0, 0]), before, after, axis_i=0), mode_s=onnx_mode)


@torch.jit.unused
def _pad_same_onnx(x: Tensor, kernel: int, mode: str) -> Tensor:
    return _PadSameOnnx.apply(x, kernel, mode)


def pad_same(x: Tensor, kernel: int, mode: str = "constant") -> Tensor:
    """Pad an (N, C, H, W) map for a stride-2, odd-``kernel`` op as TensorFlow's "SAME" does: the op's output is then
    ceil(H/2) x ceil(W/2), and an even side gets its extra pixel on the right/bottom (a PyTorch ``padding=k//2``
    would centre the windows one pixel to the left/top). ``mode``: "constant" (zeros, for convs) or "replicate" (for a
    max pool: every padded window holds the edge pixel it copies, so the max is TF's max over the valid pixels).

    A leaf of torch.fx graphs (``torch.fx.wrap`` below); in ONNX export, one ``Pad`` node (:class:`_PadSameOnnx`).
    """
    # nested, not `and`: TorchScript drops the body of `if not is_scripting()` but would compile an `and`'s right side
    if not torch.jit.is_scripting():  # noqa: SIM102
        if torch.onnx.is_in_onnx_export():
            return _pad_same_onnx(x, kernel, mode)
    return F.pad(x, _same_pads(x.shape[2], x.shape[3], kernel), mode=mode)


class _AvgPoolSameOnnx(torch.autograd.Function):
    """:func:`avg_pool_same` in ONNX export: one ``AveragePool`` with ``auto_pad=SAME_UPPER`` (TF's "SAME": the extra
    pad at the end) and ``count_include_pad=0``, for a fixed or a dynamic input size at every opset."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        height, width = _traced_hw(x)
        pads = _same_pads(height, width, 3)
        ones = torch.ones(1, 1, height, width, dtype=x.dtype, device=x.device)
        return F.avg_pool2d(F.pad(x, pads), 3, 2) / F.avg_pool2d(F.pad(ones, pads), 3, 2)

    @staticmethod
    def symbolic(g, x):
        return g.op(
            "AveragePool", x, kernel_shape_i=[3, 3], strides_i=[2, 2], auto_pad_s="SAME_UPPER", count_include_pad_i=0
        )


@torch.jit.unused
def _avg_pool_same_onnx(x: Tensor) -> Tensor:
    return _AvgPoolSameOnnx.apply(x)


def avg_pool_same(x: Tensor) -> Tensor:
    """A 3x3 stride-2 average pool with TF "SAME" padding: the pads are not counted (TF divides by the number of valid
    pixels under the window, as PyTorch's ``count_include_pad=False``), here by pooling a padded map of ones.

    A leaf of torch.fx graphs; in ONNX export, one ``AveragePool`` node (:class:`_AvgPoolSameOnnx`).
    """
    if not torch.jit.is_scripting():  # noqa: SIM102 - nested for TorchScript, as in pad_same
        if torch.onnx.is_in_onnx_export():
            return _avg_pool_same_onnx(x)
    ones = torch.ones_like(x[:1, :1])
    return F.avg_pool2d(pad_same(x, 3), 3, 2) / F.avg_pool2d(pad_same(ones, 3), 3, 2)


# leaves of torch.fx traces (symbolic_trace, create_feature_extractor, prepare_fx): their size arithmetic runs when
# the graph runs, and FX quantization keeps them in float
torch.fx.wrap("pad_same")
torch.fx.wrap("avg_pool_same")


class SamePad(nn.Module):
    """:func:`pad_same` as a layer, before a stride-2 op with padding 0."""

    def __init__(self, kernel: int, mode: str = "constant") -> None:
        super().__init__()
        self.kernel = kernel
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        return pad_same(x, self.kernel, self.mode)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, mode={self.mode!r}"


class AvgPoolSame(nn.Module):
    """3x3 stride-2 average pool, TF "SAME" padding not counted (:func:`avg_pool_same`)."""

    def forward(self, x: Tensor) -> Tensor:
        return avg_pool_same(x)


def max_pool_3x3_same(stride: int) -> nn.Module:
    """TF's max_pool 3x3 SAME: at stride 1 PyTorch's own (symmetric) padding; at stride 2 a replicate pad, then an
    unpadded pool (see :func:`pad_same`)."""
    if stride == 1:
        return nn.MaxPool2d(3, 1, padding=1)
    return nn.Sequential(SamePad(3, "replicate"), nn.MaxPool2d(3, 2))


def avg_pool_3x3_same(stride: int) -> nn.Module:
    """TF's avg_pool 3x3 SAME, pads not counted; at stride 1 the padding is symmetric, as PyTorch's."""
    return nn.AvgPool2d(3, 1, padding=1, count_include_pad=False) if stride == 1 else AvgPoolSame()


__all__ = ["AvgPoolSame", "SamePad", "avg_pool_3x3_same", "avg_pool_same", "max_pool_3x3_same", "pad_same"]
