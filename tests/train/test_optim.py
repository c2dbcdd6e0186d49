import math

import pytest
import torch
from torch import nn

from mobilezoo.train.config import TrainConfig, resolve_config
from mobilezoo.train.optim import RMSpropTF, lr_factor, param_groups


def test_rmsprop_tf_matches_hand_computation():
    # TF1 RMSPropOptimizer: ms starts at 1, eps inside the sqrt, lr folded into the momentum buffer
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSpropTF([w], lr=0.1, alpha=0.9, eps=1.0, momentum=0.9, weight_decay=0.01)
    grads = [torch.tensor([0.5, 1.0]), torch.tensor([-1.0, 2.0])]
    ms, mom, ref = torch.ones(2), torch.zeros(2), w.detach().clone()
    for g, lr in zip(grads, (0.1, 0.05)):
        opt.param_groups[0]["lr"] = lr
        w.grad = g.clone()
        opt.step()
        g = g + 0.01 * ref
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.9 * mom + lr * g / torch.sqrt(ms + 1.0)
        ref = ref - mom
        torch.testing.assert_close(w.detach(), ref, rtol=0, atol=1e-7)
    # first step by hand, no torch: w0 = 1, g = 0.5 + 0.01 = 0.51, ms = 0.9 + 0.1 * 0.51^2
    step1 = 0.1 * 0.51 / math.sqrt(0.9 + 0.1 * 0.51**2 + 1.0)
    w2 = nn.Parameter(torch.tensor([1.0]))
    opt2 = RMSpropTF([w2], lr=0.1, alpha=0.9, eps=1.0, momentum=0.9, weight_decay=0.01)
    w2.grad = torch.tensor([0.5])
    opt2.step()
    assert w2.item() == pytest.approx(1.0 - step1, abs=1e-7)


def test_rmsprop_tf_differs_from_torch_rmsprop():
    w1, w2 = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    a = RMSpropTF([w1], lr=0.01, alpha=0.9, eps=1e-3)
    b = torch.optim.RMSprop([w2], lr=0.01, alpha=0.9, eps=1e-3)
    for w, opt in ((w1, a), (w2, b)):
        w.grad = torch.full((3,), 0.1)
        opt.step()
    # torch's accumulator starts at 0: its first step is ~lr / sqrt(0.1), TF's is ~lr * g
    assert (1 - w2).mean() > 10 * (1 - w1).mean()


def test_rmsprop_tf_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="alpha"):
        RMSpropTF([nn.Parameter(torch.ones(1))], alpha=1.5)


def test_param_groups_exclude_bn_bias_and_optionally_depthwise():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 8, 1), nn.Flatten())
    decay, no_decay = param_groups(model, 1e-4, wd_depthwise=False)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([8, 4, 1, 1])]
    assert len(no_decay["params"]) == 4  # depthwise weight, BN weight/bias, conv bias
    decay, _ = param_groups(model, 1e-4, wd_depthwise=True)
    assert len(decay["params"]) == 2


def cfg(**kw):
    return resolve_config(TrainConfig(model="mobilenet_v2_x0_35", **kw))


def test_schedules():
    c = cfg(epochs=10, sched="cosine", warmup_epochs=2)
    assert lr_factor(0, 100, c) == pytest.approx(0.01)
    assert lr_factor(100, 100, c) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(200, 100, c) == pytest.approx(1.0)
    assert lr_factor(600, 100, c) == pytest.approx(0.5)
    assert lr_factor(1000, 100, c) == pytest.approx(0.0, abs=1e-12)
    s = cfg(epochs=10, sched="step", warmup_epochs=0, decay_epochs=1.0, decay_rate=0.98)
    assert [lr_factor(i, 10, s) for i in (0, 9, 10, 25)] == pytest.approx([1, 1, 0.98, 0.98**2])
    e = cfg(epochs=10, sched="exponential", warmup_epochs=0, decay_epochs=2.0, decay_rate=0.5)
    assert lr_factor(15, 10, e) == pytest.approx(0.5**0.75)
    lin = cfg(epochs=4, sched="linear", warmup_epochs=0)
    assert lr_factor(30, 10, lin) == pytest.approx(0.25)
    sq = cfg(epochs=4, sched="sqrt", warmup_epochs=0)  # Caffe's poly, power 0.5 (SqueezeNet's solver)
    assert [lr_factor(i, 10, sq) for i in (0, 30, 40)] == pytest.approx([1.0, 0.5, 0.0])
