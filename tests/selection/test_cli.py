"""``mobilezoo select`` and the pick's export, with a fake timer (no real timing)."""

from __future__ import annotations

import json

import pytest

from mobilezoo.cli import main
from mobilezoo.selection import Budget, Measurement
from mobilezoo.selection import search as search_mod
from mobilezoo.selection.deploy import export_choice, int8_agreement


def _fake(c, backends, batch_size, threads):
    # MobileNet V1 at 1000 MAdds/ms on onnxruntime, 200 on eager: the 1.0 @ 224 net takes 0.87 ms
    rate = {"onnxruntime": 1000.0, "eager": 200.0}
    return {b: Measurement(b, "fp32", c.madds_m / rate.get(b, 100.0), c.madds_m / rate.get(b, 100.0) * 1.2)
            for b in backends}  # fmt: skip


@pytest.fixture
def fake_timer(monkeypatch, tmp_path):
    monkeypatch.setenv("MOBILEZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(search_mod, "measure_candidate", _fake)


def test_cli_json_chart_and_export(fake_timer, tmp_path, capsys) -> None:
    png, out = tmp_path / "pick.png", tmp_path / "deploy"
    argv = ["select", "--latency-ms", "0.3", "--family", "MobileNetV1", "--backend", "eager", "--backend",
            "onnxruntime", "--png", str(png), "--export", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    # 0.3 ms at 1000 MAdds/ms allows 300M: 1.0 @ 192 (418M) and 0.75 @ 224 (325M) do not fit; 1.0 @ 160 (290M) and
    # 0.75 @ 192 (239M) both do at 67.2% top-1: the cheaper one wins the tie
    assert d["pick"]["key"] == "mobilenet_v1_x0_75@192" and d["pick"]["backend"] == "onnxruntime"
    assert d["budget"]["limit_ms"] == 0.3 and d["n_candidates"] == 16
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert d["exported"]["format"] == "onnx" and d["exported"]["path"].endswith("mobilenet_v1_x0_75_192.onnx")
    assert d["exported"]["max_abs_diff"] < 1e-4


def test_cli_table_and_impossible_budget(fake_timer, capsys) -> None:
    assert main(["select", "--latency-ms", "0.3", "--model", "mobilenet_v1", "--backend", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert (
        "mobilenet_v1@160 on onnxruntime" in out and "measured 3 of 4 candidates (0 from the cache" in out
    )  # 224 and 192 over, 160 fits
    assert main(["select", "--latency-ms", "0.001", "--model", "mobilenet_v1_x0_25", "--backend", "onnxruntime"]) == 1
    out = capsys.readouterr().out
    assert "no candidate meets 0.001 ms per call" in out and "mobilenet_v1_x0_25@128" in out


def test_cli_bad_input(capsys) -> None:
    assert main(["select", "--latency-ms", "-2"]) == 2
    assert "latency_ms must be a positive number, got -2.0" in capsys.readouterr().err
    assert main(["select", "--latency-ms", "5", "--family", "MobileNetV9"]) == 2
    assert "unknown family ['MobileNetV9']" in capsys.readouterr().err


def test_int8_pick_export_and_agreement(fake_timer, tmp_path) -> None:
    from mobilezoo.selection import candidates, select

    def fake(c, backends, batch_size, threads):
        return {
            b: Measurement(b, "int8" if "int8" in b else "fp32", 1.0 if "int8" in b else 2.0, 1.1) for b in backends
        }

    pool = candidates(models=("mobilenet_v1_x0_25",))
    s = select(Budget(latency_ms=1.5, threads=1), candidates_=pool, backends=("onnxruntime", "onnxruntime-int8"),
               measure=fake, use_cache=False)  # fmt: skip
    assert s.pick.precision == "int8" and s.pick.candidate.key == "mobilenet_v1_x0_25@224"
    agreement = s.pick.int8_agreement
    assert agreement["images"] == 256 and 0 <= agreement["agreement"] <= 100 and agreement["weights"] == "random"
    with pytest.raises(ValueError, match="is not an int8 choice"):
        int8_agreement(s.measured[0].__class__(**{**s.pick.__dict__, "backend": "onnxruntime"}))
    with pytest.raises(ValueError, match=r"mobilenet_v1_x0_25@224 on onnxruntime-int8 is int8: its export needs calib"):
        export_choice(s.pick, "/tmp/never")
    exported = export_choice(s.pick, tmp_path / "q", calibration="random")
    assert exported.format == "onnx-int8" and exported.path.is_file()
    with pytest.raises(ValueError, match="backend 'tflite' has no export format"):
        export_choice(s.pick.__class__(**{**s.pick.__dict__, "backend": "tflite"}), "/tmp/never")
