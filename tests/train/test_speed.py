"""The training memory format chosen by measurement, with fake timings (no real timing is asserted)."""

import dataclasses

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
