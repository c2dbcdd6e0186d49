"""Data for training and evaluation: image folders, the built-in digits, ``torchvision.transforms.v2`` pipelines.

Two sources share one interface (a Dataset yielding ``(image, label)`` with ``classes``):

* an ``ImageFolder`` tree, ``root/train/<class>/*`` and ``root/val/<class>/*``;
* ``"builtin"``: 5,000 MNIST digits shipped in ``mobilezoo/assets/digits5k.npz`` (see the README there for
  provenance and licence), with a fixed stratified split of 4,000 train / 1,000 val images. They are 28x28 grayscale,
  used with ``in_chans=1`` and upscaled by the transforms to the training resolution.

Randomness of the augmentations is a pure function of ``(seed, epoch, index)`` (see :class:`SeededDataset`), so a run
resumed in the middle of an epoch, or split over several processes, draws exactly the same augmented images.
Images of one size (the digits) take the training augmentation in two halves (:class:`BatchedAugment`): each sample
draws its crop, flip and erasing under its seed, and the batch is cropped, resized, flipped and normalised at once.
Every image file is decoded by :func:`load_image` (training, evaluation, prediction, int8 calibration), to what an
image viewer shows: first frame, EXIF orientation applied, 16-bit scaled by 65535, transparency on white. Images that
fail to decode are skipped with a warning; the collate function counts them for the run's summary.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

BUILTIN = "builtin"
BUILTIN_FILE = "digits5k.npz"
# MNIST pixel statistics (ink on black, scaled to [0, 1]); ImageNet's for RGB folders (torchvision's weights use them)
BUILTIN_MEAN, BUILTIN_STD = (0.1307,), (0.3081,)
BUILTIN_EVAL_CROP_PCT = 1.0  # the digits fill their frame: evaluating on a center crop would cut strokes off
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
AUTO_AUGMENT = ("none", "autoaugment", "trivialaugment", "randaugment")
SPLITS = ("train", "val")
DECODE_ERRORS = (OSError, ValueError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Normalization:
    """The per-channel mean and std applied after scaling pixels to [0, 1]; saved with every run."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}


def default_normalization(in_chans: int, builtin: bool) -> Normalization:
    """MNIST statistics for the built-in digits, ImageNet's otherwise (its mean of channels for grayscale)."""
    if builtin:
        mean, std = BUILTIN_MEAN, BUILTIN_STD
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if len(mean) != in_chans:
        mean, std = (float(np.mean(mean)),) * in_chans, (float(np.mean(std)),) * in_chans
    return Normalization(tuple(mean), tuple(std))


class BuiltinDigits(Dataset):
    """The built-in 5,000 MNIST digits as grayscale PIL images; ``split`` is ``"train"`` (4,000) or ``"val"`` (1,000)."""

    classes: list[str] = [str(i) for i in range(10)]

    def __init__(self, split: str = "train", transform: Any = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        with resources.files("mobilezoo").joinpath("assets", BUILTIN_FILE).open("rb") as f, np.load(f) as npz:
            mask = npz["val"] if split == "val" else ~npz["val"]
            self.images = npz["images"][mask]
            self.targets = npz["labels"][mask].astype(np.int64).tolist()
        self.split = split
        self.transform = transform
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every image, in pixels: (28, 28)."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = Image.fromarray(self.images[index])  # uint8 (H, W) gives mode "L"
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]


# torchvision's extensions plus what cameras, phones and scanners also write; a file with one of these names that does
# not decode is skipped with a warning (HEIC/HEIF, an iPhone's default, needs a Pillow plugin), never silently ignored
IMAGE_EXTENSIONS = tuple(
    sorted({*datasets.folder.IMG_EXTENSIONS, ".gif", ".jfif", ".jpe", ".pbm", ".pnm", ".avif", ".heic", ".heif"})
)
BACKGROUND = 255  # transparent pixels are composited on white, as a viewer on a white page shows them
_GRAY16 = ("I;16", "I;16B", "I;16L", "I;16N")
LOW_BITS_WARNING = (
    "16-bit grayscale images whose values stay below 4096 (12-bit data in a 16-bit file?) are scaled by 65535, as "
    "image viewers show them: dark, with at most 16 gray levels; rescale such files to the full 16-bit range to keep "
    "their detail"
)


def image_mode(in_chans: int) -> str:
    """The PIL mode a model with ``in_chans`` input channels reads: ``"L"`` for 1, ``"RGB"`` for 3."""
    if in_chans not in (1, 3):
        raise ValueError(f"images are read as 1-channel (L) or 3-channel (RGB), got in_chans={in_chans!r}")
    return "L" if in_chans == 1 else "RGB"


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Decode an image file to an 8-bit ``"RGB"`` or ``"L"`` PIL image showing what an image viewer shows.

    The one decoder of every path that reads image files (folders for training, evaluation and int8 calibration,
    ``predict``): the first frame of a multi-frame file (GIF, TIFF, APNG); the EXIF orientation applied; high bit
    depths scaled by their full range (16-bit grayscale ``I;16``/``I;16B`` by 65535, so a 12-bit image stored in 16
    bits is as dark as a viewer shows it, with a warning; 16-bit RGB is reduced by Pillow the same way; 32-bit
    integer ``I`` must hold 0..65535 and is read as 16-bit); 32-bit float ``F`` read as 0 = black, 1 = white;
    transparency (alpha, or a palette's or PNG tRNS transparent colour) composited on white; palettes, 1-bit,
    CMYK (Adobe-inverted JPEGs included), YCbCr and LAB converted by Pillow; RGB to ``"L"`` by ITU-R 601 luma.
    Embedded ICC colour profiles are not applied (values are taken as sRGB, as torchvision and timm read them).

    Raises ``ValueError`` for an unknown ``mode`` or pixel values outside their type's range (non-finite or outside
    [0, 1] floats, integers outside 0..65535), and Pillow's ``OSError``/``UnidentifiedImageError`` for files that do
    not decode (all in :data:`DECODE_ERRORS`).
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"images are loaded as 'RGB' or 'L', got mode={mode!r}")
    # from a file object, not a path: Pillow 13 memory-maps uncompressed TIFFs opened by path and then garbles
    # those whose orientation tag swaps width and height (it maps the buffer at the rotated size)
    with open(path, "rb") as f, Image.open(f) as img:
        img.seek(0)  # the first frame of an animation or a multi-page scan
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # rotated/flipped as the camera's orientation tag says
        return _as_viewed(img, mode, path)  # a new image: the file closes here


def _as_viewed(img: Image.Image, mode: str, path: str | Path) -> Image.Image:
    if img.mode in (*_GRAY16, "I", "F"):
        return _high_depth_gray(img, path).convert(mode)
    if "A" in img.mode or "a" in img.mode or "transparency" in img.info:
        if img.mode == "La":  # premultiplied: Pillow converts it to straight alpha (LA) only
            img = img.convert("LA")
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (BACKGROUND,) * 4), rgba)
    return img.convert(mode)


def _high_depth_gray(img: Image.Image, path: str | Path) -> Image.Image:
    """A 16-bit, 32-bit integer or 32-bit float grayscale image as 8-bit ``"L"``, scaled by its type's full range."""
    arr = np.asarray(img)
    if img.mode == "F":
        if not np.isfinite(arr).all():
            raise ValueError(f"float image {str(path)!r} holds non-finite values (NaN or infinity)")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float image {str(path)!r} holds values in [{lo:g}, {hi:g}]; float images are read as 0 = black, "
                f"1 = white: rescale it to [0, 1] or save it as 8- or 16-bit"
            )
        gray = np.rint(arr.astype(np.float64) * 255.0)
    else:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise ValueError(
                f"{img.mode!r} image {str(path)!r} holds values in [{lo}, {hi}]; integer grayscale images are read "
                f"as 16-bit (0..65535): save it as 8- or 16-bit"
            )
        if hi < 4096:
            warnings.warn(LOW_BITS_WARNING, stacklevel=3)
        gray = np.rint(arr.astype(np.float64) / 257.0)  # 65535 -> 255: value * 255 / 65535
    out = gray.astype(np.uint8)
    transparent = img.info.get("transparency")  # a 16-bit PNG's tRNS: one gray value is see-through
    if isinstance(transparent, int) and img.mode != "F":
        out[arr == transparent] = BACKGROUND
    return Image.fromarray(out)  # uint8 (H, W): mode "L"


class ImageFolderSafe(datasets.ImageFolder):
    """``torchvision.datasets.ImageFolder`` read through :func:`load_image`; undecodable images come back as ``None``.

    ``mode`` is the PIL mode images are converted to: ``"L"`` for ``in_chans=1``, ``"RGB"`` for 3. Files with one of
    :data:`IMAGE_EXTENSIONS` count as images; one that fails to decode is skipped with a warning naming it.
    """

    def __init__(self, root: str | Path, transform: Any = None, mode: str = "RGB") -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"data folder {str(root)!r} does not exist (expected root/<class>/<images>)")
        if mode not in ("RGB", "L"):
            raise ValueError(f"images are loaded as 'RGB' or 'L', got mode={mode!r}")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        if not classes:
            raise ValueError(f"data folder {str(root)!r} has no class sub-folders (expected root/<class>/<images>)")
        empty = [c for c in classes if not any(_is_image(p) for p in (root / c).rglob("*"))]
        if empty:
            raise ValueError(
                f"class folder(s) {', '.join(repr(str(root / c)) for c in empty)} hold no images "
                f"(extensions {', '.join(IMAGE_EXTENSIONS)})"
            )
        self.mode = mode
        super().__init__(
            str(root), transform=transform, loader=partial(load_image, mode=mode), is_valid_file=_has_image_suffix
        )

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path, target = self.samples[index]
        try:
            img = self.loader(path)
        except DECODE_ERRORS as e:
            hint = " (HEIC/HEIF needs a Pillow plugin: convert such files to JPEG or PNG)" if _is_heif(path) else ""
            warnings.warn(f"skipping undecodable image {path!r}: {e}{hint}", stacklevel=2)
            return None
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def _is_image(path: Path) -> bool:
    return path.is_file() and _has_image_suffix(path)


def _has_image_suffix(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _is_heif(path: str) -> bool:
    return Path(path).suffix.lower() in (".heic", ".heif")


class SeededDataset(Dataset):
    """Wraps a dataset so that sample ``(epoch, index)`` is transformed under its own RNG seed.

    torchvision's transforms draw from torch's global RNG; here each sample saves it, seeds it with
    ``hash(seed, epoch, index)`` and restores it, so the augmentations do not depend on worker count, process count or on where in an
    epoch a resumed run starts. The caller's RNG state is left untouched (dropout keeps its own stream).
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base = base
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
        # save/seed/restore the CPU generator directly: torch.random.fork_rng costs ~1 ms a call
        gen = torch.default_generator
        state = gen.get_state()
        gen.manual_seed(seed)
        try:
            return self.base[index]
        finally:
            gen.set_state(state)


def collate_skipping(
    batch: Sequence[Any], stack: Callable[[list[Any]], Tensor] = torch.stack
) -> tuple[Tensor, Tensor, int]:
    """Stack ``(image, label)`` samples, dropping the ``None`` of undecodable images; returns (x, y, skipped).
    ``stack`` turns the kept images into the batch tensor (:meth:`BatchedAugment.collate` augments them there)."""
    kept = [s for s in batch if s is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    x = stack([s[0] for s in kept])
    y = torch.tensor([s[1] for s in kept], dtype=torch.long)
    return x, y, skipped


class ReverseChannels(torch.nn.Module):
    """RGB to BGR (or back) on a (..., C, H, W) tensor: a transform step for checkpoints trained on OpenCV's order."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flip(-3)


def build_transforms(
    train: bool,
    img_size: int,
    norm: Normalization,
    *,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    hflip: float = 0.5,
    auto_augment: str = "none",
    random_erasing: float = 0.0,
    eval_crop_pct: float = 0.875,
    interpolation: str = "bilinear",
    channel_order: str = "RGB",
) -> v2.Compose:
    """The train (random-resized-crop, flip, auto-augment, random erasing) or eval (resize + center crop) pipeline.

    Input is a PIL image already in the model's mode; output a normalised float tensor (C, img_size, img_size).
    ``interpolation`` ("bilinear", "bicubic", "nearest") resizes; ``channel_order="BGR"`` reverses an RGB image's
    channels before ``norm`` (whose mean and std are then in BGR order), for checkpoints trained on OpenCV's order.
    """
    if not isinstance(img_size, int) or img_size < 32:
        raise ValueError(f"img_size must be an integer >= 32 (the nets reduce by 32), got {img_size!r}")
    if auto_augment not in AUTO_AUGMENT:
        raise ValueError(f"auto_augment must be one of {AUTO_AUGMENT}, got {auto_augment!r}")
    if not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
        raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {crop_scale!r}")
    if not 0.0 < eval_crop_pct <= 1.0:
        raise ValueError(f"eval_crop_pct must be in (0, 1], got {eval_crop_pct!r}")
    for name, p in (("hflip", hflip), ("random_erasing", random_erasing)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} is a probability in [0, 1], got {p!r}")
    if channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    try:
        mode = v2.InterpolationMode(interpolation)
    except ValueError:
        raise ValueError(f"interpolation must be 'bilinear', 'bicubic' or 'nearest', got {interpolation!r}") from None
    ops: list[Any]
    if train:
        ops = [v2.RandomResizedCrop(img_size, scale=crop_scale, interpolation=mode, antialias=True)]
        if hflip > 0:
            ops.append(v2.RandomHorizontalFlip(hflip))
        if auto_augment == "autoaugment":
            ops.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
        elif auto_augment == "trivialaugment":
            ops.append(v2.TrivialAugmentWide())
        elif auto_augment == "randaugment":
            ops.append(v2.RandAugment())
    else:
        ops = [v2.Resize(round(img_size / eval_crop_pct), interpolation=mode, antialias=True), v2.CenterCrop(img_size)]
    ops += [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)]
    if channel_order == "BGR":
        ops.append(ReverseChannels())
    ops.append(v2.Normalize(list(norm.mean), list(norm.std)))
    if train and random_erasing > 0:
        ops.append(v2.RandomErasing(random_erasing))
    return v2.Compose(ops)


class CropSample(NamedTuple):
    """A training image before its augmentation, with the augmentation drawn for it (:meth:`BatchedAugment.sample`).

    ``image`` is the raw uint8 (C, H, W) image; ``box`` the crop (top, left, height, width) in its pixels; ``flip``
    whether the crop is mirrored left-right; ``erase`` torchvision's ``RandomErasing`` parameters (i, j, h, w, value)
    on the output, or None.
    """

    image: Tensor
    box: tuple[int, int, int, int]
    flip: bool
    erase: tuple[int, int, int, int, Tensor] | None


def _resize_weights(start: Tensor, length: Tensor, out: int, size: int, flip: Tensor | None) -> Tensor:
    """(B, out, size) weights that resize pixels ``[start, start + length)`` of a ``size``-pixel axis to ``out``
    pixels as torch's bilinear resize does (pixel centres at +0.5, samples clamped to the crop), rows reversed where
    ``flip``. Each row sums to 1."""
    o = torch.arange(out, dtype=torch.float32).expand(len(start), out)
    if flip is not None:
        o = torch.where(flip[:, None], out - 1 - o, o)
    crop = length.to(torch.float32)[:, None]
    src = ((o + 0.5) * (crop / out) - 0.5).clamp(min=0.0)
    src = torch.minimum(src, crop - 1)  # in crop coordinates
    pixel = torch.arange(size, dtype=torch.float32) - start.to(torch.float32)[:, None]  # (B, size), crop coordinates
    weights = src[:, :, None] - pixel[:, None, :]
    return weights.abs_().neg_().add_(1.0).clamp_(min=0.0)  # the triangle 1 - |distance|: two taps, or one at a border


def resized_crop_batch(
    images: Tensor,
    boxes: Tensor,
    size: tuple[int, int],
    *,
    flips: Tensor | None = None,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
) -> Tensor:
    """Crop each image to its box, resize it to ``size`` (bilinear), mirror it where ``flips``, and normalise.

    ``images`` is uint8 (B, C, H, W); ``boxes`` (B, 4) integer (top, left, height, width) in pixels; ``size``
    (height, width) of the output; ``flips`` (B,) bool or None; ``mean``/``std`` per channel (or one for all) of
    pixels scaled to [0, 1]. Returns float32 (B, C, *size), equal (to float rounding) to torchvision's
    ``v2.functional.resized_crop`` of each float image, then ``horizontal_flip`` and ``normalize``: two batched
    matrix products, the flip folded into the weights. Crops must upscale (height and width at most ``size``'s):
    shrinking needs antialiasing, which this does not do.

    Raises ValueError for a box outside its image or of no pixels, a box larger than ``size``, or shapes that do
    not match.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 (B, C, H, W), got {images.dtype} of shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    if boxes.shape != (b, 4):
        raise ValueError(f"boxes must be ({b}, 4) (top, left, height, width), got shape {tuple(boxes.shape)}")
    if flips is not None and flips.shape != (b,):
        raise ValueError(f"flips must be ({b},) bool, got shape {tuple(flips.shape)}")
    top, left, height, width = boxes.to(torch.int64).unbind(1)
    bad = (top < 0) | (left < 0) | (height < 1) | (width < 1) | (top + height > h) | (left + width > w)
    if bool(bad.any()):
        k = int(bad.nonzero()[0])
        raise ValueError(
            f"box {boxes[k].tolist()} (top, left, height, width) of image {k} is outside its {h}x{w} pixels"
        )
    big = (height > size[0]) | (width > size[1])
    if bool(big.any()):
        k = int(big.nonzero()[0])
        raise ValueError(
            f"box {boxes[k].tolist()} of image {k} is larger than the output {size[0]}x{size[1]}: only upscaling crops "
            f"are resized in a batch (shrinking needs antialiasing)"
        )
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    if mean_t.shape[1] not in (1, c) or std_t.shape[1] not in (1, c):
        raise ValueError(f"mean and std need 1 or {c} values, got {len(mean)} and {len(std)}")
    # normalising first is exact: every output pixel is a weighted mean of input pixels (weights sum to 1)
    x = (images.to(torch.float32) / 255.0 - mean_t) / std_t
    rows = _resize_weights(top, height, size[0], h, None)
    cols = _resize_weights(left, width, size[1], w, flips)
    return rows[:, None] @ x @ cols.transpose(1, 2)[:, None]


class BatchedAugment:
    """:func:`build_transforms`' training pipeline in two halves: parameters per sample, pixels per batch.

    For images that all have ``image_size`` (height, width), no larger than the output, and a pipeline of
    ``RandomResizedCrop`` (bilinear), optional ``RandomHorizontalFlip``, ``PILToTensor``, ``ToDtype``, ``Normalize``
    and optional ``RandomErasing``. :meth:`sample`, the dataset's transform, draws a sample's crop box, flip and
    erasing with the pipeline's own torchvision transforms (``make_params``), in the order and with the RNG calls
    of the per-image pipeline: under :class:`SeededDataset` a sample gets the same parameters as the per-image path
    would, whatever its batch. :meth:`collate`, the loader's collate function, then crops, resizes, flips and
    normalises the batch at once (:func:`resized_crop_batch`) and erases, using no RNG. The result equals the
    per-image pipeline's to within PIL's rounding to 8 bits (at most ~1/255 before normalisation).

    Build it with :meth:`from_pipeline`, which returns None for any other pipeline (auto-augment, BGR, bicubic, ...)
    or images larger than the output; those keep the per-image path.
    """

    def __init__(
        self,
        crop: v2.RandomResizedCrop,
        flip: v2.RandomHorizontalFlip | None,
        normalize: v2.Normalize,
        erase: v2.RandomErasing | None,
        image_size: tuple[int, int],
    ) -> None:
        self.crop, self.flip, self.normalize, self.erase = crop, flip, normalize, erase
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.size = (int(crop.size[0]), int(crop.size[1]))

    @classmethod
    def from_pipeline(cls, pipeline: Any, image_size: tuple[int, int]) -> BatchedAugment | None:
        """The batched form of ``pipeline`` (a :func:`build_transforms` training Compose) for images of
        ``image_size`` (height, width), or None where it has a step this does not batch or would shrink images."""
        ops = list(getattr(pipeline, "transforms", []))
        crop = ops.pop(0) if ops and type(ops[0]) is v2.RandomResizedCrop else None
        flip = ops.pop(0) if ops and type(ops[0]) is v2.RandomHorizontalFlip else None
        erase = ops.pop() if ops and type(ops[-1]) is v2.RandomErasing else None
        if crop is None or crop.interpolation != v2.InterpolationMode.BILINEAR or len(ops) != 3:
            return None
        to_tensor, to_float, normalize = ops
        if not (
            type(to_tensor) is v2.PILToTensor
            and type(to_float) is v2.ToDtype
            and to_float.dtype == torch.float32
            and to_float.scale
            and type(normalize) is v2.Normalize
        ):
            return None
        if image_size[0] > crop.size[0] or image_size[1] > crop.size[1]:  # a crop could shrink: needs antialiasing
            return None
        return cls(crop, flip, normalize, erase, image_size)

    def sample(self, img: Image.Image | Tensor) -> CropSample:
        """Draw the augmentation of one image (PIL, or a uint8 (C, H, W) tensor) from torch's global RNG.

        Raises ValueError for an image whose size is not ``image_size``.
        """
        if isinstance(img, Tensor):
            image = img
        elif img.mode == "L":  # the digits: as PILToTensor reads them, without its dispatch (a third of the cost)
            image = torch.from_numpy(np.array(img))[None]
        else:
            image = F.pil_to_tensor(img)
        if tuple(image.shape[-2:]) != self.image_size:
            raise ValueError(
                f"image of {image.shape[-2]}x{image.shape[-1]} pixels in a batched augmentation for "
                f"{self.image_size[0]}x{self.image_size[1]}"
            )
        # the per-image pipeline's RNG calls, in its order: the crop's make_params, the flip's and the erasing's
        # torch.rand(1) >= p (skip) tests, then the erasing's make_params on the (C, *size) output
        p = self.crop.make_params([image])
        flip = self.flip is not None and not bool(torch.rand(1) >= self.flip.p)
        erase = None
        if self.erase is not None and not bool(torch.rand(1) >= self.erase.p):
            q = self.erase.make_params([torch.zeros(()).expand(image.shape[0], *self.size)])
            if q["v"] is not None:
                erase = (q["i"], q["j"], q["h"], q["w"], q["v"])
        return CropSample(image, (p["top"], p["left"], p["height"], p["width"]), flip, erase)

    def apply(self, samples: Sequence[CropSample]) -> Tensor:
        """The augmented images of ``samples``: float32 (B, C, *size)."""
        images = torch.stack([s.image for s in samples])
        boxes = torch.tensor([s.box for s in samples], dtype=torch.int64)
        flips = torch.tensor([s.flip for s in samples], dtype=torch.bool) if self.flip is not None else None
        x = resized_crop_batch(images, boxes, self.size, flips=flips, mean=self.normalize.mean, std=self.normalize.std)
        for k, s in enumerate(samples):
            if s.erase is not None:
                F.erase(x[k], *s.erase, inplace=True)
        return x

    def collate(self, batch: Sequence[Any]) -> tuple[Tensor, Tensor, int]:
        """:func:`collate_skipping` for ``(CropSample, label)`` samples: (x, y, skipped), x augmented."""
        return collate_skipping(batch, stack=self.apply)


def load_split(data: str | Path, split: str, transform: Any = None, in_chans: int = 3) -> Dataset:
    """``split`` ("train" or "val") of ``data``: ``"builtin"`` or an ImageFolder root holding train/ and val/."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if str(data) == BUILTIN:
        if in_chans != 1:
            raise ValueError(f"the built-in digits are grayscale: use in_chans=1, got {in_chans}")
        return BuiltinDigits(split, transform)
    mode = image_mode(in_chans)
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {str(root)!r} does not exist (expected {BUILTIN!r} or a folder)")
    if not (root / split).is_dir():
        raise FileNotFoundError(
            f"data folder {str(root)!r} has no {split}/ sub-folder (expected root/{split}/<class>/*)"
        )
    return ImageFolderSafe(root / split, transform, mode=mode)


def subset_indices(targets: Sequence[int], n: int | None, seed: int) -> list[int]:
    """A fixed, class-balanced subset of ``n`` indices (all of them for None), for quick runs and tests."""
    if n is None or n >= len(targets):
        return list(range(len(targets)))
    if n < 1:
        raise ValueError(f"subset size must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(targets))
    # round-robin over classes in a seeded order keeps the subset balanced
    by_class: dict[int, list[int]] = {}
    for i in order:
        by_class.setdefault(int(targets[i]), []).append(int(i))
    picked: list[int] = []
    queues = [by_class[c] for c in sorted(by_class)]
    while len(picked) < n:
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop())
    return sorted(picked)


__all__ = [
    "AUTO_AUGMENT",
    "BACKGROUND",
    "BUILTIN",
    "DECODE_ERRORS",
    "IMAGE_EXTENSIONS",
    "BatchedAugment",
    "BuiltinDigits",
    "CropSample",
    "ImageFolderSafe",
    "Normalization",
    "SeededDataset",
    "build_transforms",
    "collate_skipping",
    "default_normalization",
    "image_mode",
    "load_image",
    "load_split",
    "resized_crop_batch",
    "subset_indices",
]
