"""Every model family as the backbone of each detector: forward, backward, inference; the factory's errors."""

from __future__ import annotations

import pytest
import torch

from mobilezoo.detection import DETECTORS, OPTIONS, create_detector
from tests.models.representatives import REPRESENTATIVES

SMALL = {"fcos": {}, "ssdlite": {}, "light_head_rcnn": {"anchor_sizes": (16, 32), "fc_channels": 64}}


def _batch(in_chans: int, size: int = 64) -> tuple[list[torch.Tensor], list[dict]]:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(in_chans, size, size, generator=g) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 20.0, 60.0, 50.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},  # an image with nothing in it
    ]
    return images, targets


@pytest.mark.parametrize("kind", DETECTORS)
@pytest.mark.parametrize("backbone", [*REPRESENTATIVES, "shufflenet_v2_star_x0_5"])
def test_forward_backward_and_inference(kind: str, backbone: str) -> None:
    model = create_detector(kind, backbone, num_classes=3, in_chans=1, image_size=64, **SMALL[kind]).train()
    images, targets = _batch(1)
    losses = model(images, targets)
    assert losses and all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reaches {missing[:5]}"
    model.eval()
    with torch.inference_mode():
        out = model(images)
    assert len(out) == 2
    for o in out:
        assert o["boxes"].shape[1] == 4 and len(o["boxes"]) == len(o["scores"]) == len(o["labels"])
        assert o["labels"].numel() == 0 or (int(o["labels"].min()) >= 1 and int(o["labels"].max()) <= 3)
    info = model.mobilezoo
    assert info["detector"] == kind and info["backbone"] == backbone
    assert info["backbone_strides"] == sorted(set(info["backbone_strides"]))


def test_the_necks_take_their_channels_and_strides_from_the_backbone() -> None:
    fcos = create_detector("fcos", "shufflenet_v2_x0_5", num_classes=2, fpn_channels=32)
    assert fcos.backbone.body.out_channels == [48, 96, 1024] and fcos.backbone.strides == [8, 16, 32, 64]
    assert [a[0] for a in fcos.anchor_generator.sizes] == [8, 16, 32, 64]  # one FCOS point per cell, sized by stride
    ssd = create_detector("ssdlite", "mobilenet_v2", num_classes=2)
    assert ssd.backbone.out_channels == [576, 1280, 512, 256, 256, 128]  # the expansion tap (C4) and C5, as SSDLite
    assert ssd.backbone.strides == [16, 32, 64, 128, 256, 512]
    lh = create_detector("light_head_rcnn", "shufflenet_v2_x0_5", num_classes=2)
    assert lh.backbone.out_channels == 96 and lh.roi_heads.box_roi_pool.spatial_scale == 1 / 32
    assert lh.backbone.thin.col[1].out_channels == 490  # 10 x 7 x 7 position-sensitive channels


def test_dw_head_is_cheaper_and_trains() -> None:
    full = create_detector("fcos", "shufflenet_v2_x0_5", num_classes=10, in_chans=1, image_size=64)
    dw = create_detector("fcos", "shufflenet_v2_x0_5", num_classes=10, in_chans=1, image_size=64, head="dw")
    count = lambda m: sum(p.numel() for p in m.head.parameters())  # noqa: E731
    assert count(dw) < count(full) / 4
    images, targets = _batch(1)
    sum(dw.train()(images, targets).values()).backward()


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("yolo",), {}, r"unknown detector 'yolo'; expected one of \('fcos', 'ssdlite', 'light_head_rcnn'\)"),
        (("fcoss",), {}, "did you mean 'fcos'"),
        (("fcos", "shufflenet_v3"), {}, "unknown model 'shufflenet_v3'"),
        (("fcos",), {"num_classes": 0}, "num_classes must be an integer >= 1"),
        (("fcos",), {"fpn_channels": 48}, "fpn_channels must be a multiple of 32"),
        (("fcos",), {"head": "tiny"}, "head must be one of"),
        (("fcos",), {"anchor_sizes": (8,)}, "fcos takes no option 'anchor_sizes'; its options are fpn_channels"),
        (("ssdlite",), {"min_ratio": 0.9, "max_ratio": 0.5}, "min_ratio and max_ratio"),
        (("light_head_rcnn",), {"kernel": 14}, "kernel must be odd"),
        (("light_head_rcnn",), {"rpn_proposals": (300,)}, r"rpn_proposals is \(train, test\)"),
        (("fcos",), {"image_size": 16}, "image_size must be an integer >= 32"),
        (("fcos",), {"score_thresh": 2.0}, r"score_thresh must be a number in \[0, 1\]"),
        (("fcos",), {"in_chans": 1, "image_mean": (0.5, 0.5, 0.5)}, "image_mean/image_std need 1 values"),
        (("ssdlite", "shufflenet_v2_x0_5"), {"backbone_kwargs": {"expansion_tap": True}}, "no 1x1 expansion conv"),
    ],
)
def test_bad_arguments_raise_one_line_errors(args: tuple, kwargs: dict, match: str) -> None:
    kwargs = {"num_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=match) as info:
        create_detector(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_options_table_lists_every_detector() -> None:
    assert set(OPTIONS) == set(DETECTORS)
