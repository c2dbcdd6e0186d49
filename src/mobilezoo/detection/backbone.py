"""Any registered model as a detection backbone: named multi-scale maps for ``torchvision.models.detection``.

:class:`DetectionBackbone` is built only from what a model declares, ``create_model(..., features_only=True)`` and its
``feature_info`` (channels, stride, trunk module), never from hand-typed channel lists: the mistake behind wrong taps in
other toolkits (torchvision's MobileNetV3 FPN fed two stride-32 maps; hand-typed ShuffleNetV2 channels that crash).
At construction the declared channels and strides are checked against real tensors (two small forwards: a stride is
what a map grows by when the input grows by the largest stride), and strides must strictly increase.

Optional taps:

* ``expansion_tap=True`` (MobileNetV2/V3): the stride-16 map becomes the output of the 1x1 expansion conv of the first
  block of the last stage (MobileNetV2 paper section 6.2, "the expansion of layer 15"; torchvision's SSDLite C4), e.g.
  576 channels for ``mobilenet_v2`` instead of the 96 of ``features.13``.
* ``reduced_tail=True`` (MobileNetV3) is a model option (``create_model(..., reduced_tail=True)``), passed through
  ``model_kwargs``: the last stage and the last conv at half width, as in the paper's detection setting.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from mobilezoo.models.base import FeatureExtractor, FeatureInfo


class DetectionBackbone(nn.Module):
    """A registered model's feature maps as an ``OrderedDict[str, Tensor]`` (keys ``"0"``, ``"1"``, ... from fine to
    coarse), with ``out_channels`` (list of ints) and ``strides`` (list of ints, strictly increasing).

    ``model``: a registered name. ``out_indices``: indices into the model's ``feature_info`` (None: every map with
    stride >= ``min_stride``, the deepest map of each stride). ``expansion_tap``: see the module docstring; the
    stride-16 tap is then the expansion conv of the last stage's first block (MobileNetV2/V3 only).
    ``model_kwargs`` go to :func:`mobilezoo.create_model` (``in_chans``, ``width_mult``, ``reduced_tail``, ...).

    Raises ``ValueError`` for an unknown model, bad indices, strides that do not strictly increase, an expansion tap on
    a model without one, or declared channels/strides that differ from the real tensors.
    """

    def __init__(
        self,
        model: str,
        *,
        out_indices: tuple[int, ...] | None = None,
        min_stride: int = 8,
        expansion_tap: bool = False,
        **model_kwargs: Any,
    ) -> None:
        super().__init__()
        from mobilezoo.registry import create_model

        if not isinstance(min_stride, int) or isinstance(min_stride, bool) or min_stride < 1:
            raise ValueError(f"min_stride must be an integer >= 1, got {min_stride!r}")
        if "num_classes" in model_kwargs or "features_only" in model_kwargs:
            raise ValueError("a detection backbone has no classifier: do not pass num_classes or features_only")
        net = create_model(model, **model_kwargs)
        full_info: list[FeatureInfo] = list(net.feature_info)
        if out_indices is None:
            by_stride = {info.reduction: i for i, info in enumerate(full_info) if info.reduction >= min_stride}
            if not by_stride:
                strides = sorted({i.reduction for i in full_info})
                raise ValueError(f"{model} has no feature map with stride >= {min_stride}; its strides are {strides}")
            out_indices = tuple(sorted(by_stride.values()))
        features = FeatureExtractor(net, out_indices)  # what create_model(..., features_only=True) returns
        strides = [info.reduction for info in features.feature_info]
        if any(b <= a for a, b in itertools.pairwise(strides)):
            raise ValueError(
                f"out_indices {out_indices!r} of {model} give strides {strides}: they must strictly increase"
            )
        self.model_name = model
        self.features = features
        self.in_chans = features.in_chans
        self.min_input_size = features.min_input_size
        self.out_channels: list[int] = [info.num_chs for info in features.feature_info]
        self.strides: list[int] = strides
        self.tap_modules: list[str] = [info.module for info in features.feature_info]
        self._expansion: tuple[int, nn.Module, nn.Module] | None = None
        if expansion_tap:
            self._set_expansion_tap(full_info)
        self.validate()

    def _set_expansion_tap(self, full_info: list[FeatureInfo]) -> None:
        """Replace the stride-16 tap by the expansion conv of the first block of the last stage."""
        if len(full_info) < 2:
            raise ValueError(f"{self.model_name} has a single stage: no expansion tap")
        before = full_info[-2]  # the last map before the last stage (the module ahead of its first, strided block)
        names = self.features.module_names
        if before.module not in names or names.index(before.module) + 1 >= len(names):
            raise ValueError(
                f"expansion_tap needs the last stage of {self.model_name}: include its last feature map in out_indices"
            )
        pos = names.index(before.module) + 1
        expand, rest = _split_expansion(self.features.stages[pos])
        if expand is None:
            raise ValueError(
                f"{self.model_name} has no 1x1 expansion conv at the start of its last stage ({names[pos]}): "
                "expansion_tap is for MobileNetV2/V3"
            )
        channels = _out_channels(expand)
        if before.reduction in self.strides:  # the expansion map replaces the plain map of the same stride
            i = self.strides.index(before.reduction)
            self.features.taps[names.index(self.tap_modules[i])] = False
            del self.strides[i], self.out_channels[i], self.tap_modules[i]
        i = sum(s < before.reduction for s in self.strides)
        self.strides.insert(i, before.reduction)
        self.out_channels.insert(i, channels)
        self.tap_modules.insert(i, f"{names[pos]}:expansion")
        # a plain tuple, not submodules: they are the trunk block's own modules (state_dict keys stay the model's)
        self._expansion = (pos, expand, rest)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """(N, in_chans, H, W) -> OrderedDict of (N, out_channels[i], ~H / strides[i], ~W / strides[i]) maps."""
        maps: list[Tensor] = []
        ext = self.features
        if self._expansion is None:
            maps = ext(x)
        else:
            from mobilezoo.layers import check_input

            check_input(x, ext.in_chans, ext.min_input_size)
            pos, expand, rest = self._expansion
            for i, module in enumerate(ext.stages):
                if i == pos:
                    x = expand(x)
                    maps.append(x)
                    x = rest(x)
                else:
                    x = module(x)
                if ext.taps[i]:
                    maps.append(x)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))

    @torch.no_grad()
    def validate(self, size: int | None = None) -> None:
        """Check the declared channels and strides against real tensors; raise ``ValueError`` on any difference.

        Two forwards in eval mode (the training flag is restored): at ``size`` (default twice the largest stride, at
        least ``min_input_size``) and at ``size`` + the largest stride; each map must have the declared channels and
        grow by exactly ``largest stride / stride``.
        """
        step = self.strides[-1]
        size = size or max(2 * step, -(-self.min_input_size // step) * step)
        was_training = self.training
        self.eval()
        try:
            small = self(torch.zeros(1, self.in_chans, size, size))
            big = self(torch.zeros(1, self.in_chans, size + step, size + step))
        finally:
            self.train(was_training)
        for (key, a), b, chans, stride, tap in zip(
            small.items(), big.values(), self.out_channels, self.strides, self.tap_modules
        ):
            if a.shape[1] != chans or b.shape[1] != chans:
                raise ValueError(f"{self.model_name} map {key} ({tap}) has {a.shape[1]} channels, declared {chans}")
            if b.shape[2] - a.shape[2] != step // stride or b.shape[3] - a.shape[3] != step // stride:
                raise ValueError(
                    f"{self.model_name} map {key} ({tap}) grows {b.shape[2] - a.shape[2]} px per {step} input px: its "
                    f"stride is not the declared {stride}"
                )
        if len(small) != len(self.strides):
            raise ValueError(f"{self.model_name} gives {len(small)} maps, declared {len(self.strides)}")


def _split_expansion(block: nn.Module) -> tuple[nn.Module | None, nn.Module | None]:
    """(expansion conv, rest of the block) of a MobileNetV2 (``conv``) / V3 (``block``) inverted residual without a
    residual connection; (None, None) for anything else."""
    seq = getattr(block, "conv", None)
    if not isinstance(seq, nn.Sequential):
        seq = getattr(block, "block", None)
    if not isinstance(seq, nn.Sequential) or getattr(block, "use_res_connect", True) or len(seq) < 2:
        return None, None
    first = seq[0]
    conv = first[0] if isinstance(first, nn.Sequential) and len(first) else first
    if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1) or conv.groups != 1:
        return None, None
    return first, seq[1:]


def _out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


__all__ = ["DetectionBackbone"]
