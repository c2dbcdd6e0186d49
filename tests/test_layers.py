"""The shared building blocks: channel shuffle (also exported to ONNX), rounding, conv-norm-act, input checks."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from mobilezoo.layers import (
    ChannelShuffle,
    ConvNormAct,
    SqueezeExcite,
    channel_shuffle,
    check_input,
    get_act,
    init_weights,
    make_divisible,
)


def channel_ids(channels: int, batch: int = 1) -> torch.Tensor:
    """A (batch, channels, 2, 3) tensor whose every element holds its channel index."""
    return torch.arange(channels, dtype=torch.float32).view(1, channels, 1, 1).expand(batch, channels, 2, 3).clone()


@pytest.mark.parametrize(
    ("channels", "groups", "order"),
    [(6, 2, [0, 3, 1, 4, 2, 5]), (6, 3, [0, 2, 4, 1, 3, 5]), (4, 1, [0, 1, 2, 3]), (4, 4, [0, 1, 2, 3])],
)
def test_channel_shuffle_permutation(channels: int, groups: int, order: list[int]) -> None:
    """The paper's reshape (g, C/g) -> transpose -> flatten: channel j of group i moves to position j * g + i."""
    out = channel_shuffle(channel_ids(channels, batch=3), groups)
    assert out.shape == (3, channels, 2, 3)
    assert out[:, :, 0, 0].tolist() == [order] * 3
    assert (out == out[:, :, :1, :1]).all()  # spatial positions are untouched


def test_channel_shuffle_inverse_is_the_transposed_shuffle() -> None:
    x = torch.randn(2, 12, 5, 4)
    torch.testing.assert_close(channel_shuffle(channel_shuffle(x, 3), 4), x, rtol=0, atol=0)
    assert "groups=3" in repr(ChannelShuffle(3))


# The TorchScript-based exporter takes ~1 s here against ~20 s for the dynamo one; both keep the batch dynamic.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_channel_shuffle_onnx_export_keeps_a_dynamic_batch(tmp_path) -> None:
    path = tmp_path / "shuffle.onnx"
    torch.onnx.export(
        ChannelShuffle(2).eval(),
        (torch.randn(2, 6, 2, 3),),
        str(path),
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = channel_ids(6, batch).numpy() + np.random.default_rng(batch).normal(size=(batch, 6, 2, 3)).astype("f4")
        (y,) = session.run(None, {"x": x})
        np.testing.assert_array_equal(y, channel_shuffle(torch.from_numpy(x), 2).numpy())
        assert y.shape == (batch, 6, 2, 3)


def test_make_divisible_follows_the_tf_rule() -> None:
    assert make_divisible(32 * 0.35) == 16  # 11.2 rounds to 8, < 90% of it, bumped to 16
    assert make_divisible(24 * 0.75) == 24  # 18 -> 16 < 16.2 -> 24
    assert make_divisible(1280 * 1.4) == 1792
    assert make_divisible(3, 8) == 8
    assert make_divisible(100, 8, min_value=16) == 104


def test_conv_norm_act_layout() -> None:
    block = ConvNormAct(4, 8, 3, stride=2, groups=2)
    conv, bn, act = block
    assert conv.bias is None and conv.padding == (1, 1) and conv.groups == 2
    assert isinstance(bn, nn.BatchNorm2d) and isinstance(act, nn.ReLU)
    assert block(torch.randn(1, 4, 9, 9)).shape == (1, 8, 5, 5)
    plain = ConvNormAct(4, 8, 5, norm=False, act=None)
    assert len(plain) == 1 and plain[0].bias is not None and plain[0].padding == (2, 2)
    assert block.out_channels == 8


def test_activations_and_squeeze_excite() -> None:
    assert isinstance(get_act(None), nn.Identity)
    assert isinstance(get_act("hswish"), nn.Hardswish)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        get_act("gelu")
    se = SqueezeExcite(16, 8)
    assert {k.split(".")[0] for k in se.state_dict()} == {"fc1", "fc2"}
    x = torch.randn(2, 16, 3, 3)
    assert se(x).shape == x.shape


def test_check_input_names_the_problem() -> None:
    check_input(torch.empty(1, 3, 32, 32), 3, 32)
    with pytest.raises(ValueError, match="4-d"):
        check_input(torch.empty(3, 32, 32), 3, 32)
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        check_input(torch.empty(1, 1, 32, 32), 3, 32)
    with pytest.raises(ValueError, match="32x31 is too small"):
        check_input(torch.empty(1, 3, 32, 31), 3, 32)


def test_init_weights() -> None:
    model = nn.Sequential(ConvNormAct(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    init_weights(model)
    assert (model[0][1].weight == 1).all() and (model[0][1].bias == 0).all()
    assert (model[2].bias == 0).all() and model[2].weight.abs().max() < 0.1
