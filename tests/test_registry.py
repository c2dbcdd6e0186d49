import json
import warnings
from pathlib import Path

import pytest
import torch
import torchvision

import mobilezoo
from mobilezoo import weights as wts
from mobilezoo.cli import main
from mobilezoo.registry import paper_row, paper_rows
from mobilezoo.weights import WeightsAdaptedWarning, WeightsMismatchError


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
        # the SqueezeNet paper gives no MAdds: its simple-bypass row has only our count
        assert card.paper_madds_m is not None or paper_row(card.paper_variant).counted_madds_m is not None, name
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
        ({"num_classes": -1}, r"num_classes must be an integer >= 0 \(0: no classifier.*got -1"),
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


# --- fine-tuning from any checkpoint (issue #13) -------------------------------------------------------------------


def _notes(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, WeightsAdaptedWarning)]


def test_fine_tune_a_local_torchvision_file_with_another_class_count(tmp_path: Path) -> None:
    tv = torchvision.models.mobilenet_v2()
    torch.save(tv.state_dict(), tmp_path / "mnv2.pth")
    with pytest.warns(WeightsAdaptedWarning, match=r"mnv2.pth.*classifier.1.weight.*re-initialised for 3 classes"):
        model = mobilezoo.create_model("mobilenet_v2", num_classes=3, weights=tmp_path / "mnv2.pth")
    assert model.get_classifier().out_features == 3
    ours, theirs = model.state_dict(), tv.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs if not k.startswith("classifier."))
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


@pytest.mark.parametrize(
    "name", ["mobilenet_v1_x0_25", "mobilenet_v3_small", "shufflenet_v2_x0_5", "shufflenet_v1_g3_x0_5"]
)
def test_fine_tune_own_checkpoint_new_head_and_stem(tmp_path: Path, name: str) -> None:
    source = mobilezoo.create_model(name)  # 1000 classes, RGB: one's own earlier run
    path = mobilezoo.save_weights(source, tmp_path / "run.safetensors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = mobilezoo.create_model(name, num_classes=7, in_chans=1, weights=path)
    head = wts.head_keys(model)  # the classifier's keys, from model.get_classifier()
    stem = wts.stem_key(model)
    notes = _notes(caught)
    assert len(notes) == 2 and all("run.safetensors" in n for n in notes)
    assert all(k in notes[0] for k in head) and "7 classes (the checkpoint has 1000)" in notes[0]
    assert stem in notes[1] and "from 3 to 1 input channels" in notes[1]
    ours, theirs = model.state_dict(), source.state_dict()
    torch.testing.assert_close(ours[stem], theirs[stem].sum(1, keepdim=True))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs if k not in head and k != stem)
    assert model.get_classifier().out_features == 7
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 7)


def test_fine_tune_a_grey_checkpoint_to_rgb(tmp_path: Path) -> None:
    grey = mobilezoo.create_model("mobilenet_v1_x0_25", num_classes=10, in_chans=1)  # e.g. a run on the digits
    torch.save({"state_dict": {f"module.{k}": v for k, v in grey.state_dict().items()}}, tmp_path / "grey.pth")
    with pytest.warns(WeightsAdaptedWarning, match="from 1 to 3 input channels"):
        rgb = mobilezoo.create_model("mobilenet_v1_x0_25", num_classes=5, weights=tmp_path / "grey.pth")
    w = grey.state_dict()["features.0.0.weight"]
    torch.testing.assert_close(rgb.state_dict()["features.0.0.weight"], w.repeat(1, 3, 1, 1) / 3)
    x = torch.randn(1, 1, 64, 64)
    grey.eval(), rgb.eval()
    with torch.no_grad():  # a grey image on all three channels gives the trunk the same input
        torch.testing.assert_close(rgb.forward_features(x.repeat(1, 3, 1, 1)), grey.forward_features(x))


def test_other_width_or_family_still_fails_loudly(tmp_path: Path) -> None:
    narrow = mobilezoo.save_weights(mobilezoo.create_model("mobilenet_v2_x0_35"), tmp_path / "narrow.safetensors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsMismatchError, match=r"narrow.safetensors' does not fit the model: shape mismatch"):
            mobilezoo.create_model("mobilenet_v2", num_classes=3, weights=narrow)
    assert _notes(caught) == []  # no "re-initialised" notice for a load that fails
    small = mobilezoo.save_weights(mobilezoo.create_model("mobilenet_v3_small"), tmp_path / "small.safetensors")
    with pytest.raises(WeightsMismatchError, match="missing keys"):
        mobilezoo.create_model("mobilenet_v3_large", num_classes=3, weights=small)
    same = mobilezoo.save_weights(mobilezoo.create_model("mobilenet_v2_x0_35"), tmp_path / "same.safetensors")
    with pytest.raises(
        WeightsMismatchError, match=r"classifier.1.weight checkpoint \(1000, 1280\) vs model \(3, 1280\)"
    ):
        mobilezoo.create_model("mobilenet_v2_x0_35", num_classes=3, weights=same, adapt_weights=False)
    with pytest.raises(WeightsMismatchError, match="shape mismatches"):  # load_weights itself stays exact
        mobilezoo.load_weights(mobilezoo.create_model("mobilenet_v2_x0_35", num_classes=3), same)
