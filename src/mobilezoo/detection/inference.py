"""Using a trained detector file: :func:`evaluate_detector_file` (COCO metrics on the built-in canvases or a COCO
folder) and :func:`predict_detections` (boxes on image files, as JSON-ready records and drawn on PNGs)."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobilezoo.data import BUILTIN
from mobilezoo.detection.data import CanvasConfig, CocoFolder, DigitCanvases
from mobilezoo.detection.io import load_detector
from mobilezoo.detection.metrics import CocoMetrics

# box colours of the drawn predictions, by label (cycled)
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4", "#469990")


@dataclass
class DetectorEvalResult:
    """COCO metrics of a detector file on a data set: the metrics, what was scored (``data``, ``annotations``: the
    COCO JSON or a description of the canvases) and the annotations skipped (by reason)."""

    weights: str
    data: str
    annotations: str
    metrics: CocoMetrics
    skipped: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "metrics": self.metrics.to_dict()}


def _coco_split(root: Path, in_chans: int, on_bad: str) -> tuple[CocoFolder, Path]:
    for ann in (root / "val" / "instances.json", root / "instances.json"):
        if ann.is_file():
            return CocoFolder(ann, ann.parent / "images", in_chans=in_chans, on_bad=on_bad), ann
    raise FileNotFoundError(
        f"{str(root)!r} holds neither val/instances.json nor instances.json (a COCO folder: the JSON with the "
        "images in images/ beside it, what mobilezoo detect canvases writes)"
    )


def evaluate_detector_file(
    weights: str | PathLike,
    data: str = BUILTIN,
    *,
    val_canvases: int | None = None,
    batch_size: int = 16,
    on_bad: str = "error",
) -> DetectorEvalResult:
    """COCO metrics of the detector in ``weights`` (:func:`load_detector`) on ``data``.

    ``data="builtin"``: the validation digit canvases drawn as in the detector's training run (its canvas config and
    seed, stored in the file; the defaults for a file without them), ``val_canvases`` of them (default: the run's
    number). A folder: its ``val/instances.json`` (else ``instances.json``) with the images in ``images/`` beside it,
    read in the detector's channels. Raises ``FileNotFoundError``/``ValueError`` (one line) for a missing or bad file,
    a folder whose categories do not match the detector's classes, or the grayscale canvases with an RGB detector.
    """
    from mobilezoo.detection.train import evaluate_detector

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    model = load_detector(weights)
    built = model.mobilezoo  # type: ignore[assignment]
    n, in_chans = built["num_classes"], built["in_chans"]
    if str(data) == BUILTIN:
        run = built.get("train_config") or {}
        if in_chans != 1 or n != 10:
            raise ValueError(
                f"the built-in canvases are grayscale digits (1 channel, 10 classes); {str(weights)!r} is a detector "
                f"of {in_chans} channel(s) and {n} classes: pass its COCO folder as data"
            )
        count = val_canvases if val_canvases is not None else int(run.get("val_canvases", 500))
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"val_canvases must be an integer >= 1, got {count!r}")
        canvas = CanvasConfig(**run["canvas"]) if run.get("canvas") else CanvasConfig()
        seed = int(run.get("seed", 0))
        dataset: Any = DigitCanvases("val", count, seed=seed, config=canvas)
        described = f"{count} validation canvases (seed {seed}, {canvas.size} px)"
    else:
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(f"data {str(data)!r} is neither {BUILTIN!r} nor a folder")
        if val_canvases is not None:
            raise ValueError("val_canvases is for the built-in canvases; a COCO folder is scored on all its images")
        dataset, ann = _coco_split(root, in_chans, on_bad)
        if len(dataset.categories) != n:
            raise ValueError(
                f"{str(ann)!r} has {len(dataset.categories)} categories, the detector {n} classes: it was not trained "
                "on this label set"
            )
        described = str(ann)
    metrics = evaluate_detector(model, dataset, batch_size=batch_size)
    return DetectorEvalResult(str(weights), str(data), described, metrics, dict(dataset.skipped))


def _draw(image: torch.Tensor, detections: list[dict[str, Any]], path: Path) -> None:
    """``image`` ((C, H, W) float in [0, 1]) with ``detections`` drawn, as a PNG at ``path`` (atomically)."""
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes

    from mobilezoo.train.checkpoint import atomic_write_bytes

    rgb = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    if rgb.shape[0] == 1:
        rgb = rgb.expand(3, -1, -1)
    if detections:
        boxes = torch.tensor([d["box"] for d in detections], dtype=torch.float32)
        labels = [f"{d['name']} {d['score']:.2f}" for d in detections]
        colors = [PALETTE[(d["label"] - 1) % len(PALETTE)] for d in detections]
        width = max(1, round(min(rgb.shape[1:]) / 150))
        rgb = draw_bounding_boxes(rgb, boxes, labels=labels, colors=colors, width=width)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb.permute(1, 2, 0).numpy())).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


@torch.inference_mode()
def predict_detections(
    model: nn.Module | str | PathLike,
    images: list[str | PathLike],
    *,
    score_thresh: float = 0.3,
    out_dir: str | PathLike | None = None,
) -> list[dict[str, Any]]:
    """Detect objects in image files with ``model`` (a :func:`load_detector` model or a detector file's path).

    Each image is read by :func:`mobilezoo.data.load_image` in the detector's channels (``"L"`` for 1, ``"RGB"`` for
    3). Returns one record per image: ``image`` (the path), ``width``, ``height`` and ``detections``, those scoring
    at least ``score_thresh``, best first: ``box`` ``[x1, y1, x2, y2]`` in pixels of the original image, ``label``
    (1..num_classes), ``name`` and ``score``. With ``out_dir`` each image is also written there with its boxes drawn,
    as ``<name>.png`` (``<name>-2.png``... for repeated names), and the record gets ``drawn`` (its path) and
    ``out_dir/detections.json`` holds every record. Raises ``ValueError`` for a ``score_thresh`` outside [0, 1], and
    what ``load_image`` raises for a missing or undecodable file, before anything is written.
    """
    from mobilezoo.data import load_image
    from mobilezoo.train.checkpoint import atomic_write_text

    if not isinstance(score_thresh, (int, float)) or isinstance(score_thresh, bool) or not 0 <= score_thresh <= 1:
        raise ValueError(f"score_thresh must be a number in [0, 1], got {score_thresh!r}")
    if not images:
        raise ValueError("no image files given")
    if not isinstance(model, nn.Module):
        model = load_detector(model)
    built = getattr(model, "mobilezoo", None)
    if not isinstance(built, dict):
        raise ValueError(f"{type(model).__name__} is not a mobilezoo detector (no model.mobilezoo build record)")
    names = dict(built.get("categories") or [(i + 1, str(i + 1)) for i in range(built["num_classes"])])
    mode = "L" if built["in_chans"] == 1 else "RGB"
    tensors = []
    for path in images:  # every file decoded before anything is written
        if not Path(path).is_file():
            raise FileNotFoundError(f"image file {str(path)!r} does not exist")
        arr = torch.from_numpy(np.asarray(load_image(path, mode), dtype=np.float32) / 255.0)
        tensors.append((arr[None] if arr.dim() == 2 else arr.permute(2, 0, 1)).contiguous())
    model.eval()
    records: list[dict[str, Any]] = []
    used: dict[str, int] = {}
    out = Path(out_dir) if out_dir is not None else None
    for path, image in zip(images, tensors):
        pred = model([image])[0]
        keep = pred["scores"] >= score_thresh
        order = torch.argsort(pred["scores"][keep], descending=True)
        dets = [
            {
                "box": [round(float(v), 2) for v in box],
                "label": int(label),
                "name": names.get(int(label), str(int(label))),
                "score": round(float(score), 4),
            }
            for box, label, score in zip(
                pred["boxes"][keep][order], pred["labels"][keep][order], pred["scores"][keep][order]
            )
        ]
        record: dict[str, Any] = {
            "image": str(path),
            "width": int(image.shape[2]),
            "height": int(image.shape[1]),
            "detections": dets,
        }
        if out is not None:
            stem = Path(path).stem
            used[stem] = used.get(stem, 0) + 1
            drawn = out / (f"{stem}.png" if used[stem] == 1 else f"{stem}-{used[stem]}.png")
            _draw(image, dets, drawn)
            record["drawn"] = str(drawn)
        records.append(record)
    if out is not None:
        atomic_write_text(out / "detections.json", json.dumps(records, indent=1) + "\n")
    return records


__all__ = ["PALETTE", "DetectorEvalResult", "evaluate_detector_file", "predict_detections"]
