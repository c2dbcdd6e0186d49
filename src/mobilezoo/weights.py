"""Saving and loading weights: safetensors, the checkpoint files PyTorch training tools write, torchvision's downloads.

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
import http.client
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


def save_weights(model: nn.Module, path: str | PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model``'s state_dict to a ``.safetensors`` file (the registered model name goes into its metadata)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_weights writes safetensors: expected a path ending in .safetensors, got {str(path)!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {str(path.parent)!r} does not exist")
    meta = {"format": "pt"}
    name = getattr(model, "model_name", None)
    if isinstance(name, str):
        meta["mobilezoo_model"] = name
    meta.update(metadata or {})
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)
    return path


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


def read_state_dict(path: str | PathLike) -> dict[str, Tensor]:
    """Read the model's state_dict from a safetensors or PyTorch file without executing code from it.

    A training tool's checkpoint dict is unwrapped (see the module docstring); keys are returned as stored (a prefix
    such as ``module.`` is removed by :func:`load_weights`, which knows the model). Raises FileNotFoundError for a
    missing file and ValueError, one line naming the file, for anything unreadable, refused or holding no weights.
    """
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.safetensors"))
        hint = f"; it holds {', '.join(inside)}" if inside else ""
        raise ValueError(f"weights {str(path)!r} is a folder: pass a weights file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    return find_state_dict(_load_file(path), f"{str(path)!r}")


def _module_name(model: nn.Module, module: nn.Module) -> str | None:
    return next((name for name, m in model.named_modules() if m is module), None)


def head_keys(model: nn.Module) -> list[str]:
    """The state_dict keys of ``model.get_classifier()`` (empty for a model without one)."""
    try:
        head = model.get_classifier()  # type: ignore[operator]
    except (AttributeError, NotImplementedError):
        return []
    name = _module_name(model, head) if isinstance(head, nn.Module) else None
    if name is None:
        return []
    return [f"{name}.{k}" if name else k for k in head.state_dict()]


def stem_key(model: nn.Module) -> str | None:
    """The weight key of the model's first convolution (the one reading the input), or None."""
    trunk = model.trunk() if hasattr(model, "trunk") else [("", model)]
    for prefix, module in trunk[:1]:
        for name, m in module.named_modules():
            if isinstance(m, nn.Conv2d):
                return ".".join(p for p in (prefix, name, "weight") if p)
    return None


def _adapt_stem_tensor(w: Tensor, chans: int) -> Tensor:
    """A conv weight for ``chans`` input channels from one for ``w.shape[1]``: summed for 1, tiled and rescaled else."""
    if chans == 1:
        return w.sum(dim=1, keepdim=True)
    reps = -(-chans // w.shape[1])
    return w.repeat(1, reps, 1, 1)[:, :chans] * (w.shape[1] / chans)


def adapt_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Adapt a checkpoint's stem to a model built with another ``in_chans``.

    The model's first convolution (:func:`stem_key`), when its checkpoint weight differs only in the input-channel
    dimension, is summed to 1 channel or tiled and rescaled for more (as timm does, so a grey image repeated on every
    channel gives the same output); everything else is unchanged.
    """
    out = dict(state)
    key = stem_key(model)
    own = model.state_dict().get(key) if key else None
    w = state.get(key) if key else None
    if (
        own is not None
        and w is not None
        and w.dim() == 4
        and w.shape != own.shape
        and (w.shape[0], *w.shape[2:]) == (own.shape[0], *own.shape[2:])
    ):
        out[key] = _adapt_stem_tensor(w, own.shape[1])  # type: ignore[index]
    return out


def match_prefix(state: Mapping[str, Tensor], own_keys: set[str] | Mapping[str, Any]) -> tuple[str, int]:
    """The prefix whose removal makes most of ``state``'s keys model keys, and how many it makes (``""``: none).

    Candidates are every dotted prefix of every key (``module.``, ``_orig_mod.``, ``model.``, ``module._orig_mod.``,
    ...); ties go to the shorter one, so a prefix is removed only when it matches more keys than keeping it.
    """
    counts: dict[str, int] = {"": sum(k in own_keys for k in state)}
    for key in state:
        for i, ch in enumerate(key):
            if ch == "." and key[i + 1 :] in own_keys:
                prefix = key[: i + 1]
                counts[prefix] = counts.get(prefix, 0) + 1
    best = max(counts, key=lambda p: (counts[p], -len(p)))
    return best, counts[best]


def load_weights(
    model: nn.Module,
    source: str | PathLike | Mapping[str, Any],
    strict: bool = True,
    *,
    adapt: bool = False,
    label: str | None = None,
) -> dict[str, list[str]]:
    """Load a checkpoint (a path, a state_dict or a training tool's checkpoint dict) into ``model``.

    With ``strict=True`` any missing key, unexpected key or shape mismatch raises :class:`WeightsMismatchError` (a
    ValueError) naming them all. With ``strict=False`` the matching tensors are loaded and the others reported;
    shape mismatches always raise, and so does a checkpoint of which no tensor matches the model.

    With ``adapt=True`` (what ``create_model(weights=...)`` uses) a checkpoint that differs from the model only in the
    classifier's class count gets a re-initialised classifier (``model.reset_classifier``), and one that differs only
    in the stem's input channels an adapted stem (:func:`adapt_state_dict`); each emits a
    :class:`WeightsAdaptedWarning` naming the tensors. Any other difference still raises.

    Returns ``{"missing", "unexpected", "mismatched", "reinitialized", "adapted", "ignored"}`` (lists of keys;
    ``ignored``: keys outside the prefix that matched the model, e.g. a LightningModule's loss weights). ``label``
    names the source in errors and notices (default: the path, or "the state_dict").
    """
    if isinstance(source, Mapping):
        what = label or "the state_dict"
        state = find_state_dict(source, what)
    else:
        what = label or f"checkpoint {str(source)!r}"
        state = read_state_dict(source)
    own = model.state_dict()
    prefix, _ = match_prefix(state, own)
    ignored = [k for k in state if not k.startswith(prefix)]
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape
    ]
    if not any(k in own and v.shape == own[k].shape for k, v in state.items()):
        raise WeightsMismatchError(missing, unexpected, mismatched, what, "matches no tensor of the model")

    reinit: list[str] = []
    adapted: list[str] = []
    notes: list[str] = []
    if adapt and (mismatched or unexpected):
        state, reinit, adapted, notes = _adapt(model, state, mismatched, unexpected, what)
        mismatched = [m for m in mismatched if m[0] not in reinit and m[0] not in adapted]
        missing = [k for k in own if k not in state and k not in reinit]
        unexpected = [k for k in unexpected if k in state]
    if mismatched or (strict and (missing or unexpected)):
        raise WeightsMismatchError(missing, unexpected, mismatched, what)
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" (+{len(ignored) - 5} more)" if len(ignored) > 5 else "")
        notes.append(f"{what}: loaded the tensors under {prefix!r}; left out {len(ignored)} outside it: {shown}")
    if reinit and reinit[0] in own and hasattr(model, "reset_classifier"):
        model.reset_classifier(own[reinit[0]].shape[0])  # a fresh head, whatever the model held before
    model.load_state_dict(state, strict=False)  # every difference was checked above
    for note in notes:
        warnings.warn(note, WeightsAdaptedWarning, stacklevel=2)
    return {
        "missing": missing,
        "unexpected": unexpected,
        "mismatched": [k for k, _, _ in mismatched],
        "reinitialized": reinit,
        "adapted": adapted,
        "ignored": ignored,
    }


def _adapt(
    model: nn.Module,
    state: dict[str, Tensor],
    mismatched: list[tuple[str, tuple, tuple]],
    unexpected: list[str],
    what: str,
) -> tuple[dict[str, Tensor], list[str], list[str], list[str]]:
    """Leave out a classifier that differs only in the class count, adapt a stem that differs only in input channels.

    Returns the new state, the classifier keys left out (re-initialised, or dropped for a model without classifier:
    ``num_classes=0``, an ``nn.Identity`` head), the stem keys adapted and the notices.
    """
    shapes = {k: a for k, a, _ in mismatched}
    own = model.state_dict()
    reinit: list[str] = []
    adapted: list[str] = []
    notes: list[str] = []
    head = head_keys(model)
    classifier = getattr(model, "get_classifier", None)
    identity = classifier() if callable(classifier) and not head else None
    where = _module_name(model, identity) if isinstance(identity, nn.Identity) else None
    if where:  # the model has no classifier: the checkpoint's is left out
        reinit = [k for k in unexpected if k.startswith(f"{where}.")]
        state = {k: v for k, v in state.items() if k not in reinit}
        if reinit:
            notes.append(f"{what}: classifier {', '.join(reinit)} left out (the model has no classifier)")
    if head and any(k in shapes for k in head) and all(k in state for k in head):
        ckpt_classes = {state[k].shape[0] for k in head}
        if len(ckpt_classes) == 1 and all(
            state[k].dim() == own[k].dim() and state[k].shape[1:] == own[k].shape[1:] for k in head
        ):
            state = {k: v for k, v in state.items() if k not in head}
            reinit = head
            notes.append(
                f"{what}: classifier {', '.join(head)} re-initialised for {own[head[0]].shape[0]} classes "
                f"(the checkpoint has {ckpt_classes.pop()})"
            )
    stem = stem_key(model)
    if stem in shapes:
        state = adapt_state_dict(model, state)
        chans = state[stem].shape[1]
        if state[stem].shape != shapes[stem]:
            adapted = [stem]
            how = "summed" if chans == 1 else "tiled and rescaled"
            notes.append(f"{what}: stem {stem} adapted from {shapes[stem][1]} to {chans} input channels ({how})")
    return state, reinit, adapted, notes


def _torchvision_weights(enum_name: str, member: str) -> Any:
    from torchvision.models import get_weight

    try:
        return get_weight(f"{enum_name}.{member}")
    except (ValueError, AttributeError, KeyError):
        import torchvision.models as tvm

        members = [m for m in vars(getattr(tvm, enum_name)) if not m.startswith("_")]
        raise ValueError(f"torchvision has no weights {enum_name}.{member}; expected one of {members}") from None


def torchvision_cache_path(url: str) -> Path:
    """Where torch.hub keeps the download of ``url``: ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def torchvision_state_dict(enum_name: str, member: str = "DEFAULT", progress: bool = True) -> dict[str, Tensor]:
    """A torchvision checkpoint from torch.hub's download cache, downloaded there first if missing.

    Raises :class:`WeightsUnavailableError` (an OSError naming the URL and the cache path) when the file is not
    cached and cannot be downloaded, and ValueError (naming the cached file: delete it to download it again) when the
    cached file is unreadable, e.g. a partial download (:class:`UnreadableWeightsError`, a ValueError).
    """
    url = _torchvision_weights(enum_name, member).url
    cached = torchvision_cache_path(url)
    if not cached.is_file():
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            # written to a temporary file and renamed, so an interrupted download leaves nothing in the cache
            torch.hub.download_url_to_file(url, str(cached), None, progress=progress)
        except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts, a full disk, cut off
            raise WeightsUnavailableError(
                f"cannot download torchvision's checkpoint {url} ({one_line(str(e)) or type(e).__name__}) and it is "
                f"not in the cache at {str(cached)!r}: download it on a machine with internet and copy it there "
                "(TORCH_HOME sets the cache folder), or pass a local weights file instead"
            ) from None
    try:
        return read_state_dict(cached)
    except UnreadableWeightsError as e:
        message = (
            f"torchvision's cached checkpoint {str(cached)!r} is unreadable ({e.reason}), probably an interrupted "
            f"download: delete it and run again to download it afresh from {url}"
        )
        raise UnreadableWeightsError(cached, "PyTorch", e.reason, message) from None


def torchvision_pretrained_info(enum_name: str, member: str = "DEFAULT") -> dict[str, Any]:
    """The checkpoint's name, file, preprocessing and ImageNet top-1, from torchvision's metadata (no download)."""
    weights = _torchvision_weights(enum_name, member)
    tf = weights.transforms()
    metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
    return {
        "weights": str(weights),
        "url": weights.url,
        "file_name": weights.url.rsplit("/", 1)[-1],
        "resize": list(tf.resize_size),
        "crop": list(tf.crop_size),
        "mean": list(tf.mean),
        "std": list(tf.std),
        "interpolation": tf.interpolation.value,
        "top1": metrics.get("acc@1"),
        "top5": metrics.get("acc@5"),
        "num_params": weights.meta.get("num_params"),
    }
