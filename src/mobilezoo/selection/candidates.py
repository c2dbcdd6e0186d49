"""The candidates of a model selection: every (model, width, resolution) with a published ImageNet top-1.

A candidate is a ``paper_numbers.csv`` row with a top-1 figure whose architecture is registered: the row a model's
card names, or a row of the same architecture at another input resolution (the same variant name with another
resolution suffix), such as MobileNet V1 0.5 at 128 px or MnasNet-A1 1.0 at 160 px. Its params, MAdds and peak activation memory are counted from the code at that resolution (on the meta
device: shapes only, nothing runs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from mobilezoo.complexity.profiler import profile
from mobilezoo.policies import cached, store
from mobilezoo.registry import create_model, list_models, model_card, paper_rows

CACHE_SECTION, CACHE_ITEM = "select", "counts"


@dataclass(frozen=True)
class Candidate:
    """A registered model at one input resolution, with the paper's top-1 and the counts from the code.

    ``top1`` is the published ImageNet top-1 (%), an fp32 figure; ``madds_m`` in millions at ``resolution`` x
    ``resolution``, ``params`` exact, ``activation_mb`` the peak activation memory of one image in MiB (float32).
    """

    model: str
    family: str
    resolution: int
    top1: float
    params: int
    madds_m: float
    activation_mb: float
    variant: str  # the paper_numbers.csv row
    source: str  # where the top-1 is published

    @property
    def key(self) -> str:
        return f"{self.model}@{self.resolution}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}


def _rows_of(name: str) -> list[Any]:
    """The csv rows with a top-1 that describe registered model ``name``'s architecture, one per resolution: its card's
    row and the rows named like it with another resolution suffix (``mobilenet_v2_0.35_224`` -> ``..._160``)."""
    card = model_card(name)
    if card.paper_variant is None:
        return []
    stem, _, suffix = card.paper_variant.rpartition("_")
    rows = {}
    for r in paper_rows():
        same = r.variant == card.paper_variant or (
            suffix.isdigit() and r.family == card.family and r.variant == f"{stem}_{r.resolution}"
        )
        if same and r.top1 is not None and r.resolution not in rows:
            rows[r.resolution] = r
    return [rows[k] for k in sorted(rows)]


def candidates(families: tuple[str, ...] | None = None, models: tuple[str, ...] | None = None) -> list[Candidate]:
    """Every registered (model, resolution) with a published top-1, most accurate first.

    ``families`` (e.g. ``("MobileNetV2",)``) or ``models`` (registered names) narrow the list. Raises ValueError for
    an unknown family or model, or when nothing is left.
    """
    names = list_models()
    if models is not None:
        unknown = [m for m in models if m not in names]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; see `mobilezoo list`")
        names = [n for n in names if n in models]
    if families is not None:
        known = {model_card(n).family for n in list_models()}
        bad = [f for f in families if f not in known]
        if bad:
            raise ValueError(f"unknown famil{'y' if len(bad) == 1 else 'ies'} {bad}; expected some of {sorted(known)}")
        names = [n for n in names if model_card(n).family in families]
    known = cached(CACHE_SECTION, CACHE_ITEM) or {}
    counted: dict[str, list[float]] = {}
    out = []
    for name in names:
        rows = _rows_of(name)
        model = None
        for row in rows:
            key = f"{name}@{row.resolution}"
            if key not in known:
                if model is None:
                    with torch.device("meta"):
                        model = create_model(name)
                prof = profile(model, resolution=row.resolution)
                counted[key] = [prof.params, prof.madds / 1e6, prof.peak_activation_bytes / 2**20]
            params, madds, act = known.get(key) or counted[key]
            out.append(Candidate(name, model_card(name).family, row.resolution, row.top1, int(params), madds, act,
                                 row.variant, row.source))  # fmt: skip
    if counted:  # counting takes ~0.2 s a candidate: kept for the next question (the key holds the versions)
        store(CACHE_SECTION, CACHE_ITEM, {**known, **counted})
    if not out:
        raise ValueError(f"no candidate with a published top-1 among models={models} families={families}")
    return sorted(out, key=lambda c: (-c.top1, c.madds_m, c.key))


__all__ = ["Candidate", "candidates"]
