"""Training never silently produces garbage: divergence, one class, batch edge cases (tiny runs, 32 px, 1 epoch)."""

import numpy as np
import pytest
import torch
from PIL import Image

from mobilezoo.cli import main
from mobilezoo.train import TrainConfig, train
from mobilezoo.train.evaluate import recalibrate_bn
from mobilezoo.train.guards import TrainingDivergedError
from mobilezoo.weights import read_state_dict
from tests.train.conftest import TINY

FOLDER = {**TINY, "in_chans": 3, "epochs": 1, "train_subset": None, "val_subset": None, "drop_rate": None}


def image_tree(root, counts, size=32, broken=()):
    """``counts`` maps "split/class" to a number of random images; ``broken`` names "split/class/file" to corrupt."""
    rng = np.random.default_rng(0)
    for where, n in counts.items():
        (root / where).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / where / f"{i}.png")
    for name in broken:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    return root


def assert_all_weights_finite(run_dir):
    files = list(run_dir.rglob("*.safetensors"))
    for f in files:
        state = read_state_dict(f)
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), f
    return files


def test_diverging_run_stops_before_saving_nonfinite_weights(tmp_path, one_thread):
    out = tmp_path / "run"
    cfg = {**TINY, "epochs": 2, "train_subset": 96, "lr": 1e9, "checkpoint_every": 1}
    # the weights of step 2 are already infinite, so the checkpoint it would write is refused
    with pytest.raises(TrainingDivergedError, match=r"training diverged at epoch 1, step 2: .* NaN or infinite"):
        train(TrainConfig(**{**cfg, "out": str(out)}))
    assert not (out / "best.safetensors").exists() and not (out / "last.safetensors").exists()
    assert assert_all_weights_finite(out)  # the mid-epoch checkpoints written before the divergence are finite


def test_diverging_run_from_the_cli_is_one_line(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    flags = ["--model", "mobilenet_v1_x0_25", "--img-size", "32", "--batch-size", "32", "--train-subset", "96"]
    assert main(["train", *flags, "--epochs", "1", "--lr", "1e9", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "training diverged at epoch 1, step 3: the loss is nan" in err and "--lr" in err
    assert len(err.strip().splitlines()) == 1
    assert_all_weights_finite(out)


def test_nonfinite_weights_are_never_written(tmp_path, monkeypatch, one_thread):
    import mobilezoo.registry

    made = []
    create = mobilezoo.registry.create_model
    monkeypatch.setattr(mobilezoo.registry, "create_model", lambda *a, **k: made.append(create(*a, **k)) or made[-1])

    def poison(step):  # the last step of the epoch leaves an infinite weight while its loss was finite
        if step == 2:
            with torch.no_grad():
                next(made[0].parameters()).view(-1)[0] = float("inf")

    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"by the end of epoch 1 \(step 2\).*tensor\(s\) of the model"):
        train(TrainConfig(**{**TINY, "epochs": 1, "train_subset": 64, "out": str(out)}), on_step=poison)
    assert not list(out.rglob("*.safetensors")) and not (out / "last.json").exists()


def test_one_class_layout_is_refused_with_the_layout_hint(tmp_path, capsys):
    root = image_tree(tmp_path / "d", {"train/images": 4, "val/images": 2})  # DIR/train/images/*.png
    with pytest.raises(ValueError, match=r"at least 2 classes.*1 class folder \('images'\).*DIR/train/<class>/\*"):
        train(TrainConfig(**{**FOLDER, "data": str(root), "batch_size": 2, "out": str(tmp_path / "run")}))
    assert not (tmp_path / "run").exists()
    assert main(["train", "--model", "mobilenet_v1_x0_25", "--data", str(root), "--out", str(tmp_path / "r")]) == 2
    assert "at least 2 classes" in capsys.readouterr().err


def test_last_batch_of_one_and_a_val_set_smaller_than_the_batch(tmp_path, one_thread):
    # the example: --img-size 32 --batch-size 64 on 65 images crashed in the BN re-estimation
    root = image_tree(tmp_path / "d", {"train/a": 33, "train/b": 32, "val/a": 2, "val/b": 1})
    cfg = {**FOLDER, "data": str(root), "batch_size": 64, "bn_recalibrate": 3}
    result = train(TrainConfig(**cfg))
    assert result.steps == 1  # 65 // 64: the image that does not fill a last batch sits the epoch out (drop-last)
    assert result.history[0]["bn_recalibrated_images"] == 64  # full batches only
    assert result.final_eval.count == 3 and result.final_eval.per_class[1] is not None


def test_micro_batch_of_one_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"batch_size 2 split over accum_steps 2 x 1 process\(es\) leaves 1 image"):
        train(TrainConfig(**{**TINY, "batch_size": 2, "accum_steps": 2, "out": str(tmp_path / "run")}))
    assert not (tmp_path / "run").exists()


def test_batch_left_with_one_decodable_image_names_batch_and_image_size(tmp_path, one_thread):
    broken = ["train/a/x.png", "train/b/y.png", "train/b/z.png"]
    root = image_tree(tmp_path / "d", {"train/a": 1, "val/a": 1, "val/b": 1}, broken=broken)
    bad_batch = r"batch of 1 image\(s\) at img_size 32.*3 image\(s\) of this batch"
    with pytest.warns(UserWarning, match="skipping undecodable"), pytest.raises(ValueError, match=bad_batch):
        train(TrainConfig(**{**FOLDER, "data": str(root), "batch_size": 4}))


def test_an_epoch_without_a_decodable_image_is_an_error(tmp_path, one_thread):
    root = image_tree(tmp_path / "d", {"val/a": 1, "val/b": 1}, broken=["train/a/x.png", "train/b/y.png"])
    no_image = "epoch 1 trained on no image: all 2 images drawn were undecodable"
    with pytest.warns(UserWarning, match="skipping undecodable"), pytest.raises(ValueError, match=no_image):
        train(TrainConfig(**{**FOLDER, "data": str(root), "batch_size": 2}))


def test_empty_or_missing_val_split_is_a_clear_error(tmp_path, one_thread):
    root = image_tree(tmp_path / "d", {"train/a": 2, "train/b": 2})
    cfg = {**FOLDER, "data": str(root), "batch_size": 2}
    with pytest.raises(FileNotFoundError, match=r"has no val/ sub-folder \(expected root/val/<class>/\*\)"):
        train(TrainConfig(**cfg))
    (root / "val").mkdir()
    with pytest.raises(ValueError, match="val'? has no class sub-folders"):
        train(TrainConfig(**cfg))
    image_tree(root, {"val/a": 0, "val/b": 0}, broken=["val/a/x.png", "val/b/y.png"])
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no image could be evaluated"):
        train(TrainConfig(**cfg))


def test_bn_recalibration_leaves_out_batches_of_one_image():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    xs = [torch.randn(8, 3, 1, 1) * 2 + 1, torch.randn(1, 3, 1, 1), torch.empty(0)]
    assert recalibrate_bn(net, [(x, None, 0) for x in xs], "cpu") == 8
    torch.testing.assert_close(net[1].running_mean, net[0](xs[0]).mean(dim=(0, 2, 3)).detach())
