"""``mobilezoo detect``: train, evaluate and run detectors (:mod:`mobilezoo.detection`).

Subcommands: ``train`` (resumable, torchrun-ready), ``eval``, ``predict`` (boxes as JSON and drawn on PNGs),
``canvases`` (the built-in digit canvases written as a COCO folder), ``export`` (the network to ONNX, without the
post-processing, checked in ONNX Runtime) and ``table`` (Table 5-13: train its missing cells, time its speed, show
it). Each is registered by a ``_add_<name>`` function below and calls one library function.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml

from mobilezoo.cli._output import console, print_json, print_table

# flags that set DetectionTrainConfig fields one-to-one (flag with dashes -> field), with their help
TRAIN_FLAGS: dict[str, tuple[type, str]] = {
    "detector": (str, "fcos (default), ssdlite or light_head_rcnn"),
    "backbone": (str, "any registered model (default shufflenet_v2_x0_5)"),
    "data": (str, "'builtin' (digit canvases, default) or a folder with train/ and val/ COCO folders"),
    "steps": (int, "optimizer steps (default 1000)"),
    "batch-size": (int, "images per step, over all processes (default 16)"),
    "lr": (float, "peak learning rate, AdamW (default 0.002)"),
    "warmup-steps": (int, "linear warm-up steps (default 100)"),
    "image-size": (int, "detector input size (default: the canvas size; 320 for folders)"),
    "in-chans": (int, "input channels of a folder's images: 3 (default) or 1"),
    "val-canvases": (int, "validation canvases scored at the end (default 500)"),
    "train-canvases": (int, "cycle through this many training canvases (default: a fresh one per image)"),
    "seed": (int, "random seed (default 0)"),
    "on-bad": (str, "bad COCO annotations: error (default) or skip (counted)"),
    "threads": (int, "torch intra-op threads (default: leave as is)"),
}
CANVAS_SIZE_FLAG = "--canvas-size"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="train, evaluate and run object detectors on the zoo's backbones")
    commands = p.add_subparsers(dest="detect_command", required=True, metavar="SUBCOMMAND")
    for add in (_add_train, _add_eval, _add_predict, _add_canvases, _add_export, _add_table):
        add(commands)


def _add_train(commands: argparse._SubParsersAction) -> None:
    t = commands.add_parser(
        "train", help="train a detector from scratch (resumable; runs data-parallel under torchrun)"
    )
    for flag, (kind, text) in TRAIN_FLAGS.items():
        t.add_argument(f"--{flag}", type=kind, default=None, help=text)
    t.add_argument(CANVAS_SIZE_FLAG, type=int, default=None, help="side of the built-in canvases in px (default 128)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other config field (YAML)")
    t.add_argument("--out", required=True, help="run folder: config, checkpoints, metrics, detector.safetensors")
    t.add_argument("--resume", action="store_true", help="continue the run in --out; other flags must match it")
    t.add_argument("--checkpoint-every", type=int, default=100, help="checkpoint every N steps (default 100)")
    t.add_argument("--log-every", type=int, default=50, help="a progress line every N steps (default 50)")
    t.add_argument("--json", action="store_true", help="print the result as JSON (no progress lines)")
    t.set_defaults(func=run_train)


def _add_eval(commands: argparse._SubParsersAction) -> None:
    e = commands.add_parser("eval", help="COCO AP of a trained detector")
    e.add_argument("--weights", required=True, help="a detector.safetensors written by mobilezoo detect train")
    e.add_argument("--data", default="builtin", help="'builtin' (the run's validation canvases) or a COCO folder")
    e.add_argument("--val-canvases", type=int, default=None, help="canvases scored (default: the run's number)")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--on-bad", default="error", help="bad COCO annotations: error (default) or skip (counted)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=run_eval)


def _add_predict(commands: argparse._SubParsersAction) -> None:
    q = commands.add_parser("predict", help="boxes in image files, as JSON and drawn on PNGs")
    q.add_argument("images", nargs="+", metavar="IMAGE")
    q.add_argument("--weights", required=True, help="a detector.safetensors written by mobilezoo detect train")
    q.add_argument("--out", default=None, help="folder for the drawn PNGs and detections.json (default: none)")
    q.add_argument("--score-thresh", type=float, default=0.3, help="lowest score shown (default 0.3)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=run_predict)


def _add_canvases(commands: argparse._SubParsersAction) -> None:
    c = commands.add_parser("canvases", help="write the built-in digit canvases as a COCO folder (PNG + JSON)")
    c.add_argument("--out", required=True, help="folder: train/ and val/, each instances.json + images/")
    c.add_argument("--count", type=int, required=True, help="training canvases")
    c.add_argument("--val-count", type=int, default=None, help="validation canvases (default: count / 4, >= 1)")
    c.add_argument("--size", type=int, default=128, help="canvas side in px (default 128)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_canvases)


def _add_export(commands: argparse._SubParsersAction) -> None:
    x = commands.add_parser("export", help="the detector's network to ONNX (no NMS in the graph), parity-checked")
    x.add_argument("--weights", required=True, help="a detector.safetensors written by mobilezoo detect train")
    x.add_argument("--out", required=True, help="the .onnx file (a .json sidecar is written beside it)")
    x.add_argument("--size", default=None, help="input HEIGHTxWIDTH or one side (default: the detector's image size)")
    x.add_argument("--batch-size", type=int, default=1, help="batch of the exported graph (default 1; dynamic)")
    x.add_argument("--fixed-batch", action="store_true", help="export a fixed batch size instead of a dynamic one")
    x.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(func=run_export)


def _add_table(commands: argparse._SubParsersAction) -> None:
    from mobilezoo.detection.table import LEVELS, RESULTS

    t = commands.add_parser(
        "table", help="Table 5-13: train its missing cells (resumable), measure detection speed, show it"
    )
    t.add_argument("--results", default=str(RESULTS), help=f"results JSON (default {RESULTS})")
    t.add_argument("--levels", nargs="+", default=None, choices=LEVELS, help="train these levels' missing cells")
    t.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds per cell (default 0)")
    t.add_argument(
        "--speed", nargs="*", default=None, choices=LEVELS, help="re-measure speed at these levels (none named: all)"
    )
    t.add_argument("--speed-iters", type=int, default=5, help="timed rounds per level (default 5)")
    t.add_argument("--threads", type=int, default=None, help="torch threads for training and timing")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=run_table_command)


def _size(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--size expects HEIGHTxWIDTH or one side in px, e.g. 320x480 or 320, got {text!r}")
    return (int(parts[0]), int(parts[-1]))


def run_export(args: argparse.Namespace) -> int:
    from mobilezoo.detection.export import export_detector_onnx
    from mobilezoo.detection.io import load_detector

    height, width = _size(args.size)
    model = load_detector(args.weights)
    kw: dict[str, Any] = {} if args.opset is None else {"opset": args.opset}
    result = export_detector_onnx(
        model,
        args.out,
        height=height,
        width=width,
        batch_size=args.batch_size,
        dynamic_batch=not args.fixed_batch,
        **kw,
    )
    if args.json:
        print_json(result.to_dict())
        return 0
    console.print(
        f"{result.path} ({result.detector}, input {result.input_name} {list(result.input_shape)}, outputs "
        f"{', '.join(result.output_names)}; no NMS in the graph): ONNX Runtime matches PyTorch within "
        f"{result.max_abs_diff:.2g} at batch {', '.join(map(str, result.check_batches))}. Sidecar: {result.sidecar}",
        highlight=False,
    )
    return 0


def run_table_command(args: argparse.Namespace) -> int:
    from dataclasses import asdict, replace

    from mobilezoo.detection.table import (
        LEVELS,
        TABLE_SCHEDULE,
        load_results,
        measure_speed,
        record_speed,
        run_table,
        speed_record,
        summarize,
    )

    say = (lambda _m: None) if args.json else (lambda m: console.print(m, highlight=False))
    if args.levels:
        schedule = replace(TABLE_SCHEDULE, threads=args.threads or TABLE_SCHEDULE.threads)
        run_table(args.results, levels=args.levels, seeds=args.seeds, schedule=schedule, progress=say)
    speed = []
    if args.speed is not None:
        levels = args.speed or list(LEVELS)
        say(f"timing Light-Head R-CNN at 800x1200, batch 4: levels {', '.join(levels)}")
        speed = measure_speed(levels=levels, iters=args.speed_iters, threads=args.threads)
        if Path(args.results).exists():
            record_speed(args.results, "light_head_rcnn", speed_record(speed))
    results = load_results(args.results) if Path(args.results).exists() else {"cells": {}}
    table = summarize(results, speed)
    if args.json:
        print_json(asdict(table))
        return 0
    from mobilezoo.report.sections import table_5_13

    t = table_5_13(table, args.threads)
    print_table(t.rows, t.columns, title=t.caption)
    for note in t.notes:
        console.print(f"  {note}", markup=False)
    return 0


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def given_values(args: argparse.Namespace) -> dict[str, Any]:
    """The DetectionTrainConfig fields the command line sets (flags < --set); fields left unset are absent."""
    values: dict[str, Any] = {}
    for flag in TRAIN_FLAGS:
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            values[flag.replace("-", "_")] = value
    if args.canvas_size is not None:
        values["canvas"] = {"size": args.canvas_size}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        values[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return values


def flag_labels() -> dict[str, str]:
    labels = {flag.replace("-", "_"): f"--{flag}" for flag in TRAIN_FLAGS}
    labels["canvas"] = f"{CANVAS_SIZE_FLAG} (canvas)"
    return labels


def build_config(values: dict[str, Any]) -> Any:
    """A DetectionTrainConfig from ``values``; ``canvas`` may name only some CanvasConfig fields (the others default,
    with the largest digit scale kept within a smaller canvas)."""
    from mobilezoo.detection import CanvasConfig, DetectionTrainConfig

    canvas = values.get("canvas")
    if isinstance(canvas, dict):
        base = CanvasConfig().to_dict()
        if "size" in canvas and "scale" not in canvas:
            base["scale"] = [min(base["scale"][0], canvas["size"]), min(base["scale"][1], canvas["size"])]
        values = {**values, "canvas": {**base, **canvas}}
    return DetectionTrainConfig.from_dict(values)


def run_train(args: argparse.Namespace) -> int:
    from mobilezoo.detection.train import resume_detection_config, train_detector

    values = given_values(args)
    if args.resume:
        saved_canvas = None
        if "canvas" in values:  # only the size is given: compare it with the run's canvas of that size
            from mobilezoo.detection.train import load_detection_config

            saved_canvas = load_detection_config(args.out).canvas.to_dict()
            values["canvas"] = {**saved_canvas, **values["canvas"]}
        cfg = resume_detection_config(args.out, labels=flag_labels(), **values)
    else:
        cfg = build_config(values)
    quiet = args.json or not _is_main()

    def show(ev: Any) -> None:
        if ev.kind == "step":
            console.print(
                f"step {ev.step}/{ev.total_steps}  loss {ev.loss:.4f}  lr {ev.lr:.2e}  {ev.images_per_s:.1f} img/s  "
                f"eta {ev.eta_s:.0f} s",
                highlight=False,
            )
        else:
            console.print(f"scored {ev.record.get('images')} validation images", highlight=False)

    result = train_detector(
        cfg,
        out_dir=args.out,
        resume=args.resume,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        progress=None if quiet else show,
    )
    if not _is_main():
        return 0
    if args.json:
        print_json(result.to_dict())
        return 0
    _metrics_table(result.metrics, f"{cfg.detector} on {cfg.backbone}, {cfg.data} validation")
    console.print(
        f"{result.images_seen} images trained on in {result.train_s:.0f} s, evaluated in {result.eval_s:.0f} s; "
        f"run folder {result.run_dir} (weights: detector.safetensors)",
        highlight=False,
    )
    return 0


def _metrics_table(metrics: Any, title: str) -> None:
    d = metrics.to_dict()
    cols = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"]
    row = [("n/a" if d[c] is None else f"{d[c]:.3f}") for c in cols]
    print_table(
        [[*row, d["images"], d["ground_truth"], d["detections"]]], [*cols, "images", "boxes", "detections"], title
    )


def run_eval(args: argparse.Namespace) -> int:
    from mobilezoo.detection.inference import evaluate_detector_file

    result = evaluate_detector_file(
        args.weights, args.data, val_canvases=args.val_canvases, batch_size=args.batch_size, on_bad=args.on_bad
    )
    if args.json:
        print_json(result.to_dict())
        return 0
    _metrics_table(result.metrics, f"{Path(args.weights).name} on {result.annotations}")
    if result.skipped:
        console.print(f"skipped annotations: {result.skipped}", highlight=False)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from mobilezoo.detection.inference import predict_detections

    records = predict_detections(args.weights, args.images, score_thresh=args.score_thresh, out_dir=args.out)
    if args.json:
        print_json(records)
        return 0
    rows = [
        (r["image"], d["name"], d["score"], ", ".join(f"{v:.1f}" for v in d["box"]))
        for r in records
        for d in r["detections"] or [{"name": "-", "score": None, "box": []}]
    ]
    print_table(
        rows, ["image", "label", "score", "box x1, y1, x2, y2 (px)"], title=f"detections >= {args.score_thresh}"
    )
    if args.out:
        console.print(f"drawn boxes and detections.json in {args.out}", highlight=False)
    return 0


def run_canvases(args: argparse.Namespace) -> int:
    from mobilezoo.detection import CanvasConfig, DigitCanvases, export_coco

    val_count = args.val_count if args.val_count is not None else max(1, args.count // 4)
    base = CanvasConfig().to_dict()
    config = CanvasConfig(**{**base, "size": args.size, "scale": [min(v, args.size) for v in base["scale"]]})
    sets = [
        DigitCanvases(split, n, seed=args.seed, config=config)
        for split, n in (("train", args.count), ("val", val_count))
    ]
    paths = {ds.split: str(export_coco(ds, Path(args.out) / ds.split)) for ds in sets}  # every argument checked above
    if args.json:
        print_json({"annotations": paths, "train": args.count, "val": val_count, "canvas": config.to_dict()})
        return 0
    console.print(
        f"{args.count} training and {val_count} validation canvases ({args.size} px) in {args.out}: "
        f"{paths['train']}, {paths['val']} (train on it: mobilezoo detect train --data {args.out} --in-chans 1 ...)",
        highlight=False,
    )
    return 0
