"""The COCOeval wrapper: perfect predictions score 1, none score 0 without a crash, -1 is never a score."""

from __future__ import annotations

import pytest
import torch

from mobilezoo.detection import DigitCanvases, coco_map
from mobilezoo.detection.metrics import STAT_INDEX


@pytest.fixture(scope="module")
def ground_truth() -> list[dict]:
    ds = DigitCanvases("val", 40, seed=5)
    return [ds[i][1] for i in range(len(ds))]


def _as_predictions(gts: list[dict], shift: float = 0.0) -> list[dict]:
    return [{"boxes": g["boxes"] + shift, "scores": torch.ones(len(g["labels"])), "labels": g["labels"]} for g in gts]


def test_ground_truth_as_predictions_scores_one(ground_truth: list[dict]) -> None:
    m = coco_map(ground_truth, _as_predictions(ground_truth))
    assert m.AP == m.AP50 == m.AP75 == m.AR100 == pytest.approx(1.0)
    assert m.APs == pytest.approx(1.0)
    assert m.APl is None  # no ground truth above 96^2 px on 128-px canvases: n/a, not -1
    assert m.images == 40 and m.ground_truth == m.detections == sum(len(g["labels"]) for g in ground_truth)
    assert "APl n/a" in m.format() and "-1" not in m.format()


def test_no_predictions_scores_zero_without_a_crash(ground_truth: list[dict]) -> None:
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    m = coco_map(ground_truth, empty * len(ground_truth))
    assert m.AP == m.AP50 == m.AP75 == m.AR100 == m.APs == 0.0
    assert m.APl is None and m.detections == 0


def test_boxes_are_converted_from_xyxy(ground_truth: list[dict]) -> None:
    """A shift of 2 px keeps IoU above 0.5 for most boxes but not above 0.95: AP50 > AP > 0 (xywh/xyxy mix-ups
    would give 0 or 1)."""
    m = coco_map(ground_truth, _as_predictions(ground_truth, shift=2.0))
    assert 0.0 < m.AP < m.AP50 <= 1.0
    wrong_label = [{**p, "labels": (p["labels"] % 10) + 1} for p in _as_predictions(ground_truth)]
    assert coco_map(ground_truth, wrong_label).AP50 == 0.0


def test_ranking_by_score_matters(ground_truth: list[dict]) -> None:
    """A false positive ranked above every true one lowers AP; ranked below all, it does not."""
    preds = _as_predictions(ground_truth)
    fp = torch.tensor([[0.0, 0.0, 30.0, 30.0]])
    high = [
        {
            **p,
            "boxes": torch.cat([fp, p["boxes"]]),
            "scores": torch.cat([torch.tensor([2.0]), p["scores"]]),
            "labels": torch.cat([p["labels"][:1], p["labels"]]),
        }
        for p in preds
    ]
    low = [{**h, "scores": torch.cat([torch.tensor([0.5]), h["scores"][1:]])} for h in high]
    assert pytest.approx(1.0) == coco_map(ground_truth, low).AP50
    assert coco_map(ground_truth, high).AP50 < 0.99


def test_crowd_regions_neither_count_nor_penalize() -> None:
    gt = [
        {
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
            "labels": torch.tensor([1]),
            "crowd_boxes": torch.tensor([[20.0, 20.0, 60.0, 60.0]]),
            "crowd_labels": torch.tensor([1]),
        }
    ]
    pred = [
        {
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [25.0, 25.0, 50.0, 50.0]]),
            "scores": torch.tensor([0.5, 0.9]),
            "labels": torch.tensor([1, 1]),
        }
    ]
    m = coco_map(gt, pred)
    assert pytest.approx(1.0) == m.AP and m.ground_truth == 1


def test_no_ground_truth_is_na_not_minus_one() -> None:
    gt = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    pred = [{"boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    m = coco_map(gt, pred)
    assert all(getattr(m, k) is None for k in STAT_INDEX)


def test_prints_nothing(ground_truth: list[dict], capsys: pytest.CaptureFixture[str]) -> None:
    coco_map(ground_truth, _as_predictions(ground_truth, shift=1.0))
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("gt", "pred", "match"),
    [
        ([{"boxes": torch.zeros(1, 4), "labels": torch.ones(1)}], None, "zero or negative size"),
        ([{"boxes": torch.ones(1, 3), "labels": torch.ones(1)}], None, r"must have shape \(K, 4\)"),
        ([{"boxes": torch.tensor([[0, 0, float("nan"), 1]]), "labels": torch.ones(1)}], None, "NaN or infinite"),
    ],
)
def test_bad_input(gt: list[dict], pred: list[dict] | None, match: str) -> None:
    pred = pred or [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}]
    with pytest.raises(ValueError, match=match):
        coco_map(gt, pred)
    with pytest.raises(ValueError, match="1 ground-truth images but 2 prediction entries"):
        coco_map(gt[:1], pred * 2)


def test_faster_coco_eval_gives_pycocotools_figures(ground_truth: list[dict]) -> None:
    pytest.importorskip("faster_coco_eval")  # the fast-eval extra (installed with dev)
    gen = torch.Generator().manual_seed(0)
    preds = []
    for g in ground_truth:  # jittered boxes, random scores, a few wrong labels, one false positive per image
        n = len(g["labels"])
        boxes = g["boxes"] + torch.randn(n, 4, generator=gen) * 2.5
        labels = torch.where(torch.rand(n, generator=gen) < 0.1, (g["labels"] % 10) + 1, g["labels"])
        preds.append(
            {
                "boxes": torch.cat([boxes, torch.tensor([[5.0, 5.0, 40.0, 40.0]])]),
                "scores": torch.rand(n + 1, generator=gen),
                "labels": torch.cat([labels, g["labels"][:1]]),
            }
        )
    ref = coco_map(ground_truth, preds).to_dict()
    fast = coco_map(ground_truth, preds, backend="faster_coco_eval").to_dict()
    assert 0.1 < ref["AP"] < 0.9  # a case with something to rank
    assert fast.keys() == ref.keys()
    for k, v in ref.items():
        assert fast[k] == (None if v is None else pytest.approx(v, abs=1e-6)), k
    with pytest.raises(ValueError, match="unknown COCOeval backend 'torchmetrics'"):
        coco_map(ground_truth, preds, backend="torchmetrics")
