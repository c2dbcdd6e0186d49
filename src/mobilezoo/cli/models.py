"""``mobilezoo list``: the registered models with the papers' MAdds, params and top-1, and the public checkpoints
that load into each (``--json``: the model cards, each checkpoint's ``weights=`` string and preprocessing)."""

from __future__ import annotations

import argparse

from mobilezoo.cli._output import print_json, print_table
from mobilezoo.registry import list_models, model_card


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the registered models with the papers' figures")
    p.add_argument("pattern", nargs="?", default=None, help="glob, e.g. 'mobilenet_v3*'")
    p.add_argument("--json", action="store_true", help="print the model cards as JSON")
    p.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    cards = [model_card(n) for n in list_models(args.pattern)]
    if args.json:
        print_json([c.to_dict() for c in cards])
        return 0
    rows = [
        (
            c.name,
            c.family,
            c.resolution,
            c.paper_madds_m,
            c.paper_params_m,
            c.paper_top1,
            checkpoint_summary(c.checkpoints),
        )
        for c in cards
    ]
    columns = ["model", "family", "res", "paper MAdds (M)", "paper params (M)", "paper top-1 %", "checkpoints"]
    print_table(rows, columns, title=f"{len(cards)} registered models")
    return 0


def checkpoint_summary(checkpoints: tuple[dict, ...]) -> str:
    """``"torchvision x2, timm x3, megvii"``: how many checkpoints of each source load (a file of one's own aside)."""
    counts: dict[str, int] = {}
    for c in checkpoints:
        if not c.get("note", "").startswith("timm publishes no weights"):
            counts[c["source"]] = counts.get(c["source"], 0) + 1
    return ", ".join(f"{source} x{n}" if n > 1 else source for source, n in counts.items())
