"""Config files: a :class:`TrainConfig` saved as or read from YAML/JSON, and the config a run folder holds for resuming.

A run saves its resolved config as ``config.yaml`` in its folder; resuming reads it back and allows only the fields in
:data:`RESUME_MAY_DIFFER` to change.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any

import yaml

from mobilezoo.train.config import TrainConfig

# config fields that may differ between a run and its resumption (they do not change the result on CPU)
RESUME_MAY_DIFFER = {"num_workers", "device", "out", "checkpoint_every"}


def load_config(path: str | PathLike) -> TrainConfig:
    """Read a config saved as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
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
    return TrainConfig.from_dict(values)


def save_config(cfg: TrainConfig, path: str | PathLike) -> Path:
    path = Path(path)
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False) if path.suffix != ".json" else json.dumps(cfg.to_dict())
    from mobilezoo.train.checkpoint import atomic_write_text

    atomic_write_text(path, text)
    return path


def check_resume(cfg: TrainConfig, run_dir: Path) -> TrainConfig:
    saved = load_config(run_dir / "config.yaml")
    a, b = saved.to_dict(), cfg.to_dict()
    diff = [k for k in a if k not in RESUME_MAY_DIFFER and a[k] != b[k]]
    if diff:
        shown = ", ".join(f"{k}: run has {a[k]!r}, given {b[k]!r}" for k in diff)
        raise ValueError(f"cannot resume {str(run_dir)!r} with a different config ({shown})")
    return cfg


def resume_config(run_dir: str | Path, **overrides: Any) -> TrainConfig:
    """The saved config of ``run_dir`` (for ``train(..., resume=True)``), with harmless overrides (e.g. num_workers)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} holds no config.yaml: not a mobilezoo run folder")
    bad = set(overrides) - RESUME_MAY_DIFFER
    if bad:
        raise ValueError(
            f"a resumed run keeps its config; only {sorted(RESUME_MAY_DIFFER)} may change, got {sorted(bad)}"
        )
    cfg = load_config(run_dir / "config.yaml")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    cfg.out = str(run_dir)
    return cfg


__all__ = ["RESUME_MAY_DIFFER", "check_resume", "load_config", "resume_config", "save_config"]
