import pytest

from mobilezoo.train.config import TrainConfig, resolve_config
from mobilezoo.train.config_io import load_config, save_config
from mobilezoo.train.recipes import PAPER


def test_modern_recipe_scales_lr_with_batch_and_fills_builtin_defaults():
    c = resolve_config(TrainConfig(model="mobilenet_v2_x0_35", batch_size=128))
    assert c.resolved and c.opt == "sgd" and c.nesterov and c.sched == "cosine"
    assert c.lr == pytest.approx(0.5 * 128 / 1024)  # linear scaling from the recipe's batch 1024
    assert (c.img_size, c.in_chans, c.hflip, c.epochs) == (64, 1, 0.0, 12)
    assert c.mean == (0.1307,) and c.label_smoothing == 0.1 and c.ema_decay == 0.9999
    assert c.auto_augment == "none"  # the digits default; the recipe itself uses AutoAugment
    assert resolve_config(TrainConfig(model="mobilenet_v2_x0_35", data="x")).auto_augment == "autoaugment"
    assert resolve_config(TrainConfig(model="mobilenet_v2_x0_35", lr=0.3)).lr == 0.3  # a user's lr is kept


def test_paper_recipes_per_family():
    v2 = resolve_config(TrainConfig(model="mobilenet_v2_x0_35", recipe="paper", batch_size=96))
    assert (v2.opt, v2.rmsprop_decay, v2.momentum, v2.lr, v2.decay_rate, v2.weight_decay) == (
        "rmsprop_tf",
        0.9,
        0.9,
        0.045,
        0.98,
        4e-5,
    )
    assert v2.sched == "step" and not v2.wd_depthwise
    assert PAPER["ShuffleNetV2"].sched == "linear" and PAPER["ShuffleNetV2"].label_smoothing == 0.1
    assert PAPER["MobileNetV3"].drop_rate == 0.2  # TF keep_prob 0.8


def test_squeezenet_takes_adamw_in_the_modern_recipe_and_the_release_solver_in_paper():
    # no BatchNorm: the modern recipe's SGD leaves every logit at 0 (dead conv10); tests/train/test_recipes.py trains it
    modern = resolve_config(TrainConfig(model="squeezenet1_0", batch_size=128))
    assert (modern.opt, modern.lr, modern.sched) == ("adamw", pytest.approx(5e-4 * 128 / 64), "cosine")
    paper = resolve_config(TrainConfig(model="squeezenet1_1", recipe="paper", batch_size=64))
    assert (paper.opt, paper.lr, paper.sched, paper.weight_decay) == ("sgd", pytest.approx(0.005), "sqrt", 2e-4)
    assert resolve_config(TrainConfig(model="mobilenet_v2_x0_35", batch_size=64)).lr == pytest.approx(0.5 / 16)


def test_unknown_recipe_key_and_model():
    with pytest.raises(ValueError, match="unknown recipe 'fast'"):
        resolve_config(TrainConfig(model="mobilenet_v2_x0_35", recipe="fast"))
    with pytest.raises(ValueError, match=r"unknown config key\(s\) 'learning_rate'"):
        TrainConfig.from_dict({"model": "mobilenet_v2_x0_35", "learning_rate": 0.1})
    with pytest.raises(ValueError, match="'epoch' \\(did you mean 'epochs'"):
        TrainConfig.from_dict({"model": "mobilenet_v2_x0_35", "epoch": 3})
    with pytest.raises(ValueError, match="unknown model"):
        resolve_config(TrainConfig(model="mobilenet_v9"))


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"opt": "lamb"}, "opt="), ({"epochs": 0}, "epochs="), ({"img_size": 16}, "img_size="), ({"lr": -1.0}, "lr=")],
)
def test_bad_values_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(TrainConfig(model="mobilenet_v2_x0_35", **kw))


def test_yaml_and_json_round_trip(tmp_path):
    c = resolve_config(TrainConfig(model="mobilenet_v2_x0_35", epochs=3))
    for name in ("c.yaml", "c.json"):
        save_config(c, tmp_path / name)
        assert load_config(tmp_path / name) == c
    (tmp_path / "bad.yaml").write_text("model: mobilenet_v2_x0_35\nepochz: 3\n")
    with pytest.raises(ValueError, match="epochz"):
        load_config(tmp_path / "bad.yaml")


def test_resume_config_keeps_the_run_and_refuses_other_values(tmp_path):
    from mobilezoo.train import resume_config

    run = tmp_path / "run"
    run.mkdir()
    saved = resolve_config(TrainConfig(model="mobilenet_v2_x0_35", epochs=3))
    save_config(saved, run / "config.yaml")
    same = resume_config(run, model="mobilenet_v2_x0_35", epochs=3, lr=saved.lr, num_workers=2, device="cpu")
    assert (same.num_workers, same.device, same.out, same.epochs) == (2, "cpu", str(run), 3)
    with pytest.raises(ValueError, match=r"epochs: the run has 3, given 5; lr: the run has .*, given 5.0"):
        resume_config(run, epochs=5, lr=5.0)
    with pytest.raises(ValueError, match=r"--epochs: the run has 3, given 5"):
        resume_config(run, labels={"epochs": "--epochs"}, epochs=5)
    with pytest.raises(ValueError, match=r"unknown config key\(s\) 'epoch'"):
        resume_config(run, epoch=5)
    assert resume_config(run, crop_scale=list(saved.crop_scale)).crop_scale == saved.crop_scale  # a list from YAML
