"""Reading and writing weights files safely: safetensors, and the checkpoint files PyTorch training tools write.

Nothing here runs code from a file: ``.pth``/``.pt``/``.ckpt``/``.pth.tar``/``.bin`` files go through
``torch.load(weights_only=True)`` with one extra allowed type, ``argparse.Namespace`` (the ``args`` that torchvision's
reference scripts and timm's ``train.py`` store beside the weights); a pickle that needs anything else is refused with
a ValueError. Every error message is one line that names the file.

The containers read (the model's state_dict is found inside, the rest ignored): a plain state_dict; torchvision's
reference scripts ``{"model", "model_ema", "optimizer", "lr_scheduler", "epoch", "args"}``; timm's ``train.py``
``{"state_dict", "state_dict_ema", "arch", "optimizer", "epoch", "args", "metric", "version"}``; PyTorch Lightning
``{"state_dict", "hyper_parameters", "optimizer_states", ...}``; DeepSpeed ``{"module", ...}``; the PyTorch tutorial's
``{"model_state_dict", "optimizer_state_dict", ...}``; the ``.safetensors`` files of a mobilezoo run. Key prefixes
(``module.`` from DDP/DataParallel, ``_orig_mod.`` from ``torch.compile``, a LightningModule's ``model.``) are
removed when, and only when, removing them makes the keys match the model's.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

SAFETENSORS_SUFFIXES = {".safetensors"}
TORCH_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt", ".tar"}
# where training tools put the model's state_dict inside the dict they save, in order of preference (the raw model
# before an EMA copy: torchvision's "model" before "model_ema", timm's "state_dict" before "state_dict_ema")
CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "model_state", "module")
# the only non-tensor type a weights-only load is allowed to build beyond torch's defaults: argparse.Namespace holds
# plain values and runs no code when unpickled
SAFE_GLOBALS = [argparse.Namespace]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def one_line(text: str) -> str:
    """``text`` without terminal escape codes, its lines and runs of whitespace joined by single spaces."""
    return " ".join(_ANSI.sub("", text).split())


class WeightsMismatchError(ValueError):
    """A checkpoint does not fit the model: lists missing keys, unexpected keys and shape mismatches (one line)."""

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple, tuple]],
        what: str,
        headline: str = "does not fit the model",
    ):
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched
        parts = []

        def show(title: str, items: list[str]) -> None:
            if items:
                more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
                parts.append(f"{title} ({len(items)}): {', '.join(items[:10])}{more}")

        show("missing keys", missing)
        show("unexpected keys", unexpected)
        show("shape mismatches", [f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched])
        super().__init__(f"{what} {headline}: {'; '.join(parts)}")


class WeightsAdaptedWarning(UserWarning):
    """A checkpoint was loaded with a re-initialised classifier, an adapted stem or tensors left out; names them."""


class UnreadableWeightsError(ValueError):
    """A weights file that cannot be parsed (truncated, damaged, not weights at all); ``reason`` says what failed."""

    def __init__(self, path: Path, kind: str, reason: str, message: str | None = None):
        self.path = path
        self.reason = reason
        super().__init__(
            message
            or f"{str(path)!r} is not a readable {kind} file ({reason}): it is probably truncated or damaged "
            "(an interrupted download or copy); fetch or save it again"
        )


class WeightsUnavailableError(OSError):
    """torchvision's checkpoint is neither in the download cache nor downloadable; names the URL and the cache path."""


BUILD_KWARGS_KEY = "mobilezoo_kwargs"  # the metadata key of the model arguments a file's model was built with


def save_weights(model: nn.Module, path: str | PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model``'s state_dict to a ``.safetensors`` file. Its metadata holds the registered model name and the
    arguments it was built with that change what it computes (``padding="tf"``, ``bn_eps``, ``shuffle="megvii"``,
    ``width_mult``, ...: ``model.build_kwargs``, set by :func:`mobilezoo.create_model`), so that
    ``create_model(name, weights=path)`` rebuilds the same network."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_weights writes safetensors: expected a path ending in .safetensors, got {str(path)!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {str(path.parent)!r} does not exist")
    meta = {"format": "pt"}
    name = getattr(model, "model_name", None)
    if isinstance(name, str):
        meta["mobilezoo_model"] = name
    build = getattr(model, "build_kwargs", None)
    if build:
        meta[BUILD_KWARGS_KEY] = json.dumps(build, sort_keys=True)
    meta.update(metadata or {})
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)
    return path


def saved_build(path: str | PathLike) -> tuple[str | None, dict[str, Any]]:
    """(registered model name, build arguments) a safetensors file written by :func:`save_weights` records; (None, {})
    for other files (PyTorch checkpoints, foreign safetensors). Raises ValueError naming the file when the recorded
    arguments are not a JSON object."""
    path = Path(path)
    if not path.is_file() or _file_format(path) != "safetensors":
        return None, {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError):
        return None, {}  # unreadable: the load reports it
    raw = meta.get(BUILD_KWARGS_KEY)
    try:
        build = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        build = None
    if not isinstance(build, dict):
        raise ValueError(f"{str(path)!r} has a damaged {BUILD_KWARGS_KEY!r} metadata entry: expected a JSON object")
    return meta.get("mobilezoo_model"), build


def _file_format(path: Path) -> str:
    """The file's format, "safetensors" or "torch": from the suffix (``.pth.tar`` counts as ``.tar``), else sniffed."""
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) > 8 and head[8:9] == b"{":  # a little-endian u64 header length, then the JSON header
        return "safetensors"
    if head[:2] == b"\x80\x02" or (zipfile.is_zipfile(path) and _is_torch_zip(path)):
        return "torch"
    raise ValueError(
        f"unknown weights format {path.suffix!r} for {str(path)!r}; expected one of "
        f"{sorted(SAFETENSORS_SUFFIXES | TORCH_SUFFIXES)}"
    )


def _is_torch_zip(path: Path) -> bool:
    with zipfile.ZipFile(path) as z:
        return any(name.endswith("/data.pkl") for name in z.namelist())


def _refusal(path: Path, error: Exception) -> ValueError:
    """The one-line error for a pickle that torch's weights-only unpickler rejected (its message: ANSI, many lines)."""
    text = one_line(str(error))
    found = re.search(r"GLOBAL ([\w.]+)", text)
    unpickler = re.search(
        r"WeightsUnpickler error:\s*(.*?)\s*(?:Please use|Please file|Check the documentation|$)", text
    )
    if found:
        reason = f"it needs {found.group(1)}"
    elif unpickler and unpickler.group(1):
        reason = unpickler.group(1).rstrip(". ")
    else:  # keep torch's specific sentences, drop its advice on weights_only=False and its links
        advice = ("weights_only", "Weights only load failed", "trusted source", "Check the documentation", "options")
        kept = [p for p in re.split(r"(?<=\.)\s+", text) if p and not any(a in p for a in advice)]
        reason = " ".join(kept).replace("WeightsUnpickler error:", "").strip(" .") or "a weights-only load rejected it"
    return ValueError(
        f"refusing to load {str(path)!r}: it is not a plain weights file ({reason}), and loading a checkpoint never "
        "runs code from it; if you trust the file, load it yourself and save the model's state_dict "
        "(mobilezoo.save_weights or torch.save(model.state_dict(), ...))"
    )


def _load_file(path: Path) -> Any:
    if _file_format(path) == "safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise UnreadableWeightsError(path, "safetensors", one_line(str(e))) from None
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            # torch notes a pickle protocol other than its own; the refusal below says all that matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refusal(path, e) from None
    except PermissionError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, zipfile.BadZipFile) as e:
        # a short or damaged file: torch raises RuntimeError (no zip directory), OSError (EINVAL), EOFError (empty)
        reason = re.sub(r"^\[Errno -?\d+\]\s*", "", one_line(str(e)).split(". ")[0])
        reason = reason or ("the file is empty or ends early" if isinstance(e, EOFError) else type(e).__name__)
        raise UnreadableWeightsError(path, "PyTorch", reason) from None


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def find_state_dict(obj: Any, what: str = "the checkpoint") -> dict[str, Tensor]:
    """The model's state_dict in ``obj``: ``obj`` itself, or the first of :data:`CONTAINER_KEYS` holding one.

    Raises ValueError (naming ``what`` and the keys it holds) when there is none.
    """
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:
            inner = obj.get(key)
            if _is_state_dict(inner):
                return dict(inner)
            if isinstance(inner, Mapping) and any(_is_state_dict(inner.get(k)) for k in CONTAINER_KEYS):
                return find_state_dict(inner, what)
        keys = [str(k) for k in list(obj)[:12]]
        hint = ""
        if str(what).endswith(".state.pt'"):
            hint = "; a mobilezoo run keeps its weights in the .safetensors file beside this training state"
        raise ValueError(
            f"{what} holds no model state_dict (a mapping of names to tensors, itself or under one of "
            f"{', '.join(CONTAINER_KEYS)}); its keys: {', '.join(keys) or 'none'}{hint}"
        )
    raise ValueError(
        f"{what} holds no model state_dict: it holds a {type(obj).__name__}, not a mapping of names to tensors"
    )


def read_checkpoint(path: str | PathLike) -> Any:
    """What a weights file holds, read without executing code from it: a safetensors file's tensors, or the object a
    PyTorch file stores (a state_dict, or a training tool's dict around one, e.g. timm's with its ``arch``).

    Raises FileNotFoundError for a missing file and ValueError, one line naming the file, for a folder or a file that
    is unreadable (:class:`UnreadableWeightsError`) or refused (a pickle that would run code).
    """
    return _load_file(existing_file(path))


def existing_file(path: str | PathLike, what: str = "weights", expected: str = "a weights file") -> Path:
    """``path`` as a Path if it is a file; a ValueError for a folder (naming the ``.safetensors`` files in it and
    ``expected``), a FileNotFoundError for a missing file; ``what`` names the file in both messages."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.safetensors"))
        hint = f"; it holds {', '.join(inside)}" if inside else ""
        raise ValueError(f"{what} {str(path)!r} is a folder: pass {expected}{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    return path


def read_state_dict(path: str | PathLike) -> dict[str, Tensor]:
    """Read the model's state_dict from a safetensors or PyTorch file without executing code from it.

    A training tool's checkpoint dict is unwrapped (see the module docstring); keys are returned as stored (a prefix
    such as ``module.`` is removed by :func:`load_weights`, which knows the model). Raises FileNotFoundError for a
    missing file and ValueError, one line naming the file, for anything unreadable, refused or holding no weights.
    """
    return find_state_dict(read_checkpoint(path), f"{str(Path(path))!r}")
