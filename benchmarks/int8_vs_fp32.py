"""int8 vs fp32 ONNX Runtime speed, measured side by side, and the int8 accuracy cost on the built-in digits.

Speed: each model is exported at 224x224 with random weights (speed does not depend on them) and quantized with
:func:`mobilezoo.deploy.quantize`, calibrated on random inputs (int8 kernels run the same whatever the scales), with
the defaults and with variants that show what each choice is worth. All sessions of a model are timed call by call
in turn, ``rounds`` times over, with ONNX Runtime's thread spinning off (see :func:`mobilezoo.deploy.onnx_session`),
so that load on the machine hits them alike; a variant's speed-up is the median over calls of fp32 time / its time.

Accuracy: each model is trained with :func:`mobilezoo.train.train` on the built-in digits (32x32, 3 epochs), quantized
with 256 training images for calibration, and fp32 and int8 top-1 are compared on the 1,000 validation images.

    .venv/bin/python benchmarks/int8_vs_fp32.py          # writes results/int8_vs_fp32.json and .md
    .venv/bin/python benchmarks/int8_vs_fp32.py --models mobilenet_v3_small --batches 1 --no-accuracy --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from mobilezoo import create_model
from mobilezoo.benchmark.environment import environment
from mobilezoo.deploy import compare_accuracy, export_onnx, onnx_session, quantize
from mobilezoo.deploy.calibration import image_batches, labelled, random_batches

MODELS = (
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "shufflenet_v1_g3_x1_0",
    "shufflenet_v2_x1_0",
)
# what each departure from the defaults costs or gains; "int8" is quantize()'s defaults
VARIANTS: dict[str, dict] = {
    "int8": {},
    "int8-no-rewrites": {"rewrites": ()},
    "int8-all-quantized": {"exclude": None},
    "int8-first-last-float": {"exclude": ["first-conv", "last-gemm"]},
    "int8-8bit-weights": {"reduce_range": False},
}
SPEED_VARIANTS = ("int8", "int8-no-rewrites", "int8-all-quantized", "int8-first-last-float")


def time_side_by_side(paths: dict[str, Path], batch: int, threads: int, rounds: int, iters: int) -> dict:
    """Median ms per call and median paired speed-up over fp32 for each session, ``rounds`` x ``iters`` calls each."""
    sessions = {k: onnx_session(p, threads) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    for s in sessions.values():
        for _ in range(3):
            s.run(None, {"input": x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    round_speedups: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        start = len(times["fp32"])
        for _ in range(iters):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, {"input": x})
                times[k].append(time.perf_counter() - t)
        for k in sessions:
            pairs = zip(times["fp32"][start:], times[k][start:])
            round_speedups[k].append(round(statistics.median(f / v for f, v in pairs), 3))
    out = {}
    for k, ts in times.items():
        out[k] = {
            "median_ms": round(1e3 * statistics.median(ts), 3),
            "p90_ms": round(1e3 * float(np.percentile(ts, 90)), 3),
            "throughput_img_s": round(batch / statistics.median(ts), 2),
            "speedup_vs_fp32": round(statistics.median(f / v for f, v in zip(times["fp32"], ts)), 3),
            "speedup_per_round": round_speedups[k],
        }
    return out


def speed(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    fp32 = export_onnx(create_model(name).eval(), tmp / f"{name}.onnx", resolution=224)
    cal = random_batches(3, (224, 224), num_images=32, batch_size=8)
    paths, result = {"fp32": fp32.path}, {"fp32_mb": round(fp32.size_bytes / 1e6, 2), "variants": {}}
    for label in SPEED_VARIANTS:
        q = quantize(fp32.path, cal, out_path=tmp / f"{name}.{label}.onnx", **VARIANTS[label])
        paths[label] = q.path
        result["variants"][label] = {
            "options": VARIANTS[label],
            "rewrites": q.rewrites,
            "nodes_kept_float": list(q.nodes_kept_float),
            "int8_mb": round(q.size_bytes / 1e6, 2),
        }
    for b in args.batches:
        iters = args.iters if b == 1 else max(3, args.iters // 6)
        result[f"batch_{b}"] = time_side_by_side(paths, b, args.threads, args.rounds, iters)
        print(name, b, {k: v["speedup_vs_fp32"] for k, v in result[f"batch_{b}"].items()}, flush=True)
    return result


def accuracy(name: str, epochs: int, tmp: Path) -> dict:
    """Train on the digits with the library's engine, then fp32 vs int8 top-1 on the 1,000 validation images."""
    from mobilezoo.train import TrainConfig, train

    run = train(TrainConfig(model=name, epochs=epochs, img_size=32, device="cpu"))
    calibration = list(labelled(image_batches("builtin", in_chans=1, resolution=32, num_images=256, batch_size=64)))
    val = list(labelled(image_batches("builtin", split="val", in_chans=1, resolution=32, num_images=None)))
    out: dict = {"trained_top1": run.last["val_top1"], "train_s": round(run.wall_s, 1)}
    for label, kw in VARIANTS.items():
        q = quantize(run.model, calibration, out_path=tmp / f"{name}.acc.{label}.onnx", resolution=32, **kw)
        out[label] = compare_accuracy(q.fp32_path, q.path, val).to_dict()
    print(name, "accuracy", json.dumps(out), flush=True)
    return out


def markdown(report: dict, json_name: str) -> str:
    env = report["environment"]
    threads = f"{report['threads']} thread" + ("s" if report["threads"] > 1 else "")
    lines = [
        "# int8 vs fp32 on ONNX Runtime",
        "",
        f"Written by `benchmarks/int8_vs_fp32.py` ({report['date']}); raw figures in `{json_name}`.",
        f"Machine: {env.get('cpu')}, {env.get('logical_cpus')} logical cpus, VNNI: {report['vnni']}; "
        f"onnxruntime {env.get('onnxruntime')}, {threads}, 224x224, "
        f"{report['rounds']} rounds side by side; load average {report['loadavg_start']} -> {report['loadavg_end']}.",
        "",
        "Speed-up = median over calls of fp32 time / int8 time (above 1: int8 faster). `int8` is `quantize()`'s",
        "defaults (everything but the classifier quantized, mobilezoo's graph rewrites); `no-rewrites` skips the",
        "rewrites; `all-quantized` quantizes the classifier too; `first-last-float` also keeps the first conv in float.",
        "",
        "| model | batch | fp32 ms | int8 ms | int8 speed-up | per round | no-rewrites | all-quantized | first-last-float |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["models"].items():
        for key in [k for k in entry if k.startswith("batch_")]:
            cell = entry[key]
            lines.append(
                f"| {name} | {key[6:]} | {cell['fp32']['median_ms']:.2f} | {cell['int8']['median_ms']:.2f} | "
                f"**{cell['int8']['speedup_vs_fp32']:.2f}** | {', '.join(f'{r:.2f}' for r in cell['int8']['speedup_per_round'])} | "
                + " | ".join(f"{cell[v]['speedup_vs_fp32']:.2f}" for v in SPEED_VARIANTS[1:])
                + " |"
            )
    accuracy_rows = [(n, e["accuracy_digits32"]) for n, e in report["models"].items() if "accuracy_digits32" in e]
    if accuracy_rows:
        lines += [
            "",
            "Accuracy on the built-in digits (1,000 validation images, 32x32, models trained 3 epochs with the library's",
            "engine): fp32 top-1, then int8 top-1 delta and top-1 agreement with fp32 for each variant.",
            "",
            "| model | fp32 top-1 | " + " | ".join(VARIANTS) + " |",
            "|---|---|" + "---|" * len(VARIANTS),
        ]
        for name, acc in accuracy_rows:
            cells = [f"{acc[v]['delta']:+.1f} / {acc[v]['agreement']:.1f}%" for v in VARIANTS]
            lines.append(f"| {name} | {acc['int8']['top1_reference']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--batches", nargs="*", type=int, default=[1, 32])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=30, help="calls per round at batch 1 (a sixth of it at larger batches)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs for the accuracy comparison")
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "int8_vs_fp32.json"))
    args = p.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    report = {
        "what": "ONNX Runtime CPU, fp32 vs static int8 (QDQ, per-channel, 7-bit weights) at 224x224, side by side; "
        "accuracy on the built-in digits at 32x32",
        "environment": environment(),
        "vnni": "avx512_vnni" in flags or "avx_vnni" in flags,
        "threads": args.threads,
        "rounds": args.rounds,
        "iters_batch_1": args.iters,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        "models": {},
    }
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            entry = speed(name, args, Path(tmp))
            if not args.no_accuracy:
                entry["accuracy_digits32"] = accuracy(name, args.epochs, Path(tmp))
            report["models"][name] = entry
            report["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
            out.write_text(json.dumps(report, indent=2))
            out.with_suffix(".md").write_text(markdown(report, out.name))
    print("wrote", out, "and", out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
