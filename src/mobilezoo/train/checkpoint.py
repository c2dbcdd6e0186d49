"""Checkpoints and run files, all written atomically (a temporary file in the same folder, then ``os.replace``).

A run folder holds::

    config.yaml            the resolved TrainConfig
    checkpoints/           ckpt-<step>.safetensors (model weights) + ckpt-<step>.state.pt (optimizer, EMA, RNG, ...)
    last.json              pointer to the newest complete checkpoint pair; written last, so a kill at any moment
                           leaves either the previous or the new pair referenced, never half of one
    best.safetensors       weights of the best evaluated model (EMA if used, after BN recalibration)
    last.safetensors       weights of the model evaluated last
    metrics.csv/.json/.png per-epoch metrics and the loss/accuracy plot

``*.state.pt`` holds only tensors and plain Python values and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobilezoo.weights import load_weights, save_weights

POINTER = "last.json"
CKPT_DIR = "checkpoints"
_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through ``write(tmp)`` on a temporary file beside it, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.stem}-", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _atomic(Path(path), lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic(Path(path), lambda tmp: tmp.write_bytes(data))


def atomic_save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """:func:`mobilezoo.save_weights` to a temporary ``.safetensors`` file, then renamed to ``path``."""
    return _atomic(Path(path), lambda tmp: save_weights(model, tmp, metadata))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states, as tensors and plain values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, state: dict[str, Any], keep: int = 1) -> Path:
    """Write the weights and the training state of ``step``, then point ``last.json`` at them; prune older pairs."""
    ckpt_dir = run_dir / CKPT_DIR
    weights = ckpt_dir / f"ckpt-{step:08d}.safetensors"
    state_file = ckpt_dir / f"ckpt-{step:08d}.state.pt"
    atomic_save_weights(model, weights, {"step": str(step)})
    atomic_torch_save({**state, "step": step}, state_file)
    atomic_write_text(
        run_dir / POINTER, json.dumps({"step": step, "weights": weights.name, "state": state_file.name}) + "\n"
    )
    pairs = sorted(ckpt_dir.glob("ckpt-*.safetensors"))
    for old in pairs[:-keep]:
        old.unlink(missing_ok=True)
        old.with_name(old.name.replace(".safetensors", ".state.pt")).unlink(missing_ok=True)
    return weights


def load_checkpoint(run_dir: Path, model: nn.Module) -> dict[str, Any] | None:
    """Load the newest complete checkpoint of ``run_dir`` into ``model``; returns its state (None if there is none)."""
    pointer = run_dir / POINTER
    if not pointer.is_file():
        return None
    try:
        ref = json.loads(pointer.read_text())
        weights, state_file = run_dir / CKPT_DIR / ref["weights"], run_dir / CKPT_DIR / ref["state"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"checkpoint pointer {str(pointer)!r} is unreadable: {e}") from None
    load_weights(model, weights)
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint state {str(state_file)!r} named by {str(pointer)!r} is missing") from None
    if state.get("step") != ref["step"]:
        raise ValueError(f"{str(state_file)!r} holds step {state.get('step')}, but {str(pointer)!r} says {ref['step']}")
    return state


def write_metrics(
    run_dir: Path,
    history: list[dict[str, Any]],
    plot: Callable[[list[dict[str, Any]], Path], None] | None = None,
) -> None:
    """metrics.json, metrics.csv and metrics.png from the records of ``history`` (one dict each; the CSV's columns
    are every key seen). ``plot(history, path)`` draws the PNG (default :func:`plot_metrics`: loss and top-1 per
    epoch of a classifier run)."""
    if not history:
        return
    plot = plot or plot_metrics
    atomic_write_text(run_dir / "metrics.json", json.dumps(history, indent=1) + "\n")
    columns = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())
    _atomic(run_dir / "metrics.png", lambda tmp: plot(history, tmp))


def plot_metrics(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        ax_loss.plot(epochs, [row.get(key) for row in history], marker="o", label=label)
    for key, label in (("val_top1", "val top-1"), ("val_top1_ema", "val top-1 (EMA)")):
        if any(row.get(key) is not None for row in history):
            ax_acc.plot(epochs, [row.get(key) for row in history], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 %", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, format="png", dpi=100)


__all__ = [
    "atomic_save_weights",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_checkpoint",
    "plot_metrics",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "write_metrics",
]
