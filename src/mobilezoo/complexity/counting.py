"""The op accounting of the profiler: a ``TorchDispatchMode`` that charges every aten op to a module's row.

For each op it counts MAdds (``torch.utils.flop_counter``'s formulas), the other ops by kind, and the memory access
cost, and it tracks the live activation storages for the peak; the conventions are in
:mod:`mobilezoo.complexity.results`.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

_ARITHMETIC = {"add", "sub", "rsub", "mul", "div"}
# not every activation carries torch.Tag.pointwise (hardswish, hardsigmoid, silu do not)
_ACTIVATIONS = {"relu", "relu6", "hardtanh", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "tanh", "elu",
                "leaky_relu", "mish", "softplus", "clamp", "clamp_min", "clamp_max", "threshold", "prelu"}  # fmt: skip
_NOT_OPS = {"copy", "clone", "_to_copy", "fill", "zero", "zeros_like", "ones_like", "empty_like", "lift_fresh"}
_WINDOW_POOLS = {"max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "max_pool1d", "avg_pool1d"}
_GLOBAL_REDUCTIONS = {"adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "sum", "amax"}
_BIASED = {"convolution", "_convolution", "addmm"}
OTHER_OP_KINDS = ("norm", "activation", "elementwise", "bias", "pooling")


def tensors(obj: Any) -> list[Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, Tensor)]


def nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _storage_key(t: Tensor) -> int:
    return t.untyped_storage()._cdata


class Row:
    __slots__ = ("calls", "in_shape", "mac", "mac_bytes", "madds", "ops", "other", "out_bytes", "out_shape")

    def __init__(self) -> None:
        self.calls = self.madds = self.other = self.mac = self.mac_bytes = self.out_bytes = 0
        self.in_shape: tuple[int, ...] | None = None
        self.out_shape: tuple[int, ...] | None = None
        self.ops: dict[str, None] = {}  # ordered set


class OpCounter(TorchDispatchMode):
    """Charges every aten op to ``stack[-1]``; tracks live activation storages for the peak."""

    def __init__(self, rows: dict[str, Row]) -> None:
        super().__init__()
        self.rows = rows
        self.stack: list[str] = [""]
        self.totals: Counter[str] = Counter()
        self.op_counts: Counter[str] = Counter()
        self.live: dict[int, list[int]] = {}  # storage key -> [bytes, live tensor refs]
        self.current = self.peak = 0
        self.finalizers: list[weakref.finalize] = []

    # -- activation memory --
    def track(self, t: Tensor, inputs: Sequence[Tensor] = ()) -> None:
        if t.numel() == 0:
            return
        key = _storage_key(t)
        entry = self.live.get(key)
        if entry is None:
            if any(_storage_key(i) == key for i in inputs if i.numel()):
                return  # a view of an untracked storage (a parameter or buffer)
            entry = self.live[key] = [t.untyped_storage().nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        self.finalizers.append(weakref.finalize(t, self._release, key))

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.current -= entry[0]
                del self.live[key]

    # -- op accounting --
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # decompose composite ops as FlopCounterMode does, so both see the same primitive ops
        if func is not torch.ops.prim.device.default:
            with self:
                r = func.decompose(*args, **kwargs)
                if r is not NotImplemented:
                    return r
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        name = packet.__name__
        ins = tensors((args, kwargs))
        outs = tensors(out)
        mutable = func._schema.is_mutable

        madds = 0
        if packet in flop_registry:
            madds = flop_registry[packet](*args, **kwargs, out_val=out) // 2
        kind, ops = _other_ops(name, func, args, ins, outs)

        mac = mac_bytes = 0
        in_keys = {_storage_key(i) for i in ins if i.numel()}
        aliasing = not mutable and all(_storage_key(o) in in_keys for o in outs if o.numel())
        if not (func.is_view or aliasing or name.startswith("empty")):
            seen: set[int] = set()
            for t in ins:  # a tensor passed twice is read once
                if id(t) not in seen:
                    seen.add(id(t))
                    mac += t.numel()
                    mac_bytes += nbytes(t)
            written = outs[:1] if kind == "norm" else outs  # BN's saved mean/invstd are empty or unused in eval
            mac += sum(o.numel() for o in written)
            mac_bytes += sum(nbytes(o) for o in written)

        row = self.rows[self.stack[-1]]
        row.madds += madds
        row.other += ops
        row.mac += mac
        row.mac_bytes += mac_bytes
        if madds or ops or mac:
            row.ops[name] = None
        self.totals["madds"] += madds
        self.totals["mac"] += mac
        self.totals["mac_bytes"] += mac_bytes
        if kind:
            self.totals[kind] += ops
        self.op_counts[str(func)] += 1
        for o in outs[:1] if kind == "norm" else outs:
            self.track(o, ins)
        return out


def _other_ops(name: str, func: Any, args: Any, ins: list[Tensor], outs: list[Tensor]) -> tuple[str | None, int]:
    """The kind and count of the non-MAdd ops of one aten op (see CONVENTIONS["other_ops"])."""
    base = name.rstrip("_")
    out_numel = outs[0].numel() if outs else 0
    if base in _BIASED:
        bias = args[2] if base != "addmm" else args[0]
        return ("bias", out_numel) if isinstance(bias, Tensor) else (None, 0)
    if "batch_norm" in base or base in {"layer_norm", "group_norm", "instance_norm", "native_layer_norm"}:
        return "norm", out_numel
    if base in _WINDOW_POOLS:
        kernel = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        k = 1
        for v in kernel if len(kernel) > 1 else kernel * (ins[0].dim() - 2):
            k *= int(v)
        return "pooling", k * out_numel
    if base in _GLOBAL_REDUCTIONS:
        return "pooling", ins[0].numel()
    if base in _ACTIVATIONS or (torch.Tag.pointwise in func.tags and base not in _NOT_OPS):
        return ("elementwise" if base in _ARITHMETIC else "activation"), out_numel
    return None, 0
