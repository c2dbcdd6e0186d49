"""``mobilezoo bench`` (latency per backend, optionally against torchvision) and ``mobilezoo guidelines``."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from mobilezoo.cli._output import console, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure latency and throughput per backend on this machine")
    p.add_argument("models", nargs="*", help="registered model names (see `mobilezoo list`)")
    p.add_argument("--all", action="store_true", help="every registered model")
    p.add_argument(
        "--backend",
        default="eager",
        help="comma-separated: eager, channels_last, compile, torchscript, onnxruntime, onnxruntime-streams, "
        "onnxruntime-int8, onnxruntime-int8-streams, openvino, openvino-bf16, openvino-int8 ('-streams': the batch "
        "split over the threads); "
        "'all' for every available one; 'auto' measures them side by side and picks the fastest per model",
    )
    p.add_argument(
        "--precision",
        choices=["exact", "any"],
        default="exact",
        help="with --backend auto: 'exact' (fp32 outputs, the default) or 'any' (int8 and bf16 too, labelled)",
    )
    p.add_argument(
        "--fresh", action="store_true", help="with --backend auto: measure again instead of the cached choice"
    )
    p.add_argument("--batch-size", default="1", help="comma-separated batch sizes, e.g. 1,32")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's current setting)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (CUDA: PyTorch backends only)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first (at least 1)")
    p.add_argument("--iters", type=int, default=20, help="timed calls")
    p.add_argument("--vs", choices=["torchvision"], default=None, help="interleave torchvision's same architecture")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT", help="write JSON to OUT (or stdout)")
    p.add_argument("--plot", default=None, metavar="PNG", help="latency-vs-MAdds scatter plot")
    p.set_defaults(func=run_bench)

    g = sub.add_parser("guidelines", help="re-run the ShuffleNet V2 paper's G1-G4 experiments on this machine")
    g.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, as the paper's ARM runs)")
    g.add_argument("--batch-size", type=int, default=1, help="batch size (default 1, as the paper's ARM runs)")
    g.add_argument("--scales", default="1,2,4", help="channel multipliers to run, from 1,2,4 (the paper's x1/x2/x4)")
    g.add_argument("--warmup", type=int, default=3)
    g.add_argument("--iters", type=int, default=20)
    g.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT", help="write JSON to OUT (or stdout)")
    g.set_defaults(func=run_guidelines_cmd)


def _write_json(obj: dict, dest: str) -> None:
    if dest == "-":
        print_json(obj)
        return
    path = Path(dest)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {str(path.parent)!r} does not exist")
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")


def _auto(args: argparse.Namespace, models: list[str]) -> int:
    from mobilezoo.benchmark import fastest_backend

    sizes = [int(b) for b in args.batch_size.split(",") if b.strip()]
    choices = [
        fastest_backend(
            m,
            b,
            resolution=args.resolution,
            threads=args.threads,
            warmup=args.warmup,
            iters=args.iters,
            allowed=args.precision,
            use_cache=not args.fresh,
        )
        for m in models
        for b in sizes
    ]
    if args.json:
        _write_json({"auto": [c.to_dict() for c in choices]}, args.json)
        if args.json == "-":
            return 0
    rows = []
    for c in choices:
        others = sorted((r["median_ms"], n) for n, r in c.results.items() if "median_ms" in r and n != c.best)
        runner_up = f"{others[0][1]} {others[0][0]:,.2f} ms" if others else None
        note = (
            "cached" if c.cached else ("" if c.decided else "noisy: the pick is a guess, re-run on a quieter machine")
        )
        errors = [f"{n}: {r['error']}" for n, r in c.results.items() if "error" in r]
        rows.append((c.model, c.batch_size, c.best, c.precision, c.median_ms, c.throughput, runner_up,
                     "; ".join([note, *errors] if note else errors)))  # fmt: skip
    title = f"auto backend choice ({args.precision} precision) on {choices[0].cpu}" if choices else "auto"
    columns = ["model", "batch", "fastest backend", "computes in", "median ms", "img/s", "runner-up", "note"]
    print_table(rows, columns, title=title)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from mobilezoo.benchmark import available_backends, plot_suite, run_suite
    from mobilezoo.registry import list_models

    if args.all and args.models:
        raise ValueError("give model names or --all, not both")
    models = list_models() if args.all else args.models
    if not models:
        raise ValueError("no models given: name some (see `mobilezoo list`) or pass --all")
    if args.backend == "auto":
        return _auto(args, models)
    backends = ",".join(available_backends()) if args.backend == "all" else args.backend
    quiet = args.json == "-"
    with Progress(console=console, transient=True, disable=quiet) as bar:
        task = bar.add_task("benchmark", total=None)
        suite = run_suite(
            models,
            backends=backends,
            batch_sizes=args.batch_size,
            resolution=args.resolution,
            threads=args.threads,
            device=args.device,
            warmup=args.warmup,
            iters=args.iters,
            vs=args.vs,
            progress=lambda what: bar.update(task, description=what, advance=1),
        )
    if args.plot:
        path = plot_suite(suite, args.plot)
        if not quiet:
            console.print(f"wrote {path}")
    if args.json:
        _write_json(suite.to_dict(), args.json)
        if quiet:
            return 0
    fastest, undecided = suite.fastest(), suite.undecided()
    rows = []
    for e in suite.entries:
        r = e.ours
        best = "*" if r is not None and fastest.get((e.model, e.batch_size)) is e else ""
        median = (f"{r.median_ms:,.2f}" + (" (noisy)" if e.noisy else "")) if r else None
        row = [
            e.model,
            e.backend + best,
            e.batch_size,
            median,
            r.p90_ms if r else None,
            r.throughput if r else None,
            r.peak_memory_bytes / 2**20 if r and r.peak_memory_bytes else None,
            (r.peak_memory_bytes - r.memory_before_bytes) / 2**20 if r and r.memory_before_bytes else None,
        ]
        if args.vs:
            c = e.comparison
            ratio = (f"{c.median_ratio:,.2f}" + (" (noisy)" if c.noisy else "")) if c else None
            row += [c.reference.median_ms if c else None, ratio]
        notes = [e.error] if e.error else []
        if e.noisy:
            noisy = [x for x in ((e.comparison.ours, e.comparison.reference) if e.comparison else (r,)) if x.noisy]
            notes += [f"{x.model}: {x.noise.summary()}" if e.comparison else x.noise.summary() for x in noisy]
        row.append("; ".join(notes))
        rows.append(row)
    columns = ["model", "backend (* fastest)", "batch", "median ms", "p90 ms", "img/s", "peak MiB"]
    columns.append("added MiB")
    if args.vs:
        columns += ["torchvision ms", "ours/tv (paired median)"]
    columns.append("note")
    env = suite.env
    title = (
        f"{env['cpu']} ({env['usable_cpus']} cpus), {suite.config['threads']} threads, {args.device}, "
        f"torch {env['torch']}, {args.resolution}px"
    )
    print_table(rows, columns, title=title)
    for (model, b), noisy in undecided.items():
        console.print(
            f"{model} batch {b}: no fastest backend named, the measurement was disturbed "
            f"(noisy after re-measuring: {', '.join(noisy)})",
            markup=False,
        )
    return 0


def run_guidelines_cmd(args: argparse.Namespace) -> int:
    from mobilezoo.guidelines import run_guidelines

    quiet = args.json == "-"
    scales = tuple(int(s) for s in args.scales.split(",") if s.strip())
    status = console.status("running the guideline micro-benchmarks") if not quiet else contextlib.nullcontext()
    with status:
        report = run_guidelines(
            scales=scales, threads=args.threads, batch_size=args.batch_size, warmup=args.warmup, iters=args.iters
        )
    if args.json:
        _write_json(report.to_dict(), args.json)
        if quiet:
            return 0
    columns = ["setting", "scale", "MAdds (M)", "paper GPU batch/s", "paper CPU img/s", "ours img/s (best call)"]
    columns += ["paper CPU / first row", "ours / first row"]
    for table in report.tables:
        rows = [
            (
                r.label,
                f"x{s}",
                r.madds[i] / 1e6,
                r.paper_gpu[i],
                r.paper_cpu[i],
                f"{r.ours[i]:,.2f}" + (" (noisy)" if r.noisy_at(i) else ""),
                r.paper_ratio[i],
                r.ours_ratio[i],
            )
            for i, s in enumerate(report.scales)
            for r in table.rows
        ]
        print_table(rows, columns, title=f"{table.guideline}: {table.title}")
        console.print(f"[bold]{table.guideline} {table.verdict}[/bold]: {table.explanation}\n")
    console.print(f"total {report.seconds:.0f} s, {report.threads} thread(s), batch {report.batch_size}")
    return 0
