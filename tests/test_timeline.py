"""The chapter's timeline table (``mobilezoo tables timeline``, the report's timeline section)."""

from __future__ import annotations

import json

import pytest

import mobilezoo
from mobilezoo.cli import main
from mobilezoo.complexity.timeline import TIMELINE, TimelineEntry, timeline
from mobilezoo.report.sections import timeline_table


@pytest.fixture(scope="module")
def table():
    return timeline()


def test_every_registered_row_reproduces_its_reference_count(table) -> None:
    assert [r.year for r in table.rows] == sorted(r.year for r in table.rows)
    built = [r for r in table.rows if r.model is not None]
    assert {r.model for r in built} <= set(mobilezoo.list_models())
    for r in built:
        assert r.status == "ok", (r.label, r.params, r.reference_params, r.madds_m, r.reference_madds_m, r.error)
        if r.reference_params is None:  # a count withheld on purpose: met against the paper's figures
            assert "withheld" in r.note and r.madds_m == pytest.approx(r.paper_madds_m, rel=0.02), r.label
            continue
        assert r.params == r.reference_params
        assert r.madds_m == pytest.approx(r.reference_madds_m, rel=0.005)
    assert table.reproduces


def test_the_chapter_families_are_all_on_it(table) -> None:
    # Fig. 5-2's lightweight nets, each with at least one row built from the code
    labels = " ".join(r.label for r in table.rows if r.model is not None)
    for family in ("SqueezeNet", "MobileNet V1", "ShuffleNet V1", "NASNet", "MobileNet V2", "ShuffleNet V2"):
        assert family in labels, family
    assert "MnasNet-A1" in labels and "MobileNet V3" in labels
    # and beyond it: the newer members, with the papers' gaps shown (MobileNetV4-M/L count 8% more than printed)
    v4m = next(r for r in table.rows if r.label == "MobileNetV4 Conv-M")
    assert v4m.resolution == 256 and v4m.madds_vs_paper_pct == pytest.approx(8.0, abs=0.1) and "8% more" in v4m.note
    assert {"GhostNet 1.0x", "EfficientNet-Lite0"} <= {r.label for r in table.rows if r.model}


def test_unpublished_architectures_are_listed_not_faked(table) -> None:
    missing = {r.label: r for r in table.rows if r.model is None}
    unpublished = {"NASNet-B (4 @ 1536)", "NASNet-C (3 @ 960)", "MnasNet-A2", "MnasNet-A3", "MnasNet-search1"}
    assert set(missing) == unpublished | {"MobileNetV4 Hybrid-M", "MobileNetV4 Hybrid-L"}
    for r in missing.values():
        assert r.status == "not implemented" and r.note.startswith("not implemented")
        assert r.madds_m is None and r.params is None
        assert r.paper_top1 is not None  # the paper's figures are still shown


def test_conventions_are_stated(table) -> None:
    squeeze = next(r for r in table.rows if r.label == "SqueezeNet 1.0")
    assert squeeze.resolution == 227 and squeeze.paper_madds_m == 860  # the release's 1.72 GFLOPS, halved
    assert "2 x MAdds" in table.convention and "FC included" in table.convention


def test_a_count_that_misses_its_reference_fails_and_an_unknown_model_is_an_error_row() -> None:
    wrong = TimelineEntry(2017, "MobileNet V1 1.0", "mobilenet_v1_1.0_224", "mobilenet_v1_x0_5")
    unknown = TimelineEntry(2017, "MobileNet V1 1.0", "mobilenet_v1_1.0_224", "mobilenet_v9")
    rows = timeline((wrong, unknown)).rows
    assert rows[0].status == "FAIL" and rows[0].params != rows[0].reference_params
    assert rows[1].status == "error" and "mobilenet_v9" in rows[1].error
    assert not timeline((wrong,)).reproduces
    with pytest.raises(KeyError, match="no paper_numbers.csv row 'nope'"):
        timeline((TimelineEntry(2020, "x", "nope", None),))


def test_cli_and_report_show_the_same_rows(table, capsys) -> None:
    assert main(["tables", "timeline", "--json"]) == 0
    (printed,) = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(table.to_dict()))
    assert main(["tables", "timeline"]) == 0
    out = capsys.readouterr().out
    assert "NASNet-A Mobile" in out and "not implemented" in out
    rendered = timeline_table(table)
    assert len(rendered.rows) == len(TIMELINE)
    mnas = next(row for row in rendered.rows if row[1] == "MnasNet-A1 1.0")
    assert mnas[2] == "`mnasnet_a1_x1_0`" and mnas[-1].startswith("ok")
