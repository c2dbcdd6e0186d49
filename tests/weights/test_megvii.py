"""The official ShuffleNet V1/V2 checkpoints (megvii-model/ShuffleNet-Series) through ``weights="megvii:<file>"``.

The reference is a small functional re-implementation of the official forward passes, written here from the layout
of the official code (ShuffleNetV1/blocks.py, ShuffleNetV2/blocks.py and network.py): a V1 unit shuffles *after* its
depthwise conv, viewing the channels as (C/g, g); a V2 stride-1 unit sends the first channel of each consecutive pair
past its branch and the second into it, and no unit shuffles after its concat. Random state_dicts in the official key
layout (``module.``-prefixed, under ``state_dict``, as their train.py saves) are loaded into the registered models
and both forwards compared.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

import mobilezoo
from mobilezoo.train import predict
from mobilezoo.weights import WeightsMismatchError, imagenet_classes

# conv1 and the three stage widths of the official configs tested (ShuffleNetV1/network.py, ShuffleNetV2/network.py)
V1 = {(3, "0_5"): (12, (120, 240, 480)), (8, "1_0"): (24, (384, 768, 1536))}
V2 = {"0_5": ((48, 96, 192), 1024), "1_0": ((116, 232, 464), 1024)}
REPEATS = (4, 8, 4)


def _conv(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    fan_in = shape[1] * shape[2] * shape[3]
    return torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5


def _bn(state: dict, prefix: str, chs: int, gen: torch.Generator) -> None:
    state[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(chs, generator=gen)
    state[f"{prefix}.bias"] = 0.1 * torch.randn(chs, generator=gen)
    state[f"{prefix}.running_mean"] = 0.1 * torch.randn(chs, generator=gen)
    state[f"{prefix}.running_var"] = 0.5 + torch.rand(chs, generator=gen)
    state[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)


def official_v1_state(groups: int, conv1: int, stages: tuple[int, ...], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {"first_conv.0.weight": _conv((conv1, 3, 3, 3), gen)}
    _bn(s, "first_conv.1", conv1, gen)
    inp, n = conv1, 0
    for out, repeats in zip(stages, REPEATS):
        for i in range(repeats):
            p = f"features.{n}"
            mid, branch_out = out // 4, out - inp if i == 0 else out
            first_groups = 1 if n == 0 else groups
            s[f"{p}.branch_main_1.0.weight"] = _conv((mid, inp // first_groups, 1, 1), gen)
            _bn(s, f"{p}.branch_main_1.1", mid, gen)
            s[f"{p}.branch_main_1.3.weight"] = _conv((mid, 1, 3, 3), gen)
            _bn(s, f"{p}.branch_main_1.4", mid, gen)
            s[f"{p}.branch_main_2.0.weight"] = _conv((branch_out, mid // groups, 1, 1), gen)
            _bn(s, f"{p}.branch_main_2.1", branch_out, gen)
            inp, n = out, n + 1
    s["classifier.0.weight"] = 0.01 * torch.randn(1000, stages[-1], generator=gen)
    return s


def official_v2_state(stages: tuple[int, ...], last: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {"first_conv.0.weight": _conv((24, 3, 3, 3), gen)}
    _bn(s, "first_conv.1", 24, gen)
    inp, n = 24, 0
    for out, repeats in zip(stages, REPEATS):
        for i in range(repeats):
            p = f"features.{n}"
            unit_in = inp if i == 0 else out // 2
            mid, main_out = out // 2, out - unit_in
            s[f"{p}.branch_main.0.weight"] = _conv((mid, unit_in, 1, 1), gen)
            _bn(s, f"{p}.branch_main.1", mid, gen)
            s[f"{p}.branch_main.3.weight"] = _conv((mid, 1, 3, 3), gen)
            _bn(s, f"{p}.branch_main.4", mid, gen)
            s[f"{p}.branch_main.5.weight"] = _conv((main_out, mid, 1, 1), gen)
            _bn(s, f"{p}.branch_main.6", main_out, gen)
            if i == 0:
                s[f"{p}.branch_proj.0.weight"] = _conv((unit_in, 1, 3, 3), gen)
                _bn(s, f"{p}.branch_proj.1", unit_in, gen)
                s[f"{p}.branch_proj.2.weight"] = _conv((unit_in, unit_in, 1, 1), gen)
                _bn(s, f"{p}.branch_proj.3", unit_in, gen)
            inp, n = out, n + 1
    s["conv_last.0.weight"] = _conv((last, stages[-1], 1, 1), gen)
    _bn(s, "conv_last.1", last, gen)
    s["classifier.0.weight"] = 0.01 * torch.randn(1000, last, generator=gen)
    return s


def _batch_norm(s: dict, x: torch.Tensor, p: str) -> torch.Tensor:
    return F.batch_norm(x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"], eps=1e-5)


def official_v1_forward(s: dict, x: torch.Tensor, groups: int) -> torch.Tensor:
    """The official ShuffleNet V1 forward at 224 px (its fixed 7x7 average pool)."""
    x = F.relu(_batch_norm(s, F.conv2d(x, s["first_conv.0.weight"], stride=2, padding=1), "first_conv.1"))
    x = F.max_pool2d(x, 3, 2, 1)
    n = 0
    for repeats in REPEATS:
        for i in range(repeats):
            p, stride = f"features.{n}", 2 if i == 0 else 1
            y = F.conv2d(x, s[f"{p}.branch_main_1.0.weight"], groups=1 if n == 0 else groups)
            y = F.relu(_batch_norm(s, y, f"{p}.branch_main_1.1"))
            y = F.conv2d(y, s[f"{p}.branch_main_1.3.weight"], stride=stride, padding=1, groups=y.shape[1])
            y = _batch_norm(s, y, f"{p}.branch_main_1.4")
            b, c, h, w = y.shape  # the shuffle after the depthwise conv: channels as (C/g, g), the two axes swapped
            y = y.reshape(b, c // groups, groups, h, w).transpose(1, 2).reshape(b, c, h, w)
            y = _batch_norm(s, F.conv2d(y, s[f"{p}.branch_main_2.0.weight"], groups=groups), f"{p}.branch_main_2.1")
            x = F.relu(x + y) if stride == 1 else torch.cat([F.avg_pool2d(x, 3, 2, 1), F.relu(y)], 1)
            n += 1
    return F.avg_pool2d(x, 7).flatten(1) @ s["classifier.0.weight"].t()


def official_v2_forward(s: dict, x: torch.Tensor) -> torch.Tensor:
    """The official ShuffleNet V2 forward at 224 px (its fixed 7x7 average pool)."""

    def main(y: torch.Tensor, p: str, stride: int) -> torch.Tensor:
        y = F.relu(_batch_norm(s, F.conv2d(y, s[f"{p}.branch_main.0.weight"]), f"{p}.branch_main.1"))
        y = F.conv2d(y, s[f"{p}.branch_main.3.weight"], stride=stride, padding=1, groups=y.shape[1])
        y = _batch_norm(s, y, f"{p}.branch_main.4")
        return F.relu(_batch_norm(s, F.conv2d(y, s[f"{p}.branch_main.5.weight"]), f"{p}.branch_main.6"))

    x = F.relu(_batch_norm(s, F.conv2d(x, s["first_conv.0.weight"], stride=2, padding=1), "first_conv.1"))
    x = F.max_pool2d(x, 3, 2, 1)
    n = 0
    for repeats in REPEATS:
        for i in range(repeats):
            p = f"features.{n}"
            if i == 0:
                proj = F.conv2d(x, s[f"{p}.branch_proj.0.weight"], stride=2, padding=1, groups=x.shape[1])
                proj = _batch_norm(s, proj, f"{p}.branch_proj.1")
                proj = F.relu(_batch_norm(s, F.conv2d(proj, s[f"{p}.branch_proj.2.weight"]), f"{p}.branch_proj.3"))
                x = torch.cat([proj, main(x, p, 2)], 1)
            else:  # channels in consecutive pairs: the first of each pair passes, the second enters the branch
                b, c, h, w = x.shape
                pairs = x.reshape(b, c // 2, 2, h, w)
                x = torch.cat([pairs[:, :, 0], main(pairs[:, :, 1], p, 1)], 1)
            n += 1
    x = F.relu(_batch_norm(s, F.conv2d(x, s["conv_last.0.weight"]), "conv_last.1"))
    return F.avg_pool2d(x, 7).flatten(1) @ s["classifier.0.weight"].t()


def save_official(state: dict[str, torch.Tensor], path: Path) -> Path:
    """As their train.py saves: the DataParallel model's state_dict (keys ``module.*``) under ``state_dict``."""
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path


def _logits_close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal within 1e-5 of the largest logit (random BN statistics on 0-255 pixels make them large)."""
    scale = b.abs().max().item()
    assert 0.05 < scale < 1e8 and b.std() > 1e-3 * scale, scale  # non-degenerate logits
    torch.testing.assert_close(a, b, atol=1e-5 * max(1.0, scale), rtol=0)


@pytest.mark.parametrize(("groups", "width"), list(V1))
def test_official_shufflenet_v1_checkpoint_reproduces_its_logits(tmp_path: Path, groups: int, width: str) -> None:
    conv1, stages = V1[(groups, width)]
    state = official_v1_state(groups, conv1, stages)
    path = save_official(state, tmp_path / f"snetv1_g{groups}_{width}.pth.tar")
    model = mobilezoo.create_model(f"shufflenet_v1_g{groups}_x{width}", weights=f"megvii:{path}").eval()
    assert model.shuffle == "megvii"  # set by create_model for these weights
    x = torch.rand(2, 3, 224, 224) * 255
    with torch.no_grad():
        _logits_close(model(x), official_v1_forward(state, x, groups))


@pytest.mark.parametrize("width", list(V2))
def test_official_shufflenet_v2_checkpoint_reproduces_its_logits(tmp_path: Path, width: str) -> None:
    stages, last = V2[width]
    state = official_v2_state(stages, last)
    path = save_official(state, tmp_path / f"ShuffleNetV2.{width}.pth.tar")
    model = mobilezoo.create_model(f"shufflenet_v2_x{width}", weights=f"megvii:{path}").eval()
    x = torch.rand(2, 3, 224, 224) * 255
    with torch.no_grad():
        _logits_close(model(x), official_v2_forward(state, x))
    pre = model.preprocessing
    assert pre.channel_order == "BGR" and pre.mean == (0.0, 0.0, 0.0) and pre.std == pytest.approx((1 / 255,) * 3)
    assert pre.input_size == 224 and pre.resize == 256


def test_paper_order_does_not_reproduce_the_official_v2(tmp_path: Path) -> None:
    """Why shuffle="megvii" exists: the same weights in the paper's channel order give other logits at 1.0x."""
    stages, last = V2["1_0"]
    state = official_v2_state(stages, last)
    path = save_official(state, tmp_path / "v2.pth")
    official = mobilezoo.create_model("shufflenet_v2_x1_0", weights=f"megvii:{path}").eval()
    paper = mobilezoo.create_model("shufflenet_v2_x1_0").eval()
    paper.load_state_dict(official.state_dict())  # the same keys and shapes
    x = torch.rand(1, 3, 224, 224) * 255
    with torch.no_grad():
        assert (paper(x) - official(x)).abs().max() > 1e-2


def test_megvii_order_survives_unshuffle(tmp_path: Path) -> None:
    from mobilezoo.deploy import unshuffle

    stages, last = V2["0_5"]
    path = save_official(official_v2_state(stages, last), tmp_path / "v2.pth")
    model = mobilezoo.create_model("shufflenet_v2_x0_5", weights=f"megvii:{path}").eval()
    x = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        _logits_close(unshuffle(model)(x), model(x))


def test_predict_applies_bgr_0_255(tmp_path: Path) -> None:
    stages, last = V2["0_5"]
    state = official_v2_state(stages, last)
    path = save_official(state, tmp_path / "v2.pth")
    rng = np.random.default_rng(0)
    image = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(image)
    result = predict("shufflenet_v2_x0_5", f"megvii:{path}", [image], topk=3)
    # what the official evaluation feeds: shorter side 256, centre 224, BGR float pixels 0-255, no normalisation
    img = v2.functional.center_crop(v2.functional.resize(Image.open(image), 256, antialias=True), 224)
    bgr = torch.from_numpy(np.asarray(img)[:, :, ::-1].copy()).permute(2, 0, 1).float()[None]
    with torch.no_grad():
        probs = official_v2_forward(state, bgr).softmax(1)[0]
    top = probs.topk(3)
    classes = imagenet_classes()
    got = result.predictions[0].top
    assert [c for c, _ in got] == [classes[int(i)] for i in top.indices]
    assert [p for _, p in got] == pytest.approx(top.values.tolist(), abs=1e-4)


def test_other_family_width_and_model_are_named(tmp_path: Path) -> None:
    v1 = save_official(official_v1_state(3, *V1[(3, "0_5")]), tmp_path / "v1.pth")
    with pytest.raises(ValueError, match=r"v1.pth' is a ShuffleNetV1 checkpoint .*not a ShuffleNetV2 one: load it "
                       r"into one of shufflenet_v1_g3_x0_5"):  # fmt: skip
        mobilezoo.create_model("shufflenet_v2_x0_5", weights=f"megvii:{v1}")
    v2_1x = save_official(official_v2_state(*V2["1_0"]), tmp_path / "v2_1x.pth")
    with pytest.raises(WeightsMismatchError) as info:
        mobilezoo.create_model("shufflenet_v2_x0_5", weights=f"megvii:{v2_1x}")
    message = str(info.value)
    assert "\n" not in message and f"megvii checkpoint {str(v2_1x)!r} does not fit shufflenet_v2_x0_5" in message
    assert "(it fits shufflenet_v2_x1_0)" in message
    assert "features.0.branch_main.0.weight -> stage2.0.branch2.0.weight checkpoint (58, 24, 1, 1)" in message
    with pytest.raises(ValueError, match="megvii publishes no checkpoint for shufflenet_v1_g1_x1_0; .* load into "):
        mobilezoo.create_model("shufflenet_v1_g1_x1_0", weights=f"megvii:{v1}")
    with pytest.raises(ValueError, match=r"is for torchvision_compat=False; shufflenet_v2_x1_0 was built with"):
        mobilezoo.create_model("shufflenet_v2_x1_0", torchvision_compat=True, weights=f"megvii:{v2_1x}")
    with pytest.raises(ValueError, match=r"checkpoint needs shuffle='megvii', got 'paper'"):
        mobilezoo.create_model("shufflenet_v2_x1_0", shuffle="paper", weights=f"megvii:{v2_1x}")


def test_leftover_and_absent_tensors_are_errors(tmp_path: Path) -> None:
    state = official_v2_state(*V2["0_5"])
    extra = save_official({**state, "features.3.extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(WeightsMismatchError, match=r"not in megvii ShuffleNetV2's layout: unexpected keys \(1\): "
                       r"features.3.extra.weight"):  # fmt: skip
        mobilezoo.create_model("shufflenet_v2_x0_5", weights=f"megvii:{extra}")
    lacking = save_official({k: v for k, v in state.items() if "conv_last" not in k}, tmp_path / "lacking.pth")
    with pytest.raises(WeightsMismatchError, match=r"missing keys \(2\): conv_last.0.\*, conv_last.1.\*"):
        mobilezoo.create_model("shufflenet_v2_x0_5", weights=f"megvii:{lacking}")
    # num_batches_tracked is a counter: files without it (older PyTorch) load, the model keeps its own
    old = save_official({k: v for k, v in state.items() if "num_batches" not in k}, tmp_path / "old.pth")
    mobilezoo.create_model("shufflenet_v2_x0_5", weights=f"megvii:{old}")


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_truncated_and_code_running_files_are_refused_in_one_line(tmp_path: Path) -> None:
    path = save_official(official_v2_state(*V2["0_5"]), tmp_path / "v2.pth")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cut.pth' is not a readable PyTorch file .*truncated") as info:
        mobilezoo.create_model("shufflenet_v2_x0_5", weights=f"megvii:{cut}")
    assert "\n" not in str(info.value)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": {"first_conv.0.weight": _Exploit()}}, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to load .*evil.pth.*\(it needs (builtins\.)?print\)") as info:
        mobilezoo.create_model("shufflenet_v2_x0_5", weights=f"megvii:{evil}")
    assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{str(tmp_path / 'nope.pth')!r} does not exist")):
        mobilezoo.create_model("shufflenet_v2_x0_5", weights=f"megvii:{tmp_path / 'nope.pth'}")
