import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from mobilezoo.data import (
    BatchedAugment,
    BuiltinDigits,
    CropSample,
    ImageFolderSafe,
    SeededDataset,
    build_transforms,
    collate_skipping,
    default_normalization,
    load_split,
    resized_crop_batch,
    subset_indices,
)


def make_folder(root, classes=("a", "b"), per_class=3, size=40, mode="RGB"):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (size, size, 3 if mode == "RGB" else 1), dtype=np.uint8).squeeze()
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


def test_builtin_split_is_fixed_and_stratified():
    train, val = BuiltinDigits("train"), BuiltinDigits("val")
    assert (len(train), len(val)) == (4000, 1000)
    assert train.classes == [str(i) for i in range(10)]
    assert np.bincount(val.targets).tolist() == [100] * 10
    assert np.bincount(train.targets).tolist() == [400] * 10
    img, label = train[0]
    assert img.mode == "L" and img.size == (28, 28) and 0 <= label <= 9
    assert np.asarray(img).max() > 100  # ink present


def test_builtin_rejects_rgb_and_bad_split():
    with pytest.raises(ValueError, match="grayscale"):
        load_split("builtin", "train", None, in_chans=3)
    with pytest.raises(ValueError, match="split"):
        BuiltinDigits("test")


def test_transforms_shapes_and_normalisation():
    norm = default_normalization(1, builtin=True)
    img = BuiltinDigits("val")[0][0]
    for aa in ("none", "autoaugment", "trivialaugment"):
        x = build_transforms(True, 32, norm, crop_scale=(0.6, 1.0), hflip=0.0, auto_augment=aa, random_erasing=0.5)(img)
        assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    x = build_transforms(False, 32, norm, eval_crop_pct=1.0)(img)
    raw = torch.from_numpy(np.array(img.resize((32, 32), Image.BILINEAR))).float() / 255
    assert x.mean().item() == pytest.approx(((raw.mean() - 0.1307) / 0.3081).item(), abs=0.05)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"img_size": 16}, "img_size"),
        ({"auto_augment": "cutmix"}, "auto_augment"),
        ({"crop_scale": (0.5, 1.5)}, "crop_scale"),
        ({"hflip": 2.0}, "hflip"),
        ({"eval_crop_pct": 0.0}, "eval_crop_pct"),
    ],
)
def test_transforms_reject_bad_values(kwargs, match):
    args = {"img_size": 32, **kwargs}
    size = args.pop("img_size")
    with pytest.raises(ValueError, match=match):
        build_transforms(True, size, default_normalization(3, False), **args)


def test_seeded_dataset_is_a_function_of_seed_epoch_index():
    tf = build_transforms(True, 32, default_normalization(1, True), crop_scale=(0.3, 1.0), random_erasing=0.5)
    ds = SeededDataset(BuiltinDigits("train", tf), seed=7)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = ds[(0, 5)][0], ds[(0, 5)][0]
    assert torch.equal(a, b)
    assert not torch.equal(a, ds[(1, 5)][0])  # another epoch, another augmentation
    assert not torch.equal(a, SeededDataset(ds.base, seed=8)[(0, 5)][0])
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG stream is untouched


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_split(tmp_path / "nope", "train")
    (tmp_path / "d" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no val/"):
        load_split(tmp_path / "d", "val")
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_split(tmp_path / "d", "train")
    root = make_folder(tmp_path / "e")
    (root / "train" / "empty").mkdir()
    (root / "train" / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="empty.*hold no images"):
        load_split(root, "train")


def test_corrupt_image_is_skipped_and_counted(tmp_path):
    root = make_folder(tmp_path / "f", per_class=2)
    (root / "train" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    tf = build_transforms(False, 32, default_normalization(3, False))
    ds = load_split(root, "train", tf)
    assert isinstance(ds, ImageFolderSafe) and len(ds) == 5
    with pytest.warns(UserWarning, match="broken.png"):
        batch = [ds[i] for i in range(len(ds))]
    x, y, skipped = collate_skipping(batch)
    assert skipped == 1 and x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gray = load_split(root, "val", build_transforms(False, 32, default_normalization(1, False)), in_chans=1)
        assert gray[0][0].shape == (1, 32, 32)


def test_subset_is_balanced_and_fixed():
    targets = [i % 10 for i in range(1000)]
    idx = subset_indices(targets, 100, seed=0)
    assert len(idx) == 100 and idx == subset_indices(targets, 100, seed=0)
    assert np.bincount([targets[i] for i in idx]).tolist() == [10] * 10
    assert subset_indices(targets, None, 0) == list(range(1000))


def test_batched_resized_crop_equals_torchvision_per_image():
    from torchvision.transforms.v2 import functional as F

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (6, 3, 20, 24), dtype=np.uint8))
    # a full frame, corners and edges (where the resize clamps at the crop, not the image), one-pixel and thin crops
    boxes = torch.tensor([[0, 0, 20, 24], [0, 0, 5, 7], [13, 17, 7, 7], [4, 0, 16, 1], [9, 11, 1, 1], [2, 3, 11, 19]])
    flips = torch.tensor([False, True, False, True, True, False])
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    out = resized_crop_batch(images, boxes, (32, 40), flips=flips, mean=mean, std=std)
    assert out.shape == (6, 3, 32, 40) and out.dtype == torch.float32
    for k in range(6):
        ref = F.resized_crop(images[k].float() / 255, *boxes[k].tolist(), [32, 40], antialias=True)
        ref = F.normalize(F.horizontal_flip(ref) if flips[k] else ref, list(mean), list(std))
        torch.testing.assert_close(out[k], ref, rtol=0, atol=1e-5, msg=f"box {boxes[k].tolist()}")
    with pytest.raises(ValueError, match=r"box \[13, 17, 8, 7\].*outside its 20x24"):
        resized_crop_batch(images[:1], torch.tensor([[13, 17, 8, 7]]), (32, 32))
    with pytest.raises(ValueError, match="larger than the output 16x16.*antialias"):
        resized_crop_batch(images[:1], torch.tensor([[0, 0, 20, 24]]), (16, 16))


def _digit_pipelines(**kw):
    tf = build_transforms(True, 32, default_normalization(1, True), **kw)
    aug = BatchedAugment.from_pipeline(tf, BuiltinDigits("train").image_size)
    assert aug is not None
    return SeededDataset(BuiltinDigits("train", tf), seed=7), SeededDataset(BuiltinDigits("train", aug.sample), 7), aug


def test_batched_augmentation_equals_the_per_image_pipeline():
    per_image, batched, aug = _digit_pipelines(crop_scale=(0.08, 1.0), hflip=0.5, random_erasing=0.5)
    keys = [(3, i) for i in range(0, 400, 10)]
    samples = [batched[k] for k in keys]
    assert all(isinstance(s[0], CropSample) and s[0].image.dtype == torch.uint8 for s in samples)
    flips, erased = sum(s[0].flip for s in samples), sum(s[0].erase is not None for s in samples)
    assert 0 < flips < len(keys) and 0 < erased < len(keys)  # both branches of both draws are compared
    x, y, skipped = aug.collate([*samples, None])
    ref, ref_y, _ = collate_skipping([per_image[k] for k in keys])
    assert skipped == 1 and torch.equal(y, ref_y) and x.shape == ref.shape == (len(keys), 1, 32, 32)
    # the same crops, flips and erasures; PIL rounds its resized image to 8 bits (1/255 / std 0.3081 = 0.0127)
    torch.testing.assert_close(x, ref, rtol=0, atol=1.5 / 255 / 0.3081)
    assert (x - ref).abs().mean() < 0.005


def test_batched_parameters_are_a_function_of_seed_epoch_index():
    _, batched, _ = _digit_pipelines(crop_scale=(0.08, 1.0), hflip=0.5, random_erasing=0.5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = batched[(2, 9)][0], batched[(2, 9)][0]  # e.g. drawn before a kill and again after the resume
    assert (a.box, a.flip) == (b.box, b.flip) and torch.equal(a.image, b.image)
    assert (a.erase is None) == (b.erase is None) and (a.erase is None or a.erase[:4] == b.erase[:4])
    draws = {(s.box, s.flip) for s in (batched[(e, 9)][0] for e in range(6))}
    assert len(draws) > 3  # another epoch, another draw
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG stream (dropout) is untouched


def test_only_plain_crop_flip_pipelines_on_small_images_are_batched():
    norm = default_normalization(1, True)
    assert BatchedAugment.from_pipeline(build_transforms(True, 32, norm, random_erasing=0.2), (28, 28)) is not None
    for kw in ({"auto_augment": "autoaugment"}, {"auto_augment": "trivialaugment"}, {"interpolation": "bicubic"}):
        assert BatchedAugment.from_pipeline(build_transforms(True, 32, norm, **kw), (28, 28)) is None, kw
    bgr = build_transforms(True, 32, default_normalization(3, False), channel_order="BGR")
    assert BatchedAugment.from_pipeline(bgr, (28, 28)) is None
    assert BatchedAugment.from_pipeline(build_transforms(False, 32, norm), (28, 28)) is None  # eval pipeline
    assert BatchedAugment.from_pipeline(build_transforms(True, 32, norm), (40, 28)) is None  # crops could shrink
    aug = BatchedAugment.from_pipeline(build_transforms(True, 32, norm), (28, 28))
    with pytest.raises(ValueError, match="image of 30x28 pixels in a batched augmentation for 28x28"):
        aug.sample(torch.zeros(1, 30, 28, dtype=torch.uint8))
