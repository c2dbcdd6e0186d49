"""Detector files: a saved detector loads back into the same model (same outputs) from its metadata alone, and files
that are not detector files are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mobilezoo import create_model, save_weights
from mobilezoo.detection import CanvasConfig, DigitCanvases, create_detector
from mobilezoo.detection.io import load_detector, read_detector_metadata, save_detector
from mobilezoo.weights import WeightsMismatchError

SMALL = {
    "fcos": {"fpn_channels": 32},
    "ssdlite": {"extra_channels": (32, 32)},
    "light_head_rcnn": {"fc_channels": 32, "mid_channels": 8, "ps_channels": 2, "pool_size": 3, "kernel": 3},
}


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_a_saved_detector_loads_back_into_the_same_model(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(1)
    model = create_detector(kind, "shufflenet_v2_x0_5", num_classes=10, in_chans=1, image_size=64, **SMALL[kind])
    model.eval()
    cats = [(i + 1, f"digit {i}") for i in range(10)]
    path = save_detector(model, tmp_path / "d.safetensors", categories=cats, metadata={"step": "7"})
    meta = read_detector_metadata(path)
    assert meta["categories"] == cats and meta["step"] == 7 and meta["train_config"] is None
    assert meta["build"]["detector"] == kind and meta["build"]["in_chans"] == 1
    loaded = load_detector(path)
    assert not loaded.training and loaded.mobilezoo["categories"] == cats
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    images = [DigitCanvases("val", 2, config=CanvasConfig(size=64, scale=(16, 40)))[i][0] for i in range(2)]
    with torch.no_grad():
        for x, y in zip(model(images), loaded(images)):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_bad_categories_and_foreign_models_are_refused(tmp_path: Path) -> None:
    model = create_detector("fcos", "shufflenet_v2_x0_5", num_classes=3, in_chans=1, image_size=64)
    with pytest.raises(ValueError, match=r"categories must name labels 1\.\.3 once each"):
        save_detector(model, tmp_path / "d.safetensors", categories=[(1, "a"), (2, "b")])
    with pytest.raises(ValueError, match="was not built by mobilezoo.detection.create_detector"):
        save_detector(torch.nn.Linear(2, 2), tmp_path / "d.safetensors")
    with pytest.raises(ValueError, match="expected a path ending in .safetensors"):
        save_detector(model, tmp_path / "d.pt")
    assert not list(tmp_path.iterdir())
    save_detector(model, tmp_path / "d.safetensors")  # no categories: the labels are the names
    assert read_detector_metadata(tmp_path / "d.safetensors")["categories"] == [(1, "1"), (2, "2"), (3, "3")]


def _file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "w.safetensors"
    if kind == "classifier":
        save_weights(create_model("mobilenet_v1_x0_25", num_classes=10), path)
    elif kind == "no_metadata":
        save_file({"w": torch.zeros(2)}, str(path))
    elif kind == "damaged_metadata":
        save_file({"w": torch.zeros(2)}, str(path), metadata={"mobilezoo_detector": "{not json"})
    elif kind == "wrong_tensors":
        model = create_detector("fcos", "shufflenet_v2_x0_5", num_classes=3, in_chans=1, image_size=64)
        meta = read_detector_metadata(save_detector(model, path))
        build = {**meta["build"], "num_classes": 4}  # the file's tensors are of a 3-class head
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(path),
            metadata={"mobilezoo_detector": json.dumps(build)},
        )
    elif kind == "pth":
        path = tmp_path / "w.pth"
        torch.save({"a": torch.zeros(1)}, path)
    elif kind == "folder":
        path = tmp_path / "run"
        path.mkdir()
    elif kind == "truncated":
        model = create_detector("fcos", "shufflenet_v2_x0_5", num_classes=3, in_chans=1, image_size=64)
        path.write_bytes(save_detector(model, path).read_bytes()[:100])
    return path


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("missing", "does not exist"),
        ("folder", "is a folder"),
        ("pth", "is not a .safetensors file"),
        ("truncated", "is not a readable safetensors file"),
        ("classifier", "holds weights of the classifier 'mobilenet_v1_x0_25', not of a mobilezoo detector"),
        ("no_metadata", "holds weights of no detector"),
        ("damaged_metadata", "has damaged detector metadata"),
        ("wrong_tensors", "size mismatch|mismatch"),
    ],
)
def test_files_that_are_not_detectors_are_refused_in_one_line(tmp_path: Path, kind: str, match: str) -> None:
    path = _file(tmp_path, kind)
    with pytest.raises((ValueError, FileNotFoundError), match=match) as info:
        load_detector(path)
    assert "\n" not in str(info.value) or kind == "wrong_tensors"
    assert str(path) in str(info.value)
    if kind == "wrong_tensors":
        assert isinstance(info.value, WeightsMismatchError)
