"""NASNet-A Mobile (4 @ 1056): Zoph et al., "Learning Transferable Architectures for Scalable Image Recognition"
(arXiv:1707.07012v4, CVPR 2018), Table 3 (mobile setting) and the NASNet-A cells of Fig. 4.

The paper draws the cells but not the network's plumbing; that comes from the official TF-slim definition
(tensorflow/models ``research/slim/nets/nasnet``: ``mobile_imagenet_config`` in nasnet.py, the cells and the
"adjust"/factorized-reduction paths in nasnet_utils.py), which this file follows:

- stem: conv0 3x3/2 with 32 filters and VALID padding (224 -> 111), BN, then two reduction cells ("stem cells") at
  1/4 and 1/2 of the cell width (111 -> 56 -> 28);
- three stacks of N = 4 normal cells of width F, 2F, 4F (F = 1056 / 24 = 44: a normal cell outputs 6 x its width,
  the last stack is 4F wide) with a reduction cell before the second and the third;
- every cell reads (its input h_i, the input of the cell before it h_{i-1}): TF-slim's mobile wiring
  (``skip_reduction_layer_input=0``), in which a reduction cell counts as a cell;
- every op is ReLU -> conv -> BN; a separable op is two stacked ReLU -> depthwise -> pointwise -> BN layers (the first
  one strided); every strided op uses TensorFlow's "SAME" padding, which pads the right/bottom more than the left/top
  (:mod:`mobilezoo.models.tf_same`);
- head: ReLU, global average pool, dropout 0.5, FC; in training, an auxiliary head on the last cell of the second stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mobilezoo.models.base import (
    FeatureInfo,
    PooledFcModel,
    check_drop_rate,
    check_in_chans,
    check_num_classes,
    new_classifier,
)
from mobilezoo.models.tf_same import SamePad, avg_pool_3x3_same, max_pool_3x3_same
from mobilezoo.registry import register_model


@dataclass(frozen=True)
class NASNetConfig:
    """A NASNet ImageNet model as TF-slim's config names it: "N @ F" is ``cells_per_stack @ penultimate_filters``."""

    cells_per_stack: int  # N: normal cells between reductions (TF num_cells = 3N)
    penultimate_filters: int  # the last cell's output channels = 24 x the base cell width
    stem_filters: int  # conv0's filters (32 x stem_multiplier)
    aux_channels: tuple[int, int] = (128, 768)  # the auxiliary head's 1x1 projection and its map-sized conv

    @property
    def filters(self) -> int:
        """The base cell width F: the last stack is 4F wide and a normal cell concatenates 6 branches."""
        return self.penultimate_filters // 24


# Table 3, NASNet-A (4 @ 1056); TF-slim mobile_imagenet_config: num_cells=12, num_conv_filters=44, stem_multiplier=1,
# filter_scaling_rate=2, num_reduction_layers=2, dense_dropout_keep_prob=0.5, drop_path_keep_prob=1.0, use_aux_head=1.
NASNET_A_MOBILE = NASNetConfig(cells_per_stack=4, penultimate_filters=1056, stem_filters=32)

# TF-slim's nasnet_mobile_arg_scope: batch_norm_decay=0.9997 (PyTorch momentum = 1 - decay), batch_norm_epsilon=1e-3
BN_EPS = 1e-3
BN_MOMENTUM = 1 - 0.9997
# the auxiliary head's map-sized conv: TF-slim sizes its kernel to the map it sees, 4x4 at the native 224 px
# (cell_7's 14x14 map after the 5x5/3 VALID pool)
AUX_KERNEL = 4


class NASNetOutputs(NamedTuple):
    """What a model built with ``aux_logits=True`` returns in training mode (torchvision's Inception3 convention)."""

    logits: Tensor
    aux_logits: Tensor


# ------------------------------------------------------------------------------------------------------ the ops


def _bn(chs: int, bn: tuple[float, float]) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(chs, eps=bn[0], momentum=bn[1])


class ReLUConvBN(nn.Sequential):
    """ReLU -> 1x1 conv -> BN: TF-slim's "1x1"/"beginning_bn" (a cell's input) and "prev_1x1"/"prev_bn" (the adjust
    path of a previous output with the right size but another width)."""

    def __init__(self, in_chs: int, out_chs: int, bn: tuple[float, float]) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(in_chs, out_chs, 1, bias=False), _bn(out_chs, bn))


class SeparableStack(nn.Sequential):
    """TF-slim's "separable_kxk_2": twice ReLU -> depthwise kxk -> pointwise 1x1 -> BN. Only the first depthwise is
    strided (with TF "SAME" padding), and the first pointwise maps ``in_chs`` to ``out_chs`` (they differ only in the
    first stem cell, whose previous input is conv0's 32 channels)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, bn: tuple[float, float]) -> None:
        strided = stride == 2
        layers: list[nn.Module] = [nn.ReLU()]  # not in place: the branch input is shared with other branches
        if strided:
            layers.append(SamePad(kernel))
        layers += [
            nn.Conv2d(in_chs, in_chs, kernel, stride, padding=0 if strided else kernel // 2, groups=in_chs, bias=False),
            nn.Conv2d(in_chs, out_chs, 1, bias=False),
            _bn(out_chs, bn),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_chs, out_chs, kernel, padding=kernel // 2, groups=out_chs, bias=False),
            nn.Conv2d(out_chs, out_chs, 1, bias=False),
            _bn(out_chs, bn),
        ]
        super().__init__(*layers)


class FactorizedReduction(nn.Module):
    """TF-slim's ``factorized_reduction`` after a ReLU: the adjust path of a previous output twice the current size.

    Two 1x1 convs of ``out_chs / 2`` on the map subsampled by 2 (a 1x1 stride-2 average pool), the second on the map
    shifted by one pixel (padded right/bottom, first row and column dropped), concatenated. TF-slim normalizes the
    concatenation with one ``final_path_bn``; here each half has its own BN (``path_1_bn``, ``path_2_bn``): BatchNorm
    is per channel, so this computes the same, in training too, and lets each half fold into its conv for inference.
    """

    def __init__(self, in_chs: int, out_chs: int, bn: tuple[float, float]) -> None:
        super().__init__()
        if out_chs % 2:
            raise ValueError(f"a factorized reduction needs an even output width, got {out_chs}")
        self.act = nn.ReLU()
        self.path_1 = nn.Conv2d(in_chs, out_chs // 2, 1, bias=False)
        self.path_1_bn = _bn(out_chs // 2, bn)
        self.path_2 = nn.Conv2d(in_chs, out_chs // 2, 1, bias=False)
        self.path_2_bn = _bn(out_chs // 2, bn)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(x)
        path_1 = self.path_1_bn(self.path_1(F.avg_pool2d(x, 1, 2)))
        path_2 = self.path_2_bn(self.path_2(F.avg_pool2d(F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:], 1, 2)))
        return torch.cat([path_1, path_2], 1)


def adjust_previous(prev_chs: int, filters: int, prev_reduced: bool, bn: tuple[float, float]) -> nn.Module:
    """TF-slim's ``_reduce_prev_layer``: bring h_{i-1} to h_i's size and the cell's width.

    Twice h_i's size (it precedes a reduction): ReLU + :class:`FactorizedReduction`; same size, another width:
    ReLU -> 1x1 -> BN; otherwise unchanged. Decided from the architecture, as TF decides it from the shapes at 224.
    """
    if prev_reduced:
        return FactorizedReduction(prev_chs, filters, bn)
    if prev_chs != filters:
        return ReLUConvBN(prev_chs, filters, bn)
    return nn.Identity()


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """TF-slim's ``drop_path``: in training, zero whole examples of a branch with probability ``drop_prob`` and scale
    the kept ones by 1 / (1 - drop_prob); the identity in eval mode or with ``drop_prob == 0``."""
    if not training or drop_prob == 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.floor(keep + torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device))
    return x / keep * mask


# ------------------------------------------------------------------------------------------------------ the cells


class NormalCell(nn.Module):
    """The NASNet-A normal cell (Fig. 4, left; TF-slim ``NasNetANormalCell``): five blocks, each the sum of two ops on
    h_i (this cell's input after ReLU -> 1x1 -> BN) and h_{i-1} (the cell before's input, adjusted), all stride 1.
    The output concatenates h_{i-1} and the five block outputs: 6 x ``filters`` channels.

    ``prev_reduced``: h_{i-1} is twice h_i's size (the first cell after a reduction). ``drop_prob``: the drop-path
    probability of every non-identity op (training only).
    """

    def __init__(
        self,
        in_chs: int,
        prev_chs: int,
        filters: int,
        prev_reduced: bool,
        bn: tuple[float, float],
        drop_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.two_inputs = True  # (h_i, the previous cell's input): read by FeatureExtractor
        self.drop_prob = drop_prob
        self.out_channels = 6 * filters
        self.conv_prev_1x1 = adjust_previous(prev_chs, filters, prev_reduced, bn)  # h_{i-1}
        self.conv_1x1 = ReLUConvBN(in_chs, filters, bn)  # h_i
        # block 1: sep 5x5 (h_i) + sep 3x3 (h_{i-1})
        self.comb_iter_0_left = SeparableStack(filters, filters, 5, 1, bn)
        self.comb_iter_0_right = SeparableStack(filters, filters, 3, 1, bn)
        # block 2: sep 5x5 (h_{i-1}) + sep 3x3 (h_{i-1})
        self.comb_iter_1_left = SeparableStack(filters, filters, 5, 1, bn)
        self.comb_iter_1_right = SeparableStack(filters, filters, 3, 1, bn)
        # block 3: avg 3x3 (h_i) + identity (h_{i-1})
        self.comb_iter_2_left = avg_pool_3x3_same(1)
        # block 4: avg 3x3 (h_{i-1}) + avg 3x3 (h_{i-1})
        self.comb_iter_3_left = avg_pool_3x3_same(1)
        self.comb_iter_3_right = avg_pool_3x3_same(1)
        # block 5: sep 3x3 (h_i) + identity (h_i)
        self.comb_iter_4_left = SeparableStack(filters, filters, 3, 1, bn)

    def forward(self, x: Tensor, prev: Tensor) -> Tensor:
        p = self.conv_prev_1x1(prev)
        h = self.conv_1x1(x)
        b1 = self._drop(self.comb_iter_0_left(h)) + self._drop(self.comb_iter_0_right(p))
        b2 = self._drop(self.comb_iter_1_left(p)) + self._drop(self.comb_iter_1_right(p))
        b3 = self._drop(self.comb_iter_2_left(h)) + p
        b4 = self._drop(self.comb_iter_3_left(p)) + self._drop(self.comb_iter_3_right(p))
        b5 = self._drop(self.comb_iter_4_left(h)) + h
        return torch.cat([p, b1, b2, b3, b4, b5], 1)

    def _drop(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)


class ReductionCell(nn.Module):
    """The NASNet-A reduction cell (Fig. 4, right; TF-slim ``NasNetAReductionCell``): five blocks; the ops reading h_i
    or h_{i-1} have stride 2, those reading another block stride 1. The output concatenates blocks 2-5: 4 x
    ``filters`` channels at half the size.

    ``prev_chs=None``: the first stem cell, which has no earlier input and uses its own input, unadjusted, as h_{i-1}
    (TF-slim passes ``prev_layer=None``). Otherwise as :class:`NormalCell`.
    """

    def __init__(
        self,
        in_chs: int,
        prev_chs: int | None,
        filters: int,
        prev_reduced: bool,
        bn: tuple[float, float],
        drop_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.two_inputs = True
        self.drop_prob = drop_prob
        self.out_channels = 4 * filters
        self.conv_prev_1x1 = None if prev_chs is None else adjust_previous(prev_chs, filters, prev_reduced, bn)
        prev_chs = in_chs if prev_chs is None else filters  # the width the h_{i-1} ops read
        self.conv_1x1 = ReLUConvBN(in_chs, filters, bn)
        # block 1: sep 5x5 (h_i) + sep 7x7 (h_{i-1})
        self.comb_iter_0_left = SeparableStack(filters, filters, 5, 2, bn)
        self.comb_iter_0_right = SeparableStack(prev_chs, filters, 7, 2, bn)
        # block 2: max 3x3 (h_i) + sep 7x7 (h_{i-1})
        self.comb_iter_1_left = max_pool_3x3_same(2)
        self.comb_iter_1_right = SeparableStack(prev_chs, filters, 7, 2, bn)
        # block 3: avg 3x3 (h_i) + sep 5x5 (h_{i-1})
        self.comb_iter_2_left = avg_pool_3x3_same(2)
        self.comb_iter_2_right = SeparableStack(prev_chs, filters, 5, 2, bn)
        # block 4: identity (block 2) + avg 3x3 (block 1)
        self.comb_iter_3_right = avg_pool_3x3_same(1)
        # block 5: sep 3x3 (block 1) + max 3x3 (h_i)
        self.comb_iter_4_left = SeparableStack(filters, filters, 3, 1, bn)
        self.comb_iter_4_right = max_pool_3x3_same(2)

    def forward(self, x: Tensor, prev: Tensor) -> Tensor:
        p = x if self.conv_prev_1x1 is None else self.conv_prev_1x1(prev)
        h = self.conv_1x1(x)
        b1 = self._drop(self.comb_iter_0_left(h)) + self._drop(self.comb_iter_0_right(p))
        b2 = self._drop(self.comb_iter_1_left(h)) + self._drop(self.comb_iter_1_right(p))
        b3 = self._drop(self.comb_iter_2_left(h)) + self._drop(self.comb_iter_2_right(p))
        b4 = b2 + self._drop(self.comb_iter_3_right(b1))
        b5 = self._drop(self.comb_iter_4_left(b1)) + self._drop(self.comb_iter_4_right(h))
        return torch.cat([b2, b3, b4, b5], 1)

    def _drop(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)


class AuxHead(nn.Module):
    """TF-slim's ``_build_aux_head`` on ReLU(cell_7): avg pool 5x5/3 VALID, 1x1 conv 128 -> BN -> ReLU, a VALID conv
    768 as large as the map (``AUX_KERNEL`` = 4 at 224 px) -> BN -> ReLU, FC. A larger input's larger 768-channel map is
    averaged (TF would build a larger kernel for it)."""

    def __init__(self, in_chs: int, num_classes: int, channels: tuple[int, int], bn: tuple[float, float]) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.pool = nn.AvgPool2d(5, 3)
        self.proj = nn.Conv2d(in_chs, channels[0], 1, bias=False)
        self.bn0 = _bn(channels[0], bn)
        self.conv = nn.Conv2d(channels[0], channels[1], AUX_KERNEL, bias=False)
        self.bn1 = _bn(channels[1], bn)
        self.fc = new_classifier(channels[1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn0(self.proj(self.pool(self.act(x)))))
        x = F.relu(self.bn1(self.conv(x)))
        return self.fc(x.mean([2, 3]))


# ------------------------------------------------------------------------------------------------------ the model


def _out_size(size: int, stem_kernel: int = 3) -> list[int]:
    """The map side after conv0 (VALID, stride 2) and after each of the four SAME stride-2 stages: strides 2..32."""
    sizes = [(size - stem_kernel) // 2 + 1]
    for _ in range(4):
        sizes.append(-(-sizes[-1] // 2))
    return sizes


def aux_min_input_size() -> int:
    """The smallest input side for which the auxiliary head's 5x5/3 pool leaves a map its 4x4 conv fits: cell_7's
    stride-16 map of >= 14 px, i.e. 211 px (224 gives exactly 14)."""
    need = 3 * (AUX_KERNEL - 1) + 5
    return next(s for s in range(3, 1024) if _out_size(s)[3] >= need)


class NASNetAMobile(PooledFcModel):
    """NASNet-A Mobile (``config`` = 4 @ 1056 by default).

    ``drop_rate``: the dropout before the FC (TF-slim: keep 0.5). ``drop_path_rate``: the drop-path probability of the
    last cell, cell ``k`` (stem cells 0 and 1 included, 16 in all) getting ``rate * (k + 1) / 16`` as in TF-slim; 0 by
    default (the mobile config's keep probability is 1.0) and never applied in eval mode. TF-slim also ramps it up over
    the training steps; the model does not know the step, so that part is left to the training loop.
    ``aux_logits``: build the auxiliary head; the model then returns :class:`NASNetOutputs` (logits, aux logits) in
    training mode and the logits in eval mode (torchvision's Inception3 convention); training inputs must be at least
    :func:`aux_min_input_size` (211) px. Off by default: the paper's counts exclude it. ``bn_momentum``: PyTorch's
    BN momentum (TF-slim: decay 0.9997, i.e. 0.0003, slow for a short run).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.5,
        drop_path_rate: float = 0.0,
        aux_logits: bool = False,
        bn_momentum: float = BN_MOMENTUM,
        config: NASNetConfig = NASNET_A_MOBILE,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_in_chans(in_chans)
        check_drop_rate(drop_rate)
        if not isinstance(drop_path_rate, (int, float)) or not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate is a drop probability in [0, 1), got {drop_path_rate!r}")
        if not isinstance(aux_logits, bool):
            raise ValueError(f"aux_logits must be True or False, got {aux_logits!r}")
        if not isinstance(bn_momentum, (int, float)) or not 0.0 < bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum is PyTorch's BatchNorm momentum in (0, 1], got {bn_momentum!r}")
        if config.penultimate_filters % 24 or config.filters % 4:
            raise ValueError(f"penultimate_filters must be a multiple of 96, got {config.penultimate_filters}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.drop_path_rate = float(drop_path_rate)
        self.config = config
        self.min_input_size = 3  # conv0's VALID 3x3 needs 3 px; every later op is SAME and keeps >= 1 px
        bn = (BN_EPS, float(bn_momentum))
        filters = config.filters
        self.conv0 = nn.Sequential(  # TF-slim conv0 + conv0_bn: VALID, no ReLU (each consumer applies its own)
            nn.Conv2d(in_chans, config.stem_filters, 3, stride=2, bias=False), _bn(config.stem_filters, bn)
        )
        # (name, cell class, width); TF-slim's order: two stem cells at F/4 and F/2, then N cells per stack with a
        # reduction cell (doubling the width) before the second and third stacks
        schedule = [("cell_stem_0", ReductionCell, filters // 4), ("cell_stem_1", ReductionCell, filters // 2)]
        n = config.cells_per_stack
        for stack in range(3):
            if stack:
                schedule.append((f"reduction_cell_{stack - 1}", ReductionCell, filters << stack))
            schedule += [(f"cell_{stack * n + i}", NormalCell, filters << stack) for i in range(n)]
        cells: dict[str, nn.Module] = {}
        # every cell reads (its input, the cell before's input): the latter is twice the former's size after a
        # reduction cell; the first stem cell has no earlier input (prev_chs None)
        in_chs, prev_chs, after_reduction = config.stem_filters, None, False
        for k, (name, cell_type, width) in enumerate(schedule):
            drop_prob = self.drop_path_rate * (k + 1) / len(schedule)
            cells[name] = cell_type(in_chs, prev_chs, width, after_reduction, bn, drop_prob)
            in_chs, prev_chs = cells[name].out_channels, in_chs
            after_reduction = cell_type is ReductionCell
        self.cells = nn.ModuleDict(cells)
        self.act = nn.ReLU(inplace=True)  # TF-slim's final_layer ReLU, before the pooling
        self.num_features = in_chs
        self.aux_after = f"cell_{2 * n - 1}"  # TF-slim: the last normal cell before the second reduction
        self.aux_head = (
            AuxHead(cells[self.aux_after].out_channels, num_classes, config.aux_channels, bn) if aux_logits else None
        )
        self.dropout = nn.Dropout(p=drop_rate)
        # the convs keep PyTorch's default init, as timm's NASNet does: with layers.init_weights' kaiming fan_out
        # (TF-slim's FAN_OUT), an untrained model's eval-mode activations double at every cell, the identity and
        # pooled branches accumulating while the untrained BN statistics rescale nothing (logits ~1e4 at 224 px)
        self.fc = new_classifier(self.num_features, num_classes)
        stem = [c for name, c in cells.items() if name.startswith("cell_stem")]
        self.feature_info = [
            FeatureInfo(config.stem_filters, 2, "conv0"),
            FeatureInfo(stem[0].out_channels, 4, "cells.cell_stem_0"),
            FeatureInfo(6 * filters, 8, f"cells.cell_{n - 1}"),
            FeatureInfo(12 * filters, 16, f"cells.cell_{2 * n - 1}"),
            FeatureInfo(self.num_features, 32, "act"),
        ]

    def trunk(self) -> list[tuple[str, nn.Module]]:
        """conv0, the cells in order (each reading its input and the previous step's input), the final ReLU."""
        cells = [(f"cells.{name}", cell) for name, cell in self.cells.items()]
        return [("conv0", self.conv0), *cells, ("act", self.act)]

    def forward_features(self, x: Tensor) -> Tensor:
        self.check_input(x)
        x = self.conv0(x)
        prev = x  # unused: the first stem cell has no earlier input
        for cell in self.cells.values():
            x, prev = cell(x, prev), x
        return self.act(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.aux_head is not None and self.training and not torch.jit.is_scripting():
            return self._forward_with_aux(x)
        return self.forward_head(self.forward_features(x))

    @torch.jit.unused
    def _forward_with_aux(self, x: Tensor) -> NASNetOutputs:
        """Training with the auxiliary head: (logits, aux logits), the aux head reading ReLU(cell_7)."""
        self.check_input(x)
        if x.shape[2] < (low := aux_min_input_size()) or x.shape[3] < low:
            raise ValueError(
                f"input {x.shape[2]}x{x.shape[3]} is too small for the auxiliary head: it needs at least {low}x{low} "
                "in training (224 px gives it a 14x14 map); build the model with aux_logits=False for smaller inputs"
            )
        x = self.conv0(x)
        prev, aux = x, x
        for name, cell in self.cells.items():
            x, prev = cell(x, prev), x
            if name == self.aux_after:
                aux = self.aux_head(x)
        return NASNetOutputs(self.forward_head(self.act(x)), aux)

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh FC (and auxiliary FC) for ``num_classes``; 0 removes them (the model returns its pooled features)."""
        super().reset_classifier(num_classes)
        if self.aux_head is not None:
            self.aux_head.fc = new_classifier(self.aux_head.fc.in_features, num_classes)


_NOTES = (
    "Built from the paper's Fig. 4 cells and the official TF-slim definition (no torchvision or timm builder). Counts "
    "without the auxiliary head (the default, and the paper's convention): 5,289,978 params / 563.64M MAdds at 224 "
    "(FC included; 562.58M without), against the paper's 5.3M / 564M; Keras's larger total adds the BN moving mean/var "
    "(+36,738). With aux_logits=True: 7,701,218 params (+2,411,240 in the aux head) and +3.42M MAdds in training; the "
    "paper and TF-slim's eval graph have no aux head. The same cells with the Large config (6 @ 4032, stem 96) count "
    "88,753,150 / 23,783.41M at 331, timm's nasnetalarge. Wiring of TF-slim's mobile config: each cell reads (its "
    "input, the previous cell's input), so cell_4 reads (reduction_cell_0, cell_3); Large (and timm) reads cell_2 "
    "there, which counts the same. conv0 3x3/2 VALID (224 -> 111), every strided op TF 'SAME' (the even side's extra "
    "pad on the right/bottom; 111 -> 56 -> 28 -> 14 -> 7). BatchNorm as TF-slim's mobile arg scope: eps 1e-3, decay "
    "0.9997 = PyTorch momentum 0.0003 (bn_momentum raises it for short runs). Drop path (drop_path_rate; 0 as in the "
    "mobile config) only in training, scaled by cell depth but not by training step. Aux head only in training: "
    "forward returns (logits, aux_logits), torchvision Inception3's convention; it needs >= 211 px inputs. "
    "No checkpoint: no key mapping for TF-slim's or the PyTorch ports' weights (74.08%, pytorch/vision#454)."
)


@register_model(
    family="NASNet",
    table="Table 3 (mobile setting), Fig. 4 (NASNet-A cells)",
    paper_variant="nasnet_a_mobile_4@1056_224",
    notes=_NOTES,
)
def nasnet_a_mobile(**kwargs) -> NASNetAMobile:
    return NASNetAMobile(**kwargs)
