"""Training and evaluation of detectors: a COCO folder run reports what it skipped, runs are deterministic, bad
configs fail early, a run folder holds what the engine's do and resumes exactly, torchrun runs it data-parallel, and
(slow) FCOS learns the digit canvases from scratch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mobilezoo.detection import CanvasConfig, DetectionTrainConfig, DigitCanvases, export_coco, train_detector
from mobilezoo.detection.io import load_detector, read_detector_metadata
from mobilezoo.detection.train import load_detection_config, resume_detection_config
from mobilezoo.weights import read_state_dict
from tests.torchrun import torchrun_mobilezoo

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


# run folders, exact resume, torchrun: a few steps of 2 images on 64-px canvases, one thread (bitwise comparisons)
FAST = {
    "steps": 4,
    "batch_size": 2,
    "warmup_steps": 2,
    "canvas": TINY,
    "val_canvases": 2,
    "eval_batch_size": 2,
    "threads": 1,
}
# Light-Head R-CNN samples its RoIs with the global RNG: resuming it exactly needs the RNG state restored
SMALL_LIGHT_HEAD = {
    "detector": "light_head_rcnn",
    "options": {"fc_channels": 32, "mid_channels": 8, "ps_channels": 2, "pool_size": 3, "kernel": 3, "roi_batch": 32},
}


class Stop(Exception):
    pass


def _stop_at(step: int):
    def on_step(s: int) -> None:
        if s == step:
            raise Stop

    return on_step


def _no_partial_files(run: Path) -> None:
    assert not [p for p in run.rglob("*") if p.name.startswith(".tmp-")], sorted(run.rglob("*"))


@pytest.mark.parametrize("extra", [{}, SMALL_LIGHT_HEAD], ids=["fcos", "light_head_rcnn"])
def test_a_stopped_run_resumes_to_the_same_weights(tmp_path: Path, extra: dict) -> None:
    cfg = DetectionTrainConfig(**FAST, **extra)
    ref = train_detector(cfg, out_dir=tmp_path / "ref", checkpoint_every=2, log_every=1)
    with pytest.raises(Stop):  # stopped after step 3: its last checkpoint is step 2's
        train_detector(cfg, out_dir=tmp_path / "run", checkpoint_every=2, log_every=1, on_step=_stop_at(3))
    assert json.loads((tmp_path / "run" / "last.json").read_text())["step"] == 2
    assert not (tmp_path / "run" / "detector.safetensors").exists()
    torch.manual_seed(1234)  # the RNG state of the resuming process must not matter
    resumed = train_detector(cfg, out_dir=tmp_path / "run", resume=True, checkpoint_every=2, log_every=1)
    a = read_state_dict(tmp_path / "ref" / "detector.safetensors")
    b = read_state_dict(tmp_path / "run" / "detector.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in ref.history]
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4] and resumed.images_seen == 8
    assert resumed.metrics == ref.metrics
    _no_partial_files(tmp_path / "run")


def test_a_run_folder_holds_config_checkpoint_metrics_and_the_detector(tmp_path: Path) -> None:
    run = tmp_path / "run"
    events = []
    result = train_detector(DetectionTrainConfig(**FAST), out_dir=run, log_every=2, progress=events.append)
    assert {p.name for p in run.iterdir()} == {
        "config.yaml",
        "checkpoints",
        "last.json",
        "metrics.json",
        "metrics.csv",
        "metrics.png",
        "detector.safetensors",
        "coco_metrics.json",
    }
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "ckpt-00000004.safetensors",
        "ckpt-00000004.state.pt",
    ]
    assert load_detection_config(run) == DetectionTrainConfig(**FAST)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == result.history and [r["step"] for r in metrics] == [2, 4]
    assert all(set(r) == {"step", "loss", "lr", "images_per_s"} and math.isfinite(r["loss"]) for r in metrics)
    assert (run / "metrics.csv").read_text().splitlines()[0] == "step,loss,lr,images_per_s"
    coco = json.loads((run / "coco_metrics.json").read_text())
    assert coco["metrics"] == result.metrics.to_dict() and coco["step"] == 4
    assert [(e.kind, e.step) for e in events] == [("step", 2), ("step", 4), ("eval", 4)]
    assert events[0].record == metrics[0] and events[-1].record == result.metrics.to_dict()
    meta = read_detector_metadata(run / "detector.safetensors")
    assert meta["step"] == 4 and meta["train_config"] == DetectionTrainConfig(**FAST).to_dict()
    assert meta["categories"] == [(i + 1, str(i)) for i in range(10)]
    _no_partial_files(run)


def test_resume_refuses_changed_settings_and_a_used_folder(tmp_path: Path) -> None:
    cfg = DetectionTrainConfig(**{**FAST, "steps": 2})
    run = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_detector(cfg, out_dir=run, resume=True)
    train_detector(cfg, out_dir=run)
    before = (run / "metrics.json").read_text()
    with pytest.raises(ValueError, match="cannot resume") as info:
        train_detector(DetectionTrainConfig(**{**FAST, "steps": 3, "lr": 0.1}), out_dir=run, resume=True)
    assert "steps: the run has 2, given 3" in str(info.value) and "lr: the run has 0.002, given 0.1" in str(info.value)
    with pytest.raises(ValueError, match="already holds a run: pass resume=True"):
        train_detector(cfg, out_dir=run)
    assert (run / "metrics.json").read_text() == before
    with pytest.raises(ValueError, match=r"--steps: the run has 2, given 5"):
        resume_detection_config(run, labels={"steps": "--steps"}, steps=5)
    assert resume_detection_config(run, steps=2, threads=2).threads == 2  # same value, or a field that may change
    again = train_detector(resume_detection_config(run, threads=2), out_dir=run, resume=True)  # finished: scored again
    assert again.metrics.images == 2 and [h["step"] for h in again.history] == [2]


def test_a_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    from mobilezoo.train import checkpoint as ck

    real, calls = ck.save_weights, []

    def dies_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            real(*args, **kwargs)  # the file is half there when the process dies
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ck, "save_weights", dies_on_the_third)
    cfg = DetectionTrainConfig(**FAST)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_detector(cfg, out_dir=run, checkpoint_every=1)
    _no_partial_files(run)
    assert json.loads((run / "last.json").read_text())["step"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "ckpt-00000002.safetensors",
        "ckpt-00000002.state.pt",
    ]
    monkeypatch.setattr(ck, "save_weights", real)
    assert train_detector(cfg, out_dir=run, resume=True, checkpoint_every=1).images_seen == 8


def test_a_batch_that_does_not_split_over_the_processes(monkeypatch) -> None:
    from mobilezoo.train import distributed

    monkeypatch.setattr(distributed, "setup", lambda device: distributed.DistInfo(2, 0, 0))
    with pytest.raises(ValueError, match="batch_size 3 is not divisible by the 2 processes"):
        train_detector(DetectionTrainConfig(**{**FAST, "batch_size": 3}))
    with pytest.raises(ValueError, match="batch_size 2 over 2 processes leaves 1 image per process"):
        train_detector(DetectionTrainConfig(**FAST))


def test_torchrun_two_processes_train_and_write_one_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    done = torchrun_mobilezoo(
        *("detect", "train", "--steps", "2", "--batch-size", "4", "--canvas-size", "64", "--val-canvases", "2"),
        *("--log-every", "1", "--warmup-steps", "1", "--checkpoint-every", "1", "--out", str(run)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("step 2/2") == 1 and done.stdout.count("AP50") == 1  # rank 0 alone reports
    assert json.loads((run / "last.json").read_text())["step"] == 2
    assert [r["step"] for r in json.loads((run / "metrics.json").read_text())] == [1, 2]
    assert json.loads((run / "coco_metrics.json").read_text())["metrics"]["images"] == 2
    model = load_detector(run / "detector.safetensors")
    assert model.mobilezoo["train_config"]["batch_size"] == 4
    _no_partial_files(run)
