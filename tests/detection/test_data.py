"""Digit canvases (deterministic, valid boxes, split-pure glyphs), COCO export and COCO folders with bad annotations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilezoo.data import BuiltinDigits
from mobilezoo.detection import CanvasConfig, CocoFolder, DigitCanvases, export_coco
from mobilezoo.detection.data import INK, draw_canvas


def test_canvases_are_a_pure_function_of_seed_split_and_index() -> None:
    a = DigitCanvases("train", 100, seed=3)
    b = DigitCanvases("train", 20, seed=3)  # another length: the same canvases
    for i in (0, 7, 19):
        (x, t), (y, u) = a[i], b[i]
        assert torch.equal(x, y) and torch.equal(t["boxes"], u["boxes"]) and torch.equal(t["labels"], u["labels"])
    assert [a[i][1]["image_id"] for i in (0, 7)] == [1, 8]
    later_first = DigitCanvases("train", 100, seed=3)[19]  # drawn without drawing 0..18 first
    assert torch.equal(later_first[0], a[19][0])
    assert not torch.equal(DigitCanvases("train", 5, seed=4)[0][0], a[0][0])
    assert not torch.equal(DigitCanvases("val", 5, seed=3)[0][0], a[0][0])


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_box_is_valid_and_boxes_the_ink(split: str) -> None:
    config = CanvasConfig(size=96, digits=(1, 5), scale=(10, 48), noise=0.0)
    ds = DigitCanvases(split, 200, seed=1, config=config)
    counts, sides = [], []
    for i in range(len(ds)):
        image, target = ds[i]
        boxes, labels = target["boxes"], target["labels"]
        assert image.shape == (1, 96, 96) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
        assert boxes.shape == (len(labels), 4) and len(labels) >= 1
        assert ((labels >= 1) & (labels <= 10)).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 96).all()
        assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
        for x1, y1, x2, y2 in boxes.long().tolist():  # ink touches every edge of its box
            crop = image[0, y1:y2, x1:x2] > INK
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
        counts.append(len(labels))
        sides += (boxes[:, 3] - boxes[:, 1]).tolist()
    assert min(counts) == 1 and max(counts) == 5  # several digits per canvas, the configured range
    assert min(sides) < 12 and max(sides) > 30  # varied scales


def _ink_crops(glyphs: np.ndarray) -> set[bytes]:
    """Each 28x28 glyph cropped to its nonzero pixels, as bytes (with its shape), for exact lookups."""
    out = set()
    for g in glyphs:
        ys, xs = np.nonzero(g)
        crop = g[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        out.add(bytes(crop.shape) + crop.tobytes())
    return out


def test_canvases_use_only_their_splits_glyphs() -> None:
    """A canvas of one digit at 28 px (the glyph pasted unresized) holds exactly one glyph of its own split."""
    config = CanvasConfig(size=56, digits=(1, 1), scale=(28, 28))
    crops = {split: _ink_crops(BuiltinDigits(split).images) for split in ("train", "val")}
    for split, other in (("train", "val"), ("val", "train")):
        for i in range(40):
            canvas, _, _ = draw_canvas(split, 0, i, config)
            pixels = np.rint(canvas * 255).astype(np.uint8)
            ys, xs = np.nonzero(pixels)
            crop = pixels[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            key = bytes(crop.shape) + crop.tobytes()
            assert key in crops[split] and key not in crops[other], (split, i)


def test_clutter_and_noise_add_no_boxes() -> None:
    plain = DigitCanvases("val", 30, config=CanvasConfig(size=64, scale=(12, 32)))
    busy = DigitCanvases("val", 30, config=CanvasConfig(size=64, scale=(12, 32), clutter=(2, 3), noise=0.1))
    for i in range(30):
        assert torch.equal(plain[i][1]["boxes"], busy[i][1]["boxes"])
    assert sum(float(busy[i][0].gt(0).float().mean()) for i in range(30)) > 2 * sum(
        float(plain[i][0].gt(0).float().mean()) for i in range(30)
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 16}, "size must be an integer >= 32"),
        ({"digits": (3, 1)}, "digits must be a pair"),
        ({"scale": (12, 200)}, "exceeds the canvas size"),
        ({"max_iou": 1.5}, "max_iou"),
        ({"noise": -0.1}, "noise"),
        ({"clutter": (0,)}, "clutter must be a pair"),
    ],
)
def test_bad_canvas_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CanvasConfig(**kwargs)


def test_bad_canvas_arguments() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        DigitCanvases("test")
    with pytest.raises(ValueError, match="length must be"):
        DigitCanvases("train", 0)
    with pytest.raises(IndexError, match="out of range"):
        DigitCanvases("train", 3)[3]


def test_export_to_png_and_coco_json_reads_back(tmp_path: Path) -> None:
    ds = DigitCanvases("val", 6, seed=2, config=CanvasConfig(size=64, scale=(12, 32), noise=0.05))
    path = export_coco(ds, tmp_path)
    data = json.loads(path.read_text())
    assert len(data["images"]) == 6 and [c["id"] for c in data["categories"]] == list(range(1, 11))
    ann = data["annotations"][0]
    assert ann["bbox"][2] * ann["bbox"][3] == ann["area"] and ann["iscrowd"] == 0
    back = CocoFolder(path, tmp_path / "images", in_chans=1)
    assert back.skipped == {} and len(back) == 6
    for i in range(6):
        (x, t), (y, u) = ds[i], back[i]
        torch.testing.assert_close(y, x, atol=0.5 / 255 + 1e-6, rtol=0)  # 8-bit PNG
        assert torch.equal(t["boxes"], u["boxes"]) and torch.equal(t["labels"], u["labels"])


def _coco(tmp_path: Path, annotations: list[dict], *, images: list[dict] | None = None, files: bool = True) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}]
    if files:
        for img in images:
            Image.fromarray(np.zeros((img["height"], img["width"], 3), np.uint8)).save(
                tmp_path / "images" / img["file_name"]
            )
    path = tmp_path / "instances.json"
    cats = [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return path


def _ann(bbox: list, category: int = 7, image: int = 1, **extra) -> dict:
    return {"id": 1, "image_id": image, "category_id": category, "bbox": bbox, **extra}


def test_a_good_coco_folder(tmp_path: Path) -> None:
    path = _coco(tmp_path, [_ann([1, 2, 10, 5]), _ann([0, 0, 40, 30], category=3), _ann([5, 5, 4, 4], iscrowd=1)])
    ds = CocoFolder(path, tmp_path / "images")
    assert ds.categories == [(1, "dog"), (2, "cat")] and ds.category_ids == [3, 7]  # labels follow sorted ids
    image, target = ds[0]
    assert image.shape == (3, 30, 40)
    assert target["boxes"].tolist() == [[1, 2, 11, 7], [0, 0, 40, 30]] and target["labels"].tolist() == [2, 1]
    assert target["crowd_boxes"].tolist() == [[5, 5, 9, 9]]
    assert ds.skipped == {"crowd (not trained on)": 1}


@pytest.mark.parametrize(
    ("annotation", "reason"),
    [
        (_ann([30, 2, 20, 5]), "box outside the image"),
        (_ann([-1, 2, 5, 5]), "box outside the image"),
        (_ann([1, 2, 0, 5]), "zero-area box"),
        (_ann([1, 2, 5, -3]), "zero-area box"),
        (_ann([1, 2, 5, 5], category=4), "unknown category id"),
        (_ann([1, 2, 5, 5], image=9), "unknown image id"),
        (_ann([1, 2, 5]), "malformed bbox"),
        (_ann([1, 2, float("nan"), 5]), "malformed bbox"),
    ],
)
def test_bad_annotations_raise_or_are_skipped_and_counted(tmp_path: Path, annotation: dict, reason: str) -> None:
    good = _ann([1, 2, 10, 5])
    path = _coco(tmp_path, [good, annotation, annotation])
    with pytest.raises(ValueError, match=rf"2 x {reason}.*on_bad='skip'") as info:
        CocoFolder(path, tmp_path / "images")
    assert "\n" not in str(info.value)
    ds = CocoFolder(path, tmp_path / "images", on_bad="skip")
    assert ds.skipped == {reason if not reason.startswith("malformed") else "malformed bbox (not 4 finite numbers)": 2}
    assert ds[0][1]["boxes"].tolist() == [[1, 2, 11, 7]]  # only the good box is trained on


def test_missing_image_files(tmp_path: Path) -> None:
    images = [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "gone.png", "width": 40, "height": 30},
    ]
    path = _coco(tmp_path, [_ann([1, 2, 10, 5]), _ann([1, 2, 10, 5], image=2)], images=images[:1])
    data = json.loads(path.read_text())
    data["images"] = images
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"1 x missing image file, first: .*gone\.png"):
        CocoFolder(path, tmp_path / "images")
    ds = CocoFolder(path, tmp_path / "images", on_bad="skip")
    assert len(ds) == 1 and ds.skipped == {"missing image file": 1}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        ("{not json", "is not JSON"),
        ("[]", "is not a COCO instances file"),
        ('{"images": [], "annotations": [], "categories": [{"id": 1}]}', "lists no images"),
        ('{"images": [{"id": 1}], "annotations": []}', "is not a COCO instances file"),
    ],
)
def test_unreadable_annotation_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "instances.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        CocoFolder(path)
    assert "\n" not in str(info.value)


def test_missing_paths_and_a_resized_image(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="annotation file"):
        CocoFolder(tmp_path / "nope.json")
    path = _coco(tmp_path, [_ann([1, 2, 10, 5])])
    with pytest.raises(FileNotFoundError, match="image folder"):
        CocoFolder(path, tmp_path / "no_images")
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(tmp_path / "images" / "a.png")  # not the JSON's 40x30
    with pytest.raises(ValueError, match="is 80x60, its annotation says 40x30"):
        CocoFolder(path, tmp_path / "images")[0]
    with pytest.raises(ValueError, match="on_bad must be one of"):
        CocoFolder(path, tmp_path / "images", on_bad="ignore")
