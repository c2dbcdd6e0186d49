"""Table 5-13 (the ShuffleNet V2 paper's Table 7) measured here: mAP per backbone and level, then speed.

Trains every missing cell of :func:`mobilezoo.detection.table.run_table` (resumable: re-run it after an interruption)
and times the paper's detector (Light-Head R-CNN, random weights, 800x1200, batch 4) on every level's backbones,
interleaved per level. Results, with the machine, its CPU features and the versions: results/detection_table.json
(what ``mobilezoo report`` renders).

    .venv/bin/python benchmarks/detection_table.py                          # 40M and 140M levels, then speed
    .venv/bin/python benchmarks/detection_table.py --levels 40M 140M 300M   # more levels (about 8-15 min a cell)
    .venv/bin/python benchmarks/detection_table.py --spread-seeds 1         # a second seed of ShuffleNet v2 40M
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from mobilezoo.detection.table import (
    LEVELS,
    ROWS,
    TABLE_SCHEDULE,
    measure_speed,
    record_speed,
    run_table,
    speed_record,
)

OUT = Path(__file__).parent / "results" / "detection_table.json"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--levels", nargs="+", default=["40M", "140M"], choices=LEVELS)
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="train only these rows")
    ap.add_argument("--spread-seeds", type=int, nargs="*", default=[1], help="extra seeds of ShuffleNet v2 at 40M")
    ap.add_argument("--speed-levels", nargs="*", default=list(LEVELS), choices=LEVELS)
    ap.add_argument("--speed-iters", type=int, default=5)
    ap.add_argument("--no-train", action="store_true", help="only (re-)measure speed")
    ap.add_argument(
        "--threads", type=int, default=2, help="torch threads for training (1 trains faster on a busy machine)"
    )
    args = ap.parse_args(argv)
    if not args.no_train:
        schedule = replace(TABLE_SCHEDULE, threads=args.threads)
        run_table(args.out, levels=args.levels, rows=args.rows, seeds=(0,), schedule=schedule, progress=log)
        if args.spread_seeds:
            run_table(
                args.out,
                levels=["40M"],
                rows=["ShuffleNet v2"],
                seeds=args.spread_seeds,
                schedule=schedule,
                progress=log,
            )
    if args.speed_levels:
        log(f"speed: light_head_rcnn at 800x1200, batch 4, levels {args.speed_levels}")
        cells = measure_speed(levels=args.speed_levels, detector="light_head_rcnn", iters=args.speed_iters, threads=2)
        for c in cells:
            log(f"{c.level} {c.row}: {c.images_per_s:.2f} images/s ({c.noise})")
        record_speed(args.out, "light_head_rcnn", speed_record(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
