import json

import pytest
import torch

import mobilezoo
from mobilezoo.cli import main
from mobilezoo.registry import paper_rows


def test_list_models_glob_and_sorted() -> None:
    names = mobilezoo.list_models()
    assert names == sorted(names)
    v2 = mobilezoo.list_models("mobilenet_v2*")
    assert "mobilenet_v2" in v2 and "mobilenet_v2_x0_35" in v2
    assert all(n.startswith("mobilenet_v2") for n in v2)
    assert mobilezoo.list_models("no_such_*") == []


def test_every_card_names_its_paper_row() -> None:
    variants = {r.variant for r in paper_rows()}
    for name in mobilezoo.list_models():
        card = mobilezoo.model_card(name)
        assert card.name == name
        assert card.paper and card.table
        assert card.paper_variant in variants, name
        assert card.paper_madds_m is not None, name
        json.dumps(card.to_dict())


def test_card_carries_torchvision_preprocessing_and_top1() -> None:
    card = mobilezoo.model_card("mobilenet_v2")
    assert card.paper_top1 == 72.0 and card.paper_madds_m == 300 and card.paper_params_m == 3.4
    pre = card.pretrained
    assert pre["crop"] == [224] and pre["resize"] == [232]
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]
    assert pre["top1"] == pytest.approx(72.154)
    assert mobilezoo.model_card("mobilenet_v2_x0_5").pretrained is None


def test_unknown_model_suggests_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'mobilenet_v2_x0_50'.*mobilenet_v2_x0_5"):
        mobilezoo.create_model("mobilenet_v2_x0_50")
    with pytest.raises(ValueError, match="unknown model"):
        mobilezoo.model_card("resnet50")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, "num_classes must be an integer >= 1, got 0"),
        ({"in_chans": 0}, "in_chans must be an integer >= 1, got 0"),
        ({"width_mult": 0.0}, "width_mult must be a number > 0, got 0.0"),
        ({"width_mult": -1}, "width_mult must be a number > 0, got -1"),
        ({"drop_rate": 1.5}, "drop_rate is a drop probability"),
        ({"out_indices": (0,)}, "out_indices is only meaningful with features_only=True"),
        ({"features_only": True, "out_indices": (9,)}, r"out_indices \(9,\) invalid"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mobilezoo.create_model("mobilenet_v2_x0_35", **kwargs)


def test_input_too_small_or_wrong_channels() -> None:
    model = mobilezoo.create_model("mobilenet_v2_x0_35").eval()
    with pytest.raises(ValueError, match="input 31x64 is too small: this network needs at least 32x32"):
        model(torch.zeros(1, 3, 31, 64))
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        model(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="expected a 4-d"):
        model(torch.zeros(3, 64, 64))


def test_any_width_mult_and_channels() -> None:
    model = mobilezoo.create_model("mobilenet_v2", width_mult=0.6, in_chans=1, num_classes=7).eval()
    assert model(torch.randn(2, 1, 33, 47)).shape == (2, 7)


def test_cli_list_table_and_json(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "mobilenet_v2*"]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v2_x1_4" in out and "585" in out
    assert main(["list", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in cards] == mobilezoo.list_models()
