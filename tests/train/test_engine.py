import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mobilezoo.train import TrainConfig, evaluate_weights, predict, train
from mobilezoo.train import checkpoint as ck
from mobilezoo.train.checkpoint import atomic_save_weights, load_checkpoint
from mobilezoo.train.ema import ModelEma
from mobilezoo.train.evaluate import read_spec, recalibrate_bn
from mobilezoo.weights import WeightsMismatchError, read_state_dict
from tests.torchrun import torchrun_mobilezoo
from tests.train.conftest import TINY

RUNNER = """
import json, sys, time
import torch
torch.set_num_threads(1)
from mobilezoo.train import TrainConfig, train
cfg = TrainConfig(**json.loads(sys.argv[1]))
def slow(step):  # gives the test a wide window to kill the run after a mid-epoch checkpoint
    if step >= 3:
        time.sleep(0.4)
train(cfg, resume=sys.argv[2] == "1", on_step=slow)
"""


def final_weights(run_dir, step):
    return read_state_dict(run_dir / "checkpoints" / f"ckpt-{step:08d}.safetensors")


def test_tiny_run_writes_everything_and_trains(tmp_path, one_thread):
    out = tmp_path / "run"
    events = []
    result = train(TrainConfig(**{**TINY, "out": str(out)}), progress=events.append)
    assert {p.name for p in out.iterdir()} >= {
        "config.yaml",
        "last.json",
        "best.safetensors",
        "last.safetensors",
        "metrics.csv",
        "metrics.json",
        "metrics.png",
        "checkpoints",
    }
    assert [r["epoch"] for r in result.history] == [1, 2] and result.steps == 12
    assert result.history[-1]["bn_recalibrated_images"] == 64
    assert all(0 <= r["val_top1"] <= 100 for r in result.history)
    assert [e.kind for e in events].count("step") == 12 and events[-1].kind == "epoch"
    spec = read_spec(out / "best.safetensors")
    assert spec.classes == [str(i) for i in range(10)] and spec.in_chans == 1 and spec.img_size == 32
    ev = evaluate_weights("mobilenet_v1_x0_25", out / "last.safetensors", "builtin", subset=40, out=tmp_path / "ev")
    assert ev.top1 == pytest.approx(result.history[-1]["val_top1"])  # same model, same images
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000
    assert sum(map(sum, ev.confusion)) == 40 and ev.top5 >= ev.top1
    from PIL import Image

    from mobilezoo.data import BuiltinDigits

    BuiltinDigits("val")[0][0].save(tmp_path / "digit.png")
    pred = predict("mobilenet_v1_x0_25", out / "best.safetensors", [tmp_path / "digit.png"], topk=3)
    assert len(pred.predictions[0].top) == 3 and pred.predictions[0].top[0][0] in spec.classes
    Image.new("RGB", (5, 5)).save(tmp_path / "x.jpg")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot decode image .*bad.png"):
        predict("mobilenet_v1_x0_25", out / "best.safetensors", [tmp_path / "x.jpg", tmp_path / "bad.png"])
    with pytest.raises(WeightsMismatchError):  # weights of another architecture
        evaluate_weights("mobilenet_v2_x0_35", out / "best.safetensors", "builtin", subset=10)
    with pytest.raises(ValueError, match="already holds a run"):
        train(TrainConfig(**{**TINY, "out": str(out)}))


def test_resume_after_kill_ends_with_the_same_weights(tmp_path, one_thread):
    cfg = {**TINY, "checkpoint_every": 2}
    ref = tmp_path / "ref"
    train(TrainConfig(**{**cfg, "out": str(ref)}))

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = [sys.executable, "-c", RUNNER, json.dumps({**cfg, "out": str(killed)})]
    proc = subprocess.Popen([*args, "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pointer, step, deadline = killed / "last.json", 0, time.monotonic() + 120
    while step < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
        if pointer.exists():
            step = json.loads(pointer.read_text())["step"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert step % 6 != 0, f"the kill came after checkpoint step {step}, not mid-epoch"
    resumed = train(TrainConfig(**{**cfg, "out": str(killed)}), resume=True)
    assert resumed.steps == 12
    a, b = final_weights(ref, 12), final_weights(killed, 12)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la, lb = read_state_dict(ref / "last.safetensors"), read_state_dict(killed / "last.safetensors")
    assert all(torch.equal(la[k], lb[k]) for k in la)
    hist = json.loads((ref / "metrics.json").read_text())
    assert [r["val_top1"] for r in hist] == [r["val_top1"] for r in resumed.history]


def test_ddp_two_processes_equal_single_process_with_accumulation(tmp_path, one_thread):
    # no dropout: each rank draws its own masks, which no single process reproduces; augmentations are per-sample
    cfg = {**TINY, "epochs": 1, "drop_rate": 0.0}
    single = train(TrainConfig(**{**cfg, "accum_steps": 2, "out": str(tmp_path / "single")}))
    done = torchrun_mobilezoo(
        "train",
        "--out",
        str(tmp_path / "ddp"),
        "--no-progress",
        *[f"--set={k}={json.dumps(v)}" for k, v in cfg.items()],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = final_weights(tmp_path / "single", 6), final_weights(tmp_path / "ddp", 6)
    params = [k for k in a if "running_" not in k and "num_batches" not in k]
    for k in params:  # BN running statistics differ by design (each rank's own half batch); parameters must not
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    ddp_hist = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp_hist[0]["train_loss"] == pytest.approx(single.history[0]["train_loss"], rel=1e-4)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    path = atomic_save_weights(model, tmp_path / "w.safetensors")
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt  # a kill in the middle of the write

    monkeypatch.setattr(ck, "save_weights", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_save_weights(torch.nn.Linear(2, 2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left behind
    assert load_checkpoint(tmp_path, model) is None  # no pointer: nothing to resume


def test_bad_input_writes_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(TrainConfig(**{**TINY, "data": str(tmp_path / "missing"), "in_chans": 3, "out": str(out)}))
    with pytest.raises(ValueError, match="unknown recipe"):
        train(TrainConfig(**{**TINY, "recipe": "sota", "out": str(out)}))
    with pytest.raises(ValueError, match="does not fit the model"):
        train(TrainConfig(**{**TINY, "weights": str(_other_weights(tmp_path)), "out": str(out)}))
    assert not out.exists()


def _other_weights(tmp_path):
    from mobilezoo import create_model, save_weights

    return save_weights(create_model("mobilenet_v2_x0_35", num_classes=10, in_chans=1), tmp_path / "v2.safetensors")


def test_bn_recalibration_gives_the_plain_average():
    bn = torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=0.01))
    xs = [torch.randn(8, 3, 4, 4) * 3 + 2 for _ in range(3)]
    seen = recalibrate_bn(bn, [(x, None, 0) for x in xs], "cpu")
    assert seen == 24 and bn[0].momentum == 0.01 and not bn[0].training
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in xs]).mean(0)
    torch.testing.assert_close(bn[0].running_mean, means)


def test_ema_decay_warms_up():
    model = torch.nn.Linear(1, 1, bias=False)
    ema = ModelEma(model, decay=0.9999)
    with torch.no_grad():
        model.weight.fill_(1.0)
        ema.module.weight.fill_(0.0)
    ema.update(model, 0)  # decay min(0.9999, 1/10) = 0.1
    assert ema.module.weight.item() == pytest.approx(0.9)


def test_folder_run_skips_and_counts_a_corrupt_image(tmp_path, one_thread):
    from tests.test_data import make_folder

    root = make_folder(tmp_path / "imgs", per_class=4)
    (root / "train" / "b" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    cfg = {**TINY, "data": str(root), "in_chans": 3, "batch_size": 9, "train_subset": None, "val_subset": None}
    with pytest.warns(UserWarning, match="zz_broken.jpg"):
        result = train(TrainConfig(**{**cfg, "epochs": 1, "out": str(tmp_path / "run")}))
    assert result.skipped_images == 1 and result.history[0]["skipped_images"] == 1
    assert result.final_eval.count == 8 and result.final_eval.classes == ["a", "b"]
