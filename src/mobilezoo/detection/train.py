"""Train a detector and score it with COCO AP: :func:`train_detector`, :func:`evaluate_detector`.

A self-contained loop (single process, step-based, AdamW with linear warm-up and cosine decay, gradient clipping),
kept small so that it can move into :mod:`mobilezoo.train.engine` later: the engine's recipe, checkpoint, resume, DDP
and progress machinery are written around a classifier's ``(x, y)`` batches and top-1.

Determinism: on the built-in set, step ``s`` trains on canvases ``s * batch_size ... + batch_size - 1`` of the training
stream (each a pure function of ``(seed, index)``, drawn fresh: no canvas is seen twice unless ``train_canvases``
bounds the stream), so a run is reproducible from its config and could resume at any step. On a COCO folder, epoch
``e``'s order is ``randperm`` under ``(seed, e)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from mobilezoo.data import BUILTIN, BUILTIN_MEAN, BUILTIN_STD
from mobilezoo.detection.data import CanvasConfig, CocoFolder, DigitCanvases, collate
from mobilezoo.detection.detectors import create_detector
from mobilezoo.detection.metrics import CocoMetrics, coco_map

COCO_LAYOUT = "root/{split}/instances.json with the images in root/{split}/images/ (what export_coco writes)"
WARMUP_START = 0.01


@dataclass
class DetectionTrainConfig:
    """A detection run. ``data``: ``"builtin"`` (digit canvases, ``canvas`` says how they are drawn) or a folder
    holding ``train/`` and ``val/`` COCO folders (``train/instances.json`` + ``train/images/``, the layout
    :func:`~mobilezoo.detection.data.export_coco` writes).

    ``steps`` optimizer steps of ``batch_size`` images. ``train_canvases``: None draws a fresh canvas for every image
    (``steps * batch_size`` canvases), a number cycles through that many. ``val_canvases``: validation canvases scored.
    ``image_size`` (None: the canvas size for the built-in set, 320 for folders) goes to :func:`create_detector`, with
    ``options`` and ``backbone_kwargs``. ``in_chans`` (None: 1 for the built-in set, 3 for folders; the built-in set
    is grayscale only). ``threads``: torch's intra-op threads for the run (None: leave as is).
    """

    detector: str = "fcos"
    backbone: str = "shufflenet_v2_x0_5"
    data: str = BUILTIN
    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 10.0
    image_size: int | None = None
    in_chans: int | None = None
    canvas: CanvasConfig = field(default_factory=CanvasConfig)
    train_canvases: int | None = None
    val_canvases: int = 500
    eval_batch_size: int = 16
    seed: int = 0
    on_bad: str = "error"
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["canvas"] = self.canvas.to_dict()
        return out


@dataclass
class DetectionTrainResult:
    """What :func:`train_detector` returns: the final COCO metrics on the validation set, the loss history (one
    record per ``log_every`` steps), timings in seconds, images trained on, annotations skipped (by reason), the model
    (eval mode, CPU)."""

    config: dict[str, Any]
    metrics: CocoMetrics
    history: list[dict[str, float]]
    train_s: float
    eval_s: float
    images_seen: int
    skipped: dict[str, dict[str, int]]
    model: nn.Module

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "metrics": self.metrics.to_dict(),
            "history": self.history,
            "train_s": self.train_s,
            "eval_s": self.eval_s,
            "images_seen": self.images_seen,
            "skipped": self.skipped,
        }


def _check(cfg: DetectionTrainConfig) -> None:
    for name in ("steps", "batch_size", "val_canvases", "eval_batch_size"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if cfg.batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (BatchNorm needs two images), got {cfg.batch_size}")
    if cfg.train_canvases is not None and (not isinstance(cfg.train_canvases, int) or cfg.train_canvases < 1):
        raise ValueError(f"train_canvases must be None or an integer >= 1, got {cfg.train_canvases!r}")
    if not isinstance(cfg.warmup_steps, int) or cfg.warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an integer >= 0, got {cfg.warmup_steps!r}")
    for name in ("lr", "weight_decay", "grad_clip"):
        value = getattr(cfg, name)
        if (
            not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
            or (name == "lr" and value == 0)
        ):
            raise ValueError(f"{name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, got {value!r}")
    if cfg.data == BUILTIN and cfg.in_chans not in (None, 1):
        raise ValueError(f"the built-in canvases are grayscale: in_chans must be None or 1, got {cfg.in_chans!r}")
    if cfg.in_chans not in (None, 1, 3):
        raise ValueError(f"in_chans must be None, 1 or 3, got {cfg.in_chans!r}")
    if cfg.threads is not None and (not isinstance(cfg.threads, int) or cfg.threads < 1):
        raise ValueError(f"threads must be None or an integer >= 1, got {cfg.threads!r}")


def detection_datasets(cfg: DetectionTrainConfig) -> tuple[Dataset, Dataset]:
    """(train, val) of ``cfg.data``; raises ``FileNotFoundError``/``ValueError`` naming what is missing or bad."""
    if cfg.data == BUILTIN:
        length = cfg.train_canvases or cfg.steps * cfg.batch_size
        train = DigitCanvases("train", length, seed=cfg.seed, config=cfg.canvas)
        return train, DigitCanvases("val", cfg.val_canvases, seed=cfg.seed, config=cfg.canvas)
    root = Path(cfg.data)
    if not root.is_dir():
        raise FileNotFoundError(f"data {cfg.data!r} is neither {BUILTIN!r} nor a folder (expected {COCO_LAYOUT})")
    out = []
    for split in ("train", "val"):
        ann = root / split / "instances.json"
        if not ann.is_file():
            raise FileNotFoundError(f"{str(ann)!r} does not exist (expected {COCO_LAYOUT})")
        out.append(CocoFolder(ann, root / split / "images", in_chans=cfg.in_chans or 3, on_bad=cfg.on_bad))
    return out[0], out[1]


def _lr(step: int, cfg: DetectionTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (WARMUP_START + (1 - WARMUP_START) * step / cfg.warmup_steps)
    t = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _batch_indices(step: int, cfg: DetectionTrainConfig, n: int) -> list[int]:
    if cfg.data == BUILTIN:
        return [(step * cfg.batch_size + j) % n for j in range(cfg.batch_size)]
    per_epoch = max(n // cfg.batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)).tolist()
    return [order[(k * cfg.batch_size + j) % n] for j in range(cfg.batch_size)]


@torch.inference_mode()
def evaluate_detector(model: nn.Module, dataset: Dataset, *, batch_size: int = 16) -> CocoMetrics:
    """COCO metrics of ``model`` (a :func:`create_detector` model, put in eval mode) on every image of ``dataset``
    (a :class:`DigitCanvases` or :class:`CocoFolder`, whose crowd regions are passed on as such)."""
    model.eval()
    device = next(model.parameters()).device
    gts, preds = [], []
    n = len(dataset)  # type: ignore[arg-type]
    for start in range(0, n, batch_size):
        images, targets = collate([dataset[i] for i in range(start, min(start + batch_size, n))])
        out = model([im.to(device) for im in images])
        preds += [{k: v.cpu() for k, v in o.items()} for o in out]
        gts += targets
    categories = [label for label, _ in getattr(dataset, "categories", [])] or None
    return coco_map(gts, preds, categories=categories)


def train_detector(
    cfg: DetectionTrainConfig,
    *,
    log_every: int = 50,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> DetectionTrainResult:
    """Train ``cfg.detector`` on ``cfg.backbone`` from scratch on ``cfg.data`` and score it on the validation set.

    Every ``log_every`` steps a record ``{step, loss, lr, images_per_s}`` is appended to the history (and passed to
    ``progress``). A NaN/infinite loss stops the run with :class:`~mobilezoo.train.TrainingDivergedError`. Returns a
    :class:`DetectionTrainResult`. Raises ``ValueError`` for a bad config (naming the field) and what
    :func:`create_detector` and the data sets raise.
    """
    from mobilezoo.train.guards import TrainingDivergedError

    _check(cfg)
    old_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        train_ds, val_ds = detection_datasets(cfg)
        builtin = cfg.data == BUILTIN
        in_chans = cfg.in_chans or (1 if builtin else 3)
        num_classes = len(train_ds.categories)  # type: ignore[attr-defined]
        norm = {"image_mean": BUILTIN_MEAN, "image_std": BUILTIN_STD} if builtin else {}
        torch.manual_seed(cfg.seed)
        model = create_detector(
            cfg.detector,
            cfg.backbone,
            num_classes=num_classes,
            in_chans=in_chans,
            image_size=cfg.image_size or (cfg.canvas.size if builtin else 320),
            backbone_kwargs=cfg.backbone_kwargs,
            **norm,
            **cfg.options,
        )
        decay = [p for n, p in model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]  # norms and biases
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
        )
        model.train()
        history: list[dict[str, float]] = []
        n_train = len(train_ds)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        window_loss, window_n, window_t = 0.0, 0, time.perf_counter()
        for step in range(cfg.steps):
            lr = _lr(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, targets = collate([train_ds[i] for i in _batch_indices(step, cfg, n_train)])
            losses = model(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                parts = {k: float(v) for k, v in losses.items()}
                raise TrainingDivergedError(
                    f"the loss became non-finite at step {step + 1} (lr {lr:.3g}): {parts}; lower lr or raise warmup_steps"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            window_loss += float(loss.detach())
            window_n += 1
            if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
                now = time.perf_counter()
                record = {
                    "step": step + 1,
                    "loss": window_loss / window_n,
                    "lr": lr,
                    "images_per_s": window_n * cfg.batch_size / max(now - window_t, 1e-9),
                }
                history.append(record)
                if progress is not None:
                    progress(record)
                window_loss, window_n, window_t = 0.0, 0, now
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        metrics = evaluate_detector(model, val_ds, batch_size=cfg.eval_batch_size)
        eval_s = time.perf_counter() - t1
    finally:
        torch.set_num_threads(old_threads)
    return DetectionTrainResult(
        config=cfg.to_dict(),
        metrics=metrics,
        history=history,
        train_s=train_s,
        eval_s=eval_s,
        images_seen=cfg.steps * cfg.batch_size,
        skipped={"train": dict(train_ds.skipped), "val": dict(val_ds.skipped)},  # type: ignore[attr-defined]
        model=model.eval(),
    )


__all__ = ["DetectionTrainConfig", "DetectionTrainResult", "detection_datasets", "evaluate_detector", "train_detector"]
