"""Each public checkpoint's preprocessing reaches ``predict``, ``eval`` and ``export``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

import mobilezoo
from mobilezoo.data import Normalization, build_transforms
from mobilezoo.train import evaluate_weights, predict
from mobilezoo.train.evaluate import InferenceSpec
from mobilezoo.weights import Preprocessing, imagenet_classes, torchvision_pretrained_info
from mobilezoo.weights.preprocessing import MEGVII


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 150, 3), dtype=np.uint8)).save(path)
    return path


def test_preprocessing_round_trip_and_checks() -> None:
    pre = Preprocessing("timm:x", 224, 0.95, "bicubic", (0.5,) * 3, (0.5,) * 3)
    assert Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    assert pre.resize == 236
    with pytest.raises(ValueError, match="interpolation must be one of .* got 'lanczos'"):
        Preprocessing("x", interpolation="lanczos")
    with pytest.raises(ValueError, match="channel_order must be one of .* got 'GBR'"):
        Preprocessing("x", channel_order="GBR")
    spec = InferenceSpec(["a", "b"], 3, 64, 0.9, Normalization((0.0,) * 3, (1.0,) * 3), "bicubic", "BGR")
    assert InferenceSpec.from_metadata(spec.to_metadata()) == spec
    old = {k: v for k, v in spec.to_metadata().items() if k not in ("interpolation", "channel_order")}
    assert InferenceSpec.from_metadata(old).channel_order == "RGB"  # files of earlier runs


def test_megvii_transform_gives_bgr_pixels_0_255(photo: Path) -> None:
    x = MEGVII.transforms()(Image.open(photo).convert("RGB"))
    img = v2.functional.center_crop(v2.functional.resize(Image.open(photo), 256, antialias=True), 224)
    expected = torch.from_numpy(np.asarray(img)[:, :, ::-1].copy()).permute(2, 0, 1).float()
    torch.testing.assert_close(x, expected, atol=1e-4, rtol=0)


def test_build_transforms_interpolation_and_channel_order(photo: Path) -> None:
    img = Image.open(photo).convert("RGB")
    norm = Normalization((0.1, 0.2, 0.3), (0.5, 0.6, 0.7))
    bicubic = build_transforms(False, 64, norm, eval_crop_pct=0.8, interpolation="bicubic")(img)
    resized = v2.functional.resize(img, 80, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
    expected = v2.functional.pil_to_tensor(v2.functional.center_crop(resized, 64)).float() / 255
    torch.testing.assert_close(bicubic, (expected - torch.tensor([0.1, 0.2, 0.3])[:, None, None])
                               / torch.tensor([0.5, 0.6, 0.7])[:, None, None])  # fmt: skip
    bgr = build_transforms(False, 64, norm, eval_crop_pct=0.8, interpolation="bicubic", channel_order="BGR")(img)
    torch.testing.assert_close(bgr, (expected.flip(0) - torch.tensor([0.1, 0.2, 0.3])[:, None, None])
                               / torch.tensor([0.5, 0.6, 0.7])[:, None, None])  # fmt: skip
    with pytest.raises(ValueError, match="interpolation must be 'bilinear', 'bicubic' or 'nearest', got 'cubic'"):
        build_transforms(False, 64, norm, interpolation="cubic")


def test_predict_with_torchvision_weights_uses_their_preprocessing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, photo: Path
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    info = torchvision_pretrained_info("MobileNet_V3_Small_Weights")
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    tv = torchvision.models.mobilenet_v3_small().eval()
    torch.save(tv.state_dict(), tmp_path / "torch" / "hub" / "checkpoints" / info["file_name"])
    result = predict("mobilenet_v3_small", "torchvision", [photo], topk=2)
    weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    with torch.no_grad():
        probs = tv(weights.transforms()(Image.open(photo).convert("RGB"))[None]).softmax(1)[0]
    top = probs.topk(2)
    assert [c for c, _ in result.predictions[0].top] == [imagenet_classes()[int(i)] for i in top.indices]
    assert [p for _, p in result.predictions[0].top] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_eval_needs_as_many_classes_as_the_checkpoint(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            Image.new("RGB", (40, 40)).save(tmp_path / "data" / split / name / "a.png")
    with pytest.raises(ValueError, match=r"'megvii:.*v2.pth' has 1000 classes, but .*data' has 2"):
        evaluate_weights("shufflenet_v2_x0_5", f"megvii:{tmp_path / 'v2.pth'}", tmp_path / "data")


def test_export_records_the_preprocessing(tmp_path: Path) -> None:
    import onnx

    from mobilezoo.deploy.export import PREPROCESSING_KEY, export_model
    from tests.weights.test_megvii import V2, official_v2_state, save_official

    path = save_official(official_v2_state(*V2["0_5"]), tmp_path / "v2.pth")
    result = export_model("shufflenet_v2_x0_5", tmp_path / "m.onnx", weights=f"megvii:{path}", resolution=64)
    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    recorded = json.loads(meta[PREPROCESSING_KEY])
    assert recorded == result.to_dict()["preprocessing"] == {**MEGVII.to_dict(), "source": "megvii:v2.pth"}
    assert recorded["channel_order"] == "BGR"
    # the model card lists the same for the megvii checkpoint
    card = mobilezoo.model_card("shufflenet_v2_x0_5")
    megvii = next(c for c in card.checkpoints if c["source"] == "megvii")
    assert megvii["preprocessing"]["std"] == recorded["std"] and megvii["model_kwargs"] == {"shuffle": "megvii"}


def test_int8_calibration_images_get_the_checkpoints_preprocessing(tmp_path: Path) -> None:
    from mobilezoo.deploy.calibration import image_batches

    pixels = np.zeros((80, 80, 3), dtype=np.uint8)
    pixels[..., 0] = 200  # red
    for name in ("a", "b"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / "imgs" / name / "x.png")
    x = next(iter(image_batches(tmp_path / "imgs", resolution=64, num_images=2, preprocessing=MEGVII)))[0]
    assert x.shape == (2, 3, 64, 64)
    torch.testing.assert_close(x[:, 2], torch.full((2, 64, 64), 200.0), atol=1e-3, rtol=0)  # R last, in 0-255
    torch.testing.assert_close(x[:, :2], torch.zeros(2, 2, 64, 64), atol=1e-3, rtol=0)
    default = next(iter(image_batches(tmp_path / "imgs", resolution=64, num_images=2)))[0]
    assert default[:, 0].mean() > 1.0 > 0 > default[:, 2].mean()  # ImageNet-normalised RGB otherwise
