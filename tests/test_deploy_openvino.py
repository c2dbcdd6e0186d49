"""OpenVINO IR export, fp32 and int8, through the library and the CLI."""

import numpy as np
import pytest
import torch

from mobilezoo import create_model
from mobilezoo.benchmark.environment import package_version
from mobilezoo.cli import main
from mobilezoo.deploy import openvino_model
from mobilezoo.deploy.export import export_model
from mobilezoo.deploy.openvino_export import export_openvino

pytestmark = pytest.mark.skipif(package_version("openvino") is None, reason="openvino not installed")


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v2_x0_5", "mobilenet_v1_x0_25"])
def test_export_openvino_matches_pytorch(name, tmp_path) -> None:
    model = create_model(name).eval()
    r = export_openvino(model, tmp_path / "m.xml", resolution=32)
    assert r.path.is_file() and r.bin_path.is_file() and r.max_abs_diff <= 1e-4
    x = torch.randn(3, 3, 32, 32)  # another batch size: the batch is dynamic
    with torch.inference_mode():
        want = model(x).numpy()
    got = openvino_model(r.path, 1, precision="f32").run(x.numpy())
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_weights_are_stored_in_fp32(tmp_path) -> None:
    """OpenVINO's save_model compresses weights to fp16 unless told not to: the .bin must hold every fp32 weight."""
    model = create_model("mobilenet_v1_x0_25").eval()
    r = export_openvino(model, tmp_path / "m.xml", resolution=32)
    n_params = sum(p.numel() for p in model.parameters())
    assert r.bin_path.stat().st_size >= 3.5 * n_params  # fp32: ~4 bytes a parameter (BN folded); fp16 would be ~2


def test_export_model_openvino_int8_checks_accuracy(tmp_path) -> None:
    r = export_model("mobilenet_v1_x0_25", tmp_path / "q.xml", format="openvino-int8", in_chans=1, num_classes=10,
                     resolution=32, calibration="builtin", calibration_images=32, validation_images=64)  # fmt: skip
    d = r.to_dict()
    assert r.path.suffix == ".xml" and r.path.is_file() and (tmp_path / "q.bin").is_file()
    assert d["accuracy"]["images"] == 64 and 0 <= d["accuracy"]["agreement"] <= 100
    assert d["fp32_path"] is None  # the intermediate ONNX files are not left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.bin", "q.xml"]


def test_export_openvino_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"should end in \.xml"):
        export_openvino(create_model("mobilenet_v1_x0_25"), tmp_path / "m.onnx", resolution=32)
    with pytest.raises(ValueError, match="dynamic height and width is not available for openvino"):
        export_model("mobilenet_v1_x0_25", tmp_path / "m.xml", format="openvino", dynamic_hw=True)
    with pytest.raises(ValueError, match="openvino-int8 needs calibration images"):
        export_model("mobilenet_v1_x0_25", tmp_path / "m.xml", format="openvino-int8", resolution=32)


def test_export_keeps_a_checkpoint_exact(tmp_path, capsys) -> None:
    """A run's 10-class weights exported without --num-classes is an error, not a random 1000-class head."""
    from mobilezoo import save_weights

    save_weights(create_model("mobilenet_v1_x0_25", num_classes=10), tmp_path / "w.safetensors")
    code = main(["export", "--model", "mobilenet_v1_x0_25", "--weights", str(tmp_path / "w.safetensors"),
                 "--format", "openvino", "--resolution", "32", "--out", str(tmp_path / "m.xml")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "classifier" in err and len(err.strip().splitlines()) == 1


def test_cli_export_openvino(tmp_path, capsys) -> None:
    code = main(["export", "--model", "shufflenet_v2_x0_5", "--format", "openvino", "--resolution", "32",
                 "--out", str(tmp_path / "s.xml"), "--json"])  # fmt: skip
    assert code == 0 and '"max_abs_diff"' in capsys.readouterr().out
