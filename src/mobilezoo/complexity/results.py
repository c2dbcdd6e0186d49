"""What a profile reports: per-layer rows (:class:`LayerProfile`), totals (:class:`Profile`) and their conventions.

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

from dataclasses import dataclass, field
from typing import Any

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
