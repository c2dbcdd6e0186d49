"""Prediction reads image files as training does (:func:`mobilezoo.data.load_image`)."""

import numpy as np
import torch
from PIL import Image

from mobilezoo import create_model, save_weights
from mobilezoo.data import default_normalization
from mobilezoo.train import predict
from mobilezoo.train.evaluate import InferenceSpec, recalibrate_bn


def _viewer_pairs(tmp_path):
    """Files as cameras and scanners write them, and the 8-bit RGB files an image viewer shows for them."""
    rng = np.random.default_rng(0)
    gray16 = (rng.random((40, 48)) * 65535).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "scan16.png")
    Image.fromarray(np.rint(gray16 / 257.0).astype(np.uint8)).convert("RGB").save(tmp_path / "scan16_seen.png")

    rgba = rng.integers(0, 256, (40, 48, 4), dtype=np.uint8)
    rgba[:, :20, 3] = 0  # a transparent left part: white in a viewer, whatever colour the hidden pixels hold
    rgba[:, 20:, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "logo.png")
    seen = rgba[..., :3].copy()
    seen[:, :20] = 255
    Image.fromarray(seen).save(tmp_path / "logo_seen.png")

    stored = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 degrees counter-clockwise to view", as a phone held sideways writes
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    Image.fromarray(np.rot90(stored).copy()).save(tmp_path / "phone_seen.png")
    names = ["scan16", "logo", "phone"]
    return [tmp_path / f"{n}.png" for n in names], [tmp_path / f"{n}_seen.png" for n in names]


def test_predict_sees_what_a_viewer_shows(tmp_path):
    spec = InferenceSpec(["a", "b", "c"], 3, 32, 1.0, default_normalization(3, False))
    torch.manual_seed(0)
    model = create_model("mobilenet_v1_x0_25", num_classes=3)
    # BN statistics of real activations: with the initial (0, 1) ones the activations vanish and every output is 0
    recalibrate_bn(model, [(torch.randn(16, 3, 32, 32), None, 0)], "cpu")
    weights = save_weights(model.eval(), tmp_path / "w.safetensors", spec.to_metadata())
    files, seen = _viewer_pairs(tmp_path)
    got = predict("mobilenet_v1_x0_25", weights, files, topk=3)
    want = predict("mobilenet_v1_x0_25", weights, seen, topk=3)
    for g, w in zip(got.predictions, want.predictions):
        assert g.top == w.top, g.image  # the same classes with the same probabilities
    assert len({p.top[0][1] for p in want.predictions}) == 3  # the outputs do depend on the image


def test_eval_refuses_a_checkpoint_for_another_class_count(tmp_path):
    """Evaluating must not swap in a random classifier the way fine-tuning does (it would score a random head)."""
    import pytest
    import torch

    from mobilezoo import create_model
    from mobilezoo.train.evaluate import evaluate_weights
    from mobilezoo.weights import WeightsMismatchError

    path = tmp_path / "imagenet.pth"
    torch.save(create_model("mobilenet_v1_x0_25", in_chans=1, num_classes=1000).state_dict(), path)
    with pytest.raises(WeightsMismatchError, match="classifier"):
        evaluate_weights("mobilenet_v1_x0_25", path, "builtin", subset=20, img_size=32)
