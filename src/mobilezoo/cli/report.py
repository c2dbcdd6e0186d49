"""``mobilezoo report``: the comparison report (tables, Pareto charts, latency per backend, sweeps) as md + html."""

from __future__ import annotations

import argparse

from mobilezoo.cli._output import console, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write the comparison report: textbook tables vs ours, Pareto charts, latency, sweeps"
    )
    p.add_argument("--out", default="reports", help="output directory (created if missing; default: reports)")
    p.add_argument("--models", nargs="+", default=None, metavar="NAME", help="registered models to time")
    p.add_argument(
        "--quick",
        action="store_true",
        help="one model per family, eager + ONNX Runtime fp32/int8, MobileNet V1 sweeps only (a few minutes)",
    )
    p.add_argument("--backends", default=None, help="comma-separated backends to time (default: the mode's)")
    p.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: the CPUs this process may use)"
    )
    p.add_argument("--iters", type=int, default=None, help="timed calls per cell (default: the mode's)")
    p.add_argument("--json", action="store_true", help="print the result (paths and data) as JSON")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mobilezoo.report import ReportConfig, build_report

    cfg = ReportConfig.quick() if args.quick else ReportConfig.full()
    changes: dict = {}
    if args.backends is not None:
        changes["backends"] = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    if args.threads is not None:
        changes["threads"] = args.threads
    if args.iters is not None:
        changes["iters"] = args.iters
    cfg = replace(cfg, **changes)
    if args.json:
        result = build_report(args.out, models=args.models, config=cfg)
        print_json(result.to_dict())
        return 0
    with console.status("building the report") as status:
        result = build_report(args.out, models=args.models, config=cfg, progress=lambda m: status.update(m))
    files = [("report.html", str(result.html)), ("report.md", str(result.markdown)), ("report.json", str(result.json))]
    files += [(f"{k}.png", str(v)) for k, v in result.plots.items()]
    print_table(files, ["file", "path"], title=f"report written in {result.data.seconds['total']:.0f} s")
    print(result.html)
    return 0
