"""``mobilezoo train``, ``mobilezoo eval`` and ``mobilezoo predict``: thin wrappers over :mod:`mobilezoo.train`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml

from mobilezoo.cli._output import console, print_json, print_table
from mobilezoo.train.config import OPTIMIZERS, SCHEDULES

# flags that map one-to-one onto TrainConfig fields (flag name with dashes -> field)
TRAIN_FLAGS: dict[str, tuple[type, str]] = {
    "epochs": (int, "number of epochs (default: the recipe's; 12 for --data builtin)"),
    "batch-size": (int, "global batch size (default: the recipe's; 64 for builtin)"),
    "lr": (float, "learning rate at this batch size (default: the recipe's, scaled linearly with the batch)"),
    "opt": (str, f"optimizer: {', '.join(OPTIMIZERS)}"),
    "sched": (str, f"schedule: {', '.join(SCHEDULES)}"),
    "img-size": (int, "training resolution (default 224; 64 for builtin)"),
    "weight-decay": (float, "weight decay (never on BN/bias)"),
    "label-smoothing": (float, "label smoothing"),
    "ema-decay": (float, "EMA decay per step, 0 = off"),
    "auto-augment": (str, "none, autoaugment, trivialaugment, randaugment"),
    "accum-steps": (int, "micro-batches accumulated per step"),
    "train-subset": (int, "train on a fixed class-balanced subset of N images"),
    "val-subset": (int, "evaluate on a fixed subset of N images"),
    "seed": (int, "random seed (default 0)"),
    "workers": (int, "DataLoader worker processes (default 0)"),
    "device": (str, "auto, cpu, cuda"),
    "checkpoint-every": (int, "also checkpoint every N steps (default: each epoch only)"),
    "weights": (str, "initial weights: a .safetensors/.pth file, 'torchvision', 'timm:<model>' or 'megvii:<file>'"),
}
FIELD_OF = {"workers": "num_workers"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model with a named recipe (supports torchrun)")
    p.add_argument("--model", help="registered model name, e.g. mobilenet_v3_small")
    p.add_argument("--data", default=None, help="'builtin' (5,000 MNIST digits, default) or a folder with train/ val/")
    p.add_argument("--recipe", default=None, help="modern (default) or paper")
    p.add_argument("--out", default=None, help="run folder for config, checkpoints, metrics (default runs/<model>)")
    p.add_argument("--config", default=None, help="a YAML/JSON TrainConfig; flags override it")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint; other flags must match the run's "
        "(--device, --workers, --checkpoint-every may change)",
    )
    for flag, (kind, text) in TRAIN_FLAGS.items():
        p.add_argument(f"--{flag}", type=kind, default=None, help=text)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other TrainConfig field")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="top-1/top-5, per-class accuracy and confusion matrix of trained weights")
    e.add_argument("--model", required=True)
    e.add_argument(
        "--weights",
        required=True,
        help="a .safetensors file written by mobilezoo train (or any weights), 'torchvision', 'timm:<model>', "
        "'megvii:<file>' (ImageNet checkpoints, with their own preprocessing)",
    )
    e.add_argument("--data", default="builtin", help="'builtin' or a folder with train/ val/")
    e.add_argument("--split", default="val", choices=["train", "val"])
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--img-size", type=int, default=None, help="default: the training resolution stored in the weights")
    e.add_argument("--workers", type=int, default=0)
    e.add_argument("--out", default=None, help="folder for confusion.png and eval.json (default: <weights dir>/eval)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=run_eval)

    q = sub.add_parser("predict", help="top-k classes of image files")
    q.add_argument("images", nargs="+", metavar="IMAGE")
    q.add_argument("--model", required=True)
    q.add_argument("--weights", required=True)
    q.add_argument("--topk", type=int, default=5)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=run_predict)


def _parse_set(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def given_values(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the command line sets (config file < flags < --set); fields left unset are absent."""
    from mobilezoo.train.config_io import read_config_values

    values: dict[str, Any] = read_config_values(args.config) if args.config else {}
    for name in ("model", "data", "recipe", "out"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    for flag in TRAIN_FLAGS:
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            values[FIELD_OF.get(flag, flag.replace("-", "_"))] = value
    values.update(_parse_set(args.set))
    return values


def flag_labels() -> dict[str, str]:
    """TrainConfig field -> the flag that sets it (``num_workers`` -> ``--workers``), for error messages."""
    labels = {name: f"--{name}" for name in ("model", "data", "recipe", "out")}
    labels.update({FIELD_OF.get(flag, flag.replace("-", "_")): f"--{flag}" for flag in TRAIN_FLAGS})
    return labels


def build_config(args: argparse.Namespace) -> Any:
    """The TrainConfig the flags describe (config file < flags < --set)."""
    from mobilezoo.train import TrainConfig

    values = given_values(args)
    if "model" not in values:
        raise ValueError("--model is required (or a --config that names one)")
    values.setdefault("out", str(Path("runs") / values["model"]))
    if values.pop("resolved", False):
        values["resolved"] = False  # flags may have changed fields that depend on others: resolve again
    return TrainConfig.from_dict(values)  # unknown keys (from --config or --set) raise a ValueError naming them


def run_train(args: argparse.Namespace) -> int:
    from mobilezoo.train import resume_config, train

    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out, the run folder to continue")
        # every setting given is checked: device, workers and checkpoint-every may change, others must match the run
        cfg = resume_config(args.out, labels=flag_labels(), **given_values(args))
    else:
        cfg = build_config(args)
    quiet = args.no_progress or args.json or int(os.environ.get("RANK", "0")) != 0
    result = train(cfg, resume=args.resume) if quiet else _train_with_progress(cfg, args.resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if args.json:
        print_json(result.to_dict())
        return 0
    rows = [
        (r["epoch"], f"{r['lr']:.2e}", r["train_loss"], r["train_top1"], r["val_loss"], r["val_top1"], r["val_top5"])
        for r in result.history
    ]
    cols = ["epoch", "lr", "train loss", "train top-1 %", "val loss", "val top-1 %", "val top-5 %"]
    print_table(rows, cols, title=f"{result.config.model} on {result.config.data}, recipe {result.config.recipe}")
    console.print(
        f"best val top-1 {result.best_top1:.2f}% (epoch {result.best_epoch}), {result.steps} steps in "
        f"{result.wall_s:.0f} s, {result.skipped_images} undecodable images skipped; run folder {result.run_dir}"
    )
    return 0


def _train_with_progress(cfg: Any, resume: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mobilezoo.train import train

    bar = Progress(
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[ips]:>6.0f} img/s  loss {task.fields[loss]:.3f}  lr {task.fields[lr]:.2e}"),
        TextColumn("{task.fields[val]}"),
        TimeRemainingColumn(),
        console=console,
    )
    task = bar.add_task("train", total=None, epoch=0, epochs=0, ips=0.0, loss=0.0, lr=0.0, val="")

    def on_event(ev: Any) -> None:
        if not bar.live.is_started:  # started on the first step, so set-up errors print without a bar
            bar.start()
        if ev.kind == "step":
            fields = {"epoch": ev.epoch, "epochs": ev.epochs, "ips": ev.images_per_s, "loss": ev.loss, "lr": ev.lr}
            bar.update(task, total=ev.total_steps, completed=ev.step, **fields)
        else:
            bar.update(task, val=f"val top-1 {ev.record['val_top1']:.2f}%")

    try:
        return train(cfg, resume=resume, progress=on_event)
    finally:
        bar.stop()


def run_eval(args: argparse.Namespace) -> int:
    from mobilezoo.train import evaluate_weights

    folder = Path(args.weights).parent if Path(args.weights).is_file() else Path(".")  # "timm:...": no folder
    out = args.out if args.out is not None else str(folder / "eval")
    result = evaluate_weights(
        args.model,
        args.weights,
        args.data,
        split=args.split,
        batch_size=args.batch_size,
        img_size=args.img_size,
        num_workers=args.workers,
        out=out,
    )
    if args.json:
        print_json(result.to_dict())
        return 0
    rows = [(c, acc, sum(result.confusion[i])) for i, (c, acc) in enumerate(zip(result.classes, result.per_class))]
    print_table(rows, ["class", "top-1 %", "images"], title=f"{args.model} on {args.data} {args.split}")
    console.print(
        f"top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  loss {result.loss:.4f}  ({result.count} images, "
        f"{result.skipped} skipped); confusion matrix {result.files.get('confusion_png')}"
    )
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from mobilezoo.train import predict

    result = predict(args.model, args.weights, args.images, topk=args.topk)
    if args.json:
        print_json(result.to_dict())
        return 0
    rows = [(p.image, *(f"{c} ({100 * prob:.1f}%)" for c, prob in p.top)) for p in result.predictions]
    k = len(result.predictions[0].top)
    print_table(rows, ["image", *(f"top-{i + 1}" for i in range(k))], title=f"{args.model} predictions")
    return 0
