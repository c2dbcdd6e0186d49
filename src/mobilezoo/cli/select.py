"""``mobilezoo select``: the most accurate model that meets a latency or throughput budget on this machine."""

from __future__ import annotations

import argparse

from mobilezoo.cli._output import console, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select", help="the most accurate model that meets a latency or throughput budget here")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--latency-ms", type=float, help="median ms per call at --batch-size, at most")
    budget.add_argument("--throughput", type=float, help="images/s at --batch-size, at least")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="cores the model may use (default: all usable)")
    p.add_argument("--max-params-m", type=float, default=None, help="cap on params, millions")
    p.add_argument(
        "--max-madds-m", type=float, default=None, help="cap on MAdds at the candidate's resolution, millions"
    )
    p.add_argument("--max-activation-mb", type=float, default=None, help="cap on peak activation memory, MiB")
    p.add_argument("--family", action="append", default=None, help="only this family (repeatable), e.g. MobileNetV2")
    p.add_argument("--model", action="append", default=None, help="only this registered model (repeatable)")
    p.add_argument(
        "--backend", action="append", default=None, help="only this backend (repeatable; default: all exact)"
    )
    p.add_argument("--int8", action="store_true", help="also consider the int8 backends (labelled; top-1 is fp32)")
    p.add_argument("--fresh", action="store_true", help="measure again instead of using cached figures")
    p.add_argument("--no-runners-up", action="store_true", help="stop at the pick (measures fewer candidates)")
    p.add_argument("--png", default=None, help="write the Pareto chart (top-1 against measured latency) here")
    p.add_argument("--export", default=None, metavar="DIR", help="write the pick's deployable file into DIR")
    p.add_argument("--calib", default=None, metavar="DIR", help="calibration images for an int8 pick's --export")
    p.add_argument("--json", action="store_true", help="print the selection as JSON")
    p.set_defaults(func=run_select)


def run_select(args: argparse.Namespace) -> int:
    from mobilezoo.selection import Budget, candidates, select
    from mobilezoo.selection.deploy import export_choice

    budget = Budget(args.latency_ms, args.throughput, args.batch_size, args.threads, args.max_params_m,
                    args.max_madds_m, args.max_activation_mb)  # fmt: skip
    budget.validate()
    pool = candidates(tuple(args.family) if args.family else None, tuple(args.model) if args.model else None)
    with console.status("measuring candidates") as status:
        s = select(budget, candidates_=pool, backends=args.backend, int8=args.int8, use_cache=not args.fresh,
                   runners_up=not args.no_runners_up, progress=lambda m: status.update(m))  # fmt: skip
    exported = None
    if args.export and s.pick is not None:
        exported = export_choice(s.pick, args.export, calibration=args.calib)
    png = s.plot(args.png) if args.png and s.measured else None
    if args.json:
        print_json(
            {**s.to_dict(), "exported": exported.to_dict() if exported else None, "png": str(png) if png else None}
        )
        return 0 if s.pick is not None else 1
    chosen = ([("pick", s.pick)] if s.pick else []) + [(f"best {f}", c) for f, c in sorted(s.runners_up.items())]
    rows = [
        (role, c.candidate.model, c.candidate.resolution, c.backend + (" (int8)" if c.precision == "int8" else ""),
         c.candidate.top1, c.median_ms, c.p90_ms, c.candidate.params / 1e6, c.candidate.madds_m,
         f"{c.int8_agreement['agreement']:.1f}%" if c.int8_agreement else "-")
        for role, c in chosen
    ]  # fmt: skip
    columns = ["", "model", "res", "backend", "top-1 % (paper)", "median ms", "p90 ms", "params M", "MAdds M"]
    columns.append("int8 agrees with fp32")
    print_table(rows, columns, title=f"{s.budget.describe()} on {s.cpu}")
    console.print(s.message, markup=False)
    for note in s.notes:
        console.print(f"note: {note}", markup=False)
    frontier = ", ".join(f"{c.candidate.key} {c.median_ms:.2f} ms" for c in s.frontier())
    console.print(f"Pareto frontier of what was measured: {frontier}", markup=False)
    console.print(
        f"measured {s.n_measured} of {s.n_candidates} candidates ({s.n_cached} from the cache, {len(s.skipped)} "
        f"skipped as unable to win) in {s.seconds:.1f} s",
        markup=False,
    )
    if png:
        console.print(f"chart: {png}", markup=False)
    if exported:
        console.print(f"exported {exported.format}: {exported.path}", markup=False)
    return 0 if s.pick is not None else 1
