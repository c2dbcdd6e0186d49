"""Training and evaluation of detectors: a COCO folder run reports what it skipped, runs are deterministic, bad
configs fail early, and (slow) FCOS learns the digit canvases from scratch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mobilezoo.detection import CanvasConfig, DetectionTrainConfig, DigitCanvases, export_coco, train_detector

TINY = CanvasConfig(size=64, digits=(1, 2), scale=(16, 40))


def _folder(root: Path) -> Path:
    for split, n in (("train", 8), ("val", 4)):
        path = export_coco(DigitCanvases(split, n, config=TINY), root / split)
        data = json.loads(path.read_text())
        data["annotations"].append({"id": 999, "image_id": 1, "category_id": 11, "bbox": [1, 1, 5, 5]})
        path.write_text(json.dumps(data))
    return root


def test_a_coco_folder_run_counts_what_it_skipped(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    base = {"data": str(root), "steps": 2, "batch_size": 4, "image_size": 64, "in_chans": 1, "eval_batch_size": 4}
    with pytest.raises(ValueError, match="1 x unknown category id"):
        train_detector(DetectionTrainConfig(**base))
    result = train_detector(DetectionTrainConfig(**base, on_bad="skip"), log_every=1)
    assert result.skipped == {"train": {"unknown category id": 1}, "val": {"unknown category id": 1}}
    assert [h["step"] for h in result.history] == [1, 2] and result.images_seen == 8
    assert result.metrics.images == 4 and result.metrics.AP is not None and 0.0 <= result.metrics.AP <= 1.0
    json.dumps(result.to_dict())
    assert not result.model.training


def test_a_builtin_run_is_reproducible() -> None:
    cfg = DetectionTrainConfig(steps=2, batch_size=2, canvas=TINY, val_canvases=2, eval_batch_size=2)
    a = train_detector(cfg, log_every=1)
    b = train_detector(cfg, log_every=1)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"batch_size": 1}, "batch_size must be >= 2"),
        ({"lr": 0}, "lr must be a finite number > 0"),
        ({"in_chans": 3}, "the built-in canvases are grayscale"),
        ({"data": "/no/such/folder"}, "neither 'builtin' nor a folder"),
        ({"detector": "yolo"}, "unknown detector 'yolo'"),
        ({"options": {"fpn_channels": 33}}, "fpn_channels must be a multiple of 32"),
    ],
)
def test_bad_configs_fail_before_training(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        train_detector(DetectionTrainConfig(**{"steps": 1, "val_canvases": 1, **kwargs}))


def test_a_folder_without_the_layout(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"train/instances\.json' does not exist"):
        train_detector(DetectionTrainConfig(data=str(tmp_path), steps=1))


@pytest.mark.slow
def test_fcos_learns_digit_canvases_from_scratch() -> None:
    """FCOS on the 40M-level ShuffleNet V2 0.5x, 6,400 fresh 96-px canvases: AP50 > 0.3 on 200 validation canvases
    (chance is 0). Measured: AP50 0.54 with 60 s of CPU time on one thread; 700 steps gave 0.48, 900 gave 0.60."""
    cfg = DetectionTrainConfig(
        backbone="shufflenet_v2_x0_5",
        steps=800,
        batch_size=8,
        lr=2e-3,
        warmup_steps=50,
        canvas=CanvasConfig(size=96, digits=(1, 3), scale=(24, 56)),
        val_canvases=200,
    )
    result = train_detector(cfg)
    assert result.metrics.AP50 is not None and result.metrics.AP50 > 0.3, result.metrics.format()
    assert result.history[-1]["loss"] < result.history[0]["loss"]
