"""The benchmark harness's behaviour: eval mode, warm-up, threads, fields, interleaving, backends' top-1, bad input.

No test asserts a measured time: timing behaviour is checked with a fake clock that the probe models advance.
"""

import json

import pytest
import torch
from torch import nn

from mobilezoo.benchmark import (
    BACKENDS,
    Prepared,
    available_backends,
    benchmark,
    benchmark_interleaved,
    compare,
    harness,
    prepare,
    run_suite,
)
from mobilezoo.benchmark import backends as bench_backends
from mobilezoo.cli import main
from mobilezoo.registry import create_model


class Probe(nn.Module):
    """A tiny classifier that records, per call, its training flag, torch's thread count and grad mode."""

    def __init__(self, log: list | None = None, tag: str = "a", clock: list | None = None, step: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)
        self.calls: list[dict] = []
        self.log = log if log is not None else []
        self.tag = tag
        self.clock = clock  # a one-element list of fake nanoseconds, advanced by `step` per call
        self.step = step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(
            {"training": self.training, "threads": torch.get_num_threads(), "grad": torch.is_grad_enabled()}
        )
        self.log.append(self.tag)
        if self.clock is not None:
            self.clock[0] += self.step
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> list:
    clock = [0]
    monkeypatch.setattr(harness, "_clock", lambda: clock[0])
    return clock


@pytest.fixture
def steady_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every timed call "takes" exactly 1 ms (the clock moves 1 ms per read), whatever the machine does: steady."""
    ticks = iter(range(0, 10**15, 1_000_000))  # read before and after each call
    monkeypatch.setattr(harness, "_clock", lambda: next(ticks))


def test_eval_enforced_and_mode_restored() -> None:
    probe = Probe().train()
    benchmark(probe, batch_size=2, resolution=8, warmup=2, iters=3, threads=1, remeasure=0)  # really timed: no re-runs
    assert len(probe.calls) == 5
    assert not any(c["training"] for c in probe.calls)
    assert not any(c["grad"] for c in probe.calls)
    assert probe.training and probe.bn.training  # the caller's mode comes back


def test_warmup_excluded_from_samples(fake_clock: list) -> None:
    probe = Probe(clock=fake_clock, step=3_000_000)  # each call "takes" 3 ms on the fake clock
    # warm-up calls take 1000x longer: if any were timed, the samples would show it
    orig = probe.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        probe.step = 3_000_000_000 if len(probe.calls) < 4 else 3_000_000
        return orig(x)

    probe.forward = forward
    r = benchmark(probe, batch_size=4, resolution=8, warmup=4, iters=6, threads=1)
    assert len(probe.calls) == 10
    assert r.samples_ms == (3.0,) * 6
    assert r.median_ms == r.min_ms == r.p90_ms == 3.0
    assert r.throughput == pytest.approx(4 / 0.003)
    assert (r.warmup, r.iters) == (4, 6)


def test_threads_fixed_then_restored() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        probe = Probe()
        r = benchmark(probe, resolution=8, warmup=1, iters=2, threads=2)
        assert {c["threads"] for c in probe.calls} == {2}
        assert r.threads == 2
        assert torch.get_num_threads() == 1
        r = benchmark(Probe(), resolution=8, warmup=1, iters=1)  # None: keep and record the current count
        assert r.threads == 1
    finally:
        torch.set_num_threads(before)


def test_result_fields_and_json() -> None:
    r = benchmark(Probe(), batch_size=3, resolution=8, warmup=1, iters=4, threads=1)
    d = json.loads(json.dumps(r.to_dict()))
    for key in ("model", "backend", "batch_size", "resolution", "threads", "device", "dtype", "memory_format"):
        assert d[key] is not None, key
    assert d["model"] == "Probe" and d["backend"] == "eager" and d["batch_size"] == 3
    assert d["min_ms"] <= d["median_ms"] <= d["p90_ms"]
    assert len(d["samples_ms"]) == 4
    assert d["throughput"] == pytest.approx(3 / (d["median_ms"] / 1e3))
    assert d["peak_memory_bytes"] >= d["memory_before_bytes"] > 0 and d["peak_memory_kind"]
    env = d["env"]
    assert env["torch"] == torch.__version__ and env["cpu"] and env["logical_cpus"] >= 1
    assert d["dtype"] == "float32" and d["memory_format"].startswith("contiguous")


def test_compare_interleaves_pairs(monkeypatch: pytest.MonkeyPatch, fake_clock: list) -> None:
    log: list[str] = []
    ours = Probe(log, "ours", fake_clock, step=2_000_000)
    theirs = Probe(log, "tv", fake_clock, step=1_000_000)
    monkeypatch.setattr(harness, "torchvision_counterpart", lambda name: (ours, theirs))
    c = compare("mobilenet_v2", resolution=8, warmup=2, iters=5, threads=1)
    # each warmed up on its own, then one call each per round, the order alternating
    assert log == ["ours"] * 2 + ["tv"] * 2 + ["ours", "tv", "tv", "ours"] * 2 + ["ours", "tv"]
    assert c.ratios == (2.0,) * 5 and c.median_ratio == 2.0
    assert c.ours.model == "mobilenet_v2" and c.reference.model == "torchvision.models.mobilenet_v2"
    json.dumps(c.to_dict())


def test_no_torchvision_counterpart_is_an_error() -> None:
    with pytest.raises(ValueError, match="no torchvision counterpart"):
        compare("mobilenet_v1", resolution=32, warmup=1, iters=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "tensorrt"}, "unknown backend 'tensorrt'"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"threads": 0}, "threads must be an integer >= 1"),
        ({"warmup": 0}, "warmup must be an integer >= 1"),
        ({"iters": 0}, "iters must be an integer >= 1"),
        ({"device": "tpu"}, "device"),
        ({"resolution": 16}, "resolution 16 is too small"),
    ],
)
def test_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        benchmark("mobilenet_v2_x0_35", **{"resolution": 32, "warmup": 1, "iters": 1, **kwargs})


def test_bad_model_and_openvino_message() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        benchmark("mobilenet_v9", iters=1)
    with pytest.raises(ValueError, match="expected a torch.nn.Module"):
        benchmark(42, iters=1)
    if "openvino" not in available_backends():
        with pytest.raises(ValueError, match=r"pip install 'mobilezoo\[openvino\]'"):
            benchmark(Probe(), backend="openvino", resolution=8)


def _tiny(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def _outputs(model: nn.Module, backend: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        want = model(x)
        prepared = prepare(model, backend, x, threads=2 if backend.endswith("-streams") else 1)
        try:
            return prepared.output(), want
        finally:
            prepared.cleanup()


# compiling takes minutes on 2 cores (one tiny model only, below); int8 and bf16 change the numbers (int8: its own test)
EXACT = [b for b in available_backends() if b != "compile" and bench_backends.precision(b) == "fp32"]


@pytest.mark.parametrize("backend", EXACT)
def test_backend_top1_matches_eager(backend: str) -> None:
    model = create_model("mobilenet_v3_small").eval()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    got, want = _outputs(model, backend, x)
    assert got.shape == want.shape
    assert torch.equal(got.argmax(1), want.argmax(1))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("backend", ["onnxruntime-int8", "onnxruntime-int8-streams"])
def test_int8_backend_top1_matches_eager(backend: str) -> None:
    # a random-weight ImageNet net has near-tied logits that any rounding reorders; a small net with calibrated
    # BatchNorm and inputs of distinct colours has clear winners
    model = _tiny()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 32, 32, generator=g) + 2 * torch.randn(8, 3, 1, 1, generator=g)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # running stats = this batch's
    with torch.no_grad():
        model.train()(x)
    got, want = _outputs(model.eval(), backend, x)
    assert len(set(want.argmax(1).tolist())) > 2  # not a constant prediction
    assert (got.argmax(1) == want.argmax(1)).sum() >= 7  # int8 rounding may flip a near tie
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.95


@pytest.mark.slow
def test_compile_backend_matches_eager() -> None:
    got, want = _outputs(_tiny().eval(), "compile", torch.randn(2, 3, 16, 16))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_backends_list() -> None:
    assert BACKENDS[0] == "eager"
    assert {"channels_last", "compile", "onnxruntime", "onnxruntime-int8", "openvino"} <= set(BACKENDS)
    assert set(available_backends()) <= set(BACKENDS)
    assert tuple(bench_backends._PREPARERS) == BACKENDS  # every backend has a preparer


def test_suite_records_errors_and_fastest(steady_clock: None) -> None:
    suite = run_suite(
        ["mobilenet_v1_x0_25"],
        backends="eager,channels_last",
        batch_sizes="1,2",
        resolution=32,
        iters=2,
        warmup=1,
        vs="torchvision",
        threads=1,
    )
    assert [(e.backend, e.batch_size) for e in suite.entries] == [
        ("eager", 1),
        ("channels_last", 1),
        ("eager", 2),
        ("channels_last", 2),
    ]
    assert all(e.result is not None and e.error == "no torchvision counterpart" for e in suite.entries)
    assert set(suite.fastest()) == {("mobilenet_v1_x0_25", 1), ("mobilenet_v1_x0_25", 2)}
    json.dumps(suite.to_dict())
    with pytest.raises(ValueError, match="unknown backend"):
        run_suite(["mobilenet_v2"], backends="eager,nope")
    with pytest.raises(ValueError, match="batch sizes must be integers"):
        run_suite(["mobilenet_v2"], batch_sizes="1,x")


def test_cli_bench_json_and_plot(tmp_path, capsys) -> None:
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    argv = ["bench", "mobilenet_v2_x0_35", "--batch-size", "1,2", "--resolution", "32", "--warmup", "1"]
    argv += ["--iters", "2", "--threads", "1", "--vs", "torchvision", "--json", str(out), "--plot", str(png)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert len(data["entries"]) == 2 and data["entries"][0]["comparison"]["median_ratio"] > 0
    assert png.stat().st_size > 0
    assert "ours/tv" in capsys.readouterr().out
    assert main(["bench", "--backend", "eager"]) == 2  # no models
    assert main(["bench", "mobilenet_v2", "--batch-size", "0"]) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_events_and_allocator_peak() -> None:
    probe = Probe().train()
    for backend in ("eager", "channels_last"):
        r = benchmark(probe, backend=backend, device="cuda", batch_size=2, resolution=16, warmup=2, iters=3)
        assert r.device.startswith("cuda") and r.env["gpu"]
        assert "cuda" in r.peak_memory_kind and r.peak_memory_bytes > 0
        assert len(r.samples_ms) == 3 and all(s > 0 for s in r.samples_ms)
    assert next(probe.parameters()).device.type == "cpu"  # the caller's model is not moved
    with pytest.raises(ValueError, match="CPU only"):
        benchmark(probe, backend="onnxruntime", device="cuda", resolution=16)


# ---------------------------------------------------------------- measurements that know when they are wrong


def test_noise_test_on_sample_lists() -> None:
    steady = [10.0, 10.3, 9.8, 10.1, 10.6, 9.9, 10.2, 10.0]
    assert not harness.assess_noise([steady]).noisy
    one_outlier = [*steady[:-1], 1000.0]  # one slow call does not move the median: still steady
    assert not harness.assess_noise([one_outlier]).noisy
    # a load burst over half the calls: samples 100x apart, the median corrupted
    burst = [10.0, 1000.0, 10.2, 1010.0, 9.9, 990.0, 10.1, 1005.0]
    n = harness.assess_noise([burst])
    assert (
        n.noisy and n.median_over_min > harness.MAX_MEDIAN_OVER_MIN and n.iqr_over_median > harness.MAX_IQR_OVER_MEDIAN
    )
    assert any("IQR" in r for r in n.reasons) and any("fastest call" in r for r in n.reasons)
    d = json.loads(json.dumps(n.to_dict()))
    assert d["noisy"] and d["max_iqr_over_median"] == harness.MAX_IQR_OVER_MEDIAN and d["remeasured"] == 0
    # the whole pass slowed alike is steady on its own, but two steady passes 2x apart disagree
    slow = [2 * s for s in steady]
    both = harness.assess_noise([steady, slow])
    assert both.noisy and both.pass_ratio > harness.MAX_PASS_RATIO and both.remeasured == 1
    assert any("steady passes" in r for r in both.reasons)
    # a noisy first pass and a steady second: the second is kept, nothing disagrees
    fixed = harness.assess_noise([burst, steady], kept=1)
    assert not fixed.noisy and fixed.pass_ratio == 1.0 and fixed.kept_pass == 1
    with pytest.raises(ValueError, match="at least one pass"):
        harness.assess_noise([])


def _scripted(clock: list, schedules: dict[str, object]):
    """A ``prepare`` whose runner for a model tagged ``m.tag`` (or a backend) advances the fake clock by scripted ms.

    ``schedules[key](i)`` gives the duration of call ``i`` (warm-up calls included, counted from 0).
    """

    def fake_prepare(model, backend, x, *, threads, device="cpu"):
        key = getattr(model, "tag", None) if getattr(model, "tag", None) in schedules else backend
        duration, calls = schedules[key], [0]

        def run():
            clock[0] += int(duration(calls[0]) * 1e6)
            calls[0] += 1
            return None

        return Prepared(run, notes=f"scripted {key}")

    return fake_prepare


def _burst(first: int, last: int, base: float = 1.0):
    """Calls ``first`` to ``last - 1`` (a load burst) take 100x ``base`` ms, every other call ``base``."""
    return lambda i: 100 * base if first <= i < last else base


def test_burst_is_flagged_remeasured_interleaved_and_the_steady_pass_kept(monkeypatch, fake_clock: list) -> None:
    # warm-up 1, then pass 1 = calls 1..6: a burst over calls 1-3 of model "a" only
    schedules = {"a": _burst(1, 4), "b": lambda i: 2.0}
    monkeypatch.setattr(harness, "prepare", _scripted(fake_clock, schedules))
    log: list[str] = []
    a, b = Probe(log, "a"), Probe(log, "b")
    ra, rb = benchmark_interleaved([(a, "a"), (b, "b")], resolution=8, warmup=1, iters=6, threads=1)
    # both were timed again (interleaved, as a pair), the steady second pass kept for both
    assert ra.noise.remeasured == rb.noise.remeasured == 1
    assert ra.samples_ms == (1.0,) * 6 and rb.samples_ms == (2.0,) * 6
    assert not ra.noisy and not rb.noisy
    assert ra.noise.pass_medians_ms[0] > 10 and ra.noise.kept_pass == 1
    d = json.loads(json.dumps(ra.to_dict()))
    assert d["noisy"] is False and d["noise"]["remeasured"] == 1 and d["noise"]["pass_medians_ms"][1] == 1.0


def test_persistent_burst_stays_noisy_after_bounded_remeasuring(monkeypatch, fake_clock: list) -> None:
    schedules = {"ours": lambda i: 100.0 if i % 2 else 1.0, "tv": lambda i: 1.0}  # "ours" always disturbed
    monkeypatch.setattr(harness, "prepare", _scripted(fake_clock, schedules))
    ours, theirs = Probe(tag="ours"), Probe(tag="tv")
    monkeypatch.setattr(harness, "torchvision_counterpart", lambda name: (ours, theirs))
    c = compare("mobilenet_v2", resolution=8, warmup=1, iters=6, threads=1, remeasure=2)
    assert c.ours.noisy and not c.reference.noisy and c.noisy
    assert c.ours.noise.remeasured == 2 and len(c.ours.noise.pass_medians_ms) == 3  # 1 + 2 passes, no more
    d = json.loads(json.dumps(c.to_dict()))
    assert d["noisy"] is True and d["ours"]["noisy"] is True and d["ours"]["noise"]["reasons"]
    r = benchmark(Probe(tag="ours"), resolution=8, warmup=1, iters=4, threads=1, remeasure=0)
    assert r.noisy and r.noise.remeasured == 0
    with pytest.raises(ValueError, match="remeasure must be an integer >= 0"):
        benchmark(Probe(), resolution=8, remeasure=-1)


def test_candidates_carry_their_own_backend_and_resolution(monkeypatch, fake_clock: list) -> None:
    shapes: list[tuple] = []

    def fake_prepare(model, backend, x, *, threads, device="cpu"):
        shapes.append((backend, tuple(x.shape)))
        return Prepared(lambda: fake_clock.__setitem__(0, fake_clock[0] + 1_000_000))

    monkeypatch.setattr(harness, "prepare", fake_prepare)
    probe = Probe()
    res = benchmark_interleaved(
        [harness.Candidate(probe, "p", backend="channels_last"), harness.Candidate(probe, "p", resolution=16)],
        resolution=8,
        warmup=1,
        iters=2,
        threads=1,
    )
    assert shapes == [("channels_last", (1, 3, 8, 8)), ("eager", (1, 3, 16, 16))]
    assert [(r.backend, r.resolution) for r in res] == [("channels_last", 8), ("eager", 16)]


def test_suite_and_cli_mark_noisy_cells_and_name_no_fastest(monkeypatch, fake_clock: list, capsys, tmp_path) -> None:
    # channels_last sampled during a load that never ends; eager steady
    schedules = {"channels_last": lambda i: 100.0 if i % 2 else 1.0, "eager": lambda i: 3.0}
    monkeypatch.setattr(harness, "prepare", _scripted(fake_clock, schedules))
    kw = dict(backends="eager,channels_last", resolution=32, warmup=1, iters=4, threads=1)
    suite = run_suite(["mobilenet_v1_x0_25"], **kw)
    assert [e.noisy for e in suite.entries] == [False, True]
    assert suite.fastest() == {} and suite.undecided() == {("mobilenet_v1_x0_25", 1): ["channels_last"]}
    # the noisy cell had its own re-measurements, then the pair again, interleaved
    assert suite.entries[1].result.noise.remeasured == 2
    d = json.loads(json.dumps(suite.to_dict()))
    assert d["fastest"] == [] and d["undecided"][0]["noisy_backends"] == ["channels_last"]
    assert d["entries"][1]["noisy"] is True and d["entries"][1]["result"]["noise"]["noisy"] is True

    argv = ["bench", "mobilenet_v1_x0_25", "--backend", "eager,channels_last", "--resolution", "32"]
    assert main([*argv, "--warmup", "1", "--iters", "4", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "(noisy)" in out and "no fastest backend named" in out and "the measurement was disturbed" in out
    assert "eager*" not in out and "channels_last*" not in out  # no "fastest" claim from a disturbed comparison

    schedules["channels_last"] = lambda i: 1.0  # the load is gone: steady, and a fastest is named
    suite = run_suite(["mobilenet_v1_x0_25"], **kw)
    assert not any(e.noisy for e in suite.entries)
    assert suite.fastest()[("mobilenet_v1_x0_25", 1)].backend == "channels_last"


def test_time_interleaved_alternates_calls_and_judges_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    # a fake clock: each call "takes" its own fixed time; the calls run A B, B A, ... after their warm-up
    order: list[str] = []
    now = [0]

    def call(name: str, ms: int):
        def run() -> None:
            order.append(name)
            now[0] += ms * 1_000_000

        return run

    monkeypatch.setattr(harness, "_clock", lambda: now[0])
    timed = harness.time_interleaved([call("a", 2), call("b", 5)], warmup=1, iters=3, remeasure=0)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert [samples for samples, _ in timed] == [[2.0, 2.0, 2.0], [5.0, 5.0, 5.0]]
    assert not any(noise.noisy for _, noise in timed)
    with pytest.raises(ValueError, match="no calls to time"):
        harness.time_interleaved([])
    with pytest.raises(ValueError, match="iters must be an integer >= 1, got 0"):
        harness.time_interleaved([call("a", 1)], iters=0)
