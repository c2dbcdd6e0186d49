"""The chapter's timeline of lightweight DCNNs (Fig. 5-2) as a table: year, model, the papers' figures, our counts.

Each row names the ``paper_numbers.csv`` row holding the paper's top-1, MAdds and params and the reference count of
the architecture (params exact, MAdds to the 0.5% the tests allow), and the registered model that regenerates it at
its native resolution. A row whose architecture was never published (NASNet-B/C, MnasNet-A2/A3, MnasNet-search1) is
listed as "not implemented" with the reason, never filled with a guess.

Conventions: MAdds are the multiply-adds of the whole network, FC included, which is what the papers call FLOPs or
Mult-Adds. SqueezeNet's release publishes "GFLOPS" that are 2 x MAdds (1.72 and 0.72 GFLOPS: 860M and 360M here).
ShuffleNet V1's Table 1 counts without the FC layer; the whole-network count is shown (see Table 5-10 for the other).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from mobilezoo.complexity.profiler import profile
from mobilezoo.complexity.tables import MADDS_PAPER_TOL, MADDS_REF_TOL, _matches_printed
from mobilezoo.registry import PaperRow, create_model, paper_rows

WITHHELD = (
    "no reference count (withheld on purpose: derived from the architecture and pinned by the model's tests); "
    "checked against the paper: MAdds within 2%, params equal to ours at the paper's digits"
)

CONVENTION = (
    "MAdds of the whole network (FC included) at the model's native resolution, the papers' 'FLOPs'; SqueezeNet's "
    "published GFLOPS are 2 x MAdds and are shown halved; ShuffleNet V1's Table 1 excludes the FC (Table 5-10 shows "
    "that count). Status ok: params equal the reference count and MAdds are within 0.5% of it (where the count is "
    "withheld, the paper's MAdds within 2% and its params at its printed digits)."
)


@dataclass(frozen=True)
class TimelineEntry:
    """One model of the timeline: its year (first publication), the csv row and the registered model (None: the
    architecture is unpublished, so nothing can be built)."""

    year: int
    label: str
    variant: str
    model: str | None
    counted_on: str = ""  # picks the csv row whose counted_on contains this, where a variant has several
    note: str = ""


_NASNET_BC = (
    "not implemented: its cells are drawn only in the paper's appendix, and no code or checkpoint was released "
    "(TF-slim, Keras and timm ship NASNet-A only)"
)
_MNAS_UNPUBLISHED = "not implemented: the paper gives its figures (Tables 1 and 4) but not its architecture"

_MNV4_GAP = (
    "the official block specs (TF, and timm block for block) count 5-6% more params and 8% more MAdds than the paper "
    "prints; no input size explains it"
)
_MNV4_HYBRID = (
    "not implemented yet: the Mobile MQA attention starts with a BatchNorm that follows no conv, which deploy.fuse "
    "cannot fold (the architecture is published)"
)

TIMELINE: tuple[TimelineEntry, ...] = (
    TimelineEntry(2014, "VGG-16 (heavy reference)", "vgg16", "vgg16"),
    TimelineEntry(
        2014,
        "GoogLeNet (heavy reference)",
        "googlenet",
        "googlenet",
        counted_on="paper-faithful",
        note="the paper's net (true 5x5, no BN, no auxiliary heads); torchvision's layout (BN, 3x3 in the "
        "'5x5' branch) counts 1498.38M / 6,624,904",
    ),
    TimelineEntry(
        2016,
        "SqueezeNet 1.0",
        "squeezenet_1.0_227",
        "squeezenet1_0",
        note="the release's 1.72 GFLOPS (860M MAdds) is 3.3% above the convolutions' count; it probably "
        "adds bias, ReLU and pooling ops; MobileNets' Table 9 quotes it as 1700 'Mult-Adds'",
    ),
    TimelineEntry(
        2016, "SqueezeNet 1.0, simple bypass", "squeezenet_1.0_simple_bypass_224", "squeezenet1_0_simple_bypass"
    ),
    TimelineEntry(
        2016,
        "SqueezeNet 1.1",
        "squeezenet_1.1_227",
        "squeezenet1_1",
        note="not in the paper: the official v1.1 release, which gives no top-1 of its own ('same accuracy' as 1.0); "
        "its 0.72 GFLOPS (360M MAdds) is 7% below the count, and no one resolution reproduces both release figures",
    ),
    TimelineEntry(2017, "MobileNet V1 1.0", "mobilenet_v1_1.0_224", "mobilenet_v1"),
    TimelineEntry(
        2017, "ShuffleNet V1 1x (g=3)", "shufflenet_v1_g3_1.0x", "shufflenet_v1_g3_x1_0", counted_on="megvii"
    ),
    TimelineEntry(2018, "NASNet-A Mobile (4 @ 1056)", "nasnet_a_mobile_4@1056_224", "nasnet_a_mobile"),
    TimelineEntry(2018, "NASNet-B (4 @ 1536)", "nasnet_b_4@1536_224", None, note=_NASNET_BC),
    TimelineEntry(2018, "NASNet-C (3 @ 960)", "nasnet_c_3@960_224", None, note=_NASNET_BC),
    TimelineEntry(2018, "MobileNet V2 1.0", "mobilenet_v2_1.0_224", "mobilenet_v2"),
    TimelineEntry(2018, "ShuffleNet V2 1x", "shufflenet_v2_1.0x", "shufflenet_v2_x1_0", counted_on="megvii"),
    TimelineEntry(2019, "MnasNet-A1 1.0", "mnasnet_a1_1.0_224", "mnasnet_a1_x1_0"),
    TimelineEntry(2019, "MnasNet-A2", "mnasnet_a2_224", None, note=_MNAS_UNPUBLISHED),
    TimelineEntry(2019, "MnasNet-A3", "mnasnet_a3_224", None, note=_MNAS_UNPUBLISHED),
    TimelineEntry(2019, "MnasNet-B1 1.0 (torchvision's mnasnet1_0)", "mnasnet_b1_1.0_224", "mnasnet_b1_x1_0"),
    TimelineEntry(2019, "MnasNet-small", "mnasnet_small_224", "mnasnet_small"),
    TimelineEntry(2019, "MnasNet-search1", "mnasnet_search1_224", None, note=_MNAS_UNPUBLISHED),
    TimelineEntry(2019, "MobileNet V3-Large 1.0", "mobilenet_v3_large_1.0_224", "mobilenet_v3_large"),
    TimelineEntry(2019, "MobileNet V3-Small 1.0", "mobilenet_v3_small_1.0_224", "mobilenet_v3_small"),
    # beyond the chapter: the family's newer members, on the same contract
    TimelineEntry(2019, "EfficientNet-B0 (reference point)", "efficientnet_b0_224", "efficientnet_b0"),
    TimelineEntry(2020, "GhostNet 1.0x", "ghostnet_1.0_224", "ghostnet_x1_0"),
    TimelineEntry(
        2020,
        "EfficientNet-Lite0",
        "efficientnet_lite0_224",
        "efficientnet_lite0",
        note="the Lite README's MAdds are 3.4-5.7% above the counts of Lite0-4 (timm counts the same)",
    ),
    TimelineEntry(
        2024,
        "MobileNetV4 Conv-S",
        "mnv4_conv_s_224",
        "mobilenet_v4_conv_small",
        note="the paper prints 0.2G MAdds and 3.8M params: the count rounds to both",
    ),
    TimelineEntry(2024, "MobileNetV4 Conv-M", "mnv4_conv_m_256", "mobilenet_v4_conv_medium", note=_MNV4_GAP),
    TimelineEntry(2024, "MobileNetV4 Conv-L", "mnv4_conv_l_384", "mobilenet_v4_conv_large", note=_MNV4_GAP),
    TimelineEntry(2024, "MobileNetV4 Hybrid-M", "mnv4_hybrid_m_256", None, note=_MNV4_HYBRID),
    TimelineEntry(2024, "MobileNetV4 Hybrid-L", "mnv4_hybrid_l_384", None, note=_MNV4_HYBRID),
)


@dataclass(frozen=True)
class TimelineRow:
    """A timeline row: the paper's figures (None where the paper gives none), the reference count and ours.

    Units: MAdds in millions, params exact (``params``, ``reference_params``) or in millions (``paper_params_m``).
    ``status`` is "ok", "FAIL" (our count misses the reference count, or the paper's figures where the count is
    withheld), "not implemented" or "error" (the model is not registered; ``error`` says why).
    """

    year: int
    label: str
    model: str | None
    resolution: int
    paper_top1: float | None
    paper_madds_m: float | None
    paper_params_m: float | None
    reference_madds_m: float | None
    reference_params: int | None
    madds_m: float | None
    params: int | None
    madds_vs_paper_pct: float | None
    status: str
    note: str
    source: str
    error: str | None = None

    @property
    def reproduces(self) -> bool:
        return self.status in ("ok", "not implemented")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reproduces": self.reproduces}


@dataclass(frozen=True)
class Timeline:
    """The timeline table: ``rows`` in year order, the counting ``convention`` and the title."""

    title: str
    convention: str
    rows: tuple[TimelineRow, ...]

    @property
    def reproduces(self) -> bool:
        return all(r.reproduces for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": "timeline",
            "title": self.title,
            "convention": self.convention,
            "reproduces": self.reproduces,
            "rows": [r.to_dict() for r in self.rows],
        }


def _csv_row(entry: TimelineEntry) -> PaperRow:
    rows = [r for r in paper_rows() if r.variant == entry.variant and entry.counted_on in r.counted_on]
    if not rows:
        raise KeyError(f"no paper_numbers.csv row {entry.variant!r} counted on {entry.counted_on!r}")
    return rows[0]


def timeline(entries: tuple[TimelineEntry, ...] = TIMELINE) -> Timeline:
    """The chapter's timeline (Fig. 5-2) with the papers' figures and the counts of the registered models.

    Counts come from :func:`mobilezoo.complexity.profile` on the meta device (shapes only, nothing is run), at each
    csv row's resolution. A model that is not registered gives its row the status "error" (with the message) instead
    of raising. Raises KeyError when an entry names a csv row that does not exist.
    """
    rows = []
    for e in entries:
        ref = _csv_row(e)
        base = dict(year=e.year, label=e.label, model=e.model, resolution=ref.resolution, paper_top1=ref.top1,
                    paper_madds_m=ref.madds_m, paper_params_m=ref.params_m, reference_madds_m=ref.counted_madds_m,
                    reference_params=ref.counted_params, source=ref.source)  # fmt: skip
        if e.model is None:
            rows.append(TimelineRow(**base, madds_m=None, params=None, madds_vs_paper_pct=None,
                                    status="not implemented", note=e.note))  # fmt: skip
            continue
        try:
            with torch.device("meta"):  # counts need shapes only
                model = create_model(e.model)
        except ValueError as err:
            rows.append(TimelineRow(**base, madds_m=None, params=None, madds_vs_paper_pct=None, status="error",
                                    note=e.note, error=str(err)))  # fmt: skip
            continue
        prof = profile(model, resolution=ref.resolution)
        madds = prof.madds / 1e6
        note = e.note
        if ref.counted_params is None and ref.counted_madds_m is None:
            # the exact count is withheld: the paper's printed figures are what there is to meet
            ok = (ref.madds_m is not None and abs(madds - ref.madds_m) <= MADDS_PAPER_TOL * ref.madds_m) and (
                ref.params_m is None or _matches_printed([prof.params], ref.params_m)
            )
            status = "ok" if ok else "FAIL"
            note = "; ".join(filter(None, [note, WITHHELD]))
        else:
            ok = (ref.counted_params is None or prof.params == ref.counted_params) and (
                ref.counted_madds_m is None or abs(madds - ref.counted_madds_m) <= MADDS_REF_TOL * ref.counted_madds_m
            )
            status = "ok" if ok else "FAIL"
        vs_paper = 100 * (madds - ref.madds_m) / ref.madds_m if ref.madds_m else None
        rows.append(TimelineRow(**base, madds_m=madds, params=prof.params, madds_vs_paper_pct=vs_paper,
                                status=status, note=note))  # fmt: skip
    return Timeline("The timeline of lightweight DCNNs (Fig. 5-2) and beyond: the papers' figures and the counts", CONVENTION,
                    tuple(rows))  # fmt: skip


__all__ = ["CONVENTION", "TIMELINE", "Timeline", "TimelineEntry", "TimelineRow", "timeline"]
