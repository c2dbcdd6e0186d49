"""The textbook's complexity tables 5-2, 5-3, 5-10, 5-11 and 5-12, regenerated from the models by the profiler.

Each row shows the textbook's figure, the paper's where it differs, the reference count (``paper_numbers.csv``, or
the row's own where the paper counts differently, e.g. without the FC layer), ours, and the difference. A row *reproduces* when our params equal the reference count exactly, our
MAdds are within 0.5% of the reference count (2% of the paper where there is no count), the paper's figures are met
(MAdds within 2%, params equal to ours rounded or truncated to the paper's digits, with or without BN) or the row
carries a flag naming a known inconsistency of the paper or the textbook, and the stage channels match.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mobilezoo.complexity.profiler import profile
from mobilezoo.complexity.results import Profile
from mobilezoo.complexity.textbook import (
    CONVENTION_CONV_ONLY,
    CONVENTION_FC,
    CONVENTION_NO_FC,
    ERRATA,
    TABLES,
    RowSpec,
    TableSpec,
)
from mobilezoo.registry import PaperRow, create_model, paper_rows

MADDS_REF_TOL = 0.005  # relative, against a reference count
MADDS_PAPER_TOL = 0.02  # relative, against a paper figure

_NO_BN = re.compile(r"\[impl params without BN gamma/beta: (\d+)\]")


@dataclass(frozen=True)
class Figure:
    """One quantity of a row, in millions: textbook, paper (only where it differs), reference count, ours."""

    textbook: float | None
    paper: float | None
    reference: float | None
    ours: float | None
    diff_pct: float | None  # ours vs the paper's figure (the textbook's where the paper agrees)
    reference_ok: bool
    paper_ok: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class TableRow:
    label: str
    model: str
    model_kwargs: dict[str, Any]
    resolution: int
    convention: str
    top1_textbook: float | None
    top1_paper: float | None
    madds: Figure | None
    params: Figure | None
    params_exact: int | None
    channels_textbook: tuple[int, ...] | None
    channels_ours: tuple[int, ...] | None
    flag: str | None
    note: str
    status: str  # "ok", "flagged" (reproduces only as a known inconsistency), "FAIL" or "error"
    error: str | None = None

    @property
    def reproduces(self) -> bool:
        return self.status in ("ok", "flagged")

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "model": self.model,
            "model_kwargs": dict(self.model_kwargs),
            "resolution": self.resolution,
            "convention": self.convention,
            "top1_textbook": self.top1_textbook,
            "top1_paper": self.top1_paper,
            "madds_m": self.madds.to_dict() if self.madds else None,
            "params_m": self.params.to_dict() if self.params else None,
            "params_exact": self.params_exact,
            "channels_textbook": list(self.channels_textbook) if self.channels_textbook else None,
            "channels_ours": list(self.channels_ours) if self.channels_ours else None,
            "flag": self.flag,
            "note": self.note,
            "status": self.status,
            "reproduces": self.reproduces,
            "error": self.error,
        }


@dataclass(frozen=True)
class TableResult:
    id: str
    title: str
    convention: str
    channel_labels: tuple[str, ...]
    rows: tuple[TableRow, ...]

    @property
    def reproduces(self) -> bool:
        return all(r.reproduces for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "convention": self.convention,
            "channel_labels": list(self.channel_labels),
            "reproduces": self.reproduces,
            "rows": [r.to_dict() for r in self.rows],
        }


def _paper_row(spec: RowSpec) -> PaperRow:
    rows = [r for r in paper_rows() if r.variant == spec.variant and spec.counted_on in r.counted_on]
    if not rows:
        raise KeyError(f"no paper_numbers.csv row {spec.variant!r} counted on {spec.counted_on!r}")
    return rows[0]


def _decimals(value: float) -> int:
    return len(f"{value:g}".partition(".")[2])


def _matches_printed(counts: list[int], printed: float) -> bool:
    """Whether a paper's params figure (millions) is one of our counts rounded or truncated to its digits."""
    d = _decimals(printed)
    for c in counts:
        m = c / 1e6
        if math.isclose(round(m, d), printed) or math.isclose(math.floor(m * 10**d) / 10**d, printed):
            return True
    return False


def _rel(ours: float, ref: float) -> float:
    return (ours - ref) / ref


def _trunk_channels(model: nn.Module, spec: RowSpec) -> tuple[int, ...]:
    """Output channels after conv1/maxpool (reduction 4), of stages 2-4 (8, 16, 32) and, for 5 labels, of conv5."""
    size = 64
    x = torch.randn(1, model.in_chans, size, size, device=next(model.parameters()).device)
    outs: list[tuple[int, int]] = []  # (reduction, channels) per trunk module
    with torch.inference_mode():
        for _, module in model.trunk():
            x = module(x)
            outs.append((size // x.shape[-1], x.shape[1]))
    n = len(spec.channels or ())
    body = outs[:-1] if n == 5 else outs  # the last trunk module of ShuffleNet V2 is conv5
    chans = [next(c for r, c in reversed(body) if r == red) for red in (4, 8, 16, 32)]
    if n == 5:
        chans.append(outs[-1][1])
    return tuple(chans)


def _no_bn_params(model: nn.Module) -> int:
    bn = sum(
        p.numel() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()
    )
    return sum(p.numel() for p in model.parameters()) - bn


def _row(spec: RowSpec, table: TableSpec, model: nn.Module, prof: Profile) -> TableRow:
    ref = _paper_row(spec)
    if spec.conv_only:
        ours_madds = prof.madds_of("Conv2d") / 1e6
        convention = CONVENTION_CONV_ONLY
    elif spec.exclude_fc:
        ours_madds = prof.madds_of("Linear", exclude=True) / 1e6
        convention = CONVENTION_NO_FC
    else:
        ours_madds = prof.madds / 1e6
        convention = CONVENTION_FC
    paper_madds = spec.paper_madds if spec.paper_madds is not None else ref.madds_m
    ref_madds = spec.reference_madds if spec.reference_madds is not None else ref.counted_madds_m
    target = paper_madds if paper_madds is not None else spec.textbook_madds
    if target is None:
        raise KeyError(f"row {spec.label!r} has neither a paper nor a textbook MAdds figure")
    paper_ok = abs(_rel(ours_madds, target)) <= MADDS_PAPER_TOL
    madds = Figure(
        textbook=spec.textbook_madds,
        paper=paper_madds if paper_madds != spec.textbook_madds else None,
        reference=ref_madds,
        ours=ours_madds,
        diff_pct=100 * _rel(ours_madds, target),
        reference_ok=abs(_rel(ours_madds, ref_madds)) <= MADDS_REF_TOL if ref_madds is not None else paper_ok,
        paper_ok=paper_ok,
    )

    params = prof.params
    no_bn = _no_bn_params(model)
    m = _NO_BN.search(ref.notes)
    ref_no_bn = int(m.group(1)) if m else None
    params_ref_ok = (ref.counted_params is None or params == ref.counted_params) and (
        ref_no_bn is None or no_bn == ref_no_bn
    )
    paper_params = ref.params_m
    printed = paper_params if paper_params is not None else spec.textbook_params
    pfig = Figure(
        textbook=spec.textbook_params,
        paper=paper_params if paper_params != spec.textbook_params else None,
        reference=ref.counted_params / 1e6 if ref.counted_params is not None else None,
        ours=params / 1e6,
        diff_pct=100 * _rel(params / 1e6, printed) if printed else None,
        reference_ok=params_ref_ok,
        paper_ok=printed is None or _matches_printed([params, no_bn], printed),
    )

    chans = _trunk_channels(model, spec) if spec.channels else None
    channels_ok = chans == spec.channels
    ref_ok = madds.reference_ok and pfig.reference_ok and channels_ok
    if ref_ok and madds.paper_ok and pfig.paper_ok:
        status = "ok"
    elif ref_ok and spec.flag:
        status = "flagged"
    else:
        status = "FAIL"
    return TableRow(
        label=spec.label,
        model=spec.model,
        model_kwargs=dict(spec.model_kwargs),
        resolution=spec.resolution,
        convention=convention,
        top1_textbook=spec.textbook_top1,
        top1_paper=ref.top1 if ref.top1 != spec.textbook_top1 else None,
        madds=madds,
        params=pfig,
        params_exact=params,
        channels_textbook=spec.channels,
        channels_ours=chans,
        flag=spec.flag,
        note=spec.note,
        status=status,
    )


def table_ids() -> list[str]:
    return [t.id for t in TABLES] + [ERRATA.id]


def textbook_tables(
    ids: list[str] | None = None, *, include_errata: bool = False, skip_missing: bool = False
) -> list[TableResult]:
    """Regenerate the textbook's tables (all of them, or those in ``ids``, e.g. ``["5-11"]``).

    A model that is not registered raises a ValueError naming it and its table, unless ``skip_missing``, which
    gives that row the status "error" instead.
    """
    specs = list(TABLES) + ([ERRATA] if include_errata else [])
    if ids is not None:
        known = {t.id: t for t in (*TABLES, ERRATA)}
        bad = [i for i in ids if i not in known]
        if bad:
            raise ValueError(f"unknown table(s) {bad}; expected some of {table_ids()}")
        specs = [known[i] for i in ids]
    models: dict[tuple[str, str], nn.Module] = {}  # one build per (name, kwargs) within this call
    results = []
    for table in specs:
        rows = []
        for spec in table.rows:
            key = (spec.model, repr(sorted(spec.model_kwargs.items())))
            try:
                if key not in models:
                    with torch.device("meta"):  # counts need shapes only (see profile())
                        models[key] = create_model(spec.model, **spec.model_kwargs)
                model = models[key]
                rows.append(_row(spec, table, model, profile(model, resolution=spec.resolution)))
            except ValueError as e:
                if not skip_missing:
                    raise ValueError(f"table {table.id} row {spec.label!r}: {e}") from e
                rows.append(
                    TableRow(
                        spec.label,
                        spec.model,
                        dict(spec.model_kwargs),
                        spec.resolution,
                        table.convention,
                        spec.textbook_top1,
                        None,
                        None,
                        None,
                        None,
                        spec.channels,
                        None,
                        spec.flag,
                        spec.note,
                        status="error",
                        error=str(e),
                    )
                )
        results.append(TableResult(table.id, table.title, table.convention, table.channel_labels, tuple(rows)))
    return results
