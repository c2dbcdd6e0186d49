"""Detection data: the built-in digit canvases, COCO folders, and export of a data set to PNG + COCO JSON.

Both sources are Datasets yielding ``(image, target)``: ``image`` a float (C, H, W) tensor in [0, 1], ``target`` a dict
with ``boxes`` (K, 4) float xyxy in pixels (x2, y2 exclusive edges: a box of one pixel is [x, y, x + 1, y + 1]),
``labels`` (K,) int64 in 1..num_classes, and ``image_id`` (int). ``categories`` lists ``(label, name)``.

**Digit canvases** (:class:`DigitCanvases`): real MNIST handwriting (the package's 5,000 digits) pasted on a black
canvas at varied scales; real glyphs, synthetic layouts. Training canvases draw glyphs only from the 4,000 training
digits and validation canvases only from the 1,000 validation digits, so no glyph is in both. Canvas ``i`` is a pure
function of ``(seed, split, i)`` (``numpy.random.default_rng``): nothing is stored, any subset or order reproduces.
A digit's box is the tight box of its ink (pixels > ``INK`` after resizing), the label its digit + 1.

**COCO folders** (:class:`CocoFolder`): a user's images with an instances JSON. Annotations that cannot be trained on
(a box outside the image, zero or negative width/height, an unknown category id, an unknown image id, a malformed box)
and images whose file is missing raise one ``ValueError`` naming the first and the count, or with ``on_bad="skip"`` are
left out and counted in ``skipped`` (reported by training). Crowd annotations (``iscrowd=1``) are not trained on; they
are counted in ``skipped["crowd (not trained on)"]``.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from mobilezoo.data import BuiltinDigits, load_image

SPLITS = ("train", "val")
INK = 0.2  # a pixel is ink above this fraction of white (after the glyph is resized)
BAD_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class CanvasConfig:
    """How digit canvases are drawn.

    ``size``: canvas side in px. ``digits``: (min, max) digits per canvas. ``scale``: (min, max) side in px of a
    resized 28x28 MNIST cell (its ink is about 0.7 of that). ``max_iou``: a digit is placed only where its box overlaps
    each earlier box by at most this IoU (tried ``PLACE_TRIES`` times, then dropped; the first always fits).
    ``noise``: std of Gaussian background noise (fraction of white). ``clutter``: (min, max) unlabeled glyph fragments
    (a quarter to a half of a glyph) per canvas, hard negatives.
    """

    size: int = 128
    digits: tuple[int, int] = (1, 4)
    scale: tuple[int, int] = (12, 56)
    max_iou: float = 0.1
    noise: float = 0.0
    clutter: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        def pair(name: str, value: Any, low: int) -> None:
            ok = isinstance(value, (tuple, list)) and len(value) == 2
            ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            if not ok or not low <= value[0] <= value[1]:
                raise ValueError(f"{name} must be a pair of integers ({low} <= min <= max), got {value!r}")

        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 32:
            raise ValueError(f"size must be an integer >= 32 (px), got {self.size!r}")
        pair("digits", self.digits, 1)
        pair("scale", self.scale, 6)
        pair("clutter", self.clutter, 0)
        if self.scale[1] > self.size:
            raise ValueError(f"scale max {self.scale[1]} px exceeds the canvas size {self.size} px")
        if not 0.0 <= self.max_iou <= 1.0:
            raise ValueError(f"max_iou must be in [0, 1], got {self.max_iou!r}")
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1] (std as a fraction of white), got {self.noise!r}")
        object.__setattr__(self, "digits", tuple(self.digits))
        object.__setattr__(self, "scale", tuple(self.scale))
        object.__setattr__(self, "clutter", tuple(self.clutter))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


PLACE_TRIES = 20


@functools.cache
def _glyphs(split: str) -> tuple[np.ndarray, np.ndarray]:
    digits = BuiltinDigits(split)
    return digits.images, np.asarray(digits.targets, dtype=np.int64)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _resized(glyph: np.ndarray, side: int) -> np.ndarray:
    img = Image.fromarray(glyph).resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def draw_canvas(split: str, seed: int, index: int, config: CanvasConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canvas ``index`` of ``split``: (image (size, size) float32 in [0, 1], boxes (K, 4) int xyxy, labels (K,) 1..10).

    A pure function of its arguments; glyphs come from ``split``'s digits only.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images, digit_labels = _glyphs(split)
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    s = config.size
    canvas = np.zeros((s, s), dtype=np.float32)
    boxes: list[tuple[int, int, int, int]] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(config.digits[0], config.digits[1] + 1))):
        k = int(rng.integers(len(images)))
        glyph = _resized(images[k], int(rng.integers(config.scale[0], config.scale[1] + 1)))
        ys, xs = np.nonzero(glyph > INK)
        if len(ys) == 0:  # a glyph too faint at this size: nothing to box
            continue
        side = glyph.shape[0]
        for _ in range(PLACE_TRIES):
            x0, y0 = int(rng.integers(0, s - side + 1)), int(rng.integers(0, s - side + 1))
            box = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
            if all(_iou(box, b) <= config.max_iou for b in boxes):
                np.maximum(canvas[y0 : y0 + side, x0 : x0 + side], glyph, out=canvas[y0 : y0 + side, x0 : x0 + side])
                boxes.append(box)
                labels.append(int(digit_labels[k]) + 1)
                break
    for _ in range(int(rng.integers(config.clutter[0], config.clutter[1] + 1))):
        glyph = _resized(
            images[int(rng.integers(len(images)))], int(rng.integers(config.scale[0], config.scale[1] + 1))
        )
        side = glyph.shape[0]
        h, w = (max(2, int(side * f)) for f in rng.uniform(0.25, 0.5, size=2))
        gy, gx = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
        y0, x0 = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
        piece = glyph[gy : gy + h, gx : gx + w]
        np.maximum(canvas[y0 : y0 + h, x0 : x0 + w], piece, out=canvas[y0 : y0 + h, x0 : x0 + w])
    if config.noise > 0:
        canvas = np.clip(canvas + rng.normal(0.0, config.noise, canvas.shape).astype(np.float32), 0.0, 1.0)
    box_arr = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return canvas, box_arr, np.asarray(labels, dtype=np.int64)


class DigitCanvases(Dataset):
    """``length`` digit canvases of ``split`` (see the module docstring); item ``i`` is canvas ``i`` (image_id i + 1).

    Images are (1, size, size) float tensors (grayscale: build detectors with ``in_chans=1``).
    """

    categories: list[tuple[int, str]] = [(i + 1, str(i)) for i in range(10)]

    def __init__(
        self, split: str = "train", length: int = 10_000, *, seed: int = 0, config: CanvasConfig | None = None
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.split = split
        self.length = length
        self.seed = seed
        self.config = config or CanvasConfig()
        self.skipped: dict[str, int] = {}  # a generated set has nothing to skip; the same interface as CocoFolder
        self.in_chans = 1

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not 0 <= index < self.length:
            raise IndexError(f"canvas {index} out of range 0..{self.length - 1}")
        canvas, boxes, labels = draw_canvas(self.split, self.seed, index, self.config)
        target = {
            "boxes": torch.from_numpy(boxes).float(),
            "labels": torch.from_numpy(labels),
            "image_id": index + 1,
        }
        return torch.from_numpy(canvas)[None], target


class CocoFolder(Dataset):
    """A COCO detection folder: ``annotations`` (an instances JSON) and the image files it names under ``images``.

    Labels are 1..K in the order of the sorted category ids (``category_ids[label - 1]`` maps back). Images are read
    by :func:`mobilezoo.data.load_image` as ``"L"`` (``in_chans=1``) or ``"RGB"``; a file whose size differs from its
    JSON entry raises ``ValueError`` when read (its boxes would be misplaced). ``on_bad``: ``"error"`` (default) or
    ``"skip"``, see the module docstring; ``skipped`` maps each reason to its count. Images without annotations are
    kept (negatives). Raises ``FileNotFoundError`` for a missing JSON or image folder, ``ValueError`` for a JSON that
    is empty, not JSON, or lacks ``images``/``annotations``/``categories``.
    """

    def __init__(
        self, annotations: str | Path, images: str | Path | None = None, *, in_chans: int = 3, on_bad: str = "error"
    ) -> None:
        ann_path = Path(annotations)
        if on_bad not in BAD_POLICIES:
            raise ValueError(f"on_bad must be one of {BAD_POLICIES}, got {on_bad!r}")
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans!r}")
        if not ann_path.is_file():
            raise FileNotFoundError(f"annotation file {str(ann_path)!r} does not exist")
        root = Path(images) if images is not None else ann_path.parent
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
        text = ann_path.read_text(encoding="utf-8")
        if not text.strip():
            raise ValueError(f"annotation file {str(ann_path)!r} is empty")
        try:
            data = json.loads(text)  # data only: nothing in the file is executed
        except json.JSONDecodeError as e:
            raise ValueError(f"annotation file {str(ann_path)!r} is not JSON: {e}") from None
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
        ):
            raise ValueError(
                f"annotation file {str(ann_path)!r} is not a COCO instances file: it needs lists 'images', "
                "'annotations' and 'categories'"
            )
        if not data["images"]:
            raise ValueError(f"annotation file {str(ann_path)!r} lists no images")
        if not data["categories"]:
            raise ValueError(f"annotation file {str(ann_path)!r} lists no categories")
        cat_ids = sorted(int(c["id"]) for c in data["categories"])
        if len(set(cat_ids)) != len(cat_ids):
            raise ValueError(f"annotation file {str(ann_path)!r} repeats a category id: {cat_ids}")
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]}
        self.category_ids = cat_ids
        self.categories = [(i + 1, names[c]) for i, c in enumerate(cat_ids)]
        label_of = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.root, self.in_chans, self.on_bad = root, in_chans, on_bad
        self.skipped: dict[str, int] = {}
        bad: Counter[str] = Counter()
        first: dict[str, str] = {}

        def reject(reason: str, what: str) -> None:
            bad[reason] += 1
            first.setdefault(reason, what)

        self.images: list[dict[str, Any]] = []
        by_id: dict[int, dict[str, Any]] = {}
        for img in data["images"]:
            try:
                entry = {
                    "id": int(img["id"]),
                    "file": str(img["file_name"]),
                    "w": int(img["width"]),
                    "h": int(img["height"]),
                }
            except (KeyError, TypeError, ValueError):
                reject("image entry without id/file_name/width/height", repr(img)[:120])
                continue
            if entry["id"] in by_id:
                raise ValueError(f"annotation file {str(ann_path)!r} repeats image id {entry['id']}")
            if not (root / entry["file"]).is_file():
                reject("missing image file", str(root / entry["file"]))
                continue
            entry["boxes"], entry["labels"], entry["crowd"] = [], [], []
            by_id[entry["id"]] = entry
            self.images.append(entry)
        known_images = {int(i["id"]) for i in data["images"] if isinstance(i, dict) and "id" in i}
        for ann in data["annotations"]:
            what = (
                f"annotation {ann.get('id', '?')} (image {ann.get('image_id', '?')})"
                if isinstance(ann, dict)
                else repr(ann)
            )
            if not isinstance(ann, dict):
                reject("malformed annotation", what)
                continue
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4 or not all(_finite(v) for v in bbox):
                reject("malformed bbox (not 4 finite numbers)", what)
                continue
            if ann.get("image_id") not in known_images:
                reject("unknown image id", what)
                continue
            if ann.get("category_id") not in label_of:
                reject("unknown category id", f"{what}: category {ann.get('category_id')!r}, known {cat_ids}")
                continue
            image = by_id.get(ann["image_id"])
            if image is None:  # its image was rejected (missing file): counted there
                continue
            x, y, w, h = (float(v) for v in bbox)
            if w <= 0 or h <= 0:
                reject("zero-area box", f"{what}: bbox {bbox}")
                continue
            if x < 0 or y < 0 or x + w > image["w"] or y + h > image["h"]:
                reject("box outside the image", f"{what}: bbox {bbox} in a {image['w']}x{image['h']} image")
                continue
            if ann.get("iscrowd", 0):
                image["crowd"].append([x, y, x + w, y + h, label_of[ann["category_id"]]])
                self.skipped["crowd (not trained on)"] = self.skipped.get("crowd (not trained on)", 0) + 1
                continue
            image["boxes"].append([x, y, x + w, y + h])
            image["labels"].append(label_of[ann["category_id"]])
        if bad and on_bad == "error":
            reason, count = bad.most_common(1)[0]
            others = f" ({sum(bad.values()) - count} other bad entries)" if sum(bad.values()) > count else ""
            raise ValueError(
                f"{str(ann_path)!r}: {count} x {reason}, first: {first[reason]}{others}; fix the file or pass "
                "on_bad='skip' to leave them out (they are counted)"
            )
        self.skipped.update(bad)
        if not self.images:
            raise ValueError(f"{str(ann_path)!r}: no usable image (skipped: {dict(bad)})")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        entry = self.images[index]
        img = load_image(self.root / entry["file"], "L" if self.in_chans == 1 else "RGB")
        if img.size != (entry["w"], entry["h"]):
            raise ValueError(
                f"image {str(self.root / entry['file'])!r} is {img.size[0]}x{img.size[1]}, its annotation says "
                f"{entry['w']}x{entry['h']}: the boxes would be misplaced"
            )
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
        image = arr[None] if arr.dim() == 2 else arr.permute(2, 0, 1)
        target = {
            "boxes": torch.tensor(entry["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(entry["labels"], dtype=torch.int64),
            "image_id": entry["id"],
            "crowd_boxes": torch.tensor([c[:4] for c in entry["crowd"]], dtype=torch.float32).reshape(-1, 4),
            "crowd_labels": torch.tensor([c[4] for c in entry["crowd"]], dtype=torch.int64),
        }
        return image.contiguous(), target


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def export_coco(dataset: Dataset, out_dir: str | Path, *, name: str = "instances.json") -> Path:
    """Write every image of ``dataset`` as ``out_dir/images/<image_id>.png`` and its boxes as a COCO instances JSON
    ``out_dir/<name>`` (bbox [x, y, w, h], area w*h, iscrowd 0); returns the JSON's path, which
    ``CocoFolder(path, out_dir / "images")`` reads back.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(len(dataset)):  # type: ignore[arg-type]
        image, target = dataset[index]
        image_id = int(target["image_id"])
        arr = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        pil = Image.fromarray(arr[0].numpy()) if arr.shape[0] == 1 else Image.fromarray(arr.permute(1, 2, 0).numpy())
        file = f"{image_id:06d}.png"
        pil.save(out / "images" / file)
        images.append({"id": image_id, "file_name": file, "width": pil.size[0], "height": pil.size[1]})
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    cats = getattr(dataset, "categories", None) or sorted(
        {(a["category_id"], str(a["category_id"])) for a in annotations}
    )
    payload = {
        "info": {"description": f"exported by mobilezoo from {type(dataset).__name__}"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": int(i), "name": str(n)} for i, n in cats],
    }
    path = out / name
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    tmp.replace(path)
    return path


def collate(batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """A list of images and a list of targets (detectors take lists: images may differ in size)."""
    return [b[0] for b in batch], [b[1] for b in batch]


__all__ = [
    "BAD_POLICIES",
    "INK",
    "CanvasConfig",
    "CocoFolder",
    "DigitCanvases",
    "collate",
    "draw_canvas",
    "export_coco",
]
