"""The detection backbone adapter: taps from feature_info only, checked against real tensors, on every model family."""

from __future__ import annotations

import pytest
import torch
import torchvision

from mobilezoo import create_model, registry
from mobilezoo.detection import DetectionBackbone
from mobilezoo.models.base import FeatureInfo
from tests.models.representatives import REPRESENTATIVES


def _grown(backbone: DetectionBackbone, size: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    step = backbone.strides[-1]
    backbone.eval()
    with torch.inference_mode():
        small = list(backbone(torch.randn(1, backbone.in_chans, size, size + step)).values())
        big = list(backbone(torch.randn(1, backbone.in_chans, size + 2 * step, size + step)).values())
    return small, big


@pytest.mark.parametrize("name", [*REPRESENTATIVES, "shufflenet_v2_star_x0_5"])
def test_taps_channels_and_strides_equal_the_real_tensors(name: str) -> None:
    backbone = DetectionBackbone(name)
    info = create_model(name).feature_info
    assert backbone.strides == sorted(set(backbone.strides)), "strides must strictly increase"
    assert backbone.strides[0] == 8 and all(s >= 8 for s in backbone.strides)
    # each stride's deepest feature_info entry, nothing hand-typed
    for stride, chans, tap in zip(backbone.strides, backbone.out_channels, backbone.tap_modules):
        assert (chans, tap) == next((i.num_chs, i.module) for i in reversed(info) if i.reduction == stride)
    small, big = _grown(backbone, 2 * backbone.strides[-1])
    step = backbone.strides[-1]
    assert [m.shape[1] for m in small] == [m.shape[1] for m in big] == backbone.out_channels
    assert [(b.shape[2] - a.shape[2]) for a, b in zip(small, big)] == [2 * step // s for s in backbone.strides]


@pytest.mark.parametrize(
    ("name", "kwargs", "channels"),
    [
        ("mobilenet_v2", {}, [32, 576, 1280]),  # MobileNetV2 paper 6.2: the expansion of layer 15 (576 ch)
        ("mobilenet_v3_large", {"reduced_tail": True}, [40, 672, 480]),  # torchvision's SSDLite C4 (672) and C5 (480)
        ("mobilenet_v3_small", {}, [24, 288, 576]),
    ],
)
def test_expansion_tap(name: str, kwargs: dict, channels: list[int]) -> None:
    plain = DetectionBackbone(name, **kwargs)
    tapped = DetectionBackbone(name, expansion_tap=True, **kwargs)
    assert tapped.out_channels == channels and tapped.strides == [8, 16, 32]
    assert tapped.tap_modules[1].endswith(":expansion")
    assert set(tapped.state_dict()) == set(plain.state_dict())  # the same weights, no copies
    small, big = _grown(tapped, 64)
    assert [m.shape[1] for m in small] == channels
    assert [(b.shape[2] - a.shape[2]) for a, b in zip(small, big)] == [8, 4, 2]
    # the tap is the expansion conv's output: the trunk up to the last stage's first block, then that block's first conv
    pos = tapped.features.module_names.index(tapped.tap_modules[1].removesuffix(":expansion"))
    first = tapped.features.stages[pos]
    expand = (first.conv if hasattr(first, "conv") else first.block)[0]
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        h = x
        for module in tapped.features.stages[:pos]:
            h = module(h)
        torch.testing.assert_close(tapped(x)["1"], expand(h))


def test_reduced_tail_matches_torchvision() -> None:
    """MobileNetV3's reduced_tail (an option added for detection) is torchvision's: same keys, shapes and outputs."""
    for arch in ("large", "small"):
        theirs = getattr(torchvision.models, f"mobilenet_v3_{arch}")(reduced_tail=True).eval()
        ours = create_model(f"mobilenet_v3_{arch}", reduced_tail=True).eval()
        ours.load_state_dict(theirs.state_dict(), strict=True)
        x = torch.randn(1, 3, 64, 64)
        with torch.inference_mode():
            torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    assert create_model("mobilenet_v3_large", reduced_tail=True).feature_info[-1].num_chs == 480


def test_bad_arguments_raise_one_line_errors() -> None:
    with pytest.raises(ValueError, match="no 1x1 expansion conv"):
        DetectionBackbone("shufflenet_v2_x0_5", expansion_tap=True)
    with pytest.raises(ValueError, match="needs the last stage"):
        DetectionBackbone("mobilenet_v2", out_indices=(2, 3), expansion_tap=True)  # the last stage is not in the trunk
    with pytest.raises(ValueError, match="unknown model"):
        DetectionBackbone("shufflenet_v3")
    with pytest.raises(ValueError, match="no feature map with stride >= 64"):
        DetectionBackbone("mobilenet_v1_x0_25", min_stride=64)
    with pytest.raises(ValueError, match="no classifier"):
        DetectionBackbone("mobilenet_v1_x0_25", num_classes=3)


def test_strides_that_do_not_increase_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """No registered model repeats a stride in feature_info; one that did (two stride-16 maps, the torchvision
    MobileNetV3 FPN mistake) must be refused, not fed to an FPN."""
    real = registry.create_model

    def repeating(name: str, **kwargs):
        model = real(name, **kwargs)
        model.feature_info[2] = FeatureInfo(model.feature_info[2].num_chs, 16, model.feature_info[2].module)
        return model

    monkeypatch.setattr(registry, "create_model", repeating)
    with pytest.raises(ValueError, match=r"strides \[16, 16, 32\]: they must strictly increase"):
        DetectionBackbone("shufflenet_v2_x0_5", out_indices=(2, 3, 4))


def test_validation_catches_a_wrong_declaration() -> None:
    backbone = DetectionBackbone("shufflenet_v2_x0_5")
    backbone.out_channels[1] += 1
    with pytest.raises(ValueError, match="has 96 channels, declared 97"):
        backbone.validate()
    backbone.out_channels[1] -= 1
    backbone.strides[0] = 4
    with pytest.raises(ValueError, match="stride is not the declared 4"):
        backbone.validate()
