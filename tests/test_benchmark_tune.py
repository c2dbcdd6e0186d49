"""`mobilezoo tune`'s decisions from fake measurements (no real timing is asserted)."""

import sys

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
    assert (d.policy, d.value, d.how) == ("ort_spin/threads=1", "always", "measured")
    assert "off 1.62x" in d.reason and "stable" in d.reason and d.figures["best"] == "always"
    policies.save_decisions([d])
    assert policies.ort_spin(1).value == "always"
    assert policies.ort_spin(2).how == "default"  # measured for 1 thread says nothing about 2


def test_tune_caches_only_stable_decisions(onnx_file, monkeypatch) -> None:
    stable, _ = _fake_measure({"off": 2.1, "during-run": 1.4, "always": 1.3})
    unstable, _ = _fake_measure({"float-stem": 2.4, "all-int8": 2.2}, stable=False)
    measure = lambda runs, **kw: (stable if "off" in runs else unstable)(runs, **kw)  # noqa: E731
    env = sys.modules["mobilezoo.benchmark.environment"]
    monkeypatch.setattr(env, "package_version", lambda name: None)  # no OpenVINO: one float-stem decision
    decisions = tune.tune(threads=1, measure=measure)
    assert [d.figures["stable"] for d in decisions] == [True, False]
    assert set(policies.measured_decisions()) == {"ort_spin/threads=1"}


def test_tune_float_stem_stores_a_runtime_specific_decision(onnx_file) -> None:
    measure, seen = _fake_measure({"float-stem": 2.4, "all-int8": 2.2}, stable=False)
    d = tune.tune_float_stem(onnx_file, threads=1, runtime="onnxruntime", measure=measure)
    assert seen["candidates"] == ["all-int8", "float-stem"]
    assert d.policy == "float_stem/onnxruntime/MobileNetV3" and d.value is False
    assert "NOT stable" in d.reason
    policies.save_decisions([d])
    assert policies.float_stem("MobileNetV3", "onnxruntime").value is False
    assert policies.float_stem("MobileNetV3", "openvino").value is True  # the other runtime keeps its default
