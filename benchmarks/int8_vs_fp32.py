"""int8 vs fp32 ONNX Runtime throughput, measured side by side, and int8 accuracy deltas on the built-in digits.

Speed: each model is exported at 224x224 (random weights: speed does not depend on them), quantized with
:func:`mobilezoo.deploy.quantize` (calibrated on random inputs: the speed of int8 kernels does not depend on the
scales), and the fp32 and int8 sessions are timed A/B interleaved (one call of each in turn), so that load on the
machine hits both alike. Accuracy: each model is trained briefly on the built-in digits (32x32, ``in_chans=1``),
quantized with 256 calibration images, and fp32 and int8 top-1 are compared on 600 validation images.

    .venv/bin/python benchmarks/int8_vs_fp32.py                      # writes benchmarks/results/int8_vs_fp32.json
    .venv/bin/python benchmarks/int8_vs_fp32.py --models mobilenet_v3_large --batches 1 --no-accuracy
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilezoo import create_model
from mobilezoo.deploy import compare_accuracy, export_onnx, onnx_session, quantize
from mobilezoo.deploy.calibration import random_batches

MODELS = (
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "shufflenet_v1_g3_x1_0",
    "shufflenet_v2_x1_0",
)
# extra int8 variants timed for MobileNetV3, to show what the default policy changes
V3_VARIANTS = {
    "int8-all-quantized": {"exclude": None},
    "int8-8bit-weights": {"reduce_range": False},
    "int8-qoperator": {"quant_format": "qoperator"},
}


def machine() -> dict:
    cpu = platform.processor()
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = next(line for line in text.splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "vnni": "avx512_vnni" in flags or "avx_vnni" in flags,
        "avx2": "avx2" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": version("onnxruntime"),
        "onnx": version("onnx"),
        "loadavg_start": os.getloadavg(),
    }


def time_interleaved(paths: dict[str, Path], batch: int, threads: int, warmup: int, iters: int) -> dict:
    sessions = {k: onnx_session(p, threads) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, {"input": x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(iters):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {"input": x})
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["fp32"])
    out = {}
    for k, ts in times.items():
        med = statistics.median(ts)
        out[k] = {
            "median_ms": round(1e3 * med, 3),
            "p90_ms": round(1e3 * float(np.percentile(ts, 90)), 3),
            "throughput_img_s": round(batch / med, 2),
            "speedup_vs_fp32": round(base / med, 3),
        }
    return out


def speed(name: str, batches: list[int], threads: int, warmup: int, iters: int, tmp: Path) -> dict:
    model = create_model(name).eval()
    fp32 = export_onnx(model, tmp / f"{name}.onnx", resolution=224)
    cal = random_batches(3, (224, 224), num_images=32, batch_size=8)
    q = quantize(fp32.path, cal, out_path=tmp / f"{name}.int8.onnx")
    paths = {"fp32": fp32.path, "int8": q.path}
    if name.startswith("mobilenet_v3"):
        for label, kw in V3_VARIANTS.items():
            paths[label] = quantize(fp32.path, cal, out_path=tmp / f"{name}.{label}.onnx", **kw).path
    result = {
        "nodes_kept_float": list(q.nodes_kept_float),
        "fp32_mb": round(fp32.size_bytes / 1e6, 2),
        "int8_mb": round(q.size_bytes / 1e6, 2),
    }
    for b in batches:
        result[f"batch_{b}"] = time_interleaved(paths, b, threads, warmup, iters)
        print(name, b, json.dumps(result[f"batch_{b}"]), flush=True)
    return result


def _digits(split: str, n: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    from mobilezoo.data import BUILTIN_MEAN, BUILTIN_STD, BuiltinDigits

    d = BuiltinDigits(split)
    x = (torch.from_numpy(d.images[offset : offset + n]).float() / 255 - BUILTIN_MEAN[0]) / BUILTIN_STD[0]
    x = nn.functional.pad(x, (2, 2, 2, 2), value=-BUILTIN_MEAN[0] / BUILTIN_STD[0]).unsqueeze(1)
    return x, torch.tensor(d.targets[offset : offset + n])


def accuracy(name: str, steps: int, tmp: Path) -> dict:
    """Train briefly on the digits (as tests/test_deploy.py does), then fp32 vs int8 top-1 on 600 val images."""
    torch.manual_seed(0)
    x, y = _digits("train", 2000)
    model = create_model(name, num_classes=10, in_chans=1, drop_rate=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for i in range(0, 512, 128):
            model(x[i : i + 128])
    model.eval()
    cal_x, _ = _digits("train", 256, offset=2000)
    cal = [cal_x[i : i + 64] for i in range(0, 256, 64)]
    xv, yv = _digits("val", 600)
    val = [(xv[i : i + 200], yv[i : i + 200]) for i in range(0, 600, 200)]
    out = {}
    for label, kw in {
        "int8": {},
        "int8-all-quantized": {"exclude": None},
        "int8-8bit-weights": {"reduce_range": False},
    }.items():
        q = quantize(model, cal, out_path=tmp / f"{name}.acc.{label}.onnx", resolution=32, **kw)
        out[label] = compare_accuracy(q.fp32_path, q.path, val).to_dict()
    print(name, "accuracy", json.dumps(out), flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--batches", nargs="*", type=int, default=[1, 32])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=15)
    p.add_argument("--steps", type=int, default=80, help="training steps for the accuracy comparison")
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "int8_vs_fp32.json"))
    args = p.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    report = {
        "what": "ONNX Runtime CPU, fp32 vs static int8 (QDQ, per-channel, 7-bit weights, first conv and classifier "
        "float); 224x224 input; A/B interleaved calls; accuracy on the built-in digits at 32x32",
        "machine": machine(),
        "threads": args.threads,
        "resolution": 224,
        "iters": args.iters,
        "warmup": args.warmup,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            entry = speed(name, args.batches, args.threads, args.warmup, args.iters, Path(tmp))
            if not args.no_accuracy:
                entry["accuracy_digits32"] = accuracy(name, args.steps, Path(tmp))
            report["models"][name] = entry
            report["machine"]["loadavg_end"] = os.getloadavg()
            Path(args.out).write_text(json.dumps(report, indent=2))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
