"""Per-layer complexity of a network: params, multiply-adds, other ops, memory access cost and activation memory.

One forward pass in ``eval()`` + ``torch.inference_mode()`` runs under a ``TorchDispatchMode`` that sees every aten op
and charges it to the innermost module being run (forward pre/post hooks keep a stack of module names). Ops a module
runs itself (a residual add, the SE multiply, a concat, a channel shuffle) are charged to that module, so its row holds
only its own work, and the rows sum to the totals exactly.

Conventions (also in ``Profile.to_dict()["conventions"]``):

* **MAdds** (multiply-adds, the papers' "FLOPs" and "MACs"): convolutions and matrix products only, from
  ``torch.utils.flop_counter``'s formulas (Cout·Cin/groups·k²·Hout·Wout for a conv, so grouped and depthwise convs
  and the SE 1x1 convs are counted), i.e. ``FlopCounterMode`` total / 2. Bias adds are not MAdds. Millions are 1e6.
  **FLOPs** are only ever reported as 2 x MAdds, under that name.
* **Other ops**, never mixed into MAdds, one per output element: batch norm (folds to one per-channel multiply-add),
  activations (ReLU, ReLU6, h-swish, h-sigmoid, sigmoid, each counted once however it is built), element-wise
  add/sub/mul/div (residual adds, the SE rescale), conv/linear bias adds; pooling counts its window (k² per output
  element; global/adaptive pooling and means one per input element). Copies (concat, shuffle, split) are 0 ops.
  ``all_ops`` = MAdds + other ops.
* **MAC** (memory access cost, ShuffleNet V2 §2): per op, the elements of every tensor it reads (activations, weights,
  biases, BN statistics) plus every tensor it writes, assuming everything fits in cache. A bias-free 1x1 conv is
  h·w·(c1+c2) + c1·c2; a kxk depthwise conv with c channels is Hin·Win·c + Hout·Wout·c + k²·c. Views and
  reshapes that move no data are 0. Bytes use each tensor's dtype. Whole batch: weights are read once per batch.
* **Params**: every ``nn.Parameter`` (BN gamma/beta included, shared ones once), charged to the module owning it;
  modules never called in the forward still have a row (``called=False``) and are in the total.
* **Peak activation memory**: the maximum over the forward of the bytes of live activation storages (the input
  included, weights and buffers excluded), tracked by allocating ops' outputs and weakref finalizers on every tensor
  referring to them. Kernel workspaces (im2col, oneDNN scratch) and allocator overhead are not seen.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

CONVENTIONS = {
    "madds": "multiply-adds of convolutions and matrix products (grouped/depthwise and SE 1x1 convs included) = "
    "torch.utils.flop_counter.FlopCounterMode total / 2; the papers' 'FLOPs'/'MACs'; BN, activations, pooling, "
    "element-wise ops and bias adds excluded",
    "flops": "2 x MAdds (reported only under this name)",
    "millions": "1e6 (not 2**20)",
    "other_ops": "one op per output element of BN (a folded per-channel multiply-add), activations, element-wise "
    "add/sub/mul/div and bias adds; pooling counts its window (k*k per output, global pooling one per input element); "
    "copies (concat, shuffle, split) 0; never included in MAdds",
    "all_ops": "MAdds + other ops",
    "mac": "memory access cost (ShuffleNet V2): per op, elements read (activations, weights, biases, BN statistics) "
    "plus elements written, infinite cache; views move nothing; bytes from the tensor dtype; weights read once per batch",
    "params": "every nn.Parameter once, BN gamma/beta included; params of modules never called are counted "
    "(see params_not_called)",
    "peak_activation_bytes": "max over the forward of live activation storage bytes (input included, weights and "
    "buffers excluded), tracked per allocating op with weakref finalizers; kernel workspaces not seen",
    "rows": "one per module: its own ops (leaf layers; functional ops of a container such as a residual add), the "
    "parameters it owns; rows sum exactly to the totals",
}

_ARITHMETIC = {"add", "sub", "rsub", "mul", "div"}
# not every activation carries torch.Tag.pointwise (hardswish, hardsigmoid, silu do not)
_ACTIVATIONS = {"relu", "relu6", "hardtanh", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "tanh", "elu",
                "leaky_relu", "mish", "softplus", "clamp", "clamp_min", "clamp_max", "threshold", "prelu"}  # fmt: skip
_NOT_OPS = {"copy", "clone", "_to_copy", "fill", "zero", "zeros_like", "ones_like", "empty_like", "lift_fresh"}
_WINDOW_POOLS = {"max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "max_pool1d", "avg_pool1d"}
_GLOBAL_REDUCTIONS = {"adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "sum", "amax"}
_BIASED = {"convolution", "_convolution", "addmm"}
OTHER_OP_KINDS = ("norm", "activation", "elementwise", "bias", "pooling")


@dataclass(frozen=True)
class LayerProfile:
    """One module's own work. Shapes are of the first tensor in/out of its first call; ``output_bytes`` of all calls."""

    name: str  # qualified module name, "" for the model itself
    type: str
    called: bool
    calls: int
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    params: int
    madds: int
    other_ops: int
    mac: int
    mac_bytes: int
    output_bytes: int
    ops: tuple[str, ...]  # the aten ops charged to this row, e.g. ("convolution",)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "called": self.called,
            "calls": self.calls,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "output_shape": list(self.output_shape) if self.output_shape else None,
            "params": self.params,
            "madds": self.madds,
            "other_ops": self.other_ops,
            "mac": self.mac,
            "mac_bytes": self.mac_bytes,
            "output_bytes": self.output_bytes,
            "ops": list(self.ops),
        }


@dataclass(frozen=True)
class Profile:
    """Totals and per-layer rows of one forward pass; see the module docstring for the counting conventions."""

    model: str
    input_shape: tuple[int, int, int, int]
    dtype: str
    device: str
    params: int
    params_not_called: int
    param_bytes: int
    madds: int
    other_ops: dict[str, int]  # by kind: norm, activation, elementwise, bias, pooling
    mac: int
    mac_bytes: int
    input_bytes: int
    output_bytes: int
    peak_activation_bytes: int
    layers: tuple[LayerProfile, ...]
    op_counts: dict[str, int] = field(default_factory=dict)  # aten op -> calls

    @property
    def flops(self) -> int:
        """2 x MAdds: a multiply-add is two floating-point operations."""
        return 2 * self.madds

    @property
    def all_ops(self) -> int:
        return self.madds + sum(self.other_ops.values())

    @property
    def madds_m(self) -> float:
        return self.madds / 1e6

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    def madds_of(self, *types: str, exclude: bool = False) -> int:
        """MAdds of the rows whose module type is (``exclude=False``) or is not (``exclude=True``) one of ``types``."""
        return sum(r.madds for r in self.layers if (r.type in types) != exclude)

    def to_dict(self, per_layer: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "device": self.device,
            "params": self.params,
            "params_not_called": self.params_not_called,
            "param_bytes": self.param_bytes,
            "madds": self.madds,
            "madds_m": self.madds_m,
            "flops_2x_madds": self.flops,
            "other_ops": dict(self.other_ops),
            "all_ops": self.all_ops,
            "mac": self.mac,
            "mac_bytes": self.mac_bytes,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            "op_counts": dict(self.op_counts),
            "conventions": dict(CONVENTIONS),
        }
        if per_layer:
            out["layers"] = [r.to_dict() for r in self.layers]
        return out


def _tensors(obj: Any) -> list[Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, Tensor)]


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _storage_key(t: Tensor) -> int:
    return t.untyped_storage()._cdata


class _Row:
    __slots__ = ("calls", "in_shape", "mac", "mac_bytes", "madds", "ops", "other", "out_bytes", "out_shape")

    def __init__(self) -> None:
        self.calls = self.madds = self.other = self.mac = self.mac_bytes = self.out_bytes = 0
        self.in_shape: tuple[int, ...] | None = None
        self.out_shape: tuple[int, ...] | None = None
        self.ops: dict[str, None] = {}  # ordered set


class _Counter(TorchDispatchMode):
    """Charges every aten op to ``stack[-1]``; tracks live activation storages for the peak."""

    def __init__(self, rows: dict[str, _Row]) -> None:
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
        ins = _tensors((args, kwargs))
        outs = _tensors(out)
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
                    mac_bytes += _nbytes(t)
            written = outs[:1] if kind == "norm" else outs  # BN's saved mean/invstd are empty or unused in eval
            mac += sum(o.numel() for o in written)
            mac_bytes += sum(_nbytes(o) for o in written)

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


def _model_name(model: nn.Module) -> str:
    return str(getattr(model, "model_name", type(model).__name__))


def _in_chans(model: nn.Module) -> int:
    chans = getattr(model, "in_chans", None)
    if isinstance(chans, int):
        return chans
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError(f"cannot tell the input channels of {type(model).__name__}: give it an int attribute in_chans")


def _check_resolution(resolution: int | Sequence[int], min_size: int) -> tuple[int, int]:
    size = (resolution, resolution) if isinstance(resolution, int) else resolution
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise ValueError(f"resolution must be an int or an (H, W) pair of ints, got {resolution!r}")
    if min(size) < min_size:
        raise ValueError(f"resolution {resolution!r} is too small: this network needs at least {min_size}x{min_size}")
    return tuple(size)  # type: ignore[return-value]


def profile(
    model_or_name: nn.Module | str,
    *,
    resolution: int | Sequence[int] = 224,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    **model_kwargs: Any,
) -> Profile:
    """Profile one forward pass of a model (an ``nn.Module`` or a registered name built with ``model_kwargs``).

    ``resolution`` is an int or (H, W). A registered name is built on ``device``, by default ``meta``: every count here
    depends on shapes and dtypes only, so the meta device gives the same numbers (tested) without computing or
    allocating anything (VGG-16 is built and profiled in a blink). Pass ``device="cpu"`` to run it for real. A module
    runs where its parameters are, or is moved to ``device``. Its train/eval mode is restored afterwards.
    """
    from mobilezoo.registry import create_model

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(model_or_name, str):
        with torch.device(device if device is not None else "meta"):
            try:
                model = create_model(model_or_name, **model_kwargs)
            except TypeError as e:  # a builder given a keyword it does not take
                raise ValueError(f"model {model_or_name!r} does not accept {sorted(model_kwargs)}: {e}") from None
    elif isinstance(model_or_name, nn.Module):
        if model_kwargs:
            raise ValueError(f"model kwargs {sorted(model_kwargs)} only apply to a registered name, not a module")
        model = model_or_name
        if device is not None:
            model = model.to(device)
    else:
        raise ValueError(f"expected an nn.Module or a registered model name, got {type(model_or_name).__name__}")
    size = _check_resolution(resolution, getattr(model, "min_input_size", 1))
    first = next(iter(model.parameters()), None)
    dtype = first.dtype if first is not None else torch.get_default_dtype()
    dev = first.device if first is not None else torch.device(device or "cpu")
    x = torch.randn(batch_size, _in_chans(model), *size, dtype=dtype, device=dev)

    names = {id(m): n for n, m in model.named_modules()}
    rows: dict[str, _Row] = {n: _Row() for n in names.values()}
    counter = _Counter(rows)

    def pre_hook(module: nn.Module, inputs: Any) -> None:
        name = names[id(module)]
        row = rows[name]
        if row.calls == 0:
            ts = _tensors(inputs)
            row.in_shape = tuple(ts[0].shape) if ts else None
        row.calls += 1
        counter.stack.append(name)

    def post_hook(module: nn.Module, inputs: Any, output: Any) -> None:
        name = counter.stack.pop()
        row = rows[name]
        ts = _tensors(output)
        if row.out_shape is None and ts:
            row.out_shape = tuple(ts[0].shape)
        row.out_bytes += sum(_nbytes(t) for t in ts)

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre_hook))
        handles.append(m.register_forward_hook(post_hook, always_call=True))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            x = x.clone()  # an inference tensor, tracked as live from the start
            counter.track(x)
            with counter:
                y = model(x)
        output_bytes = sum(_nbytes(t) for t in _tensors(y))
        del y
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
        for f in counter.finalizers:
            f.detach()

    owned: Counter[str] = Counter()
    param_bytes = 0
    for pname, p in model.named_parameters():
        owned[pname.rpartition(".")[0]] += p.numel()
        param_bytes += _nbytes(p)
    modules = dict(model.named_modules())
    layers = []
    for name, row in rows.items():
        is_leaf = next(iter(modules[name].children()), None) is None
        if not (row.calls and (is_leaf or row.ops)) and not owned[name]:
            continue
        layers.append(
            LayerProfile(
                name=name,
                type=type(modules[name]).__name__,
                called=row.calls > 0,
                calls=row.calls,
                input_shape=row.in_shape,
                output_shape=row.out_shape,
                params=owned[name],
                madds=row.madds,
                other_ops=row.other,
                mac=row.mac,
                mac_bytes=row.mac_bytes,
                output_bytes=row.out_bytes,
                ops=tuple(row.ops),
            )
        )
    totals = counter.totals
    return Profile(
        model=_model_name(model),
        input_shape=(batch_size, x.shape[1], *size),  # type: ignore[arg-type]
        dtype=str(dtype).removeprefix("torch."),
        device=str(dev),
        params=sum(p.numel() for p in model.parameters()),
        params_not_called=sum(r.params for r in layers if not r.called),
        param_bytes=param_bytes,
        madds=totals["madds"],
        other_ops={k: totals[k] for k in OTHER_OP_KINDS},
        mac=totals["mac"],
        mac_bytes=totals["mac_bytes"],
        input_bytes=_nbytes(x),
        output_bytes=output_bytes,
        peak_activation_bytes=counter.peak,
        layers=tuple(layers),
        op_counts=dict(counter.op_counts),
    )
