"""timm's checkpoints: ``"timm:<arch>[.<tag>]"`` from the Hugging Face hub cache, or a local file.

timm publishes each set of weights as the hub repository ``timm/<arch>.<tag>`` (``model.safetensors``). The file is
taken from the hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``: where timm and
``huggingface_hub`` put it) and, when missing there, downloaded into it with ``huggingface_hub`` (timm's own
dependency; not needed for files already cached). ``HF_HUB_OFFLINE=1`` never downloads. Only safetensors files are
fetched; a local file may be either format (read as :func:`~mobilezoo.weights.read_state_dict` reads).

A local file is ``"timm:<arch>[.<tag>]@<path>"``, or ``"timm:<path>"`` when the file says which architecture it
holds: timm's ``train.py`` checkpoint (its ``arch`` entry) or a hub download (``config.json`` beside it, with
``architecture`` and ``pretrained_cfg``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilezoo.weights.files import UnreadableWeightsError, WeightsUnavailableError, one_line

HUB_FILE = "model.safetensors"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".tar")


@dataclass(frozen=True)
class TimmSpec:
    """A parsed ``"timm:..."`` string: the architecture and tag (when named) and the local file (when given)."""

    arch: str | None
    tag: str | None
    path: Path | None

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}" if self.tag else str(self.arch)


def parse(spec: str) -> TimmSpec:
    """``"timm:<arch>[.<tag>]"``, ``"timm:<arch>[.<tag>]@<path>"`` or ``"timm:<path>"`` (a path: it holds a ``/``, ends
    in a weights suffix or exists). Raises ValueError for an empty name."""
    body = spec.partition(":")[2]
    name, at, path = body.partition("@")
    if not at and ("/" in body or os.sep in body or body.lower().endswith(WEIGHT_SUFFIXES) or Path(body).exists()):
        return TimmSpec(None, None, Path(body).expanduser())
    if not name:
        raise ValueError(
            f"weights={spec!r}: expected 'timm:<timm model>[.<tag>]', optionally '@<file>', or 'timm:<file>'"
        )
    arch, _, tag = name.partition(".")
    return TimmSpec(arch, tag or None, Path(path).expanduser() if at else None)


def hub_cache() -> Path:
    """The Hugging Face hub cache folder, as ``huggingface_hub`` resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def repo_id(name: str) -> str:
    """The hub repository of timm's ``<arch>.<tag>``."""
    return f"timm/{name}"


def cached_file(name: str, filename: str = HUB_FILE) -> Path | None:
    """``filename`` of ``timm/<name>`` in the hub cache (the revision ``refs/main`` points to, else any), or None."""
    folder = hub_cache() / f"models--timm--{name}"
    ref = folder / "refs" / "main"
    if ref.is_file():
        candidate = folder / "snapshots" / ref.read_text().strip() / filename
        if candidate.is_file():
            return candidate
    snapshots = sorted((folder / "snapshots").glob(f"*/{filename}")) if (folder / "snapshots").is_dir() else []
    return snapshots[-1] if snapshots else None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_file(name: str, progress: bool = True) -> Path:
    """timm's ``<arch>.<tag>`` weights file: from the hub cache, else downloaded there with ``huggingface_hub``.

    Raises :class:`~mobilezoo.weights.WeightsUnavailableError` (an OSError naming the repository, its URL and the
    cache) when it is not cached and cannot be downloaded: offline, ``huggingface_hub`` missing, or the download
    failing.
    """
    cached = cached_file(name)
    if cached is not None:
        return cached
    url = f"https://huggingface.co/{repo_id(name)}/resolve/main/{HUB_FILE}"
    where = f"it is not in the Hugging Face cache {str(hub_cache())!r}"
    advice = (
        f"download {url} on a machine with internet and pass weights='timm:{name}@<file>' (or copy that machine's "
        "hub cache here: HF_HUB_CACHE sets the folder)"
    )
    if _offline():
        raise WeightsUnavailableError(f"timm's {name} weights: {where} and HF_HUB_OFFLINE is set; {advice}")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise WeightsUnavailableError(
            f"timm's {name} weights: {where} and downloading needs huggingface_hub (pip install huggingface_hub); "
            f"or {advice}"
        ) from None
    try:
        quiet = contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())
        with quiet:
            return Path(hf_hub_download(repo_id(name), HUB_FILE, cache_dir=str(hub_cache())))
    except Exception as e:  # huggingface_hub's errors: offline, repository or file not found, HTTP errors, a full disk
        raise WeightsUnavailableError(
            f"cannot download timm's {name} weights ({type(e).__name__}: {one_line(str(e))[:200]}) and {where}; "
            f"{advice}"
        ) from None


def read_hub_state(name: str, path: Path) -> Any:
    """The cached hub file's contents; a damaged one raises a ValueError naming it and saying how to fetch it anew."""
    from mobilezoo.weights.files import read_checkpoint

    try:
        return read_checkpoint(path)
    except UnreadableWeightsError as e:
        message = (
            f"the cached timm {name} weights {str(path)!r} are unreadable ({e.reason}), probably an interrupted "
            f"download: delete {str(hub_cache() / f'models--timm--{name}')!r} and run again to download them afresh"
        )
        raise UnreadableWeightsError(path, "safetensors", e.reason, message) from None


def config_beside(path: Path) -> dict[str, Any] | None:
    """The hub's ``config.json`` next to a downloaded weights file (``architecture``, ``pretrained_cfg``), or None."""
    config = path.parent / "config.json"
    if not config.is_file():
        return None
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{str(config)!r} beside the weights is not a readable timm config ({one_line(str(e))})"
        ) from None
    return values if isinstance(values, dict) else None
