"""Measure the acceptance matrix: 5 models x batch 1 and 32 x every backend, each against torchvision's same architecture.

Every cell runs ours and torchvision's model interleaved (one call each per round) in one process through
``mobilezoo.benchmark.compare`` and keeps both medians and the per-pair ratio. Results are saved after each cell to
``benchmarks/results/backends.json`` (a re-run skips cells already there, ``--force`` redoes them), and
``benchmarks/results/README.md`` is rewritten from the JSON with ``--table-only`` or at the end of a run.

    .venv/bin/python benchmarks/backends.py                        # the whole matrix
    .venv/bin/python benchmarks/backends.py --backends eager --models mobilenet_v2
    .venv/bin/python benchmarks/backends.py --table-only           # README.md from the saved JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from mobilezoo.benchmark import available_backends, benchmark, compare, environment
from mobilezoo.registry import model_card

RESULTS = Path(__file__).parent / "results"
MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2_x1_0")
BATCHES = (1, 32)
# (warmup, iters) per batch size: batch 32 costs seconds per call on 2 cores, so fewer calls there
CALLS = {1: (5, 30), 32: (2, 8)}
# compile last: it spends minutes compiling per model and batch size
ORDER = ("eager", "channels_last", "torchscript", "onnxruntime", "onnxruntime-int8", "openvino", "compile")


def key(model: str, backend: str, batch: int) -> str:
    return f"{model}|{backend}|{batch}"


def run_cell(model: str, backend: str, batch: int, threads: int, calls: tuple[int, int] | None = None) -> dict:
    warmup, iters = calls or CALLS.get(batch, (3, 10))
    kw = dict(backend=backend, batch_size=batch, threads=threads, warmup=warmup, iters=iters)
    start = time.perf_counter()
    if model_card(model).torchvision is None:
        r = benchmark(model, **kw)
        cell = {"ours": r.to_dict(), "reference": None, "median_ratio": None, "ratios": None}
    else:
        c = compare(model, **kw)
        cell = {"ours": c.ours.to_dict(), "reference": c.reference.to_dict(), "ratios": list(c.ratios)}
        cell["median_ratio"] = c.median_ratio
    for side in ("ours", "reference"):
        if cell[side]:
            cell[side].pop("env")  # one copy per cell below
    cell["env"] = c.ours.env if cell["reference"] else r.env
    cell["seconds"] = round(time.perf_counter() - start, 1)
    return cell


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")


def _calls(cells: dict) -> str:
    seen: dict[tuple[int, int, int], list[str]] = {}
    for k, c in cells.items():
        if "ours" in c:
            _model, backend, batch = k.split("|")
            seen.setdefault((int(batch), c["ours"]["warmup"], c["ours"]["iters"]), []).append(backend)
    parts = []
    for (b, w, n), backends in sorted(seen.items()):
        which = "" if len(seen) == len({x[0] for x in seen}) else f" ({', '.join(sorted(set(backends)))})"
        parts.append(f"batch {b}: {w}, {n}{which}")
    return "; ".join(parts)


def write_readme(data: dict, path: Path = RESULTS / "README.md") -> Path:
    cells = data["cells"]
    lines = [
        "# Backend benchmarks",
        "",
        "Written by `benchmarks/backends.py` from `backends.json` (raw samples, per-cell environment and load inside).",
        f"Machine: {data['env']['cpu']}, {data['env']['usable_cpus']} cpus; torch {data['env']['torch']}, "
        f"onnxruntime {data['env']['onnxruntime']}; {data['threads']} intra-op thread(s); 224x224, float32 input; "
        "random weights. Each cell runs mobilezoo's model and torchvision's same architecture interleaved "
        "in one process; *ratio* is the median over pairs of ours / torchvision latency (below 1: ours faster).",
        f"Calls per cell (warm-up, timed): {_calls(cells)}.",
        "Median latency per batch in ms. **bold** = fastest mobilezoo backend for that model and batch size.",
        "",
    ]
    if data.get("note"):
        lines += [data["note"], ""]
    backends = [b for b in ORDER if any(c.split("|")[1] == b for c in cells)]
    for batch in BATCHES:
        lines += [f"## Batch {batch}", ""]
        lines += ["| model | " + " | ".join(backends) + " | fastest | eager img/s |"]
        lines += ["|---" * (len(backends) + 3) + "|"]
        for model in MODELS:
            row = {b: cells.get(key(model, b, batch)) for b in backends}
            done = {b: c for b, c in row.items() if c and "error" not in c}
            if not done:
                continue
            best = min(done, key=lambda b: done[b]["ours"]["median_ms"])
            parts = []
            for b in backends:
                c = row[b]
                if c is None:
                    parts.append("not run")
                elif "error" in c:
                    parts.append("error")
                else:
                    s = fmt_ms(c["ours"]["median_ms"])
                    s = f"**{s}**" if b == best else s
                    if c["reference"]:
                        s += f" (tv {fmt_ms(c['reference']['median_ms'])}, ratio {c['median_ratio']:.2f})"
                    parts.append(s)
            eager = done.get("eager")
            tput = f"{eager['ours']['throughput']:.1f}" if eager else "-"
            lines.append(f"| {model} | " + " | ".join(parts) + f" | {best} | {tput} |")
        lines.append("")
    lines += ["## mobilezoo eager vs torchvision eager (acceptance: within ±10%)", ""]
    lines += ["| model | batch | ours ms | torchvision ms | paired median ratio | p10-p90 of ratios | within ±10% |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for batch in BATCHES:
        for model in MODELS:
            c = cells.get(key(model, "eager", batch))
            if c and c.get("reference"):
                lo, hi = (sorted(c["ratios"])[int(q * (len(c["ratios"]) - 1))] for q in (0.1, 0.9))
                ok = "yes" if abs(c["median_ratio"] - 1) <= 0.10 else "NO"
                lines.append(
                    f"| {model} | {batch} | {fmt_ms(c['ours']['median_ms'])} | {fmt_ms(c['reference']['median_ms'])} "
                    f"| {c['median_ratio']:.3f} | {lo:.2f}-{hi:.2f} | {ok} |"
                )
    loads = [c["env"]["load_average_1m"] for c in cells.values() if "env" in c and c["env"].get("load_average_1m")]
    if loads:
        lines += [
            "",
            f"The machine was shared while these ran: 1-minute load average {min(loads):.1f} to {max(loads):.1f} on "
            f"{data['env']['usable_cpus']} cpus (recorded per cell). Absolute times carry that load; the interleaved "
            "ratios are the figures to trust.",
        ]
    lines.append("")
    errors = [(k, c["error"]) for k, c in cells.items() if "error" in c]
    if errors:
        lines += ["## Errors", ""] + [f"- `{k}`: {e}" for k, e in errors] + [""]
    lines += [
        "mobilenet_v1 has no torchvision counterpart (torchvision ships no MobileNet V1): measured alone.",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--backends", default=",".join(b for b in ORDER if b in available_backends()))
    p.add_argument("--batch-sizes", default=",".join(map(str, BATCHES)))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "backends.json"))
    p.add_argument("--calls", default=None, metavar="WARMUP,ITERS", help="override the calls per cell")
    p.add_argument("--readme", default=str(RESULTS / "README.md"))
    p.add_argument("--force", action="store_true", help="re-measure cells already in the JSON")
    p.add_argument("--table-only", action="store_true", help="only rewrite README.md from the JSON")
    p.add_argument("--note", default=None, help="a line for the README (e.g. the machine's load)")
    args = p.parse_args(argv)
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {"cells": {}}
    if args.note:
        data["note"] = args.note
    if not args.table_only:
        data["threads"] = args.threads
        data["env"] = environment("cpu")
        data["calls"] = {str(b): list(v) for b, v in CALLS.items()}
        torch.manual_seed(0)
        for backend in args.backends.split(","):
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                for model in args.models.split(","):
                    k = key(model, backend, batch)
                    if k in data["cells"] and not args.force and "error" not in data["cells"][k]:
                        continue
                    print(f"{k} ...", end=" ", flush=True)
                    try:
                        calls = tuple(int(v) for v in args.calls.split(",")) if args.calls else None
                        data["cells"][k] = run_cell(model, backend, batch, args.threads, calls)
                        c = data["cells"][k]
                        print(f"ours {c['ours']['median_ms']:.2f} ms, ratio {c['median_ratio']}, {c['seconds']} s")
                    except (RuntimeError, ValueError, ImportError, OSError) as e:
                        data["cells"][k] = {"error": f"{type(e).__name__}: {e}"[:500]}
                        print(data["cells"][k]["error"])
                    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {write_readme(data, Path(args.readme))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
