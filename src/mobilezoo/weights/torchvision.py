"""torchvision's ImageNet checkpoints: torch.hub's download cache, the weights enums' preprocessing and accuracy."""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mobilezoo.weights.files import UnreadableWeightsError, WeightsUnavailableError, one_line, read_state_dict


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
