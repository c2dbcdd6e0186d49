"""VGG-16 and GoogLeNet: counts against paper_numbers.csv, torchvision parity (VGG), the original GoogLeNet's layers."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mobilezoo import create_model, load_weights, model_card
from mobilezoo.models.classic import GoogLeNet, VGG16Net
from mobilezoo.registry import paper_rows
from mobilezoo.weights import WeightsMismatchError


def count(model: nn.Module, res: int = 224) -> tuple[int, float, float]:
    """(params, MAdds in millions, MAdds of the nn.Linear layers in millions) at 1 x 3 x res x res, on the meta device."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, res, res, device="meta"))
    fc = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 2e6, fc / 1e6


def row(variant: str, counted_on: str):
    return next(r for r in paper_rows() if r.variant == variant and r.counted_on.startswith(counted_on))


def test_vgg16_counts_and_the_papers_conv_only_convention() -> None:
    """138,357,544 params and 15,470M MAdds with the FCs; the papers' 15300M is the conv-only count (15,346.6M)."""
    ref = row("vgg16", "torchvision")
    with torch.device("meta"):
        params, madds, fc = count(VGG16Net())
    assert params == ref.counted_params == 138_357_544
    assert madds == pytest.approx(ref.counted_madds_m, rel=0.005)
    assert madds - fc == pytest.approx(15_346.6, abs=0.1)
    assert madds - fc == pytest.approx(ref.madds_m, rel=0.005)  # 15300 = conv only
    assert abs(madds - ref.madds_m) / ref.madds_m > 0.01  # ... and is NOT the FC-included count
    assert round(params / 1e6) == ref.params_m


def test_googlenet_counts_the_original_network() -> None:
    """The paper-faithful row: 6,998,552 params / 1,582.67M; the quoted 6.8M / 1550M are not exactly reproducible."""
    ref = row("googlenet", "paper-faithful")
    with torch.device("meta"):
        model = GoogLeNet()
        params, madds, _ = count(model)
    assert params == ref.counted_params == 6_998_552
    assert madds == pytest.approx(ref.counted_madds_m, rel=0.005)
    assert madds == pytest.approx(ref.madds_m, rel=0.025)  # 1550 quoted
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    assert weights == 6_990_272  # / 1024 / 1000 = 6.83: one way to arrive at "6.8M"


def test_googlenet_differs_from_torchvisions() -> None:
    """torchvision's row (3x3 in the "5x5" branch, BN) counts 6,624,904 / 1,498M; its checkpoints do not fit ours."""
    ref = row("googlenet", "torchvision")
    with torch.device("meta"):
        theirs = torchvision.models.googlenet(aux_logits=False, init_weights=False)
        params, madds, _ = count(theirs)
        ours = GoogLeNet()
    assert params == ref.counted_params
    assert madds == pytest.approx(ref.counted_madds_m, rel=0.005)
    with pytest.raises(WeightsMismatchError):
        load_weights(ours, theirs.state_dict())
    assert model_card("googlenet").torchvision is None


def test_googlenet_is_the_original_architecture() -> None:
    model = GoogLeNet()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in model.modules()) == 2
    inceptions = [m for n, m in model.named_children() if n.startswith("inception")]
    assert len(inceptions) == 9
    for m in inceptions:
        assert m.branch3[1][0].kernel_size == (5, 5)
        assert all(c.bias is not None for c in m.modules() if isinstance(c, nn.Conv2d))
    assert inceptions[-1].out_channels == model.fc.in_features == 1024
    assert model.dropout.p == 0.4
    # Caffe's ceil-mode pooling: 224 -> 112 -> 56 -> 28 -> 14 -> 7
    with torch.device("meta"):
        assert GoogLeNet().forward_features(torch.empty(1, 3, 224, 224)).shape == (1, 1024, 7, 7)


def randomize(model: nn.Module) -> None:
    with torch.no_grad():
        for t in model.state_dict().values():
            t.normal_(0, (2 / t[0].numel()) ** 0.5 if t.dim() > 1 else 0.1)


def test_vgg16_torchvision_parity() -> None:
    # built on the meta device and materialised empty: skips initialising 2 x 138M parameters twice
    with torch.device("meta"):
        theirs, ours = torchvision.models.vgg16(), create_model("vgg16")
    theirs.to_empty(device="cpu").eval()
    ours.to_empty(device="cpu").eval()
    randomize(theirs)
    load_weights(ours, theirs.state_dict(), strict=True)
    assert model_card("vgg16").torchvision.weights == "VGG16_Weights"
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_bad_input_raises_value_error() -> None:
    with pytest.raises(ValueError, match="drop_rate"):
        VGG16Net(drop_rate=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        GoogLeNet(num_classes=0)
    with pytest.raises(ValueError, match="input channels"):
        GoogLeNet()(torch.randn(1, 1, 64, 64))
    with torch.device("meta"), pytest.raises(ValueError, match="too small"):
        VGG16Net()(torch.empty(1, 3, 31, 31))
