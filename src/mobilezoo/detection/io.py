"""Saving and loading trained detectors: :func:`save_detector`, :func:`read_detector_metadata`, :func:`load_detector`.

A detector file is a ``.safetensors`` file (tensors only: reading it never runs code) whose metadata holds what
:func:`~mobilezoo.detection.create_detector` needs to rebuild the model: ``mobilezoo_detector`` (JSON: detector,
backbone, num_classes, in_chans, image_size, max_size, image_mean, image_std, backbone_kwargs, options),
``categories`` (JSON: ``[[label, name], ...]``) and, when written by a training run, ``train_config`` (JSON: the
:class:`~mobilezoo.detection.DetectionTrainConfig`) and ``step``. :func:`load_detector` rebuilds the model from that
metadata and loads the weights strictly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from torch import nn

DETECTOR_KEY = "mobilezoo_detector"
# the create_detector arguments a detector file stores (model.mobilezoo holds them, with derived facts besides)
BUILD_KEYS = (
    "detector",
    "backbone",
    "num_classes",
    "in_chans",
    "image_size",
    "max_size",
    "image_mean",
    "image_std",
    "backbone_kwargs",
    "options",
)


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (JSON and YAML hold lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def detector_build_config(model: nn.Module) -> dict[str, Any]:
    """The :func:`create_detector` arguments ``model`` was built with (from ``model.mobilezoo``; a
    ``DistributedDataParallel`` wrapper is looked through). Raises ``ValueError`` for a model create_detector did not
    build."""
    model = getattr(model, "module", model)
    built = getattr(model, "mobilezoo", None)
    if not isinstance(built, dict) or any(k not in built for k in BUILD_KEYS):
        raise ValueError(
            f"{type(model).__name__} was not built by mobilezoo.detection.create_detector: no build record "
            "(model.mobilezoo) to store"
        )
    return _plain({k: built[k] for k in BUILD_KEYS})


def save_detector(
    model: nn.Module,
    path: str | PathLike,
    *,
    categories: Sequence[tuple[int, str]] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` (a :func:`create_detector` model) to ``path`` (``.safetensors``) atomically, with its build
    config and ``categories`` (``(label, name)`` pairs for labels 1..num_classes; default: the labels as names) in
    the metadata, plus ``metadata`` (string values). Returns the path. Raises ``ValueError`` for a model without a
    build record, categories that do not cover 1..num_classes, or a path not ending in ``.safetensors``.
    """
    from mobilezoo.train.checkpoint import atomic_save_weights

    build = detector_build_config(model)
    n = build["num_classes"]
    cats = [(int(label), str(name)) for label, name in categories] if categories is not None else None
    cats = cats or [(i + 1, str(i + 1)) for i in range(n)]
    if sorted(label for label, _ in cats) != list(range(1, n + 1)):
        raise ValueError(f"categories must name labels 1..{n} once each (num_classes {n}), got {cats!r}")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(
            f"a detector is saved as safetensors: expected a path ending in .safetensors, got {str(path)!r}"
        )
    meta = {**(metadata or {}), DETECTOR_KEY: json.dumps(build), "categories": json.dumps(sorted(cats))}
    return atomic_save_weights(getattr(model, "module", model), path, meta)


def read_detector_metadata(path: str | PathLike) -> dict[str, Any]:
    """The metadata of a detector file, decoded: ``build`` (the create_detector arguments), ``categories`` (a list of
    ``(label, name)``), ``train_config`` (a dict, or None) and ``step`` (an int, or None). Only the file's header is
    read.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (one line naming the file) for a folder, a file
    that is not safetensors, a damaged header, or a file without detector metadata (e.g. a classifier's weights).
    """
    from safetensors import safe_open

    from mobilezoo.weights.files import existing_file

    path = existing_file(path, "detector weights", "a .safetensors file")
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{str(path)!r} is not a .safetensors file: detectors are read from the .safetensors a detection run "
            "writes (RUN_DIR/detector.safetensors)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"{str(path)!r} is not a readable safetensors file: {e}") from None
    if DETECTOR_KEY not in meta:
        what = f"the classifier {meta['mobilezoo_model']!r}" if "mobilezoo_model" in meta else "no detector"
        raise ValueError(
            f"{str(path)!r} holds weights of {what}, not of a mobilezoo detector (no {DETECTOR_KEY!r} metadata): "
            "pass the detector.safetensors a detection run writes (mobilezoo detect train)"
        )
    try:
        build = json.loads(meta[DETECTOR_KEY])
        cats = [(int(label), str(name)) for label, name in json.loads(meta.get("categories", "[]"))]
        train_config = json.loads(meta["train_config"]) if "train_config" in meta else None
        step = int(meta["step"]) if "step" in meta else None
    except (ValueError, TypeError) as e:
        raise ValueError(f"{str(path)!r} has damaged detector metadata: {e}") from None
    if not isinstance(build, dict) or sorted(build) != sorted(BUILD_KEYS):
        keys = sorted(build) if isinstance(build, dict) else type(build).__name__
        raise ValueError(f"{str(path)!r} has damaged detector metadata: {DETECTOR_KEY} holds {keys}, not {BUILD_KEYS}")
    if not cats:
        cats = [(i + 1, str(i + 1)) for i in range(int(build["num_classes"]))]
    return {"build": build, "categories": cats, "train_config": train_config, "step": step}


def load_detector(path: str | PathLike) -> nn.Module:
    """Rebuild the detector stored in ``path`` (see the module docstring) and load its weights strictly; returns the
    model in eval mode on the CPU, with ``model.mobilezoo["categories"]`` (``(label, name)`` pairs) and
    ``model.mobilezoo["train_config"]`` (dict or None) added.

    Raises what :func:`read_detector_metadata` raises, ``ValueError`` when create_detector refuses the stored build
    config, and :class:`~mobilezoo.weights.WeightsMismatchError` (a ValueError) when the tensors do not fit the model.
    """
    from mobilezoo.detection.detectors import create_detector
    from mobilezoo.weights import load_weights

    info = read_detector_metadata(path)
    b = dict(info["build"])
    kind, backbone = b.pop("detector"), b.pop("backbone")
    options = b.pop("options")
    try:
        model = create_detector(kind, backbone, **b, **options)
    except TypeError as e:
        raise ValueError(f"{str(Path(path))!r} has damaged detector metadata: {e}") from None
    load_weights(model, path, strict=True, label=f"detector {str(Path(path))!r}")
    model.mobilezoo["categories"] = info["categories"]  # type: ignore[index]
    model.mobilezoo["train_config"] = info["train_config"]  # type: ignore[index]
    return model.eval()


__all__ = [
    "BUILD_KEYS",
    "DETECTOR_KEY",
    "detector_build_config",
    "load_detector",
    "read_detector_metadata",
    "save_detector",
]
