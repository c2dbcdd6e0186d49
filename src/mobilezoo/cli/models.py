"""``mobilezoo list``: the registered models with the papers' MAdds, params and top-1."""

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
            "yes" if c.pretrained else "",
        )
        for c in cards
    ]
    columns = ["model", "family", "res", "paper MAdds (M)", "paper params (M)", "paper top-1 %", "torchvision ckpt"]
    print_table(rows, columns, title=f"{len(cards)} registered models")
    return 0
