"""Saving and loading weights: safetensors, PyTorch files loaded with ``weights_only=True``, torchvision's checkpoints.

Nothing here unpickles arbitrary objects: ``.pth``/``.pt`` files go through ``torch.load(weights_only=True)``, which
refuses a pickle that would run code, and the refusal is reported as a ValueError.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

SAFETENSORS_SUFFIXES = {".safetensors"}
TORCH_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}


class WeightsMismatchError(ValueError):
    """A checkpoint does not fit the model: lists missing keys, unexpected keys and shape mismatches."""

    def __init__(
        self, missing: list[str], unexpected: list[str], mismatched: list[tuple[str, tuple, tuple]], what: str
    ):
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched
        lines = [f"{what} does not fit the model:"]

        def show(title: str, items: list[str]) -> None:
            if items:
                more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
                lines.append(f"  {title} ({len(items)}): {', '.join(items[:10])}{more}")

        show("missing keys", missing)
        show("unexpected keys", unexpected)
        show("shape mismatches", [f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched])
        super().__init__("\n".join(lines))


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


def read_state_dict(path: str | PathLike) -> dict[str, Tensor]:
    """Read a state_dict from a safetensors or PyTorch file without executing code from it.

    PyTorch files may hold the state_dict itself or wrap it in ``{"state_dict": ...}`` / ``{"model": ...}``; a
    ``module.`` prefix left by DataParallel/DDP is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{str(path)!r} is not a readable safetensors file: {e}") from None
    elif suffix in TORCH_SUFFIXES:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"refusing to load {str(path)!r}: it is not a plain weights file "
                f"(torch.load(weights_only=True) rejected it: {first})"
            ) from None
        except (RuntimeError, EOFError) as e:
            raise ValueError(f"{str(path)!r} is not a readable PyTorch file: {e}") from None
    else:
        raise ValueError(
            f"unknown weights format {path.suffix!r} for {str(path)!r}; expected one of "
            f"{sorted(SAFETENSORS_SUFFIXES | TORCH_SUFFIXES)}"
        )
    for wrapper in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state_dict (a mapping of names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_weights(
    model: nn.Module, source: str | PathLike | Mapping[str, Tensor], strict: bool = True
) -> dict[str, list[str]]:
    """Load a checkpoint (path or state_dict) into ``model``.

    With ``strict=True`` any missing key, unexpected key or shape mismatch raises :class:`WeightsMismatchError` (a
    ValueError) naming them all. With ``strict=False`` the matching tensors are loaded and the others reported in the
    returned ``{"missing": [...], "unexpected": [...], "mismatched": [...]}``; shape mismatches always raise.
    """
    if isinstance(source, Mapping):
        state, what = dict(source), "the state_dict"
    else:
        state, what = read_state_dict(source), f"checkpoint {str(source)!r}"
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape
    ]
    if mismatched or (strict and (missing or unexpected)):
        raise WeightsMismatchError(missing, unexpected, mismatched, what)
    model.load_state_dict(state, strict=strict)
    return {"missing": missing, "unexpected": unexpected, "mismatched": [k for k, _, _ in mismatched]}


def adapt_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Adapt an RGB checkpoint's stem to a model built with another ``in_chans``.

    A conv weight whose checkpoint shape differs from the model's only in the input-channel dimension (3 in the
    checkpoint) is summed to 1 channel, or tiled and rescaled for more, as timm does; everything else is unchanged.
    """
    own = model.state_dict()
    out = dict(state)
    for key, w in state.items():
        target = own.get(key)
        if target is None or w.dim() != 4 or target.shape == w.shape or w.shape[1] != 3:
            continue
        if (target.shape[0], *target.shape[2:]) != (w.shape[0], *w.shape[2:]):
            continue
        chans = target.shape[1]
        if chans == 1:
            out[key] = w.sum(dim=1, keepdim=True)
        else:
            reps = -(-chans // 3)
            out[key] = w.repeat(1, reps, 1, 1)[:, :chans] * (3 / chans)
    return out


def _torchvision_weights(enum_name: str, member: str) -> Any:
    from torchvision.models import get_weight

    try:
        return get_weight(f"{enum_name}.{member}")
    except (ValueError, AttributeError, KeyError):
        import torchvision.models as tvm

        members = [m for m in vars(getattr(tvm, enum_name)) if not m.startswith("_")]
        raise ValueError(f"torchvision has no weights {enum_name}.{member}; expected one of {members}") from None


def torchvision_state_dict(enum_name: str, member: str = "DEFAULT") -> dict[str, Tensor]:
    """A torchvision checkpoint through torchvision's own weights mechanism and download cache (``torch.hub``).

    A real user downloads it once; afterwards it is read from ``$TORCH_HOME/hub/checkpoints``.
    """
    weights = _torchvision_weights(enum_name, member)
    return weights.get_state_dict(progress=True, weights_only=True)


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
