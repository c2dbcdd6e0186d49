"""A detector's cost split into backbone / neck / head (``profile_detector``, ``mobilezoo profile --detector``)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mobilezoo.cli import main
from mobilezoo.complexity import profile
from mobilezoo.detection import create_detector, profile_detector
from mobilezoo.detection.profile import PARTS

BUILDS = {
    "fcos": ("shufflenet_v2_x0_5", {}),
    "ssdlite": ("mobilenet_v3_small", {}),
    "light_head_rcnn": ("mobilenet_v2", {"anchor_sizes": (16, 32), "fc_channels": 64}),
}


def _build(kind: str, size: int = 64) -> nn.Module:
    backbone, options = BUILDS[kind]
    bkw = {"width_mult": 0.35} if backbone == "mobilenet_v2" else {}
    return create_detector(kind, backbone, num_classes=3, in_chans=1, image_size=size, backbone_kwargs=bkw, **options)


@pytest.mark.parametrize("kind", list(BUILDS))
def test_the_parts_sum_to_the_network_and_the_backbone_part_is_the_backbone(kind: str) -> None:
    model = _build(kind).eval()
    prof = profile_detector(model, height=64, width=64 if kind == "ssdlite" else 96)
    assert not any(m.training for m in model.modules())  # left in eval mode, as it was
    assert [p.name for p in prof.parts] == list(PARTS) and all(p.madds > 0 and p.params > 0 for p in prof.parts)
    net, roi = prof.network, prof.roi_head
    total = prof.total
    assert total.madds == sum(p.madds for p in prof.parts) == net.madds + (roi.madds if roi else 0)
    assert total.other_ops == sum(net.other_ops.values()) + (sum(roi.other_ops.values()) if roi else 0)
    assert total.mac == net.mac + (roi.mac if roi else 0) and total.mac_bytes == net.mac_bytes + (
        roi.mac_bytes if roi else 0
    )
    assert total.params == sum(p.numel() for p in model.parameters())  # every parameter in exactly one part
    alone = profile(model.backbone.body, resolution=prof.input_shape[2:])
    part = prof.part("backbone")
    assert (part.madds, part.params, part.mac, part.other_ops) == (
        alone.madds,
        alone.params,
        alone.mac,
        sum(alone.other_ops.values()),
    )
    assert (roi is not None) == (kind == "light_head_rcnn")


def test_light_head_counts_its_roi_head_per_roi() -> None:
    model = _build("light_head_rcnn")
    default = profile_detector(model)
    assert default.rois == 100 and "for 100 RoIs per image" in default.notes[1]
    none, ten = profile_detector(model, rois=0), profile_detector(model, rois=10)
    assert none.roi_head is None and "left out" in none.notes[1]
    assert none.part("backbone") == ten.part("backbone") and none.part("neck") == ten.part("neck")
    # per RoI: FC 490 -> 64, then the class (3 + 1) and box (4 x 4) layers of the predictor
    per_roi = 490 * 64 + 64 * 4 + 64 * 16
    assert ten.part("head").madds - none.part("head").madds == 10 * per_roi
    assert (
        profile_detector(model, rois=20, batch_size=2).part("head").madds - none.part("head").madds * 2 == 40 * per_roi
    )


def test_the_split_at_the_papers_input_size_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = create_detector("fcos", "shufflenet_v2_x0_5", num_classes=80, image_size=800, max_size=1200)
    prof = profile_detector(model, height=800, width=1200)
    assert prof.input_shape == (1, 3, 800, 1200)
    madds = {p.name: p.madds / 1e6 for p in prof.parts}  # the backbone: its classification MAdds x (800 x 1200) / 224²
    assert 700 < madds["backbone"] < 800 and madds["head"] > madds["neck"] > 0


@pytest.mark.parametrize(
    ("kind", "kwargs", "match"),
    [
        ("ssdlite", {"height": 96}, "fixed 64x64: profile at that size, got 96x64"),
        ("fcos", {"width": 8}, "width must be an integer >= 32"),
        ("fcos", {"rois": 5}, "rois is for light_head_rcnn's RoI head; fcos has none"),
        ("light_head_rcnn", {"rois": -1}, "rois must be an integer >= 0, got -1"),
        ("fcos", {"batch_size": 0}, "batch_size must be an integer >= 1"),
    ],
)
def test_bad_arguments(kind: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        profile_detector(_build(kind), **kwargs)
    with pytest.raises(ValueError, match="expected a detector built by mobilezoo.detection.create_detector"):
        profile_detector(nn.Conv2d(1, 1, 1))


def test_cli_profile_detector_prints_the_three_parts(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["profile", "shufflenet_v2_x0_5", "--detector", "fcos", "--resolution", "128x192", "--num-classes", "5"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fcos on shufflenet_v2_x0_5 at 128x192px" in out
    for part in (*PARTS, "total"):
        assert f"│ {part}" in out
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == [1, 3, 128, 192] and list(data["parts"]) == list(PARTS)
    assert data["total"]["madds"] == sum(p["madds"] for p in data["parts"].values())
    with torch.device("meta"):
        model = create_detector("fcos", "shufflenet_v2_x0_5", num_classes=5, image_size=128, max_size=192)
    assert data["total"]["madds"] == profile_detector(model, height=128, width=192).total.madds
    assert main(["profile", "mobilenet_v2", "--rois", "5"]) == 2
    assert "--rois is for --detector light_head_rcnn" in capsys.readouterr().err
    assert main(["profile", "mobilenet_v2", "--detector", "ssdlite", "--resolution", "320x400"]) == 2
    assert "ssdlite runs at a fixed square size" in capsys.readouterr().err
