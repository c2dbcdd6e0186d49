"""The data of a training run: its datasets (training, evaluation, BN recalibration) and each epoch's sample order.

The order is seeded by ``(seed, epoch)`` and split over processes and accumulation steps so that any split sees the
same images in the same groups, and a resumed run can start at any step of an epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilezoo.data import (
    BatchedAugment,
    BuiltinDigits,
    Normalization,
    SeededDataset,
    build_transforms,
    collate_skipping,
    load_split,
    subset_indices,
)
from mobilezoo.train.config import TrainConfig
from mobilezoo.train.distributed import DistInfo


def epoch_batches(
    n: int, epoch: int, cfg: TrainConfig, info: DistInfo, start_step: int = 0
) -> Iterator[list[tuple[int, int]]]:
    """This process's micro-batches of ``epoch`` from step ``start_step`` on, as lists of (epoch, position) keys.

    Step i of the epoch takes global batch ``perm[i*B:(i+1)*B]``; its micro-batch j on rank r is the slice at offset
    ``(r * accum_steps + j) * b`` with ``b = B / (world * accum_steps)``. So 2 ranks x 1 micro-batch see exactly the
    images that 1 rank x 2 micro-batches sees, in the same groups.
    """
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, epoch, 1]).generate_state(1)[0]))
    perm = torch.randperm(n, generator=g).tolist()
    big, accum = cfg.batch_size, cfg.accum_steps
    micro = big // (info.world_size * accum)
    for step in range(start_step, n // big):
        base = step * big
        for j in range(accum):
            off = base + (info.rank * accum + j) * micro
            yield [(epoch, p) for p in perm[off : off + micro]]


class RunData:
    """The datasets of a run: seeded training set, evaluation set, BN recalibration set.

    ``train_collate`` is the training loader's collate function: for the built-in digits (one image size) with a
    crop/flip/normalise/erase pipeline, :meth:`mobilezoo.data.BatchedAugment.collate`, which augments the batch at
    once from each sample's seeded parameters; :func:`mobilezoo.data.collate_skipping` otherwise.

    Raises ValueError for fewer than 2 classes, train and val classes that differ, or fewer training images than
    ``batch_size``; FileNotFoundError (from :func:`mobilezoo.data.load_split`) for a missing folder or split.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        norm = Normalization(tuple(cfg.mean), tuple(cfg.std))
        train_tf = build_transforms(
            True,
            cfg.img_size,
            norm,
            crop_scale=tuple(cfg.crop_scale),
            hflip=cfg.hflip,
            auto_augment=cfg.auto_augment,
            random_erasing=cfg.random_erasing,
        )
        eval_tf = build_transforms(False, cfg.img_size, norm, eval_crop_pct=cfg.eval_crop_pct)
        train = load_split(cfg.data, "train", train_tf, cfg.in_chans)
        self.train_collate: Any = collate_skipping
        batched = BatchedAugment.from_pipeline(train_tf, train.image_size) if isinstance(train, BuiltinDigits) else None
        if batched is not None:  # the same seeded parameters, the pixel work once per batch
            train.transform, self.train_collate = batched.sample, batched.collate
        classes = list(train.classes)  # type: ignore[attr-defined]
        if len(classes) < 2:  # e.g. DIR/train/images/*.png: one "class" that every prediction gets right
            raise ValueError(
                f"training needs at least 2 classes, but {str(Path(cfg.data) / 'train')!r} has 1 class folder "
                f"({classes[0]!r}); lay the data out as DIR/train/<class>/* and DIR/val/<class>/*, one sub-folder "
                f"per class"
            )
        val = load_split(cfg.data, "val", eval_tf, cfg.in_chans)
        if list(train.classes) != list(val.classes):  # type: ignore[attr-defined]
            raise ValueError(
                f"train and val classes differ: {train.classes} vs {val.classes}"  # type: ignore[attr-defined]
            )
        self.classes = list(train.classes)  # type: ignore[attr-defined]
        self.train_idx = subset_indices(train.targets, cfg.train_subset, cfg.seed)  # type: ignore[attr-defined]
        self.val_idx = subset_indices(val.targets, cfg.val_subset, cfg.seed)  # type: ignore[attr-defined]
        self.train = SeededDataset(_Indexed(train, self.train_idx), cfg.seed)
        self.val = _Indexed(val, self.val_idx)
        self.recal = _Indexed(load_split(cfg.data, "train", eval_tf, cfg.in_chans), self.train_idx)
        if len(self.train_idx) < cfg.batch_size:
            raise ValueError(
                f"batch_size {cfg.batch_size} is larger than the training set ({len(self.train_idx)} images)"
            )
        self.norm = norm


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, base: Any, idx: list[int]) -> None:
        self.base, self.idx = base, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> Any:
        return self.base[self.idx[i]]


__all__ = ["RunData", "epoch_batches"]
