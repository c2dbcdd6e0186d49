"""The training memory format chosen by measurement, with fake timings (no real timing is asserted), and the
allocator setting, with a fake environment and C library (its real effect counted in page faults, not timed)."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mobilezoo import create_model
from mobilezoo.policies import Decision, MeasuredChoice
from mobilezoo.train import TrainConfig, speed, train

from .conftest import TINY


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(speed, "_ASKED", {})
    monkeypatch.setattr(speed, "_KEPT", [])


def _fake(best: str, stable: bool = True):
    calls = []

    def measure(runs, **kw):
        calls.append(sorted(runs))
        for run in runs.values():  # both layouts really run a step
            run()
        medians = {"contiguous": 10.0, "channels_last": 10.0}
        medians[best] = 7.75
        ratios = {k: v / 7.75 for k, v in medians.items()}
        return MeasuredChoice(best, medians, ratios, 2, stable, {k: [v, v] for k, v in medians.items()})

    return measure, calls


@pytest.mark.parametrize("best", ["channels_last", "contiguous"])
def test_the_faster_layout_is_chosen_and_cached(best) -> None:
    model = create_model("mobilenet_v1_x0_25", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure, calls = _fake(best)
    d = speed.choose_channels_last(model, 4, 3, 32, torch.device("cpu"), key="mobilenet_v1_x0_25", measure=measure)
    assert d.value is (best == "channels_last") and d.how == "measured"
    nchw, nhwc = ("10.0", "7.8") if best == "channels_last" else ("7.8", "10.0")
    assert f"NCHW {nchw} ms, channels_last {nhwc} ms" in d.reason
    assert calls == [["channels_last", "contiguous"]]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # measured on copies
    speed._ASKED.clear()  # a new process: the disk cache answers
    again = speed.choose_channels_last(model, 4, 3, 32, torch.device("cpu"), key="mobilenet_v1_x0_25", measure=measure)
    assert again.value is d.value and len(calls) == 1
    speed.choose_channels_last(model, 8, 3, 32, torch.device("cpu"), key="mobilenet_v1_x0_25", measure=measure)
    assert len(calls) == 2  # another batch size is another question


def test_an_unstable_measurement_is_not_cached_but_one_process_keeps_its_answer() -> None:
    model = create_model("mobilenet_v1_x0_25", num_classes=10)
    measure, calls = _fake("channels_last", stable=False)
    d = speed.choose_channels_last(model, 4, 3, 32, torch.device("cpu"), key="m", measure=measure)
    assert "not stable" in d.reason
    assert speed.choose_channels_last(model, 4, 3, 32, torch.device("cpu"), key="m", measure=measure) is d
    speed._ASKED.clear()
    speed.choose_channels_last(model, 4, 3, 32, torch.device("cpu"), key="m", measure=measure)
    assert len(calls) == 2


def test_cuda_uses_channels_last_without_measuring() -> None:
    d = speed.choose_channels_last(torch.nn.Linear(1, 1), 4, 3, 32, torch.device("cuda"), measure=None)
    assert d.value is True and d.how == "default"


def test_the_trainer_uses_the_decision_and_a_resumed_run_keeps_its_layout(tmp_path, monkeypatch, one_thread) -> None:
    answers = iter([True, False])
    monkeypatch.setattr(
        "mobilezoo.train.engine.choose_channels_last",
        lambda *a, **k: Decision("train_channels_last", next(answers), "measured", "fake"),
    )
    cfg = TrainConfig(**{**TINY, "out": str(tmp_path / "run")})
    stop_after = 8  # killed in epoch 2

    class Stop(Exception):
        pass

    def on_step(step):
        if step == stop_after:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, on_step=on_step)
    resumed = train(cfg, resume=True)  # the second answer (NCHW) is ignored: the run started in channels_last
    assert [r["memory_format"] for r in resumed.history] == ["channels_last", "channels_last"]
    off = train(dataclasses.replace(cfg, out=str(tmp_path / "off"), channels_last=False))
    assert [r["memory_format"] for r in off.history] == ["contiguous", "contiguous"]


class FakeLibc:
    def __init__(self, refuse_above: int | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.refuse_above = refuse_above

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        refused = param == speed._M_MMAP_THRESHOLD and self.refuse_above is not None and value > self.refuse_above
        return int(not refused)


def test_freed_memory_is_kept_once_per_process() -> None:
    libc = FakeLibc()
    d = speed.keep_freed_memory(environ={}, libc=libc)
    assert d.value is True and d.how == "platform" and speed.freed_memory_kept()
    assert libc.calls == [(speed._M_MMAP_THRESHOLD, 1 << 30), (speed._M_TRIM_THRESHOLD, 1 << 30)]
    assert speed.keep_freed_memory(environ={}, libc=libc) is d and len(libc.calls) == 2


def test_an_older_glibc_gets_the_largest_mmap_threshold_it_takes() -> None:
    libc = FakeLibc(refuse_above=32 << 20)  # glibc < 2.35 refuses more than HEAP_MAX_SIZE / 2
    d = speed.keep_freed_memory(environ={}, libc=libc)
    assert d.value is True and d.figures["mmap_threshold_bytes"] == 32 << 20 and "up to 32 MiB" in d.reason
    refusing = FakeLibc(refuse_above=0)
    speed._KEPT.clear()
    d = speed.keep_freed_memory(environ={}, libc=refusing)
    assert d.value is False and "refused an mmap threshold of 32 MiB" in d.reason and not speed.freed_memory_kept()


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"MALLOC_TRIM_THRESHOLD_": "0"}, "MALLOC_TRIM_THRESHOLD_"),
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, "GLIBC_TUNABLES"),
        ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "jemalloc"),
    ],
)
def test_an_allocator_the_user_chose_is_left_alone(environ, named) -> None:
    libc = FakeLibc()
    d = speed.keep_freed_memory(environ=environ, libc=libc)
    assert d.value is False and named in d.reason and libc.calls == [] and not speed.freed_memory_kept()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is glibc's")
def test_kept_memory_spares_the_page_faults_of_reallocating_a_buffer() -> None:
    # A 64 MiB buffer is over glibc's largest dynamic mmap threshold: by default each allocation maps fresh pages
    # (16384 faults of 4 KiB); with the memory kept the freed buffer's pages are reused. Counts, not times.
    script = textwrap.dedent(
        """
        import resource, sys, torch
        from mobilezoo.train import speed
        if sys.argv[1] == "keep":
            assert speed.keep_freed_memory().value, "glibc refused"
        faults = []
        for _ in range(8):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            torch.empty(16 << 20).fill_(1.0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        print(sum(faults[2:]))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    counts = {}
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, env=env, check=True)
        counts[mode] = int(out.stdout.split()[-1])
    assert counts["default"] >= 6 * 16384 * 0.9, counts  # the premise: fresh pages each time
    assert counts["keep"] < counts["default"] / 2, counts


def test_the_trainer_keeps_freed_memory_on_cpu_unless_told_not_to(tmp_path, monkeypatch, one_thread) -> None:
    calls = []

    def fake_keep():
        calls.append(1)
        speed._KEPT.append(Decision("train_keep_freed_memory", True, "platform", "fake"))

    monkeypatch.setattr("mobilezoo.train.engine.keep_freed_memory", fake_keep)
    cfg = TrainConfig(**{**TINY, "epochs": 1, "out": None})
    off = train(dataclasses.replace(cfg, keep_freed_memory=False))
    assert calls == [] and off.history[-1]["freed_memory_kept"] is False
    on = train(cfg)
    assert calls == [1] and on.history[-1]["freed_memory_kept"] is True
