"""The auto backend's decision logic, with fake backends and fake timings (no real timing is asserted)."""

import pytest
import torch

from mobilezoo.benchmark import auto
from mobilezoo.benchmark.backends import Prepared
from mobilezoo.benchmark.harness import assess_noise


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEZOO_CACHE_DIR", str(tmp_path / "cache"))


def _fake(monkeypatch, medians: dict[str, float], *, fail=(), wrong=(), noisy=()):
    """Backends whose preparation fails (``fail``), whose outputs are wrong (``wrong``), and scripted timings."""
    prepared = []

    def prepare(model, backend, x, *, threads, device="cpu"):
        if backend in fail:
            raise RuntimeError(f"{backend} failed\nsecond line")
        with torch.inference_mode():
            out = model(x) + (1.0 if backend in wrong else 0.0)
        p = Prepared(lambda out=out: out)
        p.backend = backend
        prepared.append(p)
        return p

    def measure(runners, device, iters, remeasure):
        samples, noises = [], []
        for r in runners:
            m = medians[r.backend]
            s = [m, m * 3, m * 0.9] * 5 if r.backend in noisy else [m] * 15
            samples.append(s)
            noises.append(assess_noise([s]))
        return samples, noises

    monkeypatch.setattr(auto, "prepare", prepare)
    monkeypatch.setattr(auto, "_measure", measure)
    return prepared


def test_picks_the_fastest_exact_backend_that_runs_and_is_correct(monkeypatch) -> None:
    medians = {"eager": 5.0, "torchscript": 3.0, "onnxruntime": 2.0, "openvino": 1.5, "onnxruntime-int8": 1.0}
    _fake(monkeypatch, medians, fail=("torchscript",), wrong=("openvino",))
    choice = auto.fastest_backend("mobilenet_v1_x0_25", 2, backends=list(medians), resolution=32, warmup=1, iters=3)
    # int8 is skipped for exact precision only if not named; named backends are all tried, and int8 is labelled
    assert choice.results["torchscript"]["error"] == "RuntimeError: torchscript failed"  # one line
    assert "differ from eager" in choice.results["openvino"]["error"]
    assert choice.best == "onnxruntime-int8" and choice.precision == "int8"
    exact = auto.fastest_backend("mobilenet_v1_x0_25", 2, backends=["eager", "onnxruntime"], resolution=32, warmup=1,
                                 iters=3)  # fmt: skip
    assert exact.best == "onnxruntime" and exact.precision == "fp32" and exact.decided
    assert exact.median_ms == 2.0 and exact.throughput == pytest.approx(1000.0)


def test_a_batch_of_one_skips_the_streams_forms(monkeypatch) -> None:
    names = ("eager", "onnxruntime", "onnxruntime-streams")
    monkeypatch.setattr(auto, "available_backends", lambda: names)
    prepared = _fake(monkeypatch, {"eager": 5.0, "onnxruntime": 2.0, "onnxruntime-streams": 1.0})
    assert set(auto.fastest_backend("mobilenet_v1_x0_25", 1, resolution=32, warmup=1, iters=3).results) == set(
        names[:2]
    )
    assert auto.fastest_backend("mobilenet_v1_x0_25", 4, resolution=32, warmup=1, iters=3).best == "onnxruntime-streams"
    assert len(prepared) == 5


def test_default_candidates_by_precision(monkeypatch) -> None:
    names = ("eager", "compile", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8")
    monkeypatch.setattr(auto, "available_backends", lambda: names)
    assert auto.default_backends("exact") == ("eager", "onnxruntime", "openvino")
    assert auto.default_backends("any") == tuple(n for n in names if n != "compile")
    with pytest.raises(ValueError, match="unknown precision 'fast'"):
        auto.default_backends("fast")


def test_a_choice_is_cached_per_machine_and_arguments(monkeypatch) -> None:
    prepared = _fake(monkeypatch, {"eager": 5.0, "onnxruntime": 2.0})
    kw = dict(backends=["eager", "onnxruntime"], resolution=32, warmup=1, iters=3)
    first = auto.fastest_backend("mobilenet_v1_x0_25", 1, **kw)
    n = len(prepared)
    again = auto.fastest_backend("mobilenet_v1_x0_25", 1, **kw)
    assert len(prepared) == n and again.cached and again.best == first.best == "onnxruntime"
    auto.fastest_backend("mobilenet_v1_x0_25", 4, **kw)  # another batch size is another question
    assert len(prepared) > n
    fresh = auto.fastest_backend("mobilenet_v1_x0_25", 1, **kw, use_cache=False)
    assert not fresh.cached


def test_a_noisy_pick_is_not_decided_and_not_cached(monkeypatch) -> None:
    prepared = _fake(monkeypatch, {"eager": 5.0, "onnxruntime": 2.0}, noisy=("onnxruntime",))
    kw = dict(backends=["eager", "onnxruntime"], resolution=32, warmup=1, iters=3)
    choice = auto.fastest_backend("mobilenet_v1_x0_25", 1, **kw)
    assert choice.best == "onnxruntime" and not choice.decided
    n = len(prepared)
    assert not auto.fastest_backend("mobilenet_v1_x0_25", 1, **kw).cached and len(prepared) > n


def test_bad_arguments_and_nothing_running(monkeypatch) -> None:
    _fake(monkeypatch, {"eager": 1.0}, fail=("eager",))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        auto.fastest_backend("mobilenet_v1_x0_25", 0)
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        auto.fastest_backend("mobilenet_v1_x0_25", 1, backends=["tensorrt"])
    with pytest.raises(ValueError, match="no backend ran"):
        auto.fastest_backend("mobilenet_v1_x0_25", 1, backends=["eager"], resolution=32, warmup=1, iters=3)
