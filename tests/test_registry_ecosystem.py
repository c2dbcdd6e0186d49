"""create_model with timm's and torchvision's argument conventions: each works or raises a ValueError that names the
argument and says what to use instead. No download: torchvision's checkpoints are replaced by locally built ones."""

from __future__ import annotations

import enum

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import MobileNet_V2_Weights, ResNet50_Weights

import mobilezoo
from mobilezoo import weights as wts
from tests.models.representatives import REPRESENTATIVES


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_num_classes_0_gives_the_pooled_features(name: str) -> None:
    """timm's num_classes=0: no classifier (Identity), the output is the pre-logits of width num_features."""
    model = mobilezoo.create_model(name, num_classes=0).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, model.num_features)
        torch.testing.assert_close(out, model.forward_head(model.forward_features(x), pre_logits=True))
    assert model.num_classes == 0 and isinstance(model.get_classifier(), nn.Identity)
    bias = not name.startswith("shufflenet")  # the official ShuffleNets' FC has no bias; a reset keeps that
    model.reset_classifier(5)
    head = model.get_classifier()  # an nn.Linear, or SqueezeNet's 1x1 conv10
    assert isinstance(head, nn.Linear | nn.Conv2d) and (head.bias is not None) == bias
    assert model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


def test_num_classes_0_with_weights_keeps_the_trunk(tmp_path) -> None:
    trained = mobilezoo.create_model("mobilenet_v3_small", num_classes=10).eval()
    path = mobilezoo.save_weights(trained, tmp_path / "m.safetensors")
    model = mobilezoo.create_model("mobilenet_v3_small", num_classes=0, weights=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained.forward_head(trained.forward_features(x), pre_logits=True))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pretrained": True}, r"pretrained=True is not a mobilezoo argument: pass weights='torchvision'"),
        ({"checkpoint_path": "m.pth"}, r"checkpoint_path='m.pth' is not a mobilezoo argument: pass weights=<file>"),
        ({"drop_path_rate": 0.1}, r"drop_path_rate=0.1 .*this model has no stochastic depth \(NASNet-A Mobile"),
        ({"dropout": 0.3}, r"dropout=0.3 .*pass drop_rate"),
        ({"norm_layer": nn.BatchNorm2d}, r"norm_layer=.*nn.BatchNorm2d.*convert_sync_batchnorm.*fuse"),
        ({"global_pool": "max"}, r"global_pool='max': .*average only.*forward_features"),
        ({"global_pool": ""}, r"global_pool='': .*features_only=True"),
        ({"progress": "yes"}, r"progress must be True or False"),
        ({"num_classes": -1}, r"num_classes must be an integer >= 0 \(0: no classifier"),
        ({"features_only": True, "out_indices": 0}, r"out_indices=0 \(the last k feature maps\) must be in 1\.\.5"),
        ({"features_only": True, "out_indices": "all"}, r"out_indices must be a tuple .* got 'all'"),
        ({"foo": 1}, r"mobilenet_v2_x0_35 takes no argument 'foo'; it takes .*width_mult"),
    ],
)
def test_foreign_arguments_are_refused_with_what_to_use(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mobilezoo.create_model("mobilenet_v2_x0_35", **kwargs)


def test_drop_path_rate_reaches_the_models_that_take_it() -> None:
    assert mobilezoo.create_model("nasnet_a_mobile", drop_path_rate=0.3).drop_path_rate == 0.3
    with pytest.raises(ValueError, match=r"drop_path_rate is a drop probability in \[0, 1\), got 1.5"):
        mobilezoo.create_model("nasnet_a_mobile", drop_path_rate=1.5)


def test_width_mult_where_the_family_has_none() -> None:
    with pytest.raises(ValueError, match=r"googlenet takes no argument 'width_mult'; it takes .*drop_rate"):
        mobilezoo.create_model("googlenet", width_mult=0.5)
    model = mobilezoo.create_model("mobilenet_v2", width_mult=0.5)  # torchvision's idiom where it exists
    assert model.width_mult == 0.5


def test_accepted_conventions() -> None:
    model = mobilezoo.create_model(
        "mobilenet_v3_small", pretrained=False, global_pool="avg", drop_rate=0.1, in_chans=1, num_classes=7
    )
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 7)
    last_two = mobilezoo.create_model("mobilenet_v3_small", features_only=True, out_indices=2)  # timm: the last k
    assert [i.reduction for i in last_two.feature_info] == [16, 32]
    listed = mobilezoo.create_model("mobilenet_v3_small", features_only=True, out_indices=[0, -1])
    assert [i.reduction for i in listed.feature_info] == [2, 32]


@pytest.fixture
def fake_torchvision(monkeypatch):
    """torchvision's checkpoints, replaced by a randomly initialised torchvision model's state_dict (no download)."""
    calls = []

    def state_dict(enum_name: str, member: str = "DEFAULT", progress: bool = True) -> dict:
        calls.append((enum_name, member, progress))
        torch.manual_seed(1)
        return torchvision.models.mobilenet_v2().state_dict()

    monkeypatch.setattr(wts, "torchvision_state_dict", state_dict)
    return calls


@pytest.mark.parametrize(
    ("weights", "member"),
    [
        (MobileNet_V2_Weights.DEFAULT, "IMAGENET1K_V2"),  # DEFAULT is an alias of the newest
        (MobileNet_V2_Weights.IMAGENET1K_V1, "IMAGENET1K_V1"),
        ("DEFAULT", "DEFAULT"),
        ("IMAGENET1K_V1", "IMAGENET1K_V1"),
        ("MobileNet_V2_Weights.IMAGENET1K_V2", "IMAGENET1K_V2"),
        ("torchvision", "DEFAULT"),
    ],
)
def test_torchvision_weights_idioms(weights, member: str, fake_torchvision) -> None:
    model = mobilezoo.create_model("mobilenet_v2", weights=weights, progress=False)
    assert fake_torchvision == [("MobileNet_V2_Weights", member, False)]
    torch.manual_seed(1)
    want = torchvision.models.mobilenet_v2().state_dict()
    torch.testing.assert_close(model.state_dict()["features.0.0.weight"], want["features.0.0.weight"])


def test_torchvision_weights_of_another_architecture(fake_torchvision) -> None:
    with pytest.raises(ValueError, match=r"are ResNet50_Weights's, another architecture's; mobilenet_v2 takes Mobile"):
        mobilezoo.create_model("mobilenet_v2", weights=ResNet50_Weights.DEFAULT)
    with pytest.raises(ValueError, match=r"torchvision has no checkpoint for 'mobilenet_v1'"):
        mobilezoo.create_model("mobilenet_v1", weights="DEFAULT")

    class Colour(enum.Enum):
        RED = 1

    with pytest.raises(ValueError, match=r"not a torchvision weights enum member"):
        mobilezoo.create_model("mobilenet_v2", weights=Colour.RED)
    assert fake_torchvision == []
