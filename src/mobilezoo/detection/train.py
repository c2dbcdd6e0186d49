"""Train a detector and score it with COCO AP: :func:`train_detector`, :func:`evaluate_detector`.

A step-based loop (AdamW with linear warm-up and cosine decay, gradient clipping) on the training engine's machinery
(:mod:`mobilezoo.train`): its config files and resume check (:mod:`~mobilezoo.train.config_io`), atomic checkpoints,
RNG state and metrics files (:mod:`~mobilezoo.train.checkpoint`), torchrun set-up (:mod:`~mobilezoo.train.distributed`),
divergence guards (:mod:`~mobilezoo.train.guards`) and :class:`~mobilezoo.train.ProgressEvent`. A run folder
(``out_dir``) holds::

    config.yaml             the DetectionTrainConfig
    checkpoints/, last.json the newest checkpoint (weights + optimizer, step, RNG state, history), as the engine's
    metrics.json/.csv/.png  one record per log_every steps: step, loss (mean since the last record), lr, images_per_s
    detector.safetensors    the trained detector, its build config in the metadata (mobilezoo.detection.load_detector)
    coco_metrics.json       the final COCO metrics on the validation set

Determinism: on the built-in set, step ``s`` trains on canvases ``s * batch_size ... + batch_size - 1`` of the training
stream (each a pure function of ``(seed, index)``, drawn fresh: no canvas is seen twice unless ``train_canvases``
bounds the stream). On a COCO folder, epoch ``e``'s order is ``randperm`` under ``(seed, e)``. What else draws random
numbers (Light-Head R-CNN's RoI sampling) uses the global RNG, whose state every checkpoint stores, as it stores the
optimizer's: a run stopped at any point and resumed from its last checkpoint ends with the weights of a run never
stopped (bit for bit on CPU with the same thread count).

torchrun: each of the N processes trains on its own ``batch_size / N`` images of every step's batch (gloo on CPU,
``DistributedDataParallel`` averaging the gradients); only rank 0 writes files and evaluates. Each process's
BatchNorm normalises its own share, and torchvision's losses are normalised per process, so N processes match one
process up to those per-share statistics, not bit for bit.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from mobilezoo.data import BUILTIN, BUILTIN_MEAN, BUILTIN_STD
from mobilezoo.detection.data import CanvasConfig, CocoFolder, DigitCanvases, collate
from mobilezoo.detection.detectors import create_detector
from mobilezoo.detection.io import _plain, save_detector
from mobilezoo.detection.metrics import CocoMetrics, coco_map
from mobilezoo.train.results import ProgressEvent

COCO_LAYOUT = "root/{split}/instances.json with the images in root/{split}/images/ (what export_coco writes)"
WARMUP_START = 0.01
CONFIG_FILE = "config.yaml"
DETECTOR_FILE = "detector.safetensors"
COCO_METRICS_FILE = "coco_metrics.json"
# config fields that may differ between a run and its resumption (the rest would change what the run computes)
RESUME_MAY_DIFFER = {"threads"}
DIVERGED_ADVICE = "start a new run with a lower lr (--lr) or more warm-up steps (--warmup-steps)"


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
        """Plain values (tuples as lists), as ``config.yaml`` holds them; :meth:`from_dict` reads them back."""
        out = asdict(self)
        out["canvas"] = self.canvas.to_dict()
        return _plain(out)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DetectionTrainConfig:
        """The config ``values`` describe (missing fields: the defaults; ``canvas`` a dict of CanvasConfig fields).

        Raises ``ValueError`` naming unknown keys, or a bad canvas field."""
        if not isinstance(values, Mapping):
            raise ValueError(f"a detection config is a mapping of field names to values, got {type(values).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"unknown detection config key(s) {', '.join(map(repr, unknown))}; the fields are {', '.join(known)}"
            )
        v = dict(values)
        canvas = v.get("canvas")
        if isinstance(canvas, Mapping):
            bad = sorted(set(canvas) - {f.name for f in fields(CanvasConfig)})
            if bad:
                raise ValueError(f"unknown canvas key(s) {', '.join(map(repr, bad))}")
            v["canvas"] = CanvasConfig(**canvas)
        elif canvas is not None and not isinstance(canvas, CanvasConfig):
            raise ValueError(f"canvas must be a mapping of CanvasConfig fields, got {canvas!r}")
        for name in ("options", "backbone_kwargs"):
            if name in v and not isinstance(v[name], Mapping):
                raise ValueError(f"{name} must be a mapping, got {v[name]!r}")
        return cls(**v)


@dataclass
class DetectionTrainResult:
    """What :func:`train_detector` returns: the final COCO metrics on the validation set, the loss history (one
    record per ``log_every`` steps), timings in seconds, images trained on, annotations skipped (by reason), the model
    (eval mode, CPU) and the run folder (None without ``out_dir``)."""

    config: dict[str, Any]
    metrics: CocoMetrics
    history: list[dict[str, float]]
    train_s: float
    eval_s: float
    images_seen: int
    skipped: dict[str, dict[str, int]]
    model: nn.Module
    run_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "metrics": self.metrics.to_dict(),
            "history": self.history,
            "train_s": self.train_s,
            "eval_s": self.eval_s,
            "images_seen": self.images_seen,
            "skipped": self.skipped,
            "run_dir": self.run_dir,
        }


def load_detection_config(run_dir: str | PathLike) -> DetectionTrainConfig:
    """The config saved in a detection run folder. Raises ``FileNotFoundError`` when there is none."""
    import yaml

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(Path(run_dir))!r} holds no {CONFIG_FILE}: not a mobilezoo detection run folder")
    values = yaml.safe_load(path.read_text())
    try:
        return DetectionTrainConfig.from_dict(values)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{str(path)!r} is not a detection run's config: {e}") from None


def resume_detection_config(
    run_dir: str | PathLike, *, labels: Mapping[str, str] | None = None, **overrides: Any
) -> DetectionTrainConfig:
    """The saved config of ``run_dir``, for ``train_detector(..., resume=True)``.

    ``overrides`` of :data:`RESUME_MAY_DIFFER` (threads) replace the saved values; any other field may be given only
    with its saved value, else a ``ValueError`` names each such field (as ``labels[field]``, e.g. a CLI flag) with the
    run's value and the given one. Unknown fields raise a ``ValueError`` too.
    """
    from mobilezoo.train.config_io import refuse_changes

    cfg = load_detection_config(run_dir)
    saved = cfg.to_dict()
    given = DetectionTrainConfig.from_dict({**saved, **overrides}).to_dict()
    changed = {k: given[k] for k in overrides if k not in RESUME_MAY_DIFFER}
    refuse_changes(Path(run_dir), saved, changed, labels or {}, RESUME_MAY_DIFFER)
    for k in overrides:
        if k in RESUME_MAY_DIFFER:
            setattr(cfg, k, overrides[k])
    return cfg


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


def _check_every(name: str, value: Any, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be {'None or ' if allow_none else ''}an integer >= 1, got {value!r}")


def _plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """metrics.png of a detection run: the training loss and the learning rate per step."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax_loss, ax_lr = fig.subplots(1, 2)
    steps = [row["step"] for row in history]
    ax_loss.plot(steps, [row["loss"] for row in history], marker="o")
    ax_lr.plot(steps, [row["lr"] for row in history], marker="o")
    ax_loss.set(xlabel="step", ylabel="loss", title="training loss (sum of the detector's losses)")
    ax_lr.set(xlabel="step", ylabel="lr", title="learning rate")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
    fig.savefig(path, format="png", dpi=100)


def train_detector(
    cfg: DetectionTrainConfig,
    *,
    out_dir: str | PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int | None = 100,
    log_every: int = 50,
    progress: Callable[[ProgressEvent], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> DetectionTrainResult:
    """Train ``cfg.detector`` on ``cfg.backbone`` from scratch on ``cfg.data`` and score it on the validation set.

    Every ``log_every`` steps a record ``{step, loss, lr, images_per_s}`` (loss: the mean since the previous record,
    over every process) is appended to the history and sent to ``progress`` as a ``ProgressEvent("step", ...)``
    whose ``record`` it is; the final evaluation is sent as ``ProgressEvent("eval", ...)`` with the COCO metrics as
    ``record``. ``on_step(step)`` is called after every optimizer step (on every process).

    ``out_dir``: the run folder (see the module docstring; nothing is written if None). A checkpoint is written every
    ``checkpoint_every`` steps (None: only at the end) and at the end. ``resume=True`` continues the run in
    ``out_dir`` from its last checkpoint (a finished run is evaluated again); ``cfg`` must equal the run's config
    outside :data:`RESUME_MAY_DIFFER` (:func:`resume_detection_config` reads it). Launched by torchrun, the run is
    data-parallel (see the module docstring).

    Returns a :class:`DetectionTrainResult`. Raises ``ValueError`` for a bad config (naming the field), a resume with
    other settings (naming them), an ``out_dir`` that already holds a run without ``resume``, a batch that does not
    split into shares of >= 2 images per process; ``FileNotFoundError`` for nothing to resume;
    :class:`~mobilezoo.train.TrainingDivergedError` when the loss or the weights become NaN/infinite (nothing of that
    step is saved); and what :func:`create_detector` and the data sets raise.
    """
    from mobilezoo.train import checkpoint as ckpt
    from mobilezoo.train.config_io import refuse_changes, save_config
    from mobilezoo.train.distributed import all_reduce_sum, barrier, broadcast_object, setup
    from mobilezoo.train.guards import diverged_error, nonfinite_report

    _check(cfg)
    _check_every("log_every", log_every, False)
    _check_every("checkpoint_every", checkpoint_every, True)
    run_dir = Path(out_dir) if out_dir is not None else None
    if resume:
        if run_dir is None or not (run_dir / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"nothing to resume: {str(out_dir)!r} holds no detection run ({CONFIG_FILE})")
        saved = load_detection_config(run_dir).to_dict()
        given = {k: v for k, v in cfg.to_dict().items() if k not in RESUME_MAY_DIFFER}
        refuse_changes(run_dir, saved, given, {}, RESUME_MAY_DIFFER)
    elif run_dir is not None and ((run_dir / CONFIG_FILE).exists() or (run_dir / ckpt.POINTER).exists()):
        raise ValueError(f"{str(run_dir)!r} already holds a run: pass resume=True (--resume) or choose another folder")
    info = setup("cpu")
    world, rank = info.world_size, info.rank
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes: each takes a share")
    share = cfg.batch_size // world
    if share < 2:
        raise ValueError(
            f"batch_size {cfg.batch_size} over {world} processes leaves {share} image per process; BatchNorm needs "
            "at least 2: raise batch_size"
        )
    old_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        train_ds, val_ds = detection_datasets(cfg)
        builtin = cfg.data == BUILTIN
        in_chans = cfg.in_chans or (1 if builtin else 3)
        categories = list(train_ds.categories)  # type: ignore[attr-defined]
        norm = {"image_mean": BUILTIN_MEAN, "image_std": BUILTIN_STD} if builtin else {}
        torch.manual_seed(cfg.seed)
        model = create_detector(
            cfg.detector,
            cfg.backbone,
            num_classes=len(categories),
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
        step, train_s = 0, 0.0
        history: list[dict[str, float]] = []
        window = {"loss": 0.0, "n": 0}
        state = ckpt.load_checkpoint(run_dir, model) if resume else None  # type: ignore[arg-type]
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            ckpt.set_rng_state(state["rng"])
            step, history, window, train_s = state["step"], state["history"], state["window"], state["train_s"]
        if rank > 0:  # other processes draw their own random numbers (rank 0's are the single-process run's)
            torch.manual_seed(cfg.seed + 1_000_003 * rank + step)
        if run_dir is not None and info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                save_config(cfg, run_dir / CONFIG_FILE)
        net: nn.Module = nn.parallel.DistributedDataParallel(model) if info.enabled else model
        meta = {"train_config": json.dumps(cfg.to_dict())}

        def state_now() -> dict[str, Any]:
            return {
                "optimizer": optimizer.state_dict(),
                "rng": ckpt.rng_state(),
                "history": history,
                "window": dict(window),
                "train_s": train_s,
            }

        def stop_if(what: str | None, where: str, lr: float) -> None:
            """Raise TrainingDivergedError on every process if ``what`` is set on any."""
            if info.enabled:
                flag = all_reduce_sum(torch.tensor([float(what is not None)]), info)
                what = what or ("another process's loss or weights are NaN or infinite" if float(flag) else None)
            if what is not None:
                raise diverged_error(where, what, lr, DIVERGED_ADVICE)

        def save(at: int) -> None:
            """A checkpoint of step ``at`` and the metrics so far (rank 0); the weights checked on every process."""
            stop_if(nonfinite_report([("model", model)]), f"by step {at}", _lr(at - 1, cfg))
            if run_dir is not None and info.is_main:
                ckpt.save_checkpoint(run_dir, at, model, state_now())
                ckpt.write_metrics(run_dir, history, _plot_history)

        n_train = len(train_ds)  # type: ignore[arg-type]
        epochs = max(1, math.ceil(cfg.steps * cfg.batch_size / n_train))
        model.train()
        t_window = time.perf_counter()
        while step < cfg.steps:
            t0 = time.perf_counter()
            lr = _lr(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            indices = _batch_indices(step, cfg, n_train)[rank * share : (rank + 1) * share]
            images, targets = collate([train_ds[i] for i in indices])
            losses = net(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
            loss = sum(losses.values())
            value = float(loss.detach())
            bad = (
                None if math.isfinite(value) else f"the loss is {value} ({ {k: float(v) for k, v in losses.items()} })"
            )
            stop_if(bad, f"at step {step + 1}", lr)  # before the update: the weights stay those of the last good step
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            window["loss"] += float(all_reduce_sum(torch.tensor([value], dtype=torch.float64), info)) / world
            window["n"] += 1
            now = time.perf_counter()
            train_s += now - t0
            if step % log_every == 0 or step == cfg.steps:
                record = {
                    "step": step,
                    "loss": window["loss"] / window["n"],
                    "lr": lr,
                    "images_per_s": window["n"] * cfg.batch_size / max(now - t_window, 1e-9),
                }
                history.append(record)
                if progress is not None and info.is_main:
                    eta = (cfg.steps - step) * train_s / max(step, 1)
                    epoch = min(epochs, 1 + (step - 1) * cfg.batch_size // n_train)
                    ips = record["images_per_s"]
                    progress(
                        ProgressEvent("step", epoch, epochs, step, cfg.steps, record["loss"], lr, ips, eta, record)
                    )
                window, t_window = {"loss": 0.0, "n": 0}, now
            if on_step is not None:
                on_step(step)
            if checkpoint_every is not None and step % checkpoint_every == 0 and step < cfg.steps:
                save(step)
        if run_dir is not None and (state is None or state["step"] < cfg.steps):
            save(step)  # the end of the run (a resumed finished run has it already)
        model.eval()
        if run_dir is not None and info.is_main:
            save_detector(model, run_dir / DETECTOR_FILE, categories=categories, metadata={**meta, "step": str(step)})
        metrics, eval_s = None, 0.0
        if info.is_main:
            t1 = time.perf_counter()
            metrics = evaluate_detector(model, val_ds, batch_size=cfg.eval_batch_size)
            eval_s = time.perf_counter() - t1
        metrics, eval_s = broadcast_object((metrics, eval_s), info)  # type: ignore[misc]
        skipped = {"train": dict(train_ds.skipped), "val": dict(val_ds.skipped)}  # type: ignore[attr-defined]
        if run_dir is not None and info.is_main:
            payload = {"metrics": metrics.to_dict(), "step": step, "data": cfg.data, "skipped": skipped}
            ckpt.atomic_write_text(run_dir / COCO_METRICS_FILE, json.dumps(payload, indent=1) + "\n")
        if progress is not None and info.is_main:
            last = history[-1] if history else {"loss": math.nan, "lr": 0.0}
            progress(
                ProgressEvent(
                    "eval", epochs, epochs, step, cfg.steps, last["loss"], last["lr"], 0.0, 0.0, metrics.to_dict()
                )
            )
        barrier(info)
    finally:
        torch.set_num_threads(old_threads)
    return DetectionTrainResult(
        config=cfg.to_dict(),
        metrics=metrics,
        history=history,
        train_s=train_s,
        eval_s=eval_s,
        images_seen=step * cfg.batch_size,
        skipped=skipped,
        model=model.eval(),
        run_dir=str(run_dir) if run_dir is not None else None,
    )


__all__ = [
    "COCO_METRICS_FILE",
    "CONFIG_FILE",
    "DETECTOR_FILE",
    "RESUME_MAY_DIFFER",
    "DetectionTrainConfig",
    "DetectionTrainResult",
    "detection_datasets",
    "evaluate_detector",
    "load_detection_config",
    "resume_detection_config",
    "train_detector",
]
