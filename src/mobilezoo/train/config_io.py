"""Config files: a :class:`TrainConfig` saved as or read from YAML/JSON, and the config a run folder holds for resuming.

A run saves its resolved config as ``config.yaml`` in its folder; resuming reads it back and allows only the fields in
:data:`RESUME_MAY_DIFFER` to change: any other field given with another value is refused, never silently ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import yaml

from mobilezoo.train.config import TrainConfig

# config fields that may differ between a run and its resumption (they do not change the result on CPU)
RESUME_MAY_DIFFER = {"num_workers", "device", "out", "checkpoint_every", "keep_freed_memory"}


def load_config(path: str | PathLike) -> TrainConfig:
    """Read a config saved as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
    return TrainConfig.from_dict(read_config_values(path))


def read_config_values(path: str | PathLike) -> dict[str, Any]:
    """The fields a YAML/JSON config file sets, as written (checked by :meth:`TrainConfig.from_dict`; no defaults)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        values = yaml.safe_load(text)
    elif path.suffix == ".json":
        values = json.loads(text)
    else:
        raise ValueError(f"config files are .yaml, .yml or .json, got {str(path)!r}")
    TrainConfig.from_dict(values)  # a mapping with known keys and a model, or a ValueError naming what is wrong
    return dict(values)


def save_config(cfg: Any, path: str | PathLike) -> Path:
    """Write ``cfg.to_dict()`` (a :class:`TrainConfig`, or any config with ``to_dict``) as YAML (JSON for ``.json``),
    atomically."""
    path = Path(path)
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False) if path.suffix != ".json" else json.dumps(cfg.to_dict())
    from mobilezoo.train.checkpoint import atomic_write_text

    atomic_write_text(path, text)
    return path


def check_resume(cfg: TrainConfig, run_dir: Path) -> TrainConfig:
    """Raise a ValueError unless ``cfg`` equals the config saved in ``run_dir`` outside :data:`RESUME_MAY_DIFFER`."""
    saved = load_config(run_dir / "config.yaml").to_dict()
    given = {k: v for k, v in cfg.to_dict().items() if k not in RESUME_MAY_DIFFER}
    refuse_changes(run_dir, saved, given, {})
    return cfg


def resume_config(run_dir: str | Path, *, labels: Mapping[str, str] | None = None, **overrides: Any) -> TrainConfig:
    """The saved config of ``run_dir``, for ``train(..., resume=True)``: a resumed run keeps its config.

    ``overrides`` of the fields in :data:`RESUME_MAY_DIFFER` (num_workers, device, out, checkpoint_every,
    keep_freed_memory) replace the saved values. Any other field may be given only with its saved value (a repeated
    command line, say); one with another value raises a ValueError naming each such field (as ``labels[field]`` if
    given, e.g. a CLI flag) with the run's value and the given one, rather than being ignored. Unknown fields raise a
    ValueError too.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} holds no config.yaml: not a mobilezoo run folder")
    cfg = load_config(run_dir / "config.yaml")
    saved = cfg.to_dict()
    TrainConfig.from_dict({**saved, **overrides})  # unknown keys raise a ValueError naming them
    refuse_changes(run_dir, saved, {k: v for k, v in overrides.items() if k not in RESUME_MAY_DIFFER}, labels or {})
    for k, v in overrides.items():
        if k in RESUME_MAY_DIFFER:
            setattr(cfg, k, v)
    cfg.out = str(run_dir)
    return cfg


def refuse_changes(
    run_dir: Path,
    saved: dict[str, Any],
    given: dict[str, Any],
    labels: Mapping[str, str],
    may_differ: set[str] = RESUME_MAY_DIFFER,
) -> None:
    """Raise a ValueError naming each field of ``given`` whose value differs from ``saved`` (the run's config), as
    ``labels[field]`` if given, with both values; ``may_differ`` (the fields that may change) is named in the advice.
    Tuples and lists compare equal (YAML reads tuples back as lists)."""

    def same(a: Any, b: Any) -> bool:
        return (list(a) if isinstance(a, tuple) else a) == (list(b) if isinstance(b, tuple) else b)

    changed = [k for k, v in given.items() if k != "resolved" and not same(saved.get(k), v)]
    if changed:
        shown = "; ".join(f"{labels.get(k, k)}: the run has {saved.get(k)!r}, given {given[k]!r}" for k in changed)
        raise ValueError(
            f"cannot resume {str(run_dir)!r} with other settings, which it would ignore ({shown}); a resumed run "
            f"keeps its config (only {', '.join(sorted(labels.get(k, k) for k in may_differ))} may change): drop "
            f"them, or start a new "
            f"run in another folder"
        )


__all__ = [
    "RESUME_MAY_DIFFER",
    "check_resume",
    "load_config",
    "read_config_values",
    "refuse_changes",
    "resume_config",
    "save_config",
]
