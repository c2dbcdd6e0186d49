import numpy as np
import pytest
import torch

from mobilezoo import create_model, policies
from mobilezoo.benchmark.environment import package_version
from mobilezoo.deploy import export_onnx, onnx_session, openvino_model
from mobilezoo.policies import Decision

SPIN, STOP = "session.intra_op.allow_spinning", "session.force_spinning_stop"


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    return export_onnx(create_model("mobilenet_v3_small"), tmp_path_factory.mktemp("m") / "m.onnx", resolution=32).path


def _entry(session, key):
    try:
        return session.get_session_options().get_session_config_entry(key)
    except RuntimeError:  # "does not have configuration": ONNX Runtime's default
        return None


@pytest.mark.parametrize(
    ("spin", "entries"),
    [
        ("off", ("0", None)),
        ("during-run", ("1", "1")),
        ("always", (None, None)),
        (False, ("0", None)),
        (True, (None, None)),
    ],
)
def test_onnx_session_spin_modes(onnx_file, spin, entries) -> None:
    s = onnx_session(onnx_file, threads=2, spin=spin)
    assert (_entry(s, SPIN), _entry(s, STOP)) == entries


def test_onnx_session_default_spin_is_the_machines_policy(onnx_file, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MOBILEZOO_CACHE_DIR", str(tmp_path))
    assert (_entry(onnx_session(onnx_file, 1), SPIN), _entry(onnx_session(onnx_file, 1), STOP)) == ("1", "1")
    policies.save_decisions([Decision("ort_spin/threads=1", "off", "measured", "test"),
                             Decision("ort_spin/threads=2", "always", "measured", "test")])  # fmt: skip
    assert _entry(onnx_session(onnx_file, 1), SPIN) == "0"
    streamed = onnx_session(onnx_file, 2, streams=2)  # the policy for the threads in all, 2: always
    assert (_entry(streamed.session, SPIN), _entry(streamed.session, STOP)) == (None, None)
    with pytest.raises(ValueError, match="unknown spin mode 'sometimes'"):
        onnx_session(onnx_file, 1, spin="sometimes")


@pytest.mark.skipif(package_version("openvino") is None, reason="openvino not installed")
def test_openvino_model_matches_pytorch_in_f32(onnx_file) -> None:
    model = create_model("mobilenet_v3_small").eval()
    # the same weights as the exported file: export again from this instance
    path = export_onnx(model, onnx_file.with_name("same.onnx"), resolution=32).path
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        want = model(x).numpy()
    got = openvino_model(path, threads=1, precision="f32").run(x.numpy())
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-4 * scale
    # compiled for the one shape it serves: the same numbers, and another shape is refused by name
    static = openvino_model(path, threads=1, precision="f32", input_shape=(2, 3, 32, 32))
    assert static.input_shape == (2, 3, 32, 32)
    assert np.abs(static.run(x.numpy()) - want).max() <= 1e-4 * scale
    with pytest.raises(ValueError, match=r"compiled for input shape \(2, 3, 32, 32\), got \(1, 3, 32, 32\)"):
        static.run(x[:1].numpy())


@pytest.mark.skipif(package_version("openvino") is None, reason="openvino not installed")
def test_openvino_model_bad_arguments(onnx_file, tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown OpenVINO precision 'fp8'"):
        openvino_model(onnx_file, precision="fp8")
    with pytest.raises(ValueError, match="performance hint 'fast'"):
        openvino_model(onnx_file, hint="fast")
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        openvino_model(tmp_path / "nope.onnx")
    with pytest.raises(ValueError, match=r"input_shape must be four positive integers .* got \(1, 3, 32\)"):
        openvino_model(onnx_file, input_shape=(1, 3, 32))
    with pytest.raises(ValueError, match="cannot take input shape"):
        openvino_model(onnx_file, input_shape=(1, 4, 32, 32))  # the file's channel count is fixed at 3
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="OpenVINO cannot read"):
        openvino_model(bad)
