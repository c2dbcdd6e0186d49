"""NASNet-A Mobile specifics: counts against paper_numbers.csv, the cells and their wiring, TF-slim's geometry (VALID
stem, TensorFlow "SAME" padding at odd and even sizes), the auxiliary head and drop path (training only), int8 ONNX."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mobilezoo import create_model, list_models, model_card
from mobilezoo.models.base import FeatureExtractor
from mobilezoo.models.nasnet import (
    NASNetAMobile,
    NASNetConfig,
    NASNetOutputs,
    NormalCell,
    ReductionCell,
    drop_path,
)
from mobilezoo.registry import paper_row, paper_rows
from tests.models.helpers import check_drop_path_exact_in_eval

ROW = paper_row("nasnet_a_mobile_4@1056_224")
LARGE = paper_row("nasnet_a_large_6@4032_331")


def count(model: nn.Module, res: int) -> tuple[int, float]:
    """(params, MAdds in millions) at 1 x 3 x res x res, on the meta device."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, res, res, device="meta"))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 2e6


def test_counts_match_paper_numbers() -> None:
    with torch.device("meta"):
        params, madds = count(create_model("nasnet_a_mobile"), ROW.resolution)
    assert params == ROW.counted_params
    assert madds == pytest.approx(ROW.counted_madds_m, rel=0.005)
    assert madds == pytest.approx(ROW.madds_m, rel=0.005)  # the paper's 564M
    assert round(params / 1e6, 1) == ROW.params_m == 5.3
    card = model_card("nasnet_a_mobile")
    assert (card.family, card.resolution, card.paper_madds_m, card.paper_top1) == ("NASNet", 224, 564, 74.0)
    assert "1e-3" in card.notes and "0.0003" in card.notes and "aux" in card.notes


def test_the_exact_counts_and_the_large_config() -> None:
    """5,289,978 params / 563.64M (562.58M without the 1056x1000 FC); the same cells with the Large config (6 @ 4032,
    stem 96) count timm's nasnetalarge exactly, the Large row's figures."""
    with torch.device("meta"):
        mobile = create_model("nasnet_a_mobile")
        large = NASNetAMobile(config=NASNetConfig(cells_per_stack=6, penultimate_filters=4032, stem_filters=96))
    assert count(mobile, 224) == (5_289_978, pytest.approx(563.64, abs=0.01))
    assert mobile.fc.in_features * mobile.fc.out_features / 1e6 == pytest.approx(563.64 - 562.58, abs=0.01)
    params, madds = count(large, LARGE.resolution)
    assert params == LARGE.counted_params == 88_753_150
    assert madds == pytest.approx(LARGE.counted_madds_m, abs=0.01)


def test_rows_without_an_architecture_stay_unimplemented() -> None:
    rows = {r.variant: r for r in paper_rows() if r.family == "NASNet"}
    assert set(rows) == {ROW.variant, LARGE.variant, "nasnet_b_4@1536_224", "nasnet_c_3@960_224"}
    for variant in ("nasnet_b_4@1536_224", "nasnet_c_3@960_224"):
        assert rows[variant].counted_params is None and rows[variant].counted_madds_m is None
        assert "no public implementation" in rows[variant].notes.lower()
    assert list_models("nasnet*") == ["nasnet_a_mobile"]  # Large only validates the cells: not a lightweight model


def _cell_outputs(model: NASNetAMobile, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [model.conv0.register_forward_hook(lambda m, i, o: shapes.__setitem__("conv0", tuple(o.shape[1:])))]
    for name, cell in model.cells.items():
        hooks.append(cell.register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, tuple(o.shape[1:]))))
    model(x)
    for h in hooks:
        h.remove()
    return shapes


def test_cells_shapes_and_widths_at_224() -> None:
    """Stem 224 -> 111 (VALID) -> 56 -> 28; three stacks of 4 normal cells, 6F = 264, 528, 1056 wide (F = 44), with the
    4F-wide reduction cells between them; the last cell gives the 1056 penultimate filters."""
    with torch.device("meta"):
        model = create_model("nasnet_a_mobile").eval()
        shapes = _cell_outputs(model, torch.empty(1, 3, 224, 224))
    want = {"conv0": (32, 111, 111), "cell_stem_0": (44, 56, 56), "cell_stem_1": (88, 28, 28)}
    want |= {f"cell_{i}": (264, 28, 28) for i in range(4)}
    want |= {"reduction_cell_0": (352, 14, 14)} | {f"cell_{i}": (528, 14, 14) for i in range(4, 8)}
    want |= {"reduction_cell_1": (704, 7, 7)} | {f"cell_{i}": (1056, 7, 7) for i in range(8, 12)}
    assert shapes == want
    assert list(shapes)[1:] == list(model.cells)  # the cells in TF-slim's order
    kinds = "".join("R" if isinstance(c, ReductionCell) else "N" for c in model.cells.values())
    assert kinds == "RR" + "NNNN" + "R" + "NNNN" + "R" + "NNNN"  # 4 normal cells per stack
    assert model.num_features == 1056 == model.config.penultimate_filters == 24 * model.config.filters
    assert all(isinstance(c, NormalCell | ReductionCell) for c in model.cells.values())


def test_each_cell_reads_its_input_and_the_previous_cells_input() -> None:
    """TF-slim's mobile wiring: reduction_cell_0 reads (cell_3, cell_2) and cell_4 reads (reduction_cell_0, cell_3),
    not cell_2 (that is the Large config's skip_reduction_layer_input). The adjust path of h_{i-1} is a factorized
    reduction after a reduction cell, ReLU -> 1x1 -> BN otherwise; the first stem cell has none."""
    model = create_model("nasnet_a_mobile", num_classes=10).eval()
    inputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    outputs: list[tuple[str, torch.Tensor]] = []  # the tensors themselves: identity, not a reusable id()
    model.conv0.register_forward_hook(lambda m, i, o: outputs.append(("conv0", o)))
    for name, cell in model.cells.items():
        cell.register_forward_pre_hook(lambda m, args, n=name: inputs.__setitem__(n, args))
        cell.register_forward_hook(lambda m, i, o, n=name: outputs.append((n, o)))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 48))

    def producer(t: torch.Tensor) -> str | None:
        return next((name for name, o in outputs if o is t), None)

    read = {name: (producer(x), producer(prev)) for name, (x, prev) in inputs.items()}
    assert read["cell_stem_1"] == ("cell_stem_0", "conv0")
    assert read["cell_0"] == ("cell_stem_1", "cell_stem_0")
    assert read["reduction_cell_0"] == ("cell_3", "cell_2")
    assert read["cell_4"] == ("reduction_cell_0", "cell_3")
    assert read["cell_5"] == ("cell_4", "reduction_cell_0")
    assert read["cell_8"] == ("reduction_cell_1", "cell_7")
    adjust = {name: type(cell.conv_prev_1x1).__name__ for name, cell in model.cells.items()}
    assert adjust.pop("cell_stem_0") == "NoneType"
    assert {n for n, kind in adjust.items() if kind == "FactorizedReduction"} == {
        "cell_stem_1",
        "cell_0",
        "cell_4",
        "cell_8",
    }
    assert {kind for n, kind in adjust.items() if n not in ("cell_stem_1", "cell_0", "cell_4", "cell_8")} == {
        "ReLUConvBN"
    }


def test_stage_sizes_at_odd_inputs_are_ceil_of_the_stride() -> None:
    """conv0 is VALID ((n - 3) // 2 + 1), every later stride-2 stage TF SAME: ceil(n / 2), also at odd sizes."""
    with torch.device("meta"):
        features = create_model("nasnet_a_mobile", features_only=True).eval()
        for h, w in [(225, 97), (224, 96), (67, 45), (3, 5)]:
            sizes = [((h - 3) // 2 + 1, (w - 3) // 2 + 1)]
            for _ in range(4):
                sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
            maps = features(torch.empty(1, 3, h, w))
            assert [tuple(m.shape[-2:]) for m in maps] == sizes, (h, w)
            assert [m.shape[1] for m in maps] == [32, 44, 264, 528, 1056]


def test_feature_extractor_follows_the_cells_eager_and_scripted() -> None:
    """The features_only taps are the model's own intermediate outputs (the extractor passes each cell the previous
    step's input, as forward_features does), in eager mode and under TorchScript."""
    model = create_model("nasnet_a_mobile", num_classes=10).eval()
    seen: dict[str, torch.Tensor] = {}
    hooks = [model.conv0.register_forward_hook(lambda m, i, o: seen.__setitem__("conv0", o))]
    for name in ("cell_stem_0", "cell_3", "cell_7"):
        hooks.append(model.cells[name].register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n, o)))
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        final = model.forward_features(x)
    for h in hooks:
        h.remove()
    want = [seen["conv0"], seen["cell_stem_0"], seen["cell_3"], seen["cell_7"], final]
    extractor = FeatureExtractor(model)
    with torch.no_grad():
        got = extractor(x)
        scripted = torch.jit.script(FeatureExtractor(model, (2, 4)))(x)
    assert [i.module for i in extractor.feature_info] == [
        "conv0",
        "cells.cell_stem_0",
        "cells.cell_3",
        "cells.cell_7",
        "act",
    ]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=0, rtol=0)
    for g, w in zip(scripted, [want[2], want[4]]):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-5)


def test_aux_head_only_in_training() -> None:
    """aux_logits=True: training returns (logits, aux_logits) from an aux head reading cell_7 (the last cell of the
    second stack), eval returns the logits alone and never runs it; the default model has no aux head, so the counts
    exclude it (with it: 7,701,218 params, +2,411,240)."""
    plain = create_model("nasnet_a_mobile", num_classes=10)
    assert plain.aux_head is None and not [n for n, _ in plain.named_parameters() if "aux" in n]
    with torch.device("meta"):
        assert sum(p.numel() for p in create_model("nasnet_a_mobile", aux_logits=True).parameters()) == 7_701_218
    model = create_model("nasnet_a_mobile", num_classes=10, aux_logits=True)
    seen: dict[str, torch.Tensor] = {}
    model.cells["cell_7"].register_forward_hook(lambda m, i, o: seen.__setitem__("cell_7", o))
    model.aux_head.register_forward_pre_hook(lambda m, args: seen.__setitem__("aux_in", args[0]))
    x = torch.randn(2, 3, 211, 211)  # the smallest input its 5x5/3 pool + 4x4 conv take
    with torch.no_grad():
        out = model.train()(x)
        assert isinstance(out, NASNetOutputs)
        assert out.logits.shape == out.aux_logits.shape == (2, 10)
        assert seen.pop("aux_in") is seen["cell_7"]
        logits = model.eval()(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 10) and "aux_in" not in seen
    model.train()
    with pytest.raises(ValueError, match=r"input 210x210 is too small for the auxiliary head: .* at least 211x211"):
        model(torch.randn(2, 3, 210, 210))
    model.reset_classifier(7)
    assert model.fc.out_features == model.aux_head.fc.out_features == 7


def test_drop_path_only_in_training() -> None:
    """Each cell's drop-path probability is rate * (k + 1) / 16 (TF-slim, stem cells counted); eval mode is exact,
    training drops whole examples of a branch."""
    assert create_model("nasnet_a_mobile").drop_path_rate == 0.0
    model = NASNetAMobile(num_classes=10, drop_rate=0.0, drop_path_rate=0.2)
    assert [c.drop_prob for c in model.cells.values()] == pytest.approx([0.2 * (k + 1) / 16 for k in range(16)])
    plain = NASNetAMobile(num_classes=10, drop_rate=0.0)
    plain.load_state_dict(model.state_dict())  # drop path has no parameters
    check_drop_path_exact_in_eval(model, plain)
    t = torch.ones(1000, 2, 3, 3)
    assert drop_path(t, 0.5, training=False) is t
    dropped = drop_path(t, 0.5, training=True)
    per_example = dropped.flatten(1)
    assert set(per_example.unique().tolist()) <= {0.0, 2.0}
    assert (per_example == per_example[:, :1]).all()  # whole examples
    assert 0.4 < (per_example[:, 0] == 0).float().mean() < 0.6


def test_min_input_size_and_batchnorm() -> None:
    """conv0's VALID 3x3 needs 3 px and every later op is SAME, so 3x3 is the smallest input (a 1x1 final map).
    BatchNorm is TF-slim's mobile arg scope: eps 1e-3, decay 0.9997 (momentum 0.0003)."""
    model = create_model("nasnet_a_mobile", num_classes=10).eval()
    assert model.min_input_size == 3
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 3, 3)).shape == (1, 1056, 1, 1)
    with pytest.raises(ValueError, match="input 2x3 is too small: this network needs at least 3x3"):
        model(torch.randn(1, 3, 2, 3))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == pytest.approx(3e-4) for m in bns)
    fast = create_model("nasnet_a_mobile", bn_momentum=0.1)
    assert all(m.momentum == 0.1 for m in fast.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.slow  # ~20 s, almost all in ONNX Runtime's quantizer on a graph of ~2,000 nodes
def test_int8_onnx_at_an_odd_resolution_and_another_batch(tmp_path) -> None:
    from mobilezoo.deploy import onnx_session, quantize
    from mobilezoo.deploy.calibration import random_batches

    model = create_model("nasnet_a_mobile", num_classes=10).eval()
    q = quantize(
        model, random_batches(3, (65, 65), num_images=8, batch_size=4), out_path=tmp_path / "q.onnx", resolution=65
    )
    x = torch.randn(3, 3, 65, 65)  # exported at batch 1
    got = onnx_session(q.path, threads=1).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (3, 10) and np.isfinite(got).all()
    assert np.abs(got - want).max() <= 0.25 * np.abs(want).max()


def test_bad_input_raises_value_error() -> None:
    for kwargs, message in [
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"drop_path_rate": -0.1}, "drop_path_rate"),
        ({"aux_logits": 1}, "aux_logits"),
        ({"bn_momentum": 0.0}, "bn_momentum"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"config": NASNetConfig(cells_per_stack=4, penultimate_filters=1000, stem_filters=32)}, "multiple of 96"),
    ]:
        with pytest.raises(ValueError, match=message):
            NASNetAMobile(**kwargs)
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        create_model("nasnet_a_mobile")(torch.randn(1, 1, 64, 64))
