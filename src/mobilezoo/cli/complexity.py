"""``mobilezoo profile`` (params, MAdds, MAC, memory per layer) and ``mobilezoo tables`` (the textbook's tables and
its timeline)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mobilezoo.cli._output import console, print_json, print_table
from mobilezoo.complexity import profile
from mobilezoo.complexity.tables import Figure, TableResult, table_ids, textbook_tables
from mobilezoo.complexity.timeline import Timeline, timeline
from mobilezoo.formatting import fmt

if TYPE_CHECKING:
    from mobilezoo.complexity.results import LayerProfile
    from mobilezoo.detection.profile import DetectorProfile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="params, MAdds, other ops, memory access cost and activation memory")
    p.add_argument("name", help="a registered model, see `mobilezoo list`")
    p.add_argument(
        "--resolution",
        type=_resolution,
        default=224,
        help="input size: 224 or HEIGHTxWIDTH, e.g. 800x1200 (default 224)",
    )
    p.add_argument("--width-mult", type=float, default=None, help="width multiplier passed to the model builder")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default=None, help="default meta: counts from shapes alone; 'cpu' runs it for real")
    p.add_argument("--per-layer", action="store_true", help="also list every layer")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.add_argument(
        "--detector",
        default=None,
        metavar="KIND",
        help="fcos, ssdlite or light_head_rcnn: profile that detector on the model as its backbone, split into "
        "backbone / neck / head (without post-processing)",
    )
    p.add_argument("--num-classes", type=int, default=80, help="the detector's object classes (default 80, COCO's)")
    p.add_argument(
        "--rois",
        type=int,
        default=None,
        help="light_head_rcnn: RoIs per image in its head (default: its test-time 100)",
    )
    p.set_defaults(func=run_profile)

    t = sub.add_parser(
        "tables", help="regenerate the textbook's Tables 5-2, 5-3, 5-10, 5-11, 5-12 and its timeline against the papers"
    )
    t.add_argument(
        "ids", nargs="*", metavar="TABLE", help=f"some of {', '.join([*table_ids(), TIMELINE_ID])} (default: all)"
    )
    t.add_argument("--errata", action="store_true", help="add the paper figures no count reproduces (V2 1.4, ...)")
    t.add_argument("--skip-missing", action="store_true", help="report unregistered models as rows, do not stop")
    t.add_argument("--json", action="store_true", help="print the tables as JSON")
    t.set_defaults(func=run_tables)


TIMELINE_ID = "timeline"


def _mb(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def _resolution(text: str) -> int | tuple[int, int]:
    """``224`` or ``HEIGHTxWIDTH`` (``800x1200``)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected a size like 224 or 800x1200 (HEIGHTxWIDTH), got {text!r}")
    values = [int(p) for p in parts]
    return values[0] if len(values) == 1 else (values[0], values[1])


def _size_text(resolution: int | tuple[int, int]) -> str:
    return f"{resolution}px" if isinstance(resolution, int) else f"{resolution[0]}x{resolution[1]}px"


def run_detector_profile(args: argparse.Namespace) -> int:
    """``mobilezoo profile NAME --detector KIND``: the detector's network split into backbone / neck / head."""
    import torch

    from mobilezoo.detection import create_detector
    from mobilezoo.detection.profile import profile_detector

    h, w = (args.resolution, args.resolution) if isinstance(args.resolution, int) else args.resolution
    if args.detector == "ssdlite" and h != w:
        raise ValueError(f"ssdlite runs at a fixed square size: give one --resolution, got {h}x{w}")
    bkw = {} if args.width_mult is None else {"width_mult": args.width_mult}
    with torch.device(args.device or "meta"):  # every count depends on shapes only (see `mobilezoo profile`)
        model = create_detector(
            args.detector,
            args.name,
            num_classes=args.num_classes,
            image_size=min(h, w),
            max_size=max(h, w),
            backbone_kwargs=bkw,
        )
    prof = profile_detector(model, height=h, width=w, batch_size=args.batch_size, rois=args.rois)
    if args.json:
        print_json(prof.to_dict(per_layer=args.per_layer))
        return 0
    if args.per_layer:
        rows = [
            (name or "(network)", part, r.type if r.called else f"{r.type} (not called)", r.params, r.madds)
            for part, name, r in _detector_rows(prof)
        ]
        print_table(rows, ["layer", "part", "type", "params", "MAdds"], title=f"{args.detector} per layer")
    total = prof.total
    rows = [
        (
            p.name,
            f"{p.params:,}",
            f"{p.madds / 1e6:,.2f}",
            f"{100 * p.madds / max(total.madds, 1):.1f}%",
            f"{p.other_ops / 1e6:,.2f}",
            f"{p.mac / 1e6:,.2f}",
            _mb(p.output_bytes),
        )
        for p in (*prof.parts, total)
    ]
    columns = ["part", "params", "MAdds M", "of MAdds", "other ops M", "MAC M elements", "activations written"]
    title = f"{args.detector} on {args.name} at {_size_text(args.resolution)}, batch {args.batch_size} (millions = 1e6)"
    print_table(rows, columns, title=title)
    console.print(
        f"  FLOPs = 2 x MAdds = {total.flops / 1e6:,.2f}M; peak activation memory of the network "
        f"{_mb(prof.network.peak_activation_bytes)}",
        markup=False,
    )
    for note in prof.notes:
        console.print(f"  {note}", markup=False)
    return 0


def _detector_rows(prof: DetectorProfile) -> Iterator[tuple[str, str, LayerProfile]]:
    """(part, layer name, row) of the network, then of Light-Head's RoI head (named ``roi_heads.*``)."""
    from mobilezoo.detection.profile import part_of

    for r in prof.network.layers:
        yield part_of(r.name), r.name, r
    if prof.roi_head is not None:
        for r in prof.roi_head.layers:
            yield "head", f"roi_heads.{r.name}".rstrip("."), r


def run_profile(args: argparse.Namespace) -> int:
    if args.detector is not None:
        return run_detector_profile(args)
    if args.rois is not None:
        raise ValueError("--rois is for --detector light_head_rcnn")
    kwargs = {} if args.width_mult is None else {"width_mult": args.width_mult}
    prof = profile(args.name, resolution=args.resolution, batch_size=args.batch_size, device=args.device, **kwargs)
    if args.json:
        print_json(prof.to_dict(per_layer=args.per_layer))
        return 0
    if args.per_layer:
        rows = [
            (
                r.name or "(model)",
                r.type if r.called else f"{r.type} (not called)",
                "x".join(map(str, r.output_shape or ())),
                r.params,
                r.madds,
                r.other_ops,
                r.mac,
                r.output_bytes,
            )
            for r in prof.layers
        ]
        columns = ["layer", "type", "output", "params", "MAdds", "other ops", "MAC (elements)", "output bytes"]
        print_table(rows, columns, title=f"{prof.model} per layer (rows sum to the totals)")
    other = ", ".join(f"{k} {v / 1e6:,.2f}M" for k, v in prof.other_ops.items())
    totals = [
        ("input", "x".join(map(str, prof.input_shape)) + f" {prof.dtype} on {prof.device}"),
        ("params", f"{prof.params:,} ({prof.params_m:.2f}M; not called in the forward: {prof.params_not_called:,})"),
        ("MAdds", f"{prof.madds:,} ({prof.madds_m:.2f}M; the papers' 'FLOPs')"),
        ("FLOPs = 2 x MAdds", f"{prof.flops / 1e6:,.2f}M"),
        ("other ops (not in MAdds)", other),
        ("all ops = MAdds + other", f"{prof.all_ops / 1e6:,.2f}M"),
        ("MAC", f"{prof.mac / 1e6:,.2f}M elements, {_mb(prof.mac_bytes)}"),
        ("peak activation memory", _mb(prof.peak_activation_bytes)),
        ("weights", _mb(prof.param_bytes)),
    ]
    print_table(totals, ["quantity", "value"], title=f"{prof.model} at {_size_text(args.resolution)} (millions = 1e6)")
    return 0


def _printed(value: float | None) -> str:
    return "-" if value is None else f"{value:,g}"  # a figure as the book or paper prints it


def _figure(f: Figure | None) -> tuple[str, str, str, str]:
    if f is None:
        return "-", "-", "-", "-"
    diff = f"{f.diff_pct:+.2f}%" if f.diff_pct is not None else "-"
    return _printed(f.textbook), _printed(f.paper), fmt(f.ours), diff


def _print_table(table: TableResult) -> None:
    notes: list[str] = []
    rows = []
    for r in table.rows:
        marks = []
        for text in (r.flag, r.note, r.error):
            if text:
                if text not in notes:
                    notes.append(text)
                marks.append(f"[{notes.index(text) + 1}]")
        top1 = fmt(r.top1_textbook, 1) + (f" ({r.top1_paper})" if r.top1_paper is not None else "")
        row = [r.label + (f" @{r.resolution}" if r.resolution != 224 else ""), top1, *_figure(r.madds)]
        row += _figure(r.params)[0:3]
        if table.channel_labels:
            ours = "/".join(map(str, r.channels_ours or ()))
            row.append(ours + ("" if r.channels_ours == r.channels_textbook else " != textbook"))
        row.append(r.status + " " + " ".join(marks))
        rows.append(row)
    columns = ["row", "top-1 % (paper)", "MAdds M textbook", "paper", "ours", "vs paper", "params M textbook"]
    columns += ["paper", "ours"]
    if table.channel_labels:
        columns.append(" / ".join(table.channel_labels))
    columns.append("status")
    print_table(rows, columns, title=f"Table {table.id}: {table.title}")
    console.print(f"  convention: {table.convention}")
    for i, text in enumerate(notes, 1):
        console.print(f"  [{i}] {text}", markup=False)


def _print_timeline(tl: Timeline) -> None:
    notes: list[str] = []
    rows = []
    for r in tl.rows:
        marks = []
        for text in (r.note, r.error):
            if text:
                if text not in notes:
                    notes.append(text)
                marks.append(f"[{notes.index(text) + 1}]")
        rows.append(
            [
                str(r.year),
                r.label + (f" @{r.resolution}" if r.resolution != 224 else ""),
                r.model or "-",
                fmt(r.paper_top1, 1),
                _printed(r.paper_madds_m),
                fmt(r.madds_m),
                f"{r.madds_vs_paper_pct:+.2f}%" if r.madds_vs_paper_pct is not None else "-",
                _printed(r.paper_params_m),
                f"{r.params / 1e6:,.2f}" if r.params is not None else "-",
                " ".join([r.status, *marks]),
            ]
        )
    columns = ["year", "model", "registered as", "paper top-1 %", "paper MAdds M", "ours", "ours vs paper"]
    columns += ["paper params M", "ours", "status"]
    print_table(rows, columns, title=tl.title)
    console.print(f"  convention: {tl.convention}")
    for i, text in enumerate(notes, 1):
        console.print(f"  [{i}] {text}", markup=False)


def run_tables(args: argparse.Namespace) -> int:
    ids = [i for i in args.ids if i != TIMELINE_ID]
    with_timeline = not args.ids or TIMELINE_ID in args.ids
    tables = (
        []
        if args.ids and not ids
        else textbook_tables(ids or None, include_errata=args.errata, skip_missing=args.skip_missing)
    )
    tl = timeline() if with_timeline else None
    if args.json:
        print_json([t.to_dict() for t in tables] + ([tl.to_dict()] if tl else []))
    else:
        for table in tables:
            _print_table(table)
        if tl is not None:
            _print_timeline(tl)
    return 0 if all(t.reproduces for t in tables) and (tl is None or tl.reproduces) else 1
