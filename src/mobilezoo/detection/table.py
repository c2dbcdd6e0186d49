"""The textbook's Table 5-13 (the ShuffleNet V2 paper's Table 7) regenerated: detection mAP and speed per backbone.

The paper (Ma et al. 2018, section 4 and Table 7) replaces only the backbone of one detector (Light-Head R-CNN) and
compares ShuffleNet v1, MobileNet v2, ShuffleNet v2 and ShuffleNet v2* at four backbone complexity levels (40, 140,
300, 500 MFLOPs, counted at 224x224: the classification network's FLOPs, which that paper counts as multiply-adds).
Here every cell is:

* **mAP**: COCO AP@[.5:.95] (pycocotools) on the built-in validation canvases (:class:`DigitCanvases`: synthetic
  layouts of real MNIST handwriting, not COCO), the same detector and schedule for every cell
  (:data:`TABLE_SCHEDULE`: FCOS, trained from scratch; the paper fine-tunes ImageNet-pretrained backbones);
* **speed**: images/s of a randomly initialised detector at the paper's protocol (800x1200 input, batch 4, fp32,
  eval mode) on this machine, the rows of one level timed interleaved (:func:`measure_speed`).

Which width at each level (:data:`CELLS`): the paper's Table 8 widths closest to each level at 224 px. ShuffleNet
v1/v2 (and v2*): 0.5x/1x/1.5x/2x (g=3 for v1, the group count that paper uses). MobileNet v2: width 0.15/0.6/1.0/1.4
(Table 8's 39M / 141M / 300M / 585M entries); its other candidates change the input resolution (0.4 at 160 px, 0.75
at 192 px), which a detector at a fixed input cannot use. :func:`backbone_madds` counts each one: MobileNet v2 0.15 and
0.6 count 30.6M and 151M here, against Table 8's 39M and 141M (that implementation's channel rounding is not given;
ours rounds channels to multiples of 8 as the MobileNetV2 code does); both stay nearest their levels.

:func:`run_table` is resumable at cell granularity: the results file is rewritten atomically after every cell, and a
re-run trains only the missing cells (it refuses a file written with another schedule).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mobilezoo.detection.train import DetectionTrainConfig, train_detector

LEVELS = ("40M", "140M", "300M", "500M")
# the committed results (benchmarks/detection_table.py writes them): found in a source checkout or editable install
RESULTS = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "detection_table.json"
ROWS = ("ShuffleNet v1 (g=3)", "MobileNet v2", "ShuffleNet v2", "ShuffleNet v2*")


@dataclass(frozen=True)
class Cell:
    """One backbone of the table: the registered model and the keyword arguments that scale it."""

    model: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.kwargs)
        return f"{self.model}({extra})" if extra else self.model


def _v2(width: str) -> Cell:
    return Cell(f"shufflenet_v2_x{width}")


CELLS: dict[str, dict[str, Cell]] = {
    "ShuffleNet v1 (g=3)": {
        "40M": Cell("shufflenet_v1_g3_x0_5"),
        "140M": Cell("shufflenet_v1_g3_x1_0"),
        "300M": Cell("shufflenet_v1_g3_x1_5"),
        "500M": Cell("shufflenet_v1_g3_x2_0"),
    },
    "MobileNet v2": {
        "40M": Cell("mobilenet_v2", (("width_mult", 0.15),)),
        "140M": Cell("mobilenet_v2", (("width_mult", 0.6),)),
        "300M": Cell("mobilenet_v2"),
        "500M": Cell("mobilenet_v2_x1_4"),
    },
    "ShuffleNet v2": {"40M": _v2("0_5"), "140M": _v2("1_0"), "300M": _v2("1_5"), "500M": _v2("2_0")},
    "ShuffleNet v2*": {
        "40M": Cell("shufflenet_v2_star_x0_5"),
        "140M": Cell("shufflenet_v2_star_x1_0"),
        "300M": Cell("shufflenet_v2_star_x1_5"),
        "500M": Cell("shufflenet_v2_star_x2_0"),
    },
}

# The ShuffleNet V2 paper's Table 7: COCO minival mmAP (%) and GPU images/s (batch 4, 800x1200), per level.
PAPER_MMAP: dict[str, tuple[float, ...]] = {
    "Xception": (21.9, 29.0, 31.3, 32.9),
    "ShuffleNet v1 (g=3)": (20.9, 27.0, 29.9, 32.9),
    "MobileNet v2": (20.7, 24.4, 30.0, 30.6),
    "ShuffleNet v2": (22.5, 29.0, 31.8, 33.3),
    "ShuffleNet v2*": (23.7, 29.6, 32.2, 34.2),
}
PAPER_GPU_FPS: dict[str, tuple[int, ...]] = {
    "Xception": (178, 131, 101, 83),
    "ShuffleNet v1 (g=3)": (152, 85, 76, 60),
    "MobileNet v2": (146, 111, 94, 72),
    "ShuffleNet v2": (188, 146, 109, 87),
    "ShuffleNet v2*": (183, 138, 105, 83),
}

# Every cell's training run: the defaults of DetectionTrainConfig (FCOS with a 64-channel FPN, 1000 steps of 16
# fresh 128-px canvases, AdamW 2e-3, warm-up + cosine; 500 validation canvases) on 2 threads.
TABLE_SCHEDULE = DetectionTrainConfig(threads=2)
SPEED_CLASSES = 80  # COCO's object classes: the heads' cost as in the paper's setting


def _check_names(levels: Sequence[str], rows: Sequence[str]) -> None:
    for level in levels:
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}; expected some of {LEVELS}")
    for row in rows:
        if row not in ROWS:
            raise ValueError(f"unknown row {row!r}; expected some of {ROWS}")


def backbone_madds(row: str, level: str) -> float:
    """The classification network's MAdds (millions) at 224x224, 1000 classes, of the cell's backbone: what the
    paper's level names count. Raises ``ValueError`` for an unknown row or level."""
    from mobilezoo.complexity import profile
    from mobilezoo.registry import create_model

    _check_names([level], [row])
    cell = CELLS[row][level]
    return profile(create_model(cell.model, **dict(cell.kwargs)), resolution=224).madds_m


def cell_config(
    row: str, level: str, seed: int = 0, schedule: DetectionTrainConfig = TABLE_SCHEDULE
) -> DetectionTrainConfig:
    """The training config of one cell: ``schedule`` with the cell's backbone and ``seed``."""
    _check_names([level], [row])
    cell = CELLS[row][level]
    return replace(schedule, backbone=cell.model, backbone_kwargs=dict(cell.kwargs), seed=seed)


def _key(row: str, level: str, seed: int) -> str:
    return f"{row} | {level} | seed {seed}"


def _schedule_dict(schedule: DetectionTrainConfig) -> dict[str, Any]:
    out = schedule.to_dict()
    for cell_field in ("backbone", "backbone_kwargs", "seed", "threads"):
        out.pop(cell_field)
    return out


def load_results(path: str | Path) -> dict[str, Any]:
    """A results file written by :func:`run_table` (``{"schedule", "cells", "speed", "env"}``); raises
    ``FileNotFoundError`` or ``ValueError`` (not JSON, or not a table's results) naming the file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no detection table results at {str(p)!r}; run `mobilezoo detect table` first"
        ) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(p)!r} is not JSON ({e.msg} at line {e.lineno}); expected run_table's results") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), dict) or "schedule" not in data:
        raise ValueError(f"{str(p)!r} holds no detection table results (expected keys 'schedule' and 'cells')")
    return data


def machine() -> dict[str, Any]:
    """The machine a figure was measured on: :func:`~mobilezoo.benchmark.environment.environment` (CPU, versions,
    threads), the CPU's features, and the load average at the time."""
    import os

    from mobilezoo.benchmark.environment import environment
    from mobilezoo.machine import cpu_info

    cpu = cpu_info()
    return {
        **environment("cpu"),
        "cpu_summary": cpu.summary(),
        "cpu_features": cpu.to_dict(),
        "load_average": list(os.getloadavg()),
    }


def _write(path: Path, data: dict[str, Any]) -> None:
    from mobilezoo.train.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def run_table(
    path: str | Path,
    *,
    levels: Sequence[str] = ("40M", "140M"),
    rows: Sequence[str] = ROWS,
    seeds: Sequence[int] = (0,),
    schedule: DetectionTrainConfig = TABLE_SCHEDULE,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and score every missing cell (``rows`` x ``levels`` x ``seeds``) with ``schedule``; resumable.

    Results go to ``path`` (JSON, rewritten atomically after each cell): per cell the backbone, its MAdds at 224,
    the COCO metrics on the validation canvases, training seconds and images/s, and the loss history. Cells already in
    the file are kept, not re-trained. Raises ``ValueError`` for an unknown level/row or when the file was written
    with another schedule (naming the first differing field), and what :func:`train_detector` raises.
    """
    _check_names(levels, rows)
    p = Path(path)
    want = _schedule_dict(schedule)
    data = load_results(p) if p.exists() else {"schedule": want, "cells": {}, "speed": {}, "env": {}}
    if data["schedule"] != want:
        diff = next(k for k in sorted(set(want) | set(data["schedule"])) if want.get(k) != data["schedule"].get(k))
        raise ValueError(
            f"{str(p)!r} was trained with {diff}={data['schedule'].get(diff)!r}, this run has {want.get(diff)!r}; "
            "use another results file"
        )
    for level in levels:
        for row in rows:
            for seed in seeds:
                key = _key(row, level, seed)
                if key in data["cells"]:
                    continue
                cfg = cell_config(row, level, seed, schedule)
                if progress is not None:
                    progress(f"training {key}: {CELLS[row][level].label}")
                result = train_detector(cfg, log_every=100)
                data["cells"][key] = {
                    "row": row,
                    "level": level,
                    "seed": seed,
                    "backbone": CELLS[row][level].label,
                    "backbone_madds_m_224": round(backbone_madds(row, level), 2),
                    "metrics": result.metrics.to_dict(),
                    "train_s": round(result.train_s, 1),
                    "eval_s": round(result.eval_s, 1),
                    "images_seen": result.images_seen,
                    "history": result.history,
                    "env": machine(),
                }
                _write(p, data)
                if progress is not None:
                    progress(f"done {key}: AP {result.metrics.AP:.3f} in {result.train_s:.0f} s")
    return data


@dataclass(frozen=True)
class SpeedCell:
    """Images/s of one detector on one backbone at ``height`` x ``width``, batch ``batch_size``."""

    detector: str
    row: str
    level: str
    backbone: str
    images_per_s: float
    median_ms: float
    samples_ms: tuple[float, ...]
    noisy: bool
    noise: str
    threads: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["samples_ms"] = [round(s, 2) for s in self.samples_ms]
        return out


def measure_speed(
    *,
    levels: Sequence[str] = LEVELS,
    rows: Sequence[str] = ROWS,
    detector: str = "light_head_rcnn",
    height: int = 800,
    width: int = 1200,
    batch_size: int = 4,
    threads: int | None = None,
    warmup: int = 1,
    iters: int = 5,
    remeasure: int = 1,
) -> list[SpeedCell]:
    """Time ``detector`` (randomly initialised, eval mode, :data:`SPEED_CLASSES` classes, 3-channel input) on each
    cell's backbone: one batch of ``batch_size`` images of ``height`` x ``width`` per call, through the whole model
    (torchvision's normalisation, heads and post-processing included, as the paper's speed column). The rows of one
    level are timed interleaved (one call each per round); a level whose timings stay disturbed is flagged ``noisy``.
    Images/s = ``batch_size`` / median seconds. Raises ``ValueError`` for an unknown level/row/detector or bad size.
    """
    from mobilezoo.benchmark.harness import fixed_threads, time_interleaved
    from mobilezoo.detection.detectors import DETECTORS, create_detector

    _check_names(levels, rows)
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; expected one of {DETECTORS}")
    for name, value in (("height", height), ("width", width), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    short, long = min(height, width), max(height, width)
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, height, width, generator=gen) for _ in range(batch_size)]
    out: list[SpeedCell] = []
    n_threads = threads or torch.get_num_threads()
    with fixed_threads(n_threads):
        for level in levels:
            models = []
            for row in rows:
                cell = CELLS[row][level]
                torch.manual_seed(0)
                model = create_detector(
                    detector,
                    cell.model,
                    num_classes=SPEED_CLASSES,
                    in_chans=3,
                    image_size=short,
                    max_size=long,
                    backbone_kwargs=dict(cell.kwargs),
                ).eval()
                models.append(model)

            def call(m: torch.nn.Module) -> Callable[[], Any]:
                return lambda: m(images)

            with torch.inference_mode():
                timed = time_interleaved([call(m) for m in models], warmup=warmup, iters=iters, remeasure=remeasure)
            for row, (samples, noise) in zip(rows, timed):
                median = statistics.median(samples)
                out.append(
                    SpeedCell(
                        detector=detector,
                        row=row,
                        level=level,
                        backbone=CELLS[row][level].label,
                        images_per_s=batch_size / (median / 1e3) if median > 0 else math.inf,
                        median_ms=median,
                        samples_ms=tuple(samples),
                        noisy=noise.noisy,
                        noise=noise.summary(),
                        threads=n_threads,
                    )
                )
    return out


def speed_record(
    cells: Sequence[SpeedCell], *, height: int = 800, width: int = 1200, batch_size: int = 4
) -> dict[str, Any]:
    """What :func:`record_speed` stores: the cells, the protocol, and the machine (CPU, its features, versions)."""
    return {
        "protocol": {"height": height, "width": width, "batch_size": batch_size, "dtype": "float32", "init": "random"},
        "cells": [c.to_dict() for c in cells],
        "env": machine(),
    }


def record_speed(path: str | Path, detector: str, record: dict[str, Any]) -> dict[str, Any]:
    """Store ``record`` (from :func:`speed_record`) as ``detector``'s speed in the results file at ``path``: its cells
    replace those of the same row and level; the others stay, each with the machine it was measured on (``env``)."""
    p = Path(path)
    data = load_results(p)
    old = data.setdefault("speed", {}).get(detector, {})
    new_keys = {(c["row"], c["level"]) for c in record["cells"]}
    kept = [{"env": old.get("env", {}), **c} for c in old.get("cells", []) if (c["row"], c["level"]) not in new_keys]
    cells = [*kept, *({"env": record["env"], **c} for c in record["cells"])]
    order = {(row, level): i for i, (level, row) in enumerate(itertools.product(LEVELS, ROWS))}
    data["speed"][detector] = {**record, "cells": sorted(cells, key=lambda c: order[(c["row"], c["level"])])}
    _write(p, data)
    return data


@dataclass(frozen=True)
class TableRow:
    """One (row, level) line of Table 5-13: the measured figures beside the paper's.

    ``ap``: mean COCO AP@[.5:.95] over the seeds trained (``ap_seeds``), None when not trained. ``cpu_images_per_s``:
    the Light-Head R-CNN speed here (None: not measured); ``speed_source`` says whether it was measured in this run
    (``"now"``) or comes from the results file (``"committed"``).
    """

    row: str
    level: str
    backbone: str
    madds_m: float | None
    ap: float | None
    ap_seeds: tuple[float, ...]
    ap50: float | None
    paper_mmap: float
    cpu_images_per_s: float | None
    speed_noisy: bool
    speed_source: str
    speed_threads: int | None
    paper_gpu_images_per_s: int


@dataclass(frozen=True)
class Table513:
    """Table 5-13 as measured: rows, the largest seed-to-seed AP spread of any cell trained with several seeds (the
    resolution below which differences are ties), and where the figures came from."""

    rows: tuple[TableRow, ...]
    spread: float | None
    spread_cell: str
    schedule: dict[str, Any]
    train_env: dict[str, Any]
    speed_env: dict[str, Any]

    def order(self, level: str, what: str, tie: float = 0.0, among: str | None = None) -> str:
        """The rows of ``level`` from best to worst by ``what`` (``"ap"``, ``"paper_mmap"``, ``"cpu_images_per_s"``
        or ``"paper_gpu_images_per_s"``) as ``"A > B ~ C"``: ``~`` where neighbours differ by less than ``tie`` (the
        seed-to-seed spread: a tie), ``=`` where they are equal. Rows without that figure, or without ``among``'s,
        are left out."""
        rows = [r for r in self.rows if r.level == level and getattr(r, what) is not None]
        rows = sorted(
            (r for r in rows if among is None or getattr(r, among) is not None), key=lambda r: -getattr(r, what)
        )
        out = rows[0].row if rows else ""
        for prev, cur in itertools.pairwise(rows):
            gap = getattr(prev, what) - getattr(cur, what)
            out += (" = " if gap == 0 else " ~ " if gap < tie else " > ") + cur.row
        return out


def summarize(results: dict[str, Any], speed: Sequence[SpeedCell] = ()) -> Table513:
    """Table 5-13 from a results file's content (:func:`load_results`) and speed measured now (``speed``, replacing the
    committed speed of the same cells). Every row x level is listed; what was not measured is None."""
    cells = results.get("cells", {})
    committed = {
        (c["row"], c["level"]): c for c in results.get("speed", {}).get("light_head_rcnn", {}).get("cells", [])
    }
    fresh = {(c.row, c.level): c for c in speed if c.detector == "light_head_rcnn"}
    rows, spread, spread_cell = [], None, ""
    for level_i, level in enumerate(LEVELS):
        for row in ROWS:
            runs = [c for c in cells.values() if c["row"] == row and c["level"] == level]
            aps = tuple(
                c["metrics"]["AP"] for c in sorted(runs, key=lambda c: c["seed"]) if c["metrics"]["AP"] is not None
            )
            ap50s = [c["metrics"]["AP50"] for c in runs if c["metrics"]["AP50"] is not None]
            if len(aps) > 1 and (spread is None or max(aps) - min(aps) > spread):
                spread, spread_cell = max(aps) - min(aps), f"{row} at {level} ({len(aps)} seeds)"
            if (row, level) in fresh:
                f = fresh[(row, level)]
                fps, noisy, source, n_threads = f.images_per_s, f.noisy, "now", f.threads
            elif (row, level) in committed:
                c = committed[(row, level)]
                fps, noisy, source, n_threads = c["images_per_s"], c["noisy"], "committed", c.get("threads")
            else:
                fps, noisy, source, n_threads = None, False, "not measured", None
            rows.append(
                TableRow(
                    row=row,
                    level=level,
                    backbone=CELLS[row][level].label,
                    madds_m=runs[0]["backbone_madds_m_224"] if runs else None,
                    ap=statistics.fmean(aps) if aps else None,
                    ap_seeds=aps,
                    ap50=statistics.fmean(ap50s) if ap50s else None,
                    paper_mmap=PAPER_MMAP[row][level_i],
                    cpu_images_per_s=fps,
                    speed_noisy=noisy,
                    speed_source=source,
                    speed_threads=n_threads,
                    paper_gpu_images_per_s=PAPER_GPU_FPS[row][level_i],
                )
            )
    train_env = next(iter(cells.values()))["env"] if cells else {}
    speed_env = results.get("speed", {}).get("light_head_rcnn", {}).get("env", {})
    return Table513(tuple(rows), spread, spread_cell, results.get("schedule", {}), train_env, speed_env)


__all__ = [
    "CELLS",
    "LEVELS",
    "PAPER_GPU_FPS",
    "PAPER_MMAP",
    "RESULTS",
    "ROWS",
    "SPEED_CLASSES",
    "TABLE_SCHEDULE",
    "Cell",
    "SpeedCell",
    "Table513",
    "TableRow",
    "backbone_madds",
    "cell_config",
    "load_results",
    "measure_speed",
    "record_speed",
    "run_table",
    "speed_record",
    "summarize",
]
