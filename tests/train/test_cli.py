import json

from PIL import Image

from mobilezoo.cli import main
from mobilezoo.data import BuiltinDigits

TINY_FLAGS = [
    "--model",
    "mobilenet_v1_x0_25",
    "--epochs",
    "1",
    "--img-size",
    "32",
    "--batch-size",
    "32",
    "--train-subset",
    "64",
    "--val-subset",
    "20",
    "--set",
    "bn_recalibrate=1",
]


def test_train_eval_predict_commands(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert main(["train", *TINY_FLAGS, "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 2 and result["config"]["img_size"] == 32 and (out / "best.safetensors").is_file()

    assert main(["train", "--out", str(out), "--resume", "--json"]) == 0  # a finished run: nothing left to do
    assert json.loads(capsys.readouterr().out)["steps"] == 2

    assert main(["eval", "--model", "mobilenet_v1_x0_25", "--weights", str(out / "best.safetensors"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["count"] == 1000 and set(ev["per_class"]) == {str(i) for i in range(10)}
    assert (out / "eval" / "confusion.png").is_file() and (out / "eval" / "eval.json").is_file()

    img = tmp_path / "seven.png"
    ds = BuiltinDigits("val")
    Image.fromarray(ds.images[ds.targets.index(7)]).save(img)
    assert main(["predict", "--model", "mobilenet_v1_x0_25", "--weights", str(out / "best.safetensors"), str(img)]) == 0
    assert "seven.png" in capsys.readouterr().out


def test_train_command_bad_input(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: mobilenet_v1_x0_25\nlearning_rate: 0.1\n")
    out = tmp_path / "never"
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 2
    assert "unknown config key(s) 'learning_rate'" in capsys.readouterr().err
    assert main(["train", *TINY_FLAGS, "--recipe", "fastest", "--out", str(out)]) == 2
    assert "unknown recipe 'fastest'" in capsys.readouterr().err
    assert main(["train", *TINY_FLAGS, "--data", str(tmp_path / "nope"), "--set", "in_chans=3", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume"]) == 2
    assert "not a mobilezoo run folder" in capsys.readouterr().err
    assert not out.exists()


def test_resume_refuses_the_settings_it_would_ignore(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert main(["train", *TINY_FLAGS, "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    before = (out / "metrics.json").read_text()
    argv = ["train", "--out", str(out), "--resume", "--epochs", "5", "--lr", "5", "--model", "mobilenet_v2_x0_35"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot resume" in err and "only --checkpoint-every, --device" in err
    for shown in ("--epochs: the run has 1, given 5", "--lr: the run has 0.015625, given 5.0", "--model: the run has"):
        assert shown in err
    assert (out / "metrics.json").read_text() == before
    # the original command line repeated with --resume (and what may change: workers, device) is accepted
    argv = ["train", *TINY_FLAGS, "--out", str(out), "--resume", "--workers", "0", "--device", "cpu", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
