"""The ShuffleNet V2 guideline micro-nets (Tables 1-4) and the report: structure, constant MAdds, verdicts."""

import json

import pytest
import torch
from torch import nn

from mobilezoo import guidelines as gl
from mobilezoo.benchmark import Prepared, harness
from mobilezoo.cli import main


@pytest.mark.parametrize("exp", gl.EXPERIMENTS, ids=lambda e: e.guideline)
@pytest.mark.parametrize("scale", gl.SCALES)
def test_madds_held_constant_across_rows(exp: gl.Experiment, scale: int) -> None:
    counts = [gl.madds(exp.build(**row.settings, scale=scale)) for row in exp.rows]
    assert max(counts) / min(counts) < 1.06, counts


def test_g1_matches_the_papers_settings() -> None:
    net = gl.build_g1(22, 44)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 * gl.DEPTH
    assert [(c.in_channels, c.out_channels) for c in convs[:2]] == [(22, 44), (44, 22)]
    # the paper's ARM x1 network for 1:1 is 64.2 M MAdds (GUIDELINES.md, derived table)
    assert gl.madds(gl.build_g1(32, 32)) / 1e6 == pytest.approx(64.2, abs=0.05)
    assert gl.madds(gl.build_g1(32, 32, scale=4)) / 1e6 == pytest.approx(1027.6, abs=0.1)


def test_blocks_shapes_and_switches() -> None:
    x = torch.randn(1, 64, 56, 56)
    for k, mode in [(2, "parallel"), (4, "parallel")]:
        net = gl.build_g3(k, mode)
        assert net(x).shape == x.shape
        assert len(net.blocks[0].branches) == k
    assert gl.build_g3(4, "series").in_chans == 32
    assert {m.groups for m in gl.build_g2(128, 4).modules() if isinstance(m, nn.Conv2d)} == {4}

    def relus(net: nn.Module) -> int:
        return sum(isinstance(m, nn.ReLU) for m in net.modules())

    assert relus(gl.build_g4(True, True)) == 3 * gl.DEPTH and relus(gl.build_g4(False, True)) == 0
    y = torch.randn(1, 32, 56, 56)
    with_sc, without = gl.build_g4(False, True), gl.build_g4(False, False)
    without.load_state_dict(with_sc.state_dict())
    block_in = y
    assert torch.allclose(with_sc.blocks[0](block_in), without.blocks[0](block_in) + block_in)


def _rows(speeds: list[list[float]]) -> list[gl.RowResult]:
    return [gl.RowResult(f"r{i}", {}, (), (), (), tuple(s), (), ()) for i, s in enumerate(speeds)]


def test_verdicts() -> None:
    g2 = gl.EXPERIMENTS[1]  # preferred row 0, violating row 3
    holds, verdict, why = gl._verdict(g2, _rows([[10, 10], [9, 9], [8, 8], [5, 5]]), (1, 2))
    assert holds == (True, True) and verdict == "holds here"
    assert "x1: 'r0' 2.00x the speed of 'r3'" in why
    holds, verdict, _ = gl._verdict(g2, _rows([[10, 5], [9, 9], [8, 8], [5, 5.1]]), (1, 2))
    assert holds == (True, False) and verdict == "holds here at x1 only"
    _, verdict, _ = gl._verdict(g2, _rows([[5], [4], [4], [4.9]]), (1,))  # within 5%: no evidence
    assert verdict == "does not hold here"
    _, verdict, _ = gl._verdict(g2, _rows([[10], [11], [8], [5]]), (1,))  # another row is clearly faster
    assert verdict == "does not hold here"
    g4 = gl.EXPERIMENTS[3]  # preferred: no ReLU, no shortcut (last row)
    _, verdict, _ = gl._verdict(g4, _rows([[4], [5], [5], [6]]), (1,))
    assert verdict == "holds here"


def test_run_guidelines_report(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(0, 10**15, 1_000_000))  # the real nets run; every timed call "takes" 1 ms: steady
    monkeypatch.setattr(harness, "_clock", lambda: next(ticks))
    report = gl.run_guidelines(scales=(1,), guidelines=("G2", "G4"), warmup=1, iters=2)
    assert [t.guideline for t in report.tables] == ["G2", "G4"]
    g2 = report.tables[0]
    assert [r.paper_cpu for r in g2.rows] == [(40.0,), (35.0,), (32.9,), (27.8,)]
    assert g2.rows[0].paper_gpu == (2451,) and g2.rows[0].ours_ratio == (1.0,)
    assert all(r.ours[0] == pytest.approx(1000) and r.noisy == (False,) for r in g2.rows)
    assert g2.verdict == "does not hold here"  # equal speeds: no evidence either way
    d = json.loads(json.dumps(report.to_dict()))
    assert d["threads"] == 1 and d["batch_size"] == 1 and d["env"]["torch"] == torch.__version__
    assert d["tables"][0]["rows"][0]["noise"][0]["noisy"] is False


def test_verdicts_draw_no_conclusion_from_noisy_rows() -> None:
    g2 = gl.EXPERIMENTS[1]
    rows = _rows([[10, 10], [9, 9], [8, 8], [5, 5]])  # would hold at both scales
    rows[3] = gl.RowResult(**{**rows[3].__dict__, "noisy": (True, False)})  # 'r3' disturbed at x1
    holds, verdict, why = gl._verdict(g2, rows, (1, 2))
    assert holds == (None, True)
    assert verdict == "holds here (no conclusion at x1: the measurement was disturbed)"
    assert "x1: the measurement was disturbed ('r3' noisy" in why and "x1: 'r0'" not in why
    rows[0] = gl.RowResult(**{**rows[0].__dict__, "noisy": (False, True)})
    holds, verdict, why = gl._verdict(g2, rows, (1, 2))
    assert holds == (None, None) and verdict == "no conclusion: the measurement was disturbed"
    assert "speed of" not in why and "fastest" not in why


def _scripted(clock: list, disturbed_chans: int):
    """A ``prepare`` timing nothing real: a net "takes" its MAdds / 1e7 ms per call, and the net whose input has
    ``disturbed_chans`` channels is sampled during a load that never ends (every other call 100x slower)."""

    def fake_prepare(model, backend, x, *, threads, device="cpu"):
        base, calls = gl.madds(model) / 1e7, [0]
        slowed = model.in_chans == disturbed_chans

        def run():
            clock[0] += int(base * (100 if slowed and calls[0] % 2 else 1) * 1e6)
            calls[0] += 1

        return Prepared(run)

    return fake_prepare


def test_a_disturbed_row_is_remeasured_flagged_and_decides_nothing(monkeypatch, tmp_path, capsys) -> None:
    clock = [0]
    monkeypatch.setattr(harness, "_clock", lambda: clock[0])
    monkeypatch.setattr(harness, "prepare", _scripted(clock, disturbed_chans=184))  # G2's g = 8 row at x1
    report = gl.run_guidelines(scales=(1,), guidelines=("G2",), warmup=1, iters=6)
    (g2,) = report.tables
    assert [r.noisy for r in g2.rows] == [(False,), (False,), (False,), (True,)]
    assert g2.rows[3].noise[0]["remeasured"] == 2 and g2.rows[0].noise[0]["remeasured"] == 2  # timed again together
    assert g2.holds_at == (None,) and g2.verdict == "no conclusion: the measurement was disturbed"
    assert "speed of" not in g2.explanation and "'g = 8' noisy" in g2.explanation
    d = json.loads(json.dumps(report.to_dict()))
    assert d["tables"][0]["holds_at"] == [None] and d["tables"][0]["rows"][3]["noisy"] == [True]

    assert main(["guidelines", "--scales", "1", "--warmup", "1", "--iters", "6"]) == 0
    out = capsys.readouterr().out
    assert "(noisy)" in out and "G2 no conclusion: the measurement was disturbed" in out


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"scales": (3,)}, "scales must be distinct values"), ({"guidelines": ("G5",)}, "unknown guidelines")],
)
def test_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gl.run_guidelines(**kwargs)


def test_cli(tmp_path, capsys) -> None:
    out = tmp_path / "g.json"
    assert main(["guidelines", "--scales", "1", "--warmup", "1", "--iters", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [t["guideline"] for t in data["tables"]] == ["G1", "G2", "G3", "G4"]
    text = capsys.readouterr().out
    assert "paper GPU" in text and "G3" in text
    assert main(["guidelines", "--scales", "8"]) == 2
