"""The exporter policy, measured: does torch's dynamo ONNX exporter give ONNX Runtime a faster graph than the
TorchScript-based one that :func:`mobilezoo.deploy.export_onnx` uses by default?

For each model, both exports (TorchScript-based at opset 17, dynamo at opset 18; both parity-checked by the exporter)
run in ONNX Runtime (all graph optimizations, 2 threads, spinning ``during-run`` so neither session steals the other's
cores) and are timed interleaved, call by call, at batch 1 and 32, 224 px. Also recorded: each export's wall time and
file size. Written with the machine, its CPU features and the versions: results/exporters.json.

    .venv/bin/python benchmarks/exporters.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mobilezoo import create_model
from mobilezoo.benchmark.harness import time_interleaved
from mobilezoo.deploy import export_onnx
from mobilezoo.deploy.sessions import onnx_session
from mobilezoo.detection.table import machine

MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2_x1_0",
          "shufflenet_v1_g3_x1_0")  # fmt: skip
OUT = Path(__file__).parent / "results" / "exporters.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = create_model(name).eval()
            files, export_s, sizes = {}, {}, {}
            for exporter, opset in (("torchscript", 17), ("dynamo", 18)):
                t0 = time.perf_counter()
                result = export_onnx(
                    model, Path(tmp) / f"{name}-{exporter}.onnx", opset=opset, dynamo=exporter == "dynamo"
                )
                export_s[exporter] = round(time.perf_counter() - t0, 2)
                files[exporter], sizes[exporter] = result.path, result.size_bytes
            for batch in args.batches:
                x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
                sessions = {e: onnx_session(f, args.threads, spin="during-run") for e, f in files.items()}

                def call(s, x=x):
                    feed = {s.get_inputs()[0].name: x}
                    return lambda: s.run(None, feed)

                iters = args.iters if batch == 1 else max(args.iters // 4, 5)
                timed = time_interleaved([call(s) for s in sessions.values()], warmup=3, iters=iters)
                (ts, ts_noise), (dy, dy_noise) = timed
                ratios = [d / t for t, d in zip(ts, dy)]
                row = {
                    "model": name,
                    "batch": batch,
                    "torchscript_ms": round(statistics.median(ts), 3),
                    "dynamo_ms": round(statistics.median(dy), 3),
                    "dynamo_over_torchscript": round(statistics.median(ratios), 3),
                    "ratio_p10_p90": [round(float(np.percentile(ratios, q)), 3) for q in (10, 90)],
                    "noisy": ts_noise.noisy or dy_noise.noisy,
                    "export_s": export_s,
                    "size_bytes": sizes,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    record = {"rows": rows, "threads": args.threads, "env": machine()}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
