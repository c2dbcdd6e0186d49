"""Issue #16's convergence benchmark: FCOS on ``shufflenet_v2_x0_5`` trained from scratch on the built-in digit canvases,
then COCO AP on 500 validation canvases; the question is whether AP >= 0.5 within 5 minutes of training here.

The schedule is Table 5-13's (:data:`mobilezoo.detection.table.TABLE_SCHEDULE`: 1000 steps of 16 fresh 128-px canvases).
Written with the training time, the loss history, the machine, its CPU features and the versions:
results/detection_convergence.json. Run it on a quiet machine: the time is the claim.

    .venv/bin/python benchmarks/detection_convergence.py               # 2 threads
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from mobilezoo.benchmark.environment import environment
from mobilezoo.detection.table import TABLE_SCHEDULE
from mobilezoo.detection.train import train_detector
from mobilezoo.machine import cpu_info

OUT = Path(__file__).parent / "results" / "detection_convergence.json"
BUDGET_S = 300.0
TARGET_AP = 0.5


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backbone", default="shufflenet_v2_x0_5")
    args = ap.parse_args(argv)
    cfg = replace(TABLE_SCHEDULE, backbone=args.backbone, threads=args.threads)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result = train_detector(cfg, log_every=100)
    wall = time.perf_counter() - t0
    ap_value = result.metrics.AP
    record = {
        "config": result.config,
        "metrics": result.metrics.to_dict(),
        "train_s": round(result.train_s, 1),
        "eval_s": round(result.eval_s, 1),
        "wall_s": round(wall, 1),
        "budget_s": BUDGET_S,
        "target_ap": TARGET_AP,
        "met": bool(ap_value is not None and ap_value >= TARGET_AP and result.train_s <= BUDGET_S),
        "history": result.history,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "env": {**environment("cpu"), "cpu_summary": cpu_info().summary(), "cpu_features": cpu_info().to_dict()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    verdict = "meets" if record["met"] else "misses"
    print(f"AP {ap_value:.3f} (AP50 {result.metrics.AP50:.3f}) after {result.train_s:.0f} s of training: {verdict} "
          f"AP >= {TARGET_AP} within {BUDGET_S:.0f} s; {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
