"""The trainer's images/s (data loading included) against a plain PyTorch training step, each in a fresh process.

The plain steps run forward, loss, backward and the optimizer step on a fixed random batch (no data loading), the
model and optimizer built as the trainer builds them, in NCHW and in channels_last, with glibc's default allocator
and with the freed memory kept (:func:`mobilezoo.train.speed.keep_freed_memory`, what the trainer does on CPU). The
trainer runs :func:`mobilezoo.train.train` on the built-in digits for ``steps`` steps, with its own decisions and
with ``keep_freed_memory=False``; its images/s is the batch over the median time between its step events (data
loading included). Each measurement runs in a new Python process (the allocator setting is process-wide and cannot
be undone), the rows in turn, ``rounds`` times over, so the machine's load hits them alike. Reported: medians over
rounds, minor page faults per step, and per round the trainer / plain channels_last step ratios with a sign test.
Written with the machine, its CPU features and the versions.

    .venv/bin/python benchmarks/train_speed.py    # MobileNetV3-Small, b32, 224 px: results/train_speed_<cpu kind>.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from mobilezoo import create_model
from mobilezoo.benchmark.environment import environment
from mobilezoo.machine import cpu_info
from mobilezoo.policies import PairedRatio
from mobilezoo.train import TrainConfig, train
from mobilezoo.train.config import resolve_config
from mobilezoo.train.optim import build_optimizer
from mobilezoo.train.speed import keep_freed_memory

# row -> (what, channels_last, keep freed memory)
ROWS = {
    "plain NCHW step": ("plain", False, False),
    "plain channels_last step": ("plain", True, False),
    "plain channels_last step, freed memory kept": ("plain", True, True),
    "trainer": ("trainer", True, True),
    "trainer, keep_freed_memory=false": ("trainer", True, False),
}


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def plain_step(cfg: TrainConfig, channels_last: bool, steps: int) -> dict:
    """Images/s of ``steps`` plain training steps (after 2 untimed ones) and their minor page faults per step."""
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
    times, faults = [], []
    for i in range(steps + 2):
        f0, t0 = _faults(), time.perf_counter()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - t0)
            faults.append(_faults() - f0)
    return {"images_per_s": cfg.batch_size / statistics.median(times), "faults_per_step": statistics.median(faults)}


def trainer(cfg: TrainConfig) -> dict:
    """The trainer's images/s: batch / the median time between its step events (data loading included, the first
    5 steps left out as warm-up), minor page faults per step, and the memory format it chose."""
    stamps: list[tuple[float, int]] = []

    def progress(event) -> None:
        if event.kind == "step":
            stamps.append((time.perf_counter(), _faults()))

    with tempfile.TemporaryDirectory() as tmp:
        result = train(dataclasses.replace(cfg, out=str(Path(tmp) / "run")), progress=progress)
    gaps = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(stamps[5:])]
    return {
        "images_per_s": cfg.batch_size / statistics.median(g[0] for g in gaps),
        "faults_per_step": statistics.median(g[1] for g in gaps),
        "memory_format": result.history[-1]["memory_format"],
        "freed_memory_kept": result.history[-1]["freed_memory_kept"],
    }


def measure_one(row: str, base: TrainConfig) -> dict:
    """One row's measurement in this process (run by :func:`main` in a fresh process per row and round)."""
    what, channels_last, keep = ROWS[row]
    if what == "plain":
        if keep:
            keep_freed_memory()
        return plain_step(resolve_config(base), channels_last, 10)
    return trainer(dataclasses.replace(base, keep_freed_memory=keep))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v3_small")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=40, help="trainer steps per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=None, help="default: results/train_speed_<cpu kind>.json")
    ap.add_argument("--one", choices=sorted(ROWS), help=argparse.SUPPRESS)  # a child process's single measurement
    args = ap.parse_args()
    base = TrainConfig(model=args.model, data="builtin", img_size=args.img_size, batch_size=args.batch_size, epochs=1,
                       train_subset=args.batch_size * args.steps, val_subset=50, bn_recalibrate=1)  # fmt: skip
    if args.one:
        print(json.dumps(measure_one(args.one, base)))
        return
    passed = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("model", "batch_size", "img_size", "steps")]
    runs: dict[str, list[dict]] = {row: [] for row in ROWS}
    for r in range(args.rounds):
        for row in ROWS:
            out = subprocess.run(
                [sys.executable, __file__, *passed, "--one", row], capture_output=True, text=True, check=True
            )
            runs[row].append(json.loads(out.stdout.splitlines()[-1]))
        print(
            f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['images_per_s']:.1f}" for k, v in runs.items()), file=sys.stderr
        )
    ips = {row: [m["images_per_s"] for m in ms] for row, ms in runs.items()}
    medians = {row: statistics.median(v) for row, v in ips.items()}

    def against(reference: str) -> dict:  # per round: the trainer's images/s / the step's (its time / the trainer's)
        ratios = [t / p for t, p in zip(ips["trainer"], ips[reference], strict=True)]
        return PairedRatio.from_ratios("trainer", reference, ratios).to_dict()

    data = {
        "environment": {**environment(), "cpu_summary": cpu_info().summary(), "cpu_features": cpu_info().to_dict()},
        "setup": {"model": args.model, "batch_size": args.batch_size, "img_size": args.img_size,
                  "in_chans": resolve_config(base).in_chans, "data": "builtin", "trainer_steps": args.steps,
                  "rounds": args.rounds, "one_process_per_measurement": True},
        "images_per_s": {row: {"median": medians[row], "rounds": ips[row]} for row in ROWS},
        "faults_per_step": {row: statistics.median(m["faults_per_step"] for m in ms) for row, ms in runs.items()},
        "trainer_over_plain_channels_last": against("plain channels_last step"),
        "trainer_over_plain_channels_last_kept": against("plain channels_last step, freed memory kept"),
        "trainer_decisions": {k: runs["trainer"][-1][k] for k in ("memory_format", "freed_memory_kept")},
    }  # fmt: skip
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"train_speed_{cpu_info().kind()}.json"
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps({k: round(v, 1) for k, v in medians.items()}))
    for key in ("trainer_over_plain_channels_last", "trainer_over_plain_channels_last_kept"):
        c = data[key]
        print(f"{key}: median {c['median']:.3f}, won {c['a_faster']}/{len(c['ratios'])}, p {c['p_value']:.3f}")


if __name__ == "__main__":
    main()
