"""Building blocks shared by every family: conv-norm-act, squeeze-excite, activations, channel shuffle.

Module names follow torchvision (`Conv2dNormActivation` is a Sequential of conv/norm/act at indices 0/1/2,
`SqueezeExcitation` has `fc1`/`fc2`) so that models built from these blocks share torchvision's state_dict keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "hswish": lambda: nn.Hardswish(inplace=True),
    "hsigmoid": lambda: nn.Hardsigmoid(inplace=True),
    "sigmoid": nn.Sigmoid,
}


def get_act(name: str | None) -> nn.Module:
    """An activation module by name (``relu``, ``relu6``, ``hswish``, ``hsigmoid``, ``sigmoid``); None gives Identity."""
    if name is None:
        return nn.Identity()
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going below 90% of it.

    This is the TF/torchvision ``_make_divisible`` rule of MobileNet V2/V3: round half up to a multiple of
    ``divisor`` (at least ``min_value``, default ``divisor``), then add ``divisor`` if that lost more than 10%.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvNormAct(nn.Sequential):
    """Conv2d, then BatchNorm (unless ``norm=False``), then an activation (none when ``act=None``).

    Padding keeps the spatial size at stride 1 (``(kernel - 1) // 2``). The conv has no bias when a norm follows.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
        norm: bool = True,
        bias: bool | None = None,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_chs,
                out_chs,
                kernel_size,
                stride=stride,
                padding=(kernel_size - 1) // 2,
                groups=groups,
                bias=(not norm) if bias is None else bias,
            )
        ]
        if norm:
            layers.append(nn.BatchNorm2d(out_chs, eps=bn_eps, momentum=bn_momentum))
        if act is not None:
            layers.append(get_act(act))
        super().__init__(*layers)
        self.out_channels = out_chs


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with biased 1x1 convs: pool, fc1 + ``act``, fc2 + ``gate``, rescale the input."""

    def __init__(self, chs: int, squeeze_chs: int, act: str = "relu", gate: str = "hsigmoid") -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(chs, squeeze_chs, 1)
        self.fc2 = nn.Conv2d(squeeze_chs, chs, 1)
        self.activation = get_act(act)
        self.scale_activation = get_act(gate)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * scale


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle: view channels as (groups, C/groups), transpose, flatten.

    For 6 channels in 2 groups the output order is 0, 3, 1, 4, 2, 5. Eager and scripted code reshapes with ``-1`` for
    the batch. Traced code (the ONNX export) gathers the channels with a constant permutation instead: one ``Gather``
    rather than the ``Shape``/``Gather``/``Div``/``Reshape``/``Transpose`` chain that a traced reshape of a dynamic
    batch becomes, which ONNX Runtime ran 10% slower (ShuffleNet V2, fp32, batch 1) and kept in float in int8 graphs.
    """
    if torch.jit.is_tracing():
        channels = int(x.shape[1])
        order = torch.arange(channels).view(groups, channels // groups).t().reshape(-1)
        return x.index_select(1, order)
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    x = x.reshape(-1, groups, channels // groups, height, width)
    return x.transpose(1, 2).reshape(-1, channels, height, width)


class ChannelShuffle(nn.Module):
    """:func:`channel_shuffle` as a layer (no parameters)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


@torch.fx.has_side_effect  # a graph's dead-code elimination keeps the check although nothing uses its result
def check_input(x: Tensor, in_chans: int, min_size: int) -> None:
    """Raise a ValueError naming the shape when ``x`` is not an (N, in_chans, H, W) batch of at least min_size.

    The comparisons are Python control flow on the shape: eager mode, TorchScript, ``torch.export`` and
    ``torch.compile`` run them (the last two as guards on the shape). ``torch.fx`` symbolic tracing cannot (its
    shapes are ``Proxy`` objects), so a module calling this function registers it with ``torch.fx.wrap("check_input")``
    at module level: a traced graph then holds one ``check_input`` call, which raises the same errors.
    """
    if x.dim() != 4:
        raise ValueError(f"expected a 4-d (N, C, H, W) input, got {x.dim()} dimensions")
    if x.shape[1] != in_chans:
        raise ValueError(f"expected {in_chans} input channels, got {x.shape[1]}")
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            f"input {x.shape[2]}x{x.shape[3]} is too small: this network needs at least {min_size}x{min_size}"
        )


def init_weights(model: nn.Module) -> None:
    """torchvision's MobileNet init: kaiming-normal (fan_out) convs, unit BN, N(0, 0.01) linear, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


__all__ = [
    "ACTIVATIONS",
    "ChannelShuffle",
    "ConvNormAct",
    "SqueezeExcite",
    "channel_shuffle",
    "check_input",
    "get_act",
    "init_weights",
    "make_divisible",
]


# ------------------------------------------------------------------------ TensorFlow "SAME" padding (padding="tf")


from mobilezoo.models.tf_same import pad_same as _tf_pad_same  # noqa: E402 - the one TF "SAME" implementation

# a leaf of torch.fx graphs here too (torch.fx.wrap patches the calling module's globals)
torch.fx.wrap("_tf_pad_same")


class Conv2dSame(nn.Conv2d):
    """A stride-2 ``nn.Conv2d`` with TensorFlow's "SAME" padding, computed from each input's size: an even side gets
    its extra pixel on the bottom/right (:func:`mobilezoo.models.tf_same.pad_same`, exact in torch.fx, TorchScript
    and ONNX export at a fixed or dynamic size). Parameters and state_dict keys are an ``nn.Conv2d``'s."""

    def forward(self, x: Tensor) -> Tensor:
        x = _tf_pad_same(x, self.kernel_size[0])
        return nn.functional.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


PADDINGS = ("symmetric", "tf")


def use_tf_padding(module: nn.Module) -> None:
    """Give every conv of ``module`` TensorFlow's "SAME" padding, as the TF-trained checkpoints (timm's ``tf_*``) need.

    Only a conv whose symmetric ``(k - 1) // 2`` padding differs from TF's somewhere is replaced (in place, weights
    kept) by a :class:`Conv2dSame`: those with stride 2 and a kernel > 1. At stride 1 an odd kernel pads (k - 1) / 2
    on each side in both conventions, and a 1x1 conv pads nothing in either; an even kernel, another stride or a conv
    built with another padding raises a ValueError naming it.
    """
    for parent_name, parent in list(module.named_modules()):
        for name, conv in list(parent.named_children()):
            if type(conv) is not nn.Conv2d:
                continue
            where = f"{parent_name}.{name}".lstrip(".")
            symmetric = tuple((k - 1) * d // 2 for k, d in zip(conv.kernel_size, conv.dilation))
            if any(k % 2 == 0 for k in conv.kernel_size) or conv.padding != symmetric:
                raise ValueError(
                    f"conv {where!r} (kernel {conv.kernel_size}, padding {conv.padding}) has no TF 'SAME' equivalent "
                    "here: expected an odd kernel with padding (k - 1) // 2"
                )
            if all(s == 1 for s in conv.stride) or conv.kernel_size == (1, 1):  # TF pads these as PyTorch does
                continue
            if conv.stride != (2, 2) or conv.dilation != (1, 1) or conv.kernel_size[0] != conv.kernel_size[1]:
                raise ValueError(
                    f"conv {where!r} (kernel {conv.kernel_size}, stride {conv.stride}, dilation {conv.dilation}): TF "
                    "'SAME' padding is implemented for square kernels at stride 2 without dilation"
                )
            same = Conv2dSame(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                conv.stride,
                0,
                conv.dilation,
                conv.groups,
                conv.bias is not None,
                device=conv.weight.device,
                dtype=conv.weight.dtype,
            )
            same.load_state_dict(conv.state_dict())
            setattr(parent, name, same)


def set_bn_eps(module: nn.Module, eps: float) -> None:
    """Set the epsilon of every BatchNorm in ``module`` (TF's checkpoints: 1e-3; PyTorch's default: 1e-5)."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise ValueError(f"bn_eps must be a number > 0, got {eps!r}")
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = float(eps)


__all__ += ["PADDINGS", "Conv2dSame", "set_bn_eps", "use_tf_padding"]
