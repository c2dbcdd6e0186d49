import json
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import mobilezoo
from mobilezoo.cli import main
from mobilezoo.complexity import formulas, profile, tables
from mobilezoo.complexity.tables import textbook_tables


def _flop_counter_madds(model: nn.Module, resolution: int) -> int:
    x = torch.randn(1, model.in_chans, resolution, resolution, device=next(model.parameters()).device)
    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def _assert_rows_sum(prof) -> None:
    rows = prof.layers
    assert sum(r.params for r in rows) == prof.params == prof.params
    assert sum(r.madds for r in rows) == prof.madds
    assert sum(r.mac for r in rows) == prof.mac
    assert sum(r.mac_bytes for r in rows) == prof.mac_bytes
    assert sum(r.other_ops for r in rows) == sum(prof.other_ops.values())


@pytest.mark.parametrize("name", mobilezoo.list_models())
def test_madds_equal_flop_counter_and_rows_sum(name: str) -> None:
    with torch.device("meta"):  # shapes only: VGG-16 is built without initialising 138M weights
        model = mobilezoo.create_model(name)
    prof = profile(model, resolution=64)
    assert prof.madds == _flop_counter_madds(model, 64)
    assert prof.params == sum(p.numel() for p in model.parameters())
    _assert_rows_sum(prof)
    assert prof.params_not_called == 0
    assert prof.peak_activation_bytes > prof.input_bytes


def test_mobilenet_v2_at_224_for_real_on_cpu() -> None:
    model = mobilezoo.create_model("mobilenet_v2")
    prof = profile(model, resolution=224)
    assert prof.device == "cpu"
    assert prof.madds == _flop_counter_madds(model, 224) == 300_774_272
    assert prof.params == 3_504_872
    _assert_rows_sum(prof)
    # 10 residual adds are element-wise ops, charged to their InvertedResidual, and never MAdds
    adds = [r for r in prof.layers if r.type == "InvertedResidual"]
    assert len(adds) == 10 and all(r.ops == ("add",) and r.madds == 0 for r in adds)
    assert prof.other_ops["elementwise"] == sum(r.other_ops for r in adds) > 0
    # the meta device gives the same numbers without computing anything
    meta = profile("mobilenet_v2")
    assert meta.device == "meta"
    assert {**meta.to_dict(), "device": "cpu"} == prof.to_dict()


def _row(prof, name: str):
    return next(r for r in prof.layers if r.name == name)


@pytest.mark.parametrize(("c1", "c2", "hw"), [(32, 64, 56), (24, 24, 14)])
def test_mac_of_a_1x1_conv(c1: int, c2: int, hw: int) -> None:
    prof = profile(nn.Conv2d(c1, c2, 1, bias=False), resolution=hw)
    assert prof.mac == hw * hw * (c1 + c2) + c1 * c2 == formulas.pointwise_mac(hw, hw, c1, c2)
    assert prof.mac_bytes == 4 * prof.mac
    assert prof.madds == hw * hw * c1 * c2


@pytest.mark.parametrize("stride", [1, 2])
def test_mac_of_a_depthwise_conv(stride: int) -> None:
    c, k, h = 32, 3, 28
    prof = profile(nn.Conv2d(c, c, k, stride=stride, padding=1, groups=c, bias=False), resolution=h)
    h_out = prof.layers[0].output_shape[-1]
    assert h_out == h // stride
    assert prof.mac == formulas.depthwise_mac(k, c, h, h, h_out, h_out)
    if stride == 1:
        assert prof.mac == h * h * c * 2 + k * k * c


def test_grouped_pointwise_mac_and_the_g1_bound() -> None:
    prof = profile(nn.Conv2d(64, 128, 1, groups=4, bias=False), resolution=14)
    assert prof.mac == formulas.pointwise_mac(14, 14, 64, 128, groups=4)
    assert (prof.params, prof.madds) == formulas.pointwise_conv_cost(64, 128, 14, 14, groups=4)
    balanced = profile(nn.Conv2d(64, 64, 1, bias=False), resolution=14)
    assert math.isclose(balanced.mac, formulas.mac_lower_bound(14, 14, balanced.madds))
    skewed = profile(nn.Conv2d(32, 128, 1, bias=False), resolution=14)
    assert skewed.madds == balanced.madds and skewed.mac > formulas.mac_lower_bound(14, 14, skewed.madds)


def test_formulas_against_the_profiler_on_single_layers() -> None:
    k, c_in, c_out, hw = 3, 32, 64, 56
    std = profile(nn.Conv2d(c_in, c_out, k, padding=1, bias=False), resolution=hw)
    assert (std.params, std.madds) == formulas.standard_conv_cost(k, c_in, c_out, hw, hw)
    dw = profile(nn.Conv2d(c_in, c_in, k, padding=1, groups=c_in, bias=False), resolution=hw)
    assert (dw.params, dw.madds) == formulas.depthwise_conv_cost(k, c_in, hw, hw)
    sep_net = nn.Sequential(
        nn.Conv2d(c_in, c_in, k, padding=1, groups=c_in, bias=False), nn.Conv2d(c_in, c_out, 1, bias=False)
    )
    sep = profile(sep_net, resolution=hw)
    assert (sep.params, sep.madds) == formulas.separable_conv_cost(k, c_in, c_out, hw, hw)
    ratio = formulas.reduction_ratio(k, c_out)
    assert math.isclose(sep.madds / std.madds, ratio) and math.isclose(sep.params / std.params, ratio)
    # width and resolution multipliers on the same layer: alpha = rho = 0.5 gives whole channels and pixels
    half_net = nn.Sequential(
        nn.Conv2d(c_in // 2, c_in // 2, k, padding=1, groups=c_in // 2, bias=False),
        nn.Conv2d(c_in // 2, c_out // 2, 1, bias=False),
    )
    half = profile(half_net, resolution=hw // 2)
    assert (half.params, half.madds) == formulas.scaled_separable_cost(k, c_in, c_out, hw, hw, alpha=0.5, rho=0.5)


def test_width_and_resolution_multipliers_scale_a_network_as_the_textbook_says() -> None:
    full = profile("mobilenet_v1", resolution=224)
    low_res = profile("mobilenet_v1", resolution=192)  # rho = 192/224, every feature map still a whole size
    assert low_res.params == full.params
    assert low_res.madds / full.madds == pytest.approx(formulas.resolution_multiplier_scale(192 / 224), rel=0.01)
    half_width = profile("mobilenet_v1_x0_5", resolution=224)
    assert half_width.madds / full.madds == pytest.approx(formulas.width_multiplier_scale(0.5), rel=0.06)


def test_other_ops_are_reported_separately() -> None:
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    alone = profile(conv, resolution=32)
    block = profile(nn.Sequential(conv, nn.BatchNorm2d(16), nn.Hardswish(), nn.AdaptiveAvgPool2d(1)), resolution=32)
    assert block.madds == alone.madds  # BN, h-swish and pooling never enter MAdds
    n = 16 * 32 * 32
    assert block.other_ops == {"norm": n, "activation": n, "elementwise": 0, "bias": 0, "pooling": n}
    assert block.all_ops == block.madds + 3 * n
    assert block.flops == 2 * block.madds
    biased = profile(nn.Conv2d(8, 16, 3, padding=1), resolution=32)
    assert biased.madds == alone.madds and biased.other_ops["bias"] == n


def test_se_convs_are_madds_and_its_multiply_is_elementwise() -> None:
    prof = profile("mobilenet_v3_small", resolution=64)
    se = [r for r in prof.layers if r.type == "SqueezeExcite"]
    assert se and all("mul" in r.ops and r.madds == 0 and r.other_ops > 0 for r in se)
    for r in se:
        fc1, fc2 = _row(prof, f"{r.name}.fc1"), _row(prof, f"{r.name}.fc2")
        assert fc1.madds == fc1.params - fc1.output_shape[1]  # 1x1 conv on a 1x1 map: weights, not the bias
        assert fc2.madds > 0


def test_peak_activation_memory_of_a_plain_stack() -> None:
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1), nn.Conv2d(32, 8, 1))
    prof = profile(net, resolution=32)
    # the input stays live; conv2 runs while conv1's output and its own output are both alive
    assert prof.peak_activation_bytes == (3 + 16 + 32) * 32 * 32 * 4
    assert prof.output_bytes == 8 * 32 * 32 * 4


def test_params_of_modules_never_called_are_counted_and_reported() -> None:
    class WithSpare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.spare = nn.Linear(10, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    prof = profile(WithSpare(), resolution=8)
    assert prof.params == 16 + 110 and prof.params_not_called == 110
    spare = _row(prof, "spare")
    assert not spare.called and spare.params == 110 and spare.madds == 0
    _assert_rows_sum(prof)


def test_to_dict_is_json_and_states_its_conventions() -> None:
    prof = profile("shufflenet_v2_x0_5", resolution=64, batch_size=2)
    d = json.loads(json.dumps(prof.to_dict()))
    assert d["input_shape"] == [2, 3, 64, 64]
    assert d["flops_2x_madds"] == 2 * d["madds"]
    assert {"madds", "flops", "millions", "mac", "params", "peak_activation_bytes"} <= set(d["conventions"])
    assert len(d["layers"]) == len(prof.layers)
    assert "layers" not in prof.to_dict(per_layer=False)
    assert "cat" in prof.op_counts.__repr__() or any("cat" in r.ops for r in prof.layers)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model_or_name": "mobilenet_v9"}, "unknown model"),
        ({"model_or_name": "mobilenet_v2", "resolution": 16}, "too small"),
        ({"model_or_name": "mobilenet_v2", "resolution": (64,)}, "resolution"),
        ({"model_or_name": "mobilenet_v2", "resolution": 64.0}, "resolution"),
        ({"model_or_name": "mobilenet_v2", "batch_size": 0}, "batch_size"),
        ({"model_or_name": "vgg16", "width_mult": 0.5}, "takes no argument 'width_mult'"),
        ({"model_or_name": nn.Conv2d(3, 3, 1), "width_mult": 0.5}, "registered name"),
    ],
)
def test_bad_input_raises_value_error(kwargs: dict, match: str) -> None:
    model = kwargs.pop("model_or_name")
    with pytest.raises(ValueError, match=match):
        profile(model, **kwargs)


def test_textbook_tables() -> None:
    # one test, so the tables are regenerated once (a module fixture would run once per xdist worker)
    all_tables = {t.id: t for t in textbook_tables(include_errata=True)}
    assert set(all_tables) == {"5-2", "5-3", "5-10", "5-11", "5-12", "errata"}
    failing = [(t.id, r.label, r.status) for t in all_tables.values() for r in t.rows if not r.reproduces]
    assert not failing
    json.dumps([t.to_dict() for t in all_tables.values()])

    # known inconsistencies are flagged
    rows = {(t.id, r.label): r for t in all_tables.values() for r in t.rows}
    v3s = rows[("5-10", "MobileNet V3-Small")]
    assert v3s.status == "flagged" and "66M" in v3s.flag
    assert v3s.madds.ours == pytest.approx(56.91, abs=0.01) and v3s.params_exact == 2_946_568
    assert rows[("5-10", "GoogleNet")].status == "flagged"
    v2_14 = rows[("errata", "MobileNetV2 1.4")]
    assert v2_14.status == "flagged" and "6.9M" in v2_14.flag and v2_14.params_exact == 6_108_776
    assert "575M" in rows[("errata", "MobileNet V1 in MobileNetV2's Table 4")].flag
    assert "326M" in rows[("5-10", "MobileNet V2")].flag
    for g in (1, 2, 3, 4, 8):
        assert "FC" in rows[("5-11", f"g={g}")].flag
    v1 = rows[("5-2", "1.0 MobileNet-224")]
    assert v1.flag is None and v1.status == "ok" and v1.params_exact == 4_231_976

    # conventions: 5-11 without the FC (how 143/140/137/133/137 reproduce), 5-12 with it, VGG-16 convolutions only
    t511, t512 = all_tables["5-11"], all_tables["5-12"]
    assert "FC excluded" in t511.convention and all("FC excluded" in r.convention for r in t511.rows)
    assert [round(r.madds.ours) for r in t511.rows] == [143, 140, 137, 133, 137]
    assert [round(r.madds.ours) for r in t512.rows] == [40, 146, 299, 591]
    assert all(r.channels_ours == r.channels_textbook for r in t511.rows + t512.rows)
    assert "convolutions only" in all_tables["5-10"].rows[0].convention


def test_missing_model_raises_a_clear_error(monkeypatch) -> None:
    spec = tables.RowSpec("ghost", "mobilenet_v9", "mobilenet_v1_1.0_224", 569)
    monkeypatch.setattr(tables, "TABLES", (tables.TableSpec("5-2", "t", "c", (spec,)),))
    with pytest.raises(ValueError, match=r"table 5-2 row 'ghost'.*unknown model 'mobilenet_v9'"):
        textbook_tables()
    (result,) = textbook_tables(skip_missing=True)
    assert result.rows[0].status == "error" and not result.reproduces
    with pytest.raises(ValueError, match="unknown table"):
        textbook_tables(["5-99"])


def test_cli_profile(capsys) -> None:
    assert main(["profile", "mobilenet_v2", "--resolution", "64", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["madds"] == profile("mobilenet_v2", resolution=64).madds and "layers" not in d
    assert main(["profile", "mobilenet_v2", "--resolution", "64", "--width-mult", "0.5", "--per-layer"]) == 0
    out = capsys.readouterr().out
    assert "features.0.0" in out and "FLOPs = 2 x MAdds" in out
    assert main(["profile", "mobilenet_v2", "--resolution", "16"]) == 2
    assert "too small" in capsys.readouterr().err


def test_cli_tables(capsys) -> None:
    assert main(["tables", "5-2"]) == 0
    out = capsys.readouterr().out
    assert "Table 5-2" in out and "568.74" in out and "ok" in out
    assert main(["tables", "5-3", "--json"]) == 0
    (table,) = json.loads(capsys.readouterr().out)
    assert table["id"] == "5-3" and table["reproduces"]
