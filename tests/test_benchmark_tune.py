"""`mobilezoo tune`'s decisions from fake measurements (no real timing is asserted)."""

import pytest

from mobilezoo import create_model, policies
from mobilezoo.benchmark import tune
from mobilezoo.deploy import export_onnx
from mobilezoo.policies import MeasuredChoice


@pytest.fixture
def onnx_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEZOO_CACHE_DIR", str(tmp_path / "cache"))
    return export_onnx(create_model("mobilenet_v3_small"), tmp_path / "m.onnx", resolution=224).path


def _fake_measure(medians: dict[str, float], stable: bool = True):
    seen = {}

    def measure(runs, **kw):
        seen["candidates"] = sorted(runs)
        for run in runs.values():  # every candidate must actually run
            run()
        best = min(medians, key=medians.__getitem__)
        ratios = {k: v / medians[best] for k, v in medians.items()}
        return MeasuredChoice(best, medians, ratios, 3, stable, {k: [v] * 3 for k, v in medians.items()})

    return measure, seen


def test_tune_spin_measures_every_mode_and_records_the_figures(onnx_file) -> None:
    measure, seen = _fake_measure({"off": 2.1, "during-run": 1.4, "always": 1.3})
    # the measurements run 224 px inputs, so the file is exported at 224
    d = tune.tune_spin(onnx_file, threads=1, measure=measure)
    assert seen["candidates"] == sorted(policies.SPIN_MODES)
    assert (d.policy, d.value, d.how) == ("ort_spin", "always", "measured")
    assert "off 1.62x" in d.reason and "stable" in d.reason and d.figures["best"] == "always"
    policies.save_decisions([d])
    assert policies.ort_spin().value == "always"


def test_tune_float_stem_stores_a_runtime_specific_decision(onnx_file) -> None:
    measure, seen = _fake_measure({"float-stem": 2.4, "all-int8": 2.2}, stable=False)
    d = tune.tune_float_stem(onnx_file, threads=1, runtime="onnxruntime", measure=measure)
    assert seen["candidates"] == ["all-int8", "float-stem"]
    assert d.policy == "float_stem/onnxruntime/MobileNetV3" and d.value is False
    assert "NOT stable" in d.reason
    policies.save_decisions([d])
    assert policies.float_stem("MobileNetV3", "onnxruntime").value is False
    assert policies.float_stem("MobileNetV3", "openvino").value is True  # the other runtime keeps its default
