"""Detector ONNX export (backbone + neck + head, no post-processing): ONNX Runtime parity, the sidecar, detections
through ONNX Runtime equal to the eager model's, Light-Head's stage-1 export, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from mobilezoo.deploy import ParityError
from mobilezoo.deploy.sessions import onnx_session
from mobilezoo.detection import (
    CanvasConfig,
    DetectorNetwork,
    DigitCanvases,
    OnnxDetector,
    create_detector,
    export_detector_onnx,
)
from mobilezoo.detection import export as det_export

SIZE = 64
# random weights: a low score threshold so that there are boxes to compare (FCOS's prior keeps scores near 0.01)
BUILDS = {
    "fcos": ("shufflenet_v2_x0_5", {"score_thresh": 0.005}),
    "ssdlite": ("mobilenet_v3_small", {}),
    "light_head_rcnn": ("shufflenet_v2_x0_5", {"anchor_sizes": (16, 32), "fc_channels": 64, "score_thresh": 0.0}),
}
OUTPUTS = {
    "fcos": ["cls_logits", "bbox_regression", "bbox_ctrness"],
    "ssdlite": ["bbox_regression", "cls_logits"],
    "light_head_rcnn": ["rpn_objectness", "rpn_bbox_deltas", "thin_features"],
}


def _build(kind: str) -> nn.Module:
    torch.manual_seed(0)
    backbone, options = BUILDS[kind]
    return create_detector(kind, backbone, num_classes=3, in_chans=1, image_size=SIZE, **options).eval()


@pytest.fixture(scope="module", params=list(BUILDS))
def exported(request, tmp_path_factory):
    kind = request.param
    model = _build(kind)
    path = tmp_path_factory.mktemp(kind) / f"{kind}.onnx"
    return kind, model, export_detector_onnx(model, path)


def test_onnx_runtime_matches_pytorch_at_the_exported_and_other_batch_sizes(exported) -> None:
    kind, model, result = exported
    assert result.detector == kind and list(result.output_names) == OUTPUTS[kind]
    assert result.check_batches == (1, 2) and result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    assert result.input_shape == ("batch", 1, SIZE, SIZE) and not model.training
    session = onnx_session(result.path)
    assert [o.name for o in session.get_outputs()] == OUTPUTS[kind]
    x = torch.randn(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))  # a third batch size
    got = session.run(None, {"input": x.numpy()})
    with torch.inference_mode():
        want = DetectorNetwork(model).eval()(x)
    for g, w in zip(got, want, strict=True):
        assert g.shape == tuple(w.shape) and g.shape[0] == 3
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=1e-4)
    sidecar = json.loads(result.sidecar.read_text())
    n_anchors = sidecar["num_anchors"]
    if kind == "fcos":
        assert got[0].shape[1:] == (n_anchors, 3) and got[1].shape[1:] == (n_anchors, 4)
        assert got[2].shape[1:] == (n_anchors, 1)
    elif kind == "ssdlite":
        assert got[0].shape[1:] == (n_anchors, 4) and got[1].shape[1:] == (n_anchors, 4)  # 3 classes + background
    else:
        assert got[0].shape[1:] == (n_anchors, 1) and got[1].shape[1:] == (n_anchors, 4)
        assert got[2].shape[1] == 490  # the thin map: 10 x 7 x 7 position-sensitive channels


def test_the_sidecar_describes_the_file(exported) -> None:
    kind, model, result = exported
    assert result.sidecar == result.path.with_suffix(".json")
    meta = json.loads(result.sidecar.read_text())
    assert meta["format"] == "mobilezoo-detector-onnx" and meta["onnx"] == result.path.name
    assert meta["detector"] == kind and meta["config"]["backbone"] == BUILDS[kind][0]
    assert meta["config"]["num_classes"] == 3 and meta["config"]["image_size"] == SIZE
    assert meta["input"]["shape"] == ["batch", 1, SIZE, SIZE]
    assert (
        meta["input"]["mean"] == model.mobilezoo["image_mean"] and meta["input"]["std"] == model.mobilezoo["image_std"]
    )
    assert [o["name"] for o in meta["outputs"]] == OUTPUTS[kind]
    assert all(o["shape"][0] == "batch" for o in meta["outputs"])
    levels = meta["levels"]
    assert sum(lvl["num_anchors"] for lvl in levels) == meta["num_anchors"] == meta["outputs"][0]["shape"][1]
    for lvl in levels:
        assert lvl["height"] == lvl["width"] == -(-SIZE // lvl["stride"])  # stride-2 steps round up
    if kind == "fcos":
        assert [lvl["stride"] for lvl in levels] == [8, 16, 32, 64]
        assert [lvl["anchors_per_location"] for lvl in levels] == [1, 1, 1, 1]
        assert meta["postprocess"]["score_thresh"] == 0.005
    elif kind == "ssdlite":
        assert [lvl["stride"] for lvl in levels] == [16, 32, 64, 128, 256, 512]
        assert [lvl["anchors_per_location"] for lvl in levels] == [6] * 6
    else:
        assert len(levels) == 1 and levels[0]["stride"] == 16 and levels[0]["anchors_per_location"] == 6
        assert "PSRoIAlign has no ONNX operator" in meta["postprocess"]["stage_2"]


def test_onnx_detections_equal_the_eager_models(exported) -> None:
    _, model, result = exported
    canvases = DigitCanvases("val", 3, config=CanvasConfig(size=SIZE, scale=(12, 28)))
    images = [canvases[i][0] for i in range(3)]
    images.append(torch.nn.functional.interpolate(images[0][None], size=(40, 40))[0])  # resized up by the transform
    got = OnnxDetector(model, result.path)(images)
    with torch.inference_mode():
        want = model(images)
    assert sum(len(d["boxes"]) for d in want) > 0  # something to compare
    for g, w in zip(got, want, strict=True):
        # the same detections; two whose scores tie to float rounding (random weights: seen at 1e-7 on an AMD EPYC)
        # may come out in either order, so both lists are compared in one canonical order: label, then box
        g, w = _canonical(g), _canonical(w)
        assert torch.equal(g["labels"], w["labels"])
        torch.testing.assert_close(g["boxes"], w["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(g["scores"], w["scores"], atol=1e-4, rtol=0)


def _canonical(d: dict) -> dict:
    """Detections sorted by label, then by box corners (rounded to 0.01 px, far above the 1e-3 tolerance's noise)."""
    keys = [d["labels"].numpy(), *(np.round(d["boxes"][:, k].numpy(), 2) for k in range(4))]
    order = torch.from_numpy(np.lexsort(keys[::-1]).copy())
    return {k: d[k][order] for k in ("labels", "boxes", "scores")}


def test_a_fixed_batch_export_and_its_detector(tmp_path) -> None:
    model = _build("ssdlite")
    result = export_detector_onnx(model, tmp_path / "m.onnx", dynamic_batch=False, batch_size=2)
    assert result.check_batches == (2,) and result.input_shape == (2, 1, SIZE, SIZE)
    assert onnx_session(result.path).get_inputs()[0].shape == [2, 1, SIZE, SIZE]
    images = [torch.rand(1, SIZE, SIZE) for _ in range(2)]
    detector = OnnxDetector(model, result.path)
    assert len(detector(images)) == 2
    with pytest.raises(ValueError, match="has a fixed batch of 2, got 1 images"):
        detector(images[:1])
    other = create_detector("ssdlite", "mobilenet_v3_small", num_classes=4, in_chans=1, image_size=SIZE)
    with pytest.raises(ValueError, match="built differently"):
        OnnxDetector(other, result.path)


def test_a_parity_failure_raises(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(det_export, "onnx_parity", lambda *a, **k: 0.5)
    with pytest.raises(ParityError, match=r"differs from PyTorch's by 0.5 .* at batch 1"):
        export_detector_onnx(_build("ssdlite"), tmp_path / "m.onnx")


@pytest.mark.parametrize(
    ("kind", "kwargs", "error", "match"),
    [
        ("fcos", {"height": 80}, ValueError, "height 80 is not a multiple of 32 .*; use 96"),
        ("fcos", {"width": 16}, ValueError, "width must be an integer >= 32"),
        ("light_head_rcnn", {"width": 100}, ValueError, "width 100 is not a multiple of 32"),
        ("ssdlite", {"height": 96, "width": 96}, ValueError, "fixed 64x64: export at that size, got 96x96"),
        ("fcos", {"opset": 5}, ValueError, "unsupported opset 5"),
        ("fcos", {"batch_size": 0}, ValueError, "batch_size must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kind, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        export_detector_onnx(_build(kind), tmp_path / "m.onnx", **kwargs)


def test_models_and_paths_that_are_not_detectors(tmp_path) -> None:
    with pytest.raises(ValueError, match="expected a detector built by mobilezoo.detection.create_detector.* Conv2d"):
        export_detector_onnx(nn.Conv2d(1, 1, 3), tmp_path / "m.onnx")
    model = _build("fcos")
    with pytest.raises(ValueError, match=r"should end in \.onnx"):
        export_detector_onnx(model, tmp_path / "m.txt")
    with pytest.raises(FileNotFoundError, match="detector sidecar .* does not exist"):
        OnnxDetector(model, tmp_path / "missing.onnx")
    (tmp_path / "x.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="is not a mobilezoo detector sidecar"):
        OnnxDetector(model, tmp_path / "x.onnx")


def test_an_image_larger_than_the_export_is_refused_or_resized_to_it(exported) -> None:
    kind, model, result = exported
    wide = torch.rand(1, SIZE, 3 * SIZE)  # FCOS / Light-Head: resized to 64 x 106 (max_size), padded to 64 x 128
    if kind != "ssdlite":
        with pytest.raises(ValueError, match=r"resize to 64x128, larger than the exported 64x64"):
            OnnxDetector(model, result.path)([wide])
        return
    # SSDLite resizes every image to its fixed size, so a wide image fits the export and is detected as in eager
    (got,) = OnnxDetector(model, result.path)([wide])
    with torch.inference_mode():
        (want,) = model([wide])
    assert len(want["boxes"]) > 0  # something to compare
    assert torch.equal(got["labels"], want["labels"])
    torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-3, rtol=0)
