"""ShuffleNet V2 without channel shuffles or splits: the permutations folded into the convs' weights (exact).

A ShuffleNet V2 unit concatenates its two branches and shuffles the channels; the next unit splits them again. All of
that is bookkeeping: which channel goes where. :func:`unshuffle` tracks every channel of a stage symbolically, stores
each branch output in the order in which later units consume it (by permuting the rows of the branch's last conv and
BN) and permutes the columns of each consuming conv to match. The result keeps the branch outputs as separate tensors:
a stride-1 unit reads the channels it needs with a few contiguous slices and one concat, and nothing else moves.
The exported graph has no ``Gather``/``Transpose``/``Split``: in ONNX Runtime's int8 graphs each shuffle otherwise
costs two NHWC<->NCHW transposes around the ``Gather``.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from mobilezoo.models.shufflenet_v2 import ShuffleNetV2

Token = tuple[int, int]  # (piece, channel in the order the piece's conv computes it)
Take = tuple[int, int, int]  # (piece, first, last + 1): a contiguous slice of a stored piece


def _shuffle(tokens: list[Token], groups: int = 2) -> list[Token]:
    """channel_shuffle on a list of channel labels: out[i * groups + g] = in[g * (C / groups) + i]."""
    per_group = len(tokens) // groups
    return [tokens[g * per_group + i] for i in range(per_group) for g in range(groups)]


def _permute_out(conv: nn.Conv2d, bn: nn.BatchNorm2d, order: list[int]) -> None:
    """Output channel r of the pair becomes what channel ``order[r]`` was."""
    idx = torch.tensor(order)
    with torch.no_grad():
        conv.weight.copy_(conv.weight[idx])
        if conv.bias is not None:
            conv.bias.copy_(conv.bias[idx])
        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            t.copy_(t[idx])


def _permute_in(conv: nn.Conv2d, order: list[int]) -> None:
    """Input channel q of a dense conv becomes what channel ``order[q]`` was."""
    with torch.no_grad():
        conv.weight.copy_(conv.weight[:, torch.tensor(order)])


class _Stage(nn.Module):
    """One stage: the stride-2 unit's branches, then each stride-1 unit's right branch fed by slices of stored pieces."""

    def __init__(self, first: nn.Module, branches: list[nn.Module], takes: list[list[Take]], out: list[Take]) -> None:
        super().__init__()
        self.branch1, self.branch2 = first.branch1, first.branch2
        self.branches = nn.ModuleList(branches)
        self.takes, self.out = takes, out

    @staticmethod
    def _gather(pieces: list[Tensor], takes: list[Take]) -> Tensor:
        parts = [pieces[p][:, a:b] for p, a, b in takes]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        pieces = [self.branch1(x), self.branch2(x)]
        for branch, takes in zip(self.branches, self.takes):
            pieces.append(branch(self._gather(pieces, takes)))
        return self._gather(pieces, self.out)


class UnshuffledShuffleNetV2(nn.Module):
    """The inference-only equivalent of a :class:`ShuffleNetV2` that :func:`unshuffle` builds."""

    def __init__(self, model: ShuffleNetV2, stages: list[_Stage]) -> None:
        super().__init__()
        self.in_chans, self.num_classes = model.in_chans, model.num_classes
        self.conv1, self.maxpool = model.conv1, model.maxpool
        self.stages = nn.Sequential(*stages)
        self.conv5, self.dropout, self.fc = model.conv5, model.dropout, model.fc

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv5(self.stages(self.maxpool(self.conv1(x))))
        return self.fc(self.dropout(x.mean([2, 3])))  # PooledFcModel's head


def _branch2_reads(unit: nn.Module, order: list[int]) -> None:
    """Permute what a unit's right branch reads: its first pointwise conv's inputs, or for ShuffleNet v2* the extra
    depthwise conv (with its BN) before it, whose channels move as a whole, and then that pointwise conv's inputs."""
    if unit.branch2[0].groups > 1:  # v2*: DW3x3 + BN at the head of the branch
        _permute_out(unit.branch2[0], unit.branch2[1], order)
        _permute_in(unit.branch2[2], order)
    else:
        _permute_in(unit.branch2[0], order)


def _branch2_out(unit: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The right branch's last pointwise conv and its BN (two modules later in v2*, after the extra DW + BN)."""
    shift = 2 if unit.branch2[0].groups > 1 else 0
    return unit.branch2[5 + shift], unit.branch2[6 + shift]


def _plan_stage(units: list[nn.Module], in_order: list[int]) -> tuple[_Stage, list[int]]:
    """Permute one stage's weights in place; ``in_order[p]`` is the logical channel stored at physical channel p."""
    first, rest = units[0], list(units[1:])
    # the stride-2 unit reads the whole input: its dw conv (with BN) and the right branch's first conv follow it
    _permute_out(first.branch1[0], first.branch1[1], in_order)  # a depthwise conv: its channels move as a whole
    _permute_in(first.branch1[2], in_order)
    _branch2_reads(first, in_order)

    # simulate the stage on channel labels: which piece each logical channel lives in, and when it is consumed
    producers = [(first.branch1[2], first.branch1[3]), _branch2_out(first)]
    sizes = [producers[0][0].out_channels, producers[1][0].out_channels]
    logical = _shuffle([(0, i) for i in range(sizes[0])] + [(1, i) for i in range(sizes[1])], first.shuffle_groups)
    consumed: dict[Token, tuple[int, int]] = {}  # token -> (unit, position in what that unit reads)
    for k, unit in enumerate(rest):
        keep, reads = logical[: unit.keep], logical[unit.keep :]
        for pos, token in enumerate(reads):
            consumed[token] = (k, pos)
        piece = len(sizes)
        producers.append(_branch2_out(unit))
        sizes.append(producers[-1][0].out_channels)
        logical = _shuffle(keep + [(piece, i) for i in range(sizes[-1])], unit.shuffle_groups)
    end = len(rest)
    for pos, token in enumerate(logical):
        consumed[token] = (end, pos)

    # store each piece in the order it is consumed: every consumer then reads one contiguous slice per piece
    stored: list[list[int]] = []  # stored[piece][r] = natural channel kept at physical r
    for piece, size in enumerate(sizes):
        order = sorted(range(size), key=lambda i, p=piece: consumed[(p, i)])
        _permute_out(*producers[piece], order)
        stored.append(order)

    def takes_for(step: int) -> tuple[list[Take], list[int]]:
        """The slices that step ``step`` reads and, per read channel, its logical position."""
        takes, positions = [], []
        for piece in range(len(sizes)):
            rows = [r for r, i in enumerate(stored[piece]) if consumed[(piece, i)][0] == step]
            if rows:
                assert rows == list(range(rows[0], rows[-1] + 1))  # contiguous by construction
                takes.append((piece, rows[0], rows[-1] + 1))
                positions += [consumed[(piece, stored[piece][r])][1] for r in rows]
        return takes, positions

    all_takes = []
    for k, unit in enumerate(rest):
        takes, positions = takes_for(k)
        _branch2_reads(unit, positions)
        all_takes.append(takes)
    out_takes, out_order = takes_for(end)
    return _Stage(first, [u.branch2 for u in rest], all_takes, out_takes), out_order


def unshuffle(model: ShuffleNetV2) -> UnshuffledShuffleNetV2:
    """An eval-mode copy of ``model`` with its channel shuffles and splits folded into the weights (same outputs)."""
    if not isinstance(model, ShuffleNetV2):
        raise TypeError(f"unshuffle takes a ShuffleNetV2, got {type(model).__name__}")
    model = copy.deepcopy(model).eval()
    order = list(range(model.stage2[0].branch2[0].in_channels))  # the max-pooled stem, in its own order
    stages = []
    for name in ("stage2", "stage3", "stage4"):
        stage, order = _plan_stage(list(getattr(model, name)), order)
        stages.append(stage)
    _permute_in(model.conv5[0], order)
    return UnshuffledShuffleNetV2(model, stages).eval()
