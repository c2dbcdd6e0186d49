"""The training set's batches: the digits are augmented a batch at once, from the same seeded per-sample draws."""

import numpy as np
import torch
from PIL import Image

from mobilezoo.data import (
    BatchedAugment,
    BuiltinDigits,
    CropSample,
    Normalization,
    SeededDataset,
    build_transforms,
    collate_skipping,
)
from mobilezoo.train import TrainConfig
from mobilezoo.train.config import resolve_config
from mobilezoo.train.distributed import DistInfo
from mobilezoo.train.run_data import RunData, epoch_batches
from tests.train.conftest import TINY


def test_digit_batches_are_augmented_at_once_as_the_per_image_pipeline_would():
    cfg = resolve_config(TrainConfig(**{**TINY, "hflip": 0.5}))
    assert cfg.random_erasing > 0  # the digits' defaults: crop and erasing, both batched
    data = RunData(cfg)
    assert isinstance(getattr(data.train_collate, "__self__", None), BatchedAugment)
    keys = next(epoch_batches(len(data.train_idx), 1, cfg, DistInfo()))
    samples = [data.train[k] for k in keys]
    assert all(isinstance(s[0], CropSample) for s in samples)
    x, y, skipped = data.train_collate(samples)
    assert x.shape == (cfg.batch_size, 1, cfg.img_size, cfg.img_size) and skipped == 0
    # the reference: today's per-image pipeline under the same (seed, epoch, index) seeds
    tf = build_transforms(
        True,
        cfg.img_size,
        Normalization(tuple(cfg.mean), tuple(cfg.std)),
        crop_scale=tuple(cfg.crop_scale),
        hflip=cfg.hflip,
        random_erasing=cfg.random_erasing,
    )
    base = BuiltinDigits("train", tf)
    per_image = SeededDataset(torch.utils.data.Subset(base, data.train_idx), cfg.seed)
    ref, ref_y, _ = collate_skipping([per_image[k] for k in keys])
    assert torch.equal(y, ref_y)
    torch.testing.assert_close(x, ref, rtol=0, atol=1.5 / 255 / min(cfg.std))


def test_auto_augment_and_folders_keep_the_per_image_path(tmp_path):
    data = RunData(resolve_config(TrainConfig(**{**TINY, "auto_augment": "autoaugment"})))
    assert data.train_collate is collate_skipping
    img = data.train[(0, 0)][0]
    assert isinstance(img, torch.Tensor) and img.shape == (1, 32, 32) and img.dtype == torch.float32
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
                    tmp_path / split / c / f"{i}.png"
                )
    folder = {**TINY, "data": str(tmp_path), "in_chans": 3, "batch_size": 2, "train_subset": None, "val_subset": None}
    assert RunData(resolve_config(TrainConfig(**folder))).train_collate is collate_skipping
