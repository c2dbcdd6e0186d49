"""Evaluation (top-1/top-5, per-class accuracy, confusion matrix), BN recalibration and prediction.

The run settings a trained model needs at inference (class names, normalisation, input size and channels) travel in
the metadata of the ``.safetensors`` files a run writes, so ``evaluate_weights``/``predict`` need only the weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from mobilezoo.data import (
    BUILTIN,
    DECODE_ERRORS,
    Normalization,
    build_transforms,
    collate_skipping,
    default_normalization,
    image_mode,
    load_image,
    load_split,
    subset_indices,
)
from mobilezoo.train.distributed import DistInfo, all_reduce_sum


@dataclass
class EvalResult:
    """Accuracies in percent; ``confusion[i][j]`` counts images of class i predicted as j."""

    top1: float
    top5: float
    loss: float
    count: int
    classes: list[str]
    per_class: list[float | None]
    confusion: list[list[int]]
    skipped: int = 0
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "count": self.count,
            "skipped": self.skipped,
            "per_class": dict(zip(self.classes, self.per_class)),
            "confusion": self.confusion,
            "classes": self.classes,
            "files": self.files,
        }


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, int]],
    classes: Sequence[str],
    device: torch.device | str = "cpu",
    dist_info: DistInfo | None = None,
    amp: bool = False,
    channels_last: bool = False,
) -> EvalResult:
    """Evaluate ``model`` (set to eval mode) on ``(x, y, skipped)`` batches; sums are reduced over processes."""
    info = dist_info or DistInfo()
    device = torch.device(device)
    n = len(classes)
    model.eval()
    confusion = torch.zeros(n, n, dtype=torch.int64, device=device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, top-5 hits, skipped
    for x, y, skipped in batches:
        sums[2] += skipped
        if y.numel() == 0:
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = model(x)
        logits = logits.float()
        sums[0] += nn.functional.cross_entropy(logits, y, reduction="sum")
        k = min(5, n)
        sums[1] += (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum()
        confusion += torch.bincount(y * n + logits.argmax(dim=1), minlength=n * n).view(n, n)
    all_reduce_sum(confusion, info)
    all_reduce_sum(sums, info)
    confusion = confusion.cpu()
    count = int(confusion.sum())
    if count == 0:
        raise ValueError("no image could be evaluated (the evaluation set is empty or every image failed to decode)")
    per_class_n = confusion.sum(dim=1)
    per_class = [100.0 * float(confusion[i, i]) / int(c) if int(c) else None for i, c in enumerate(per_class_n)]
    return EvalResult(
        top1=100.0 * float(confusion.diag().sum()) / count,
        top5=100.0 * float(sums[1]) / count,
        loss=float(sums[0]) / count,
        count=count,
        classes=list(classes),
        per_class=per_class,
        confusion=confusion.tolist(),
        skipped=int(sums[2]),
    )


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor, int]], device: torch.device | str) -> int:
    """Re-estimate every BatchNorm's running mean/var as the plain average over ``batches`` (megvii's "bnps" step).

    Only the BN layers are put in train mode, with ``momentum=None`` (cumulative average), so dropout draws nothing
    from the RNG. Batches of fewer than 2 images are left out: batch statistics of one image say nothing of the data
    (and PyTorch refuses them where a feature map is 1x1). Returns the number of images used; with none, the
    statistics are left untouched.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    for x, _, _ in batches:
        if x.shape[0] < 2:
            continue
        model(x.to(device))
        seen += x.shape[0]
    for m, (momentum, mean, var, tracked) in zip(bns, saved):
        m.momentum = momentum
        m.eval()
        if seen == 0:
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(tracked)
    return seen


def save_confusion_png(result: EvalResult, path: str | PathLike, title: str = "") -> Path:
    """The confusion matrix as a heat map (rows: true class, columns: predicted), counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from mobilezoo.train.checkpoint import _atomic

    n = len(result.classes)
    size = min(4 + 0.45 * n, 20)
    fig = Figure(figsize=(size, size * 0.9), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(result.confusion, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ticks = range(n)
    ax.set_xticks(ticks, result.classes, rotation=90 if n > 10 else 0)
    ax.set_yticks(ticks, result.classes)
    ax.set(xlabel="predicted", ylabel="true", title=title or f"top-1 {result.top1:.2f}% ({result.count} images)")
    if n <= 20:
        peak = max(max(row) for row in result.confusion) or 1
        for i, row in enumerate(result.confusion):
            for j, v in enumerate(row):
                if v:
                    ax.text(
                        j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > peak / 2 else "black"
                    )
    return _atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))


@dataclass(frozen=True)
class InferenceSpec:
    """What a trained model expects: its classes, input channels and size, normalisation and eval crop, the resize's
    interpolation and the channel order (``"BGR"``: megvii's ShuffleNets)."""

    classes: list[str]
    in_chans: int
    img_size: int
    eval_crop_pct: float
    norm: Normalization
    interpolation: str = "bilinear"
    channel_order: str = "RGB"

    def to_metadata(self) -> dict[str, str]:
        return {
            "classes": json.dumps(self.classes),
            "in_chans": str(self.in_chans),
            "img_size": str(self.img_size),
            "eval_crop_pct": str(self.eval_crop_pct),
            "mean": json.dumps(list(self.norm.mean)),
            "std": json.dumps(list(self.norm.std)),
            "interpolation": self.interpolation,
            "channel_order": self.channel_order,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> InferenceSpec | None:
        try:
            return cls(
                classes=list(json.loads(meta["classes"])),
                in_chans=int(meta["in_chans"]),
                img_size=int(meta["img_size"]),
                eval_crop_pct=float(meta["eval_crop_pct"]),
                norm=Normalization(tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"]))),
                interpolation=meta.get("interpolation", "bilinear"),
                channel_order=meta.get("channel_order", "RGB"),
            )
        except (KeyError, ValueError, TypeError):
            return None


def read_spec(weights: str | PathLike) -> InferenceSpec | None:
    """The InferenceSpec stored in a safetensors file written by a training run, or None."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix != ".safetensors":
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"{str(path)!r} is not a readable safetensors file: {e}") from None
    return InferenceSpec.from_metadata(meta)


def pretrained_spec(model: str, weights: Any, classes: Sequence[str] | None = None) -> InferenceSpec | None:
    """The InferenceSpec of a public checkpoint (``"torchvision"``, ``"timm:..."``, ``"megvii:..."``): its
    preprocessing (:func:`mobilezoo.weights.preprocessing_for`) and class names (``classes``, else ImageNet's for a
    1000-class checkpoint); None for other weights. Raises ValueError for a checkpoint of another class count without
    ``classes``."""
    from mobilezoo.weights import imagenet_classes, preprocessing_for

    pre = preprocessing_for(model, weights)
    if pre is None:
        return None
    if classes is None and pre.num_classes != 1000:
        raise ValueError(f"{weights!r} has {pre.num_classes} classes and no class names here: pass classes=...")
    return _spec_from(pre, list(classes) if classes is not None else list(imagenet_classes()))


def _spec_from(pre: Any, classes: list[str]) -> InferenceSpec:
    """An InferenceSpec from a :class:`mobilezoo.weights.Preprocessing` and class names."""
    return InferenceSpec(
        classes,
        len(pre.mean),
        pre.input_size,
        pre.crop_pct,
        Normalization(pre.mean, pre.std),
        pre.interpolation,
        pre.channel_order,
    )


def _transforms(spec: InferenceSpec, size: int | None = None) -> Any:
    return build_transforms(
        False,
        size or spec.img_size,
        spec.norm,
        eval_crop_pct=spec.eval_crop_pct,
        interpolation=spec.interpolation,
        channel_order=spec.channel_order,
    )


def _model_for(model_name: str, weights: str | PathLike, spec: InferenceSpec) -> nn.Module:
    from mobilezoo.registry import create_model

    # exact: evaluating or predicting with a classifier re-initialised for another class count would score a random head
    model = create_model(
        model_name, num_classes=len(spec.classes), in_chans=spec.in_chans, weights=weights, adapt_weights=False
    )
    return model.eval()


def evaluate_weights(
    model: str,
    weights: str | PathLike,
    data: str | PathLike = BUILTIN,
    *,
    split: str = "val",
    batch_size: int = 128,
    img_size: int | None = None,
    num_workers: int = 0,
    subset: int | None = None,
    out: str | PathLike | None = None,
    device: str = "cpu",
) -> EvalResult:
    """Evaluate a trained ``model`` on ``data``'s ``split``; with ``out``, write ``confusion.png`` and ``eval.json`` there.

    Class names, input size and normalisation come from the weights' metadata (written by :func:`mobilezoo.train`);
    a public checkpoint (``"torchvision"``, ``"timm:..."``, ``"megvii:..."``) brings its own preprocessing and takes
    the data set's classes, which must be as many as its own (ImageNet's 1000, in the folders' sorted order); for
    other weights, the data set's classes and defaults (224 px, or 64 for the built-in digits) are used.
    """
    from mobilezoo.weights import preprocessing_for

    pre = preprocessing_for(model, weights)
    spec = read_spec(weights) if pre is None else None
    builtin = str(data) == BUILTIN
    in_chans = len(pre.mean) if pre is not None else spec.in_chans if spec else (1 if builtin else 3)
    probe = load_split(data, split, None, in_chans)
    classes = list(probe.classes)  # type: ignore[attr-defined]
    if pre is not None:
        if len(classes) != pre.num_classes:
            raise ValueError(f"{weights!r} has {pre.num_classes} classes, but {str(data)!r} has {len(classes)}")
        spec = _spec_from(pre, classes)
    elif spec is None:
        spec = InferenceSpec(
            classes,
            in_chans,
            64 if builtin else 224,
            1.0 if builtin else 0.875,
            default_normalization(in_chans, builtin),
        )
    elif spec.classes != classes:
        raise ValueError(f"the weights were trained on classes {spec.classes}, but {str(data)!r} has {classes}")
    tf = _transforms(spec, img_size)
    ds = load_split(data, split, tf, in_chans)
    if subset is not None:
        ds = Subset(ds, subset_indices(ds.targets, subset, 0))  # type: ignore[attr-defined]
    net = _model_for(model, weights, spec).to(device)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skipping)
    result = evaluate(net, loader, classes, device)
    if out is not None:
        from mobilezoo.train.checkpoint import atomic_write_text

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        png = save_confusion_png(result, out / "confusion.png", f"{model} on {data} {split}: top-1 {result.top1:.2f}%")
        result.files = {"confusion_png": str(png), "eval_json": str(out / "eval.json")}
        atomic_write_text(out / "eval.json", json.dumps(result.to_dict(), indent=1) + "\n")
    return result


@dataclass
class Prediction:
    image: str
    top: list[tuple[str, float]]  # (class name, probability)

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "top": [{"class": c, "prob": p} for c, p in self.top]}


@dataclass
class PredictResult:
    model: str
    predictions: list[Prediction]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "predictions": [p.to_dict() for p in self.predictions]}


@torch.inference_mode()
def predict(
    model: str,
    weights: str | PathLike,
    images: Sequence[str | PathLike],
    *,
    topk: int = 5,
    classes: Sequence[str] | None = None,
) -> PredictResult:
    """Top-``topk`` classes with probabilities for each image file; class names from the weights' metadata.

    Images are decoded by :func:`mobilezoo.data.load_image`, as training read them. An image that cannot be decoded
    raises a ValueError naming it (before any prediction is made). A public checkpoint (``"torchvision"``,
    ``"timm:..."``, ``"megvii:..."``) is applied with its own preprocessing (resize, crop, interpolation, mean/std,
    channel order: megvii's BGR 0-255) and ImageNet's class names.
    """
    if not images:
        raise ValueError("predict needs at least one image path")
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    spec = pretrained_spec(model, weights, classes) or read_spec(weights)
    if spec is None:
        if classes is None:
            raise ValueError(
                f"{str(weights)!r} carries no class names (it was not written by mobilezoo train): pass classes=..."
            )
        spec = InferenceSpec(list(classes), 3, 224, 0.875, default_normalization(3, False))
    mode = image_mode(spec.in_chans)
    tf = _transforms(spec)
    batch = []
    for path in images:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image {str(path)!r} does not exist")
        try:
            batch.append(tf(load_image(path, mode)))
        except DECODE_ERRORS as e:
            raise ValueError(f"cannot decode image {str(path)!r}: {e}") from None
    net = _model_for(model, weights, spec)
    probs = net(torch.stack(batch)).softmax(dim=1)
    k = min(topk, len(spec.classes))
    top = probs.topk(k, dim=1)
    preds = [
        Prediction(str(path), [(spec.classes[int(i)], float(p)) for p, i in zip(vals, idx)])
        for path, vals, idx in zip(images, top.values, top.indices)
    ]
    return PredictResult(model, preds)


__all__ = [
    "EvalResult",
    "InferenceSpec",
    "PredictResult",
    "Prediction",
    "evaluate",
    "evaluate_weights",
    "predict",
    "read_spec",
    "recalibrate_bn",
    "save_confusion_png",
]
