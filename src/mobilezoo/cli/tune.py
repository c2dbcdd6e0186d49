"""``mobilezoo tune``: measure this machine's deployment policies and cache them; ``--show`` prints them."""

from __future__ import annotations

import argparse

from mobilezoo.cli._output import console, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="measure this machine's deployment policies (thread spinning, int8 float stem)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's current setting)")
    p.add_argument("--show", action="store_true", help="print the policies in force without measuring")
    p.add_argument("--json", action="store_true", help="print the decisions as JSON")
    p.set_defaults(func=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    import torch

    from mobilezoo.machine import cpu_info, machine_key
    from mobilezoo.policies import cache_dir, current

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if not args.show:
        from mobilezoo.benchmark.tune import tune

        with console.status("measuring this machine's policies (about 15 s)"):
            measured = tune(threads=args.threads)
        for d in measured:
            if not d.figures.get("stable"):
                console.print(f"{d.policy}: the measurement was disturbed, not cached; run again on a quieter machine")
    decisions = current(args.threads or torch.get_num_threads())
    if args.json:
        print_json(
            {"cpu": cpu_info().to_dict(), "machine_key": machine_key(), "decisions": [d.to_dict() for d in decisions]}
        )
        return 0
    rows = [(d.policy, str(d.value), d.how, d.reason) for d in decisions]
    title = f"policies on {cpu_info().summary()} (cache: {cache_dir() / 'policies.json'})"
    print_table(rows, ["policy", "value", "how", "why"], title=title)
    return 0
