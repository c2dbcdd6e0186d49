"""Calibration and validation images for int8 quantization: the built-in digits or an image folder.

Batches come from :mod:`mobilezoo.data` with its evaluation transform (resize, center crop, normalise), so the int8
model is calibrated on what it will see in deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset


def image_batches(
    source: str | Path,
    *,
    split: str = "train",
    in_chans: int = 3,
    resolution: int = 224,
    num_images: int | None = 256,
    batch_size: int = 32,
    seed: int = 0,
    eval_crop_pct: float | None = None,
    preprocessing: Any = None,
) -> DataLoader:
    """A DataLoader of ``(images, labels, skipped)`` batches: ``num_images`` class-balanced images of ``split``.

    ``source`` is ``"builtin"`` (the packaged digits; ``in_chans=1``) or a folder: an ImageFolder root with
    ``train/`` and ``val/`` sub-folders, or one ``<class>/<images>`` tree used for either split. Images are resized
    and center-cropped as training evaluates them: ``eval_crop_pct`` None is the whole frame for the digits and the
    usual 87.5% crop otherwise. Files are decoded by :func:`mobilezoo.data.load_image`, as training reads them.
    ``preprocessing`` (a :class:`mobilezoo.weights.Preprocessing`: a public checkpoint's, e.g. ``model.preprocessing``)
    replaces the normalisation, crop, interpolation and channel order with the checkpoint's (at ``resolution``).
    """
    from mobilezoo import data

    if not isinstance(resolution, int) or isinstance(resolution, bool):
        raise ValueError(f"image calibration takes a square resolution (one int), got {resolution!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    builtin = str(source) == data.BUILTIN
    if eval_crop_pct is None and builtin:
        eval_crop_pct = data.BUILTIN_EVAL_CROP_PCT
    crop = {} if eval_crop_pct is None else {"eval_crop_pct": eval_crop_pct}
    if preprocessing is not None:
        transform = data.build_transforms(
            False,
            resolution,
            data.Normalization(tuple(preprocessing.mean), tuple(preprocessing.std)),
            eval_crop_pct=preprocessing.crop_pct if eval_crop_pct is None else eval_crop_pct,
            interpolation=preprocessing.interpolation,
            channel_order=preprocessing.channel_order,
        )
    else:
        transform = data.build_transforms(False, resolution, data.default_normalization(in_chans, builtin), **crop)
    if builtin or (Path(source) / split).is_dir():
        dataset = data.load_split(source, split, transform, in_chans=in_chans)
    else:
        if not Path(source).is_dir():
            raise FileNotFoundError(f"image folder {str(source)!r} does not exist (expected 'builtin' or a folder)")
        dataset = data.ImageFolderSafe(source, transform, mode=data.image_mode(in_chans))
    targets = getattr(dataset, "targets", None) or [s[1] for s in dataset.samples]
    subset = Subset(dataset, data.subset_indices(targets, num_images, seed))
    return DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=data.collate_skipping)


def random_batches(
    in_chans: int, resolution: tuple[int, int], *, num_images: int = 64, batch_size: int = 16, seed: int = 0
) -> list[tuple[torch.Tensor]]:
    """Gaussian-noise batches: only for smoke tests of the int8 path; real calibration needs real images."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [min(batch_size, num_images - i) for i in range(0, num_images, batch_size)]
    return [(torch.randn(n, in_chans, *resolution, generator=gen),) for n in sizes]


def labelled(batches: Any) -> Any:
    """``(images, labels)`` pairs from batches that may carry extra fields (``collate_skipping``'s skipped count)."""
    for item in batches:
        yield item[0], item[1]
