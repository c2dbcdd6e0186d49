"""Every failure of the ``mobilezoo`` command is one readable line naming the file or URL and what to do (issue #13)."""

import argparse
import pickle
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision

import mobilezoo
import mobilezoo.cli.export
from mobilezoo.cli import main
from mobilezoo.weights import torchvision_pretrained_info


def _one_error_line(capsys: pytest.CaptureFixture, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mobilezoo {command}: error: ")
    assert "\x1b[" not in err and "Traceback" not in err
    return lines[0]


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache under tmp_path; any download attempt fails as on a machine without internet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_truncated_torchvision_download_is_one_line_naming_the_file(hub_cache: Path, tmp_path: Path, capsys) -> None:
    cached = hub_cache / torchvision_pretrained_info("MobileNet_V2_Weights")["file_name"]
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), cached)
    cached.write_bytes(cached.read_bytes()[:200_000])  # an interrupted download
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "mobilenet_v2", "--weights", "torchvision", "--out", str(out)]) == 2
    line = _one_error_line(capsys, "export")
    assert str(cached) in line and "interrupted download: delete it and run again" in line
    assert not out.exists()


def test_offline_without_cached_file_names_url_and_cache(hub_cache: Path, tmp_path: Path, capsys) -> None:
    info = torchvision_pretrained_info("MobileNet_V3_Small_Weights")
    argv = ["export", "--model", "mobilenet_v3_small", "--weights", "torchvision", "--out", str(tmp_path / "m.onnx")]
    assert main(argv) == 2
    line = _one_error_line(capsys, "export")
    assert info["url"] in line and str(hub_cache / info["file_name"]) in line
    assert "machine with internet" in line and "local weights file" in line


class _Exploit:
    def __reduce__(self):
        return (print, ("this ran",))


@pytest.mark.parametrize("kind", ["code", "truncated", "other_family", "missing"])
def test_bad_weights_files_are_one_line(tmp_path: Path, capsys, kind: str) -> None:
    path = tmp_path / "w.pth"
    if kind == "code":
        with open(path, "wb") as f:
            pickle.dump({"model": {"features.0.0.weight": _Exploit()}}, f, protocol=2)
    elif kind == "truncated":
        torch.save(mobilezoo.create_model("mobilenet_v2_x0_35").state_dict(), path)
        path.write_bytes(path.read_bytes()[:5000])
    elif kind == "other_family":
        torch.save({"model": mobilezoo.create_model("mobilenet_v3_small").state_dict()}, path)
    argv = ["export", "--model", "mobilenet_v2_x0_35", "--weights", str(path), "--out", str(tmp_path / "m.onnx")]
    assert main(argv) == 2
    line = _one_error_line(capsys, "export")
    assert str(path) in line
    assert "this ran" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("error", "code", "expected"),
    [
        (RuntimeError("\x1b[1mCUDA out of memory.\x1b[0m\nTried to allocate 2 GiB"), 1, "RuntimeError: CUDA out"),
        (PermissionError(13, "Permission denied", "/data/w.pth"), 2, "error: Permission denied: '/data/w.pth'"),
        (OSError(28, "No space left on device"), 2, "error: No space left on device"),
        (KeyError("mean"), 1, "KeyError: 'mean' (set MOBILEZOO_DEBUG=1 for the traceback)"),
    ],
)
def test_any_exception_is_one_line(monkeypatch, tmp_path: Path, capsys, error: Exception, code: int, expected: str):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(mobilezoo.cli.export, "export_model", fail)
    assert main(["export", "--model", "mobilenet_v2", "--out", str(tmp_path / "m.onnx")]) == code
    assert expected in _one_error_line(capsys, "export")


def test_interrupt_and_debug_traceback(monkeypatch, tmp_path: Path, capsys) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mobilezoo.cli.export, "export_model", interrupted)
    argv = ["export", "--model", "mobilenet_v2", "--out", str(tmp_path / "m.onnx")]
    assert main(argv) == 130
    assert capsys.readouterr().err == "mobilezoo export: interrupted\n"
    monkeypatch.setenv("MOBILEZOO_DEBUG", "1")
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    monkeypatch.setattr(mobilezoo.cli.export, "export_model", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(argv)


def test_train_fine_tunes_a_training_tools_checkpoint(tmp_path: Path, capsys) -> None:
    """``mobilezoo train --weights``: a 1000-class RGB checkpoint (timm's train.py container) on the 10 grey digits."""
    source = mobilezoo.create_model("mobilenet_v1_x0_25")
    ckpt = {"epoch": 9, "arch": "mobilenet_v1", "state_dict": source.state_dict(), "args": argparse.Namespace(lr=0.1)}
    torch.save(ckpt, tmp_path / "model_best.pth.tar")
    out = tmp_path / "run"
    argv = ["train", "--model", "mobilenet_v1_x0_25", "--epochs", "1", "--img-size", "32", "--batch-size", "32"]
    argv += ["--train-subset", "32", "--val-subset", "10", "--set", "bn_recalibrate=1"]
    argv += ["--weights", str(tmp_path / "model_best.pth.tar"), "--out", str(out), "--json"]
    assert main(argv) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mobilezoo train: note: ")]
    assert len(notes) == 2
    assert "classifier.1.weight, classifier.1.bias re-initialised for 10 classes" in notes[0]
    assert "stem features.0.0.weight adapted from 3 to 1 input channels" in notes[1]
    assert (out / "best.safetensors").is_file()
