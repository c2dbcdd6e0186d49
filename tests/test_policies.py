import json

import pytest

from mobilezoo import policies
from mobilezoo.machine import CpuInfo
from mobilezoo.policies import (
    Decision,
    cached,
    float_stem,
    int8_weight_bits,
    measure_choice,
    measure_pair,
    ort_spin,
    sign_test,
    store,
)

AMD = CpuInfo("AuthenticAMD", "AMD EPYC", frozenset({"avx2", "fma"}))
INTEL = CpuInfo("GenuineIntel", "Xeon", frozenset({"avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16"}))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEZOO_CACHE_DIR", str(tmp_path / "cache"))


class FakeClock:
    """A timer whose every call to a candidate takes a scripted time: ``costs[name]`` is a list per round."""

    def __init__(self, costs: dict[str, list[float]]) -> None:
        self.costs = costs
        self.now = 0.0
        self.calls = {n: 0 for n in costs}
        self.rounds = {n: 0 for n in costs}

    def timer(self) -> float:
        return self.now

    def candidates(self, calls: int) -> dict:
        def make(name):
            def run():
                per_round = self.costs[name]
                self.now += per_round[min(self.calls[name] // calls, len(per_round) - 1)] / 1e3
                self.calls[name] += 1

            return run

        return {n: make(n) for n in self.costs}


def test_measure_choice_picks_the_fastest_and_stops_when_stable() -> None:
    clock = FakeClock({"a": [2.0], "b": [1.0], "c": [3.0]})
    choice = measure_choice(clock.candidates(5), calls=5, warmup=0, min_rounds=3, max_rounds=9, timer=clock.timer)
    assert choice.best == "b" and choice.stable and choice.rounds == 3
    assert choice.medians_ms == pytest.approx({"a": 2.0, "b": 1.0, "c": 3.0})
    assert choice.ratios["a"] == pytest.approx(2.0)


def test_measure_choice_keeps_measuring_a_disputed_choice_and_says_so() -> None:
    # a is faster by median, but loses every third round (a load burst): never stable, all rounds spent
    clock = FakeClock({"a": [1.0, 1.0, 1.5] * 3, "b": [1.2, 1.2, 1.0] * 3})
    choice = measure_choice(clock.candidates(4), calls=4, warmup=0, min_rounds=3, max_rounds=6, timer=clock.timer)
    assert choice.best == "a" and not choice.stable and choice.rounds == 6


def test_measure_choice_calls_a_tie_stable() -> None:
    clock = FakeClock({"a": [1.0, 1.01] * 5, "b": [1.01, 1.0] * 5})
    choice = measure_choice(clock.candidates(4), calls=4, warmup=0, min_rounds=3, timer=clock.timer, tie_margin=0.03)
    assert choice.stable and choice.rounds == 3


def test_measure_choice_pauses_between_blocks_and_checks_arguments() -> None:
    clock = FakeClock({"a": [1.0], "b": [2.0]})
    pauses = []
    measure_choice(clock.candidates(2), calls=2, warmup=1, min_rounds=1, pause_s=0.5, timer=clock.timer,
                   sleep=pauses.append)  # fmt: skip
    assert pauses == [0.5, 0.5]
    with pytest.raises(ValueError, match="at least two candidates"):
        measure_choice({"a": lambda: None})
    with pytest.raises(ValueError, match="calls must be an integer >= 1, got 0"):
        measure_choice({"a": lambda: None, "b": lambda: None}, calls=0)
    with pytest.raises(ValueError, match="max_rounds"):
        measure_choice({"a": lambda: None, "b": lambda: None}, min_rounds=4, max_rounds=2)


def test_int8_weight_bits_follow_the_int8_dot_product() -> None:
    assert int8_weight_bits(AMD).value == 7 and "vpmaddubsw" in int8_weight_bits(AMD).reason
    assert int8_weight_bits(INTEL).value == 8 and int8_weight_bits(INTEL).how == "cpu-features"


def test_spin_policy_defaults_until_measured_then_follows_the_measurement() -> None:
    assert ort_spin(2).value == "during-run" and ort_spin(2).how == "default"
    policies.save_decisions([Decision("ort_spin/threads=2", "always", "measured", "always was 1.1x faster")])
    assert ort_spin(2).value == "always" and ort_spin(2).how == "measured"
    assert ort_spin(1).how == "default"


def test_a_cache_from_another_version_is_a_clear_error(tmp_path) -> None:
    from mobilezoo.machine import machine_key

    path = tmp_path / "cache" / "policies.json"
    path.parent.mkdir()
    path.write_text(json.dumps({machine_key(): {"decisions": {"x": {"policy": "x", "old_field": 1}}}}))
    with pytest.raises(ValueError, match="cannot read; delete it and run `mobilezoo tune`"):
        ort_spin(2)


def test_float_stem_default_and_measured_per_runtime() -> None:
    assert float_stem("MobileNetV3").value is True
    assert float_stem("MobileNetV2").value is False
    policies.save_decisions([Decision("float_stem/openvino/MobileNetV3", False, "measured", "all-int8 faster")])
    assert float_stem("MobileNetV3", "openvino").value is False
    assert float_stem("MobileNetV3", "onnxruntime").value is True


def test_cache_is_per_machine_and_a_corrupt_file_is_a_clear_error(tmp_path) -> None:
    store("backends", "m|b1", {"best": "x"}, key="machine-a")
    assert cached("backends", "m|b1", key="machine-a") == {"best": "x"}
    assert cached("backends", "m|b1", key="machine-b") is None
    data = json.loads((tmp_path / "cache" / "policies.json").read_text())
    assert data["machine-a"]["cpu"]["model"]  # every entry says which CPU it was measured on
    (tmp_path / "cache" / "policies.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"policies\.json.*unreadable.*mobilezoo tune"):
        cached("backends", "m|b1")


def test_quantize_follows_the_weight_range_policy(tmp_path, monkeypatch) -> None:
    import torch

    from mobilezoo import create_model
    from mobilezoo.deploy import quantize

    model = create_model("mobilenet_v1_x0_25").eval()
    calib = [torch.randn(2, 3, 32, 32)]
    for cpu, want in ((AMD, True), (INTEL, False)):
        monkeypatch.setattr(policies, "cpu_info", lambda cpu=cpu: cpu)
        q = quantize(model, calib, out_path=tmp_path / f"{cpu.vendor}.onnx", resolution=32)
        assert q.reduce_range is want
    assert quantize(model, calib, out_path=tmp_path / "x.onnx", resolution=32, reduce_range=True).reduce_range
    with pytest.raises(ValueError, match="target runtime 'tensorrt'"):
        quantize(model, calib, out_path=tmp_path / "y.onnx", resolution=32, target="tensorrt")


def test_quantize_keeps_the_stem_float_only_where_the_policy_says_so(tmp_path) -> None:
    import torch

    from mobilezoo import create_model
    from mobilezoo.deploy import quantize

    model = create_model("mobilenet_v3_small").eval()
    calib = [torch.randn(2, 3, 32, 32)]
    default = quantize(model, calib, out_path=tmp_path / "a.onnx", resolution=32)
    assert any("features.0" in n for n in default.excluded)
    policies.save_decisions([Decision("float_stem/openvino/MobileNetV3", False, "measured", "all-int8 faster")])
    ov = quantize(model, calib, out_path=tmp_path / "b.onnx", resolution=32, target="openvino")
    assert ov.excluded == () and ov.nodes_kept_float == ()  # all int8, the classifier too (float logits)


def test_measure_pair_gives_the_ratio_of_adjacent_blocks_and_its_verdict() -> None:
    # b is 1.2x slower than a in every round, while the load doubles both every other round: the ratio stays 1.2
    clock = FakeClock({"a": [1.0, 1.0, 2.0, 2.0] * 5, "b": [1.2, 1.2, 2.4, 2.4] * 5})
    runs = clock.candidates(3)
    pair = measure_pair(("a", runs["a"]), ("b", runs["b"]), rounds=20, calls=3, warmup=0, timer=clock.timer,
                        sleep=lambda s: None)  # fmt: skip
    assert pair.ratios == pytest.approx([1.2] * 20) and pair.median == pytest.approx(1.2)
    assert pair.a_faster == 20 and pair.verdict == "faster" and pair.p_value == pytest.approx(2 / 2**20)


def test_measure_pair_calls_a_split_a_tie_and_a_clear_loss_slower() -> None:
    clock = FakeClock({"a": [1.0, 1.1] * 10, "b": [1.05] * 20})  # a wins half the rounds
    runs = clock.candidates(2)
    tie = measure_pair(("a", runs["a"]), ("b", runs["b"]), rounds=20, calls=2, warmup=0, timer=clock.timer,
                       sleep=lambda s: None)  # fmt: skip
    assert tie.a_faster == 10 and tie.verdict == "tie" and tie.p_value == pytest.approx(1.0)
    clock = FakeClock({"a": [1.1] * 17 + [1.0] * 3, "b": [1.05] * 20})  # a loses 17 of 20
    runs = clock.candidates(2)
    loss = measure_pair(("a", runs["a"]), ("b", runs["b"]), rounds=20, calls=2, warmup=0, timer=clock.timer,
                        sleep=lambda s: None)  # fmt: skip
    assert loss.a_faster == 3 and loss.verdict == "slower" and loss.p_value < 0.01
    assert loss.q1 <= loss.median <= loss.q3 < 1


def test_measure_pair_and_the_sign_test_check_their_arguments() -> None:
    assert sign_test(0, 1) == 1.0 and sign_test(3, 3) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="wins=4, n=3"):
        sign_test(4, 3)
    with pytest.raises(ValueError, match="different names, got 'a' twice"):
        measure_pair(("a", lambda: None), ("a", lambda: None))
    with pytest.raises(ValueError, match="rounds must be an integer >= 1, got 0"):
        measure_pair(("a", lambda: None), ("b", lambda: None), rounds=0)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 1.5"):
        measure_pair(("a", lambda: None), ("b", lambda: None), alpha=1.5)


def test_paired_ratio_summarises_ratios_measured_elsewhere() -> None:
    # e.g. images/s of separate processes (benchmarks/train_speed.py): the same summary as measure_pair's
    one = policies.PairedRatio.from_ratios("a", "b", [1.1])
    assert (one.median, one.q1, one.q3, one.a_faster, one.verdict) == (1.1, 1.1, 1.1, 1, "tie")
    ties = policies.PairedRatio.from_ratios("a", "b", [1.0, 1.0, 1.2])  # exact ties count for neither side
    assert ties.a_faster == 1 and ties.p_value == pytest.approx(1.0) and ties.median == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one round, got none"):
        policies.PairedRatio.from_ratios("a", "b", [])
