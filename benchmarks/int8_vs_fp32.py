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
from mobilezoo.policies import FAIR_SPIN

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
    "int8-no-float-stem": {"exclude": None},
    "int8-no-rewrites": {"rewrites": ()},
    "int8-all-quantized": {"exclude": None, "rewrites": ("avgpool-as-conv", "uint8-hardsigmoid")},  # logits rounded too
    "int8-float-classifier": {"exclude": ["float-stem-if-faster", "last-gemm"]},  # the default before 2026-12-01
    "int8-first-last-float": {"exclude": ["first-conv", "last-gemm"]},
    "int8-8bit-weights": {"reduce_range": False},
    "int8-7bit-weights": {"reduce_range": True},  # the default without VNNI/AMX; with them the 8-bit one is
}
SPEED_VARIANTS = ("int8", "int8-no-float-stem", "int8-no-rewrites", "int8-all-quantized", "int8-float-classifier",
                  "int8-first-last-float")  # fmt: skip
STREAMED = ("fp32", "int8")  # also timed as a StreamedSession (batch split over the threads) at batch > 1


def time_side_by_side(
    paths: dict[str, Path], batch: int, threads: int, rounds: int, iters: int, streams: bool = True
) -> dict:
    """Median ms per call and median paired speed-up over fp32 for each session, ``rounds`` x ``iters`` calls each.

    At batch > 1 the STREAMED models are also timed as ``<name>@streams`` (the batch split into one slice per
    thread, :func:`mobilezoo.deploy.onnx_session` with ``streams=threads``), and ``best`` pairs fp32 and int8 each run
    the way (one call with all threads, or streams) that has the lower median.
    """
    sessions = {k: onnx_session(p, threads, spin=FAIR_SPIN) for k, p in paths.items()}
    if streams and batch > 1 and threads > 1:
        sessions |= {f"{k}@streams": onnx_session(paths[k], threads, streams=threads, spin=FAIR_SPIN) for k in STREAMED}
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    for s in sessions.values():
        for _ in range(3):
            s.run(None, {"input": x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for _ in range(iters):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, {"input": x})
                times[k].append(time.perf_counter() - t)

    def paired(ref: str, key: str) -> tuple[float, list[float]]:
        ratios = [f / v for f, v in zip(times[ref], times[key])]
        per_round = [round(statistics.median(ratios[r * iters : (r + 1) * iters]), 3) for r in range(rounds)]
        return round(statistics.median(ratios), 3), per_round

    out: dict = {}
    for k, ts in times.items():
        speedup, per_round = paired("fp32", k)
        out[k] = {
            "median_ms": round(1e3 * statistics.median(ts), 3),
            "p90_ms": round(1e3 * float(np.percentile(ts, 90)), 3),
            "throughput_img_s": round(batch / statistics.median(ts), 2),
            "speedup_vs_fp32": speedup,
            "speedup_per_round": per_round,
        }
    best = {k: min((k, f"{k}@streams"), key=lambda n: out[n]["median_ms"] if n in out else float("inf"))
            for k in STREAMED}  # fmt: skip
    speedup, per_round = paired(best["fp32"], best["int8"])
    out["best"] = {"fp32": best["fp32"], "int8": best["int8"], "speedup": speedup, "speedup_per_round": per_round}
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
        # the headline pair alone: every extra session alternating with them evicts their weights from the caches
        # (ShuffleNet V1 at batch 1: fp32 4.0 ms next to int8 alone, 6.0 ms with one more session alternating)
        head = time_side_by_side({k: paths[k] for k in ("fp32", "int8")}, b, args.threads, args.rounds, iters)
        result[f"batch_{b}"] = head
        if args.variants:
            result[f"batch_{b}_variants"] = time_side_by_side(paths, b, args.threads, args.rounds, iters, streams=False)
        print(
            name,
            b,
            {k: v["speedup_vs_fp32"] for k, v in head.items() if k != "best"},
            "best:",
            head["best"],
            flush=True,
        )
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
        "Speed-up = median over calls of fp32 time / int8 time, paired call by call (above 1: int8 faster). `int8` is",
        "`quantize()`'s defaults: everything quantized but the logits (the classifier's output, left unrounded),",
        "MobileNetV3's stem and first block kept in float where this machine's policy says so, mobilezoo's graph",
        "rewrites. The other columns change one thing: `no-float-stem` quantizes MobileNetV3's stem too, `no-rewrites`",
        "skips the rewrites, `all-quantized` quantizes everything and rounds the logits too, `float-classifier` keeps",
        "the classifier in float, and `first-last-float` keeps only the first conv and the classifier in float.",
        "",
        f"fp32 and int8 alternate call by call on their own, each call with {threads}; the variant columns come",
        "from a second pass in which fp32 and all variants alternate (more sessions evict each other's weights from",
        "the caches, so its times are longer and its ratios not those of the first pass).",
        "",
        "| model | batch | fp32 ms | int8 ms | int8 speed-up | per round | 2nd pass: int8 | no-float-stem | no-rewrites "
        "| all-quantized | float-classifier | first-last-float |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    streamed = []
    for name, entry in report["models"].items():
        for b in [k[6:] for k in entry if k.startswith("batch_") and not k.endswith("_variants")]:
            cell, variants = entry[f"batch_{b}"], entry.get(f"batch_{b}_variants", {})
            lines.append(
                f"| {name} | {b} | {cell['fp32']['median_ms']:.2f} | {cell['int8']['median_ms']:.2f} | "
                f"**{cell['int8']['speedup_vs_fp32']:.2f}** | {', '.join(f'{r:.2f}' for r in cell['int8']['speedup_per_round'])} | "
                + " | ".join(f"{variants[v]['speedup_vs_fp32']:.2f}" if v in variants else "-" for v in SPEED_VARIANTS)
                + " |"
            )
            if "fp32@streams" in cell:
                best = cell["best"]
                streamed.append(
                    f"| {name} | {b} | {cell['fp32']['median_ms']:.2f} | {cell['fp32@streams']['median_ms']:.2f} | "
                    f"{cell['int8']['median_ms']:.2f} | {cell['int8@streams']['median_ms']:.2f} | {best['fp32']} vs "
                    f"{best['int8']} | **{best['speedup']:.2f}** | {', '.join(f'{r:.2f}' for r in best['speedup_per_round'])} |"
                )
    if streamed:
        lines += [
            "",
            f"At batch > 1 a batch can also be split into {report['threads']} slices run at once with one thread each",
            "(`onnx_session(..., streams=threads)`): ONNX Runtime's int8 convs parallelize only inside an image.",
            "The speed-up pairs fp32 and int8 each run the faster way (lower median):",
            "",
            "| model | batch | fp32 ms | fp32 ms, streams | int8 ms | int8 ms, streams | faster ways | int8 speed-up | per round |",
            "|---|---|---|---|---|---|---|---|---|",
            *streamed,
        ]
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
    p.add_argument("--no-variants", dest="variants", action="store_false", help="time fp32 and int8 only")
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
