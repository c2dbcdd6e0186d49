"""``mobilezoo detect``: train -> eval -> predict end to end on a tiny run, ``canvases`` writes a COCO folder that
CocoFolder reads, and bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mobilezoo import create_model, save_weights
from mobilezoo.cli import main
from mobilezoo.detection import CocoFolder, table
from mobilezoo.detection.table import TABLE_SCHEDULE

TINY_FLAGS = [
    *("--steps", "3", "--batch-size", "2", "--warmup-steps", "1", "--canvas-size", "64"),
    *("--val-canvases", "3", "--threads", "1", "--log-every", "1", "--checkpoint-every", "2"),
]


def _one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mobilezoo detect: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def canvases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("canvases")
    assert main(["detect", "canvases", "--out", str(root), "--count", "4", "--val-count", "2", "--size", "64"]) == 0
    return root


def test_canvases_write_a_coco_folder(canvases: Path) -> None:
    for split, n in (("train", 4), ("val", 2)):
        ds = CocoFolder(canvases / split / "instances.json", canvases / split / "images", in_chans=1)
        assert len(ds) == n and ds.categories == [(i + 1, str(i)) for i in range(10)] and ds.skipped == {}
        image, target = ds[0]
        assert image.shape == (1, 64, 64) and len(target["boxes"]) >= 1


def test_train_eval_predict_commands(tmp_path: Path, canvases: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["detect", "train", *TINY_FLAGS, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "step 1/3" in out and "step 3/3" in out and "AP50" in out and "detector.safetensors" in out
    weights = run / "detector.safetensors"
    assert weights.is_file() and json.loads((run / "last.json").read_text())["step"] == 3

    assert main(["detect", "train", *TINY_FLAGS, "--out", str(run), "--resume", "--json"]) == 0  # finished: re-scored
    trained = json.loads(capsys.readouterr().out)
    assert trained["images_seen"] == 6 and trained["run_dir"] == str(run)
    assert main(["detect", "train", "--out", str(run), "--resume", "--steps", "9", "--canvas-size", "96"]) == 2
    line = _one_error_line(capsys)
    assert "cannot resume" in line and "--steps: the run has 3, given 9" in line and "--canvas-size (canvas)" in line

    assert main(["detect", "eval", "--weights", str(weights), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["metrics"] == trained["metrics"]  # the run's own validation canvases: the same score
    assert ev["annotations"] == "3 validation canvases (seed 0, 64 px)"
    assert main(["detect", "eval", "--weights", str(weights), "--data", str(canvases)]) == 0
    assert "val/instances.json" in capsys.readouterr().out

    images = sorted((canvases / "val" / "images").glob("*.png"))
    rgb = tmp_path / "photo.jpg"
    Image.new("RGB", (150, 90), "gray").save(rgb)  # another size and mode: boxes in its own pixels
    pred_dir = tmp_path / "pred"
    argv = ["detect", "predict", "--weights", str(weights), *map(str, images), str(rgb)]
    assert main([*argv, "--out", str(pred_dir), "--score-thresh", "0", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in records] == [*map(str, images), str(rgb)]
    assert records[-1]["width"] == 150 and records[-1]["height"] == 90
    for r in records:
        assert r["detections"], r["image"]  # score threshold 0: every detection the model keeps
        for d in r["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= r["width"] and 0 <= y1 <= y2 <= r["height"], d
            assert d["name"] == str(d["label"] - 1) and 0 <= d["score"] <= 1
        scores = [d["score"] for d in r["detections"]]
        assert scores == sorted(scores, reverse=True)
        with Image.open(r["drawn"]) as drawn:
            assert drawn.size == (r["width"], r["height"]) and drawn.mode == "RGB"
    assert json.loads((pred_dir / "detections.json").read_text()) == records
    assert main([*argv, "--score-thresh", "1"]) == 0  # a table; nothing scores 1
    assert "photo.jpg" in capsys.readouterr().out


def test_bad_input_is_one_line(tmp_path: Path, canvases: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.safetensors"
    assert main(["detect", "eval", "--weights", str(missing)]) == 2
    assert "does not exist" in _one_error_line(capsys)
    classifier = save_weights(create_model("mobilenet_v1_x0_25", num_classes=10), tmp_path / "cls.safetensors")
    assert main(["detect", "predict", "--weights", str(classifier), str(tmp_path / "x.png")]) == 2
    assert "holds weights of the classifier 'mobilenet_v1_x0_25'" in _one_error_line(capsys)

    bad = tmp_path / "bad"
    for split in ("train", "val"):
        data = json.loads((canvases / split / "instances.json").read_text())
        data["annotations"][0]["bbox"] = [1, 1, 500, 5]
        (bad / split).mkdir(parents=True)
        (bad / split / "images").symlink_to(canvases / split / "images")
        (bad / split / "instances.json").write_text(json.dumps(data))
    out = tmp_path / "never"
    assert main(["detect", "train", *TINY_FLAGS, "--data", str(bad), "--in-chans", "1", "--out", str(out)]) == 2
    assert "1 x box outside the image" in _one_error_line(capsys)
    assert not out.exists()
    assert main(["detect", "train", *TINY_FLAGS, "--set", "learning_rate=1", "--out", str(out)]) == 2
    assert "unknown detection config key(s) 'learning_rate'" in _one_error_line(capsys)
    assert main(["detect", "train", "--out", str(out), "--resume"]) == 2
    assert "not a mobilezoo detection run folder" in _one_error_line(capsys)
    assert main(["detect", "canvases", "--out", str(out), "--count", "0"]) == 2
    assert "length must be an integer >= 1" in _one_error_line(capsys)
    assert not out.exists()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("tiny-run")
    assert main(["detect", "train", *TINY_FLAGS, "--out", str(run), "--json"]) == 0
    return run / "detector.safetensors"


def test_export_command_writes_a_checked_onnx_file(
    tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    capsys.readouterr()
    out = tmp_path / "det.onnx"
    assert main(["detect", "export", "--weights", str(tiny_weights), "--out", str(out), "--size", "64", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert out.is_file() and Path(result["sidecar"]).is_file()
    assert result["output_names"] == ["cls_logits", "bbox_regression", "bbox_ctrness"]  # FCOS's raw head, no NMS
    assert result["max_abs_diff"] < 1e-3 and result["check_batches"] == [1, 2]
    assert main(["detect", "export", "--weights", str(tiny_weights), "--out", str(out), "--size", "64x70"]) == 2
    assert "32" in _one_error_line(capsys)  # FCOS needs multiples of 32: the error says so
    assert main(["detect", "export", "--weights", str(tiny_weights), "--out", str(out), "--size", "big"]) == 2
    assert "--size expects HEIGHTxWIDTH" in _one_error_line(capsys)


def test_table_command_shows_committed_results_beside_the_paper(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.detection.test_table import fake_results

    path = tmp_path / "t.json"
    path.write_text(json.dumps(fake_results()))
    assert main(["detect", "table", "--results", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    v2 = next(r for r in shown["rows"] if r["row"] == "ShuffleNet v2" and r["level"] == "40M")
    assert v2["ap"] == pytest.approx(0.48) and v2["paper_mmap"] == 22.5 and shown["spread"] == pytest.approx(0.04)
    assert main(["detect", "table", "--results", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Table 5-13" in out and "48.0 (50.0, 46.0)" in out and "not reproduced" in out
    other = fake_results()
    other["schedule"] = {**table._schedule_dict(TABLE_SCHEDULE), "steps": 5}
    path.write_text(json.dumps(other))
    assert main(["detect", "table", "--results", str(path), "--levels", "40M"]) == 2  # nothing trained
    assert "was trained with steps=5, this run has 1000; use another results file" in _one_error_line(capsys)
