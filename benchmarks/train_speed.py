"""The trainer's images/s (data loading included) against a plain PyTorch training step in both memory formats.

The plain steps run forward, loss, backward and the optimizer step on a fixed random batch (no data loading), the
model and optimizer built as the trainer builds them. The trainer runs :func:`mobilezoo.train.train` on the built-in
digits for ``steps`` steps and its images/s is the batch over the median time between its step events (data loading included).
All three are measured in turn, ``rounds`` times over, so the machine's load hits them alike; figures are medians over
rounds. Written with the machine, its CPU features and the versions.

    .venv/bin/python benchmarks/train_speed.py    # MobileNetV3-Small, b32, 224 px: results/train_speed_<cpu kind>.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from mobilezoo import create_model
from mobilezoo.benchmark.environment import environment
from mobilezoo.machine import cpu_info
from mobilezoo.train import TrainConfig, train
from mobilezoo.train.config import resolve_config
from mobilezoo.train.optim import build_optimizer


def plain_step(cfg: TrainConfig, channels_last: bool, steps: int) -> float:
    """Images/s of ``steps`` plain training steps (after 2 untimed ones) in the given memory format."""
    model = create_model(cfg.model, num_classes=10, in_chans=cfg.in_chans).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = build_optimizer(model, cfg)
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.batch_size, cfg.in_chans, cfg.img_size, cfg.img_size, generator=gen).contiguous(
        memory_format=fmt
    )
    y = torch.randint(0, 10, (cfg.batch_size,), generator=gen)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return cfg.batch_size / statistics.median(times)


def trainer(cfg: TrainConfig) -> tuple[float, dict]:
    """The trainer's images/s: batch / the median time between its step events (data loading included, the first
    5 steps left out as warm-up), and the memory format it chose."""
    stamps: list[float] = []

    def progress(event) -> None:
        if event.kind == "step":
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        result = train(dataclasses.replace(cfg, out=str(Path(tmp) / "run")), progress=progress)
    gaps = [b - a for a, b in itertools.pairwise(stamps[5:])]
    return cfg.batch_size / statistics.median(gaps), {"memory_format": result.history[-1]["memory_format"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v3_small")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=40, help="trainer steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None, help="default: results/train_speed_<cpu vendor>_<int8 feature>.json")
    args = ap.parse_args()
    base = TrainConfig(model=args.model, data="builtin", img_size=args.img_size, batch_size=args.batch_size, epochs=1,
                       train_subset=args.batch_size * args.steps, val_subset=50, bn_recalibrate=1)  # fmt: skip
    cfg = resolve_config(base)
    figures: dict[str, list[float]] = {"plain NCHW step": [], "plain channels_last step": [], "trainer": []}
    decided = {}
    for r in range(args.rounds):
        figures["plain NCHW step"].append(plain_step(cfg, False, 10))
        figures["plain channels_last step"].append(plain_step(cfg, True, 10))
        ips, decided = trainer(base)
        figures["trainer"].append(ips)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in figures.items()), file=sys.stderr)
    medians = {k: statistics.median(v) for k, v in figures.items()}
    best_plain = max(medians["plain NCHW step"], medians["plain channels_last step"])
    data = {
        "environment": {**environment(), "cpu_summary": cpu_info().summary(), "cpu_features": cpu_info().to_dict()},
        "setup": {"model": args.model, "batch_size": args.batch_size, "img_size": args.img_size,
                  "in_chans": cfg.in_chans, "data": "builtin", "trainer_steps": args.steps, "rounds": args.rounds},
        "images_per_s": {k: {"median": medians[k], "rounds": v} for k, v in figures.items()},
        "trainer_over_best_plain": medians["trainer"] / best_plain,
        "trainer_decisions": decided,
    }  # fmt: skip
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"train_speed_{cpu_info().kind()}.json"
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(
        json.dumps({k: round(v, 1) for k, v in medians.items()}),
        f"trainer / best plain {data['trainer_over_best_plain']:.2f}",
    )


if __name__ == "__main__":
    main()
