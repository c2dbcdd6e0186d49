"""Key maps: an explicit table from another code base's module names to this library's, applied strictly.

A :class:`KeyMap` pairs modules, one pair per line of a family's map (``conv_stem`` -> ``features.0.0``), and every
tensor of a source module goes to the same leaf (``weight``, ``bias``, ``running_mean``, ...) of its model module,
through a transform where the layouts differ (a 1x1 conv's 4-d weight as a Linear's, channels permuted). Nothing is
matched by name similarity. :meth:`KeyMap.apply` refuses a checkpoint with a tensor the map does not place or a
mapped module it lacks, naming them; shapes are checked when the result is loaded into the model.

A BatchNorm's ``num_batches_tracked`` (a counter, not a weight: older checkpoints lack it) is the only tensor that may
be absent; the model keeps its own then.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from mobilezoo.weights.files import WeightsMismatchError

Transform = Callable[[Tensor], Tensor]
OPTIONAL_LEAVES = ("num_batches_tracked",)


@dataclass(frozen=True)
class ModulePair:
    """Source module ``src`` holds the tensors of model module ``dst``; ``transform`` (if any) applies to each."""

    src: str
    dst: str
    transform: Transform | None = None
    note: str = ""


def flatten_1x1(t: Tensor) -> Tensor:
    """A 1x1 conv's (out, in, 1, 1) weight as a Linear's (out, in); other tensors unchanged."""
    return t.flatten(1) if t.dim() == 4 else t


def permute(dim: int, index: Tensor) -> Transform:
    """A transform taking channel ``index[c]`` of dimension ``dim`` to position ``c`` (0-d counters unchanged).

    A tensor whose size along ``dim`` is not ``len(index)`` (a checkpoint of another width) passes unchanged, so the
    shape check that follows names it.
    """

    def apply(t: Tensor) -> Tensor:
        if t.dim() <= dim or t.shape[dim] != len(index):
            return t
        return t.index_select(dim, index)

    return apply


class KeyMap:
    """The module pairs of one checkpoint layout onto one model (``layout`` names it in errors)."""

    def __init__(self, layout: str) -> None:
        self.layout = layout
        self.pairs: dict[str, ModulePair] = {}

    def add(self, src: str, dst: str, transform: Transform | None = None, note: str = "") -> None:
        """Map source module ``src`` to model module ``dst``; each source module is mapped once."""
        if src in self.pairs:
            raise ValueError(f"{self.layout} key map: source module {src!r} is mapped twice")
        self.pairs[src] = ModulePair(src, dst, transform, note)

    def dst_to_src(self) -> dict[str, str]:
        """Model key prefix -> source key prefix (for error messages)."""
        return {p.dst: p.src for p in self.pairs.values()}

    def source_key(self, dst_key: str) -> str | None:
        """The source key that a model key comes from, or None."""
        module, _, leaf = dst_key.rpartition(".")
        src = self.dst_to_src().get(module)
        return f"{src}.{leaf}" if src is not None else None

    def apply(self, state: Mapping[str, Tensor], own: Mapping[str, Tensor], what: str) -> dict[str, Tensor]:
        """``state`` under the model's keys; ``own`` (the model's state_dict) fills an absent ``num_batches_tracked``.

        Raises :class:`~mobilezoo.weights.WeightsMismatchError` naming the source tensors the map does not place
        ("unexpected") and the mapped source modules absent from ``state`` ("missing"): a checkpoint of another
        family or layout.
        """
        out: dict[str, Tensor] = {}
        unexpected: list[str] = []
        seen: set[str] = set()
        for key, value in state.items():
            module, _, leaf = key.rpartition(".")
            pair = self.pairs.get(module)
            if pair is None:
                unexpected.append(key)
                continue
            seen.add(module)
            out[f"{pair.dst}.{leaf}"] = pair.transform(value) if pair.transform is not None else value
        missing = [f"{src}.*" for src in self.pairs if src not in seen]
        if missing or unexpected:
            raise WeightsMismatchError(missing, unexpected, [], what, f"is not in {self.layout}'s layout")
        mapped = {p.dst for p in self.pairs.values()}
        for key in own:
            module, _, leaf = key.rpartition(".")
            if leaf in OPTIONAL_LEAVES and key not in out and module in mapped:
                out[key] = own[key].clone()
        # in the model's order (errors then list the stem first), keys the model lacks (its load names them) last
        return {**{k: out[k] for k in own if k in out}, **{k: v for k, v in out.items() if k not in own}}


def shuffle_index(channels: int, groups: int) -> Tensor:
    """The channel that :func:`mobilezoo.layers.channel_shuffle` with ``groups`` puts at each position."""
    return torch.arange(channels).view(groups, channels // groups).t().reshape(-1)
